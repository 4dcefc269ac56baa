"""Kubeconfigs: which clients get one, and the document itself (certificates embedded)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from harness.settings import Settings


@dataclass(frozen=True)
class KubeconfigFile:
    path: Path
    user: str
    cert: str  # basename of <pki>/<cert>.crt and .key


def kubeconfig_files(s: Settings) -> list[KubeconfigFile]:
    """The admin's and every component client's kubeconfig for the tier."""
    files = [
        KubeconfigFile(s.admin_kubeconfig, "lamina-admin", "admin"),
        KubeconfigFile(
            s.kubeconfig / "kube-controller-manager.kubeconfig",
            "system:kube-controller-manager",
            "kube-controller-manager",
        ),
    ]
    if s.tier == "node":
        for user, cert in (
            ("system:kube-scheduler", "kube-scheduler"),
            ("system:kube-proxy", "kube-proxy"),
            (f"system:node:{s.node_name}", "kubelet"),
        ):
            files.append(KubeconfigFile(s.kubeconfig / f"{cert}.kubeconfig", user, cert))
    return files


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig_text(server: str, user: str, *, ca: bytes, cert: bytes, key: bytes) -> str:
    """JSON is valid YAML; certificates are embedded so the file can be copied anywhere."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "lamina",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)},
            }
        ],
        "contexts": [{"name": f"{user}@lamina", "context": {"cluster": "lamina", "user": user}}],
        "current-context": f"{user}@lamina",
        "preferences": {},
    }
    return json.dumps(cfg, indent=2) + "\n"
