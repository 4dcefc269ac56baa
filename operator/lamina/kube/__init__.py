"""The operator's own door to the Kubernetes API (kopf watches; this reads and patches)."""

from lamina.kube.client import Kube

__all__ = ["Kube"]
