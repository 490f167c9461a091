"""The local execution backend: services as supervised processes in cached environments."""

from datalab.backends.local.backend import LocalBackend

__all__ = ["LocalBackend"]
