"""The local execution backend: services as supervised processes in cached environments."""

from datalab.backends.local.backend import LocalBackend
from datalab.backends.local.resources import Resources, parse_cpu, parse_memory_bytes

__all__ = ["LocalBackend", "Resources", "parse_cpu", "parse_memory_bytes"]
