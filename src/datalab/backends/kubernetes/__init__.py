"""The Kubernetes execution backend: services as Helm releases in per-project namespaces."""

from datalab.backends.kubernetes.backend import KubernetesBackend

__all__ = ["KubernetesBackend"]
