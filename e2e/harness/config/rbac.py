"""RBAC objects `up` applies."""

from __future__ import annotations

from typing import Any

# The API server's client for the kubelet API (logs, exec) is authorised by the kubelet
# through a SubjectAccessReview: it needs system:kubelet-api-admin.
KUBELET_API_RBAC: dict[str, Any] = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRoleBinding",
    "metadata": {"name": "lamina:kube-apiserver-kubelet-client"},
    "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "system:kubelet-api-admin",
    },
    "subjects": [
        {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "User",
            "name": "kube-apiserver-kubelet-client",
        }
    ],
}
