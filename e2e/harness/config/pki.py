"""The PKI plan: which keys and certificates the cluster needs, with what names and uses.

ECDSA P-256 keys (instant to generate, accepted everywhere in Kubernetes), made by the openssl
CLI (`harness.host.pki` runs the plan).  `pki_spec` is what the PKI is recorded as being made
for: a change (SANs, node name) makes a new one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.settings import Settings


@dataclass(frozen=True)
class CA:
    name: str
    cn: str
    days: int = 3650


@dataclass(frozen=True)
class Cert:
    name: str
    cn: str
    org: str | None
    ext: tuple[str, ...]
    ca: str = "ca"
    days: int = 365


@dataclass(frozen=True)
class KeyPair:
    """A bare key pair (<name>.key and <name>.pub): the service-account token signing key."""

    name: str


PkiItem = CA | Cert | KeyPair

CA_EXT = (
    "basicConstraints = critical, CA:TRUE",
    "keyUsage = critical, digitalSignature, keyEncipherment, keyCertSign, cRLSign",
    "subjectKeyIdentifier = hash",
)
CLIENT_EXT = (
    "basicConstraints = critical, CA:FALSE",
    "keyUsage = critical, digitalSignature, keyEncipherment",
    "extendedKeyUsage = clientAuth",
)

PKI_FILES = (
    "ca.crt",
    "ca.key",
    "apiserver.crt",
    "apiserver.key",
    "admin.crt",
    "admin.key",
    "kube-controller-manager.crt",
    "kube-controller-manager.key",
    "sa.key",
    "sa.pub",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "front-proxy-client.crt",
    "front-proxy-client.key",
    "kube-scheduler.crt",
    "kube-scheduler.key",
    "kube-proxy.crt",
    "kube-proxy.key",
    "kubelet.crt",
    "kubelet.key",
    "apiserver-kubelet-client.crt",
    "apiserver-kubelet-client.key",
)


def apiserver_sans(s: Settings) -> list[str]:
    return [
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        "DNS:localhost",
        "IP:127.0.0.1",
        f"IP:{s.first_service_ip}",
        f"IP:{s.advertise}",
    ]


def pki_spec(s: Settings) -> dict[str, Any]:
    return {
        "sans": apiserver_sans(s),
        "version": 3,
        "node": s.node_name,
        "advertise": s.advertise,
    }


def pki_plan(s: Settings) -> list[PkiItem]:
    """Every key and certificate, in the order they are made (a CA before what it signs)."""
    return [
        CA("ca", "lamina-ca"),
        # kube-apiserver serving certificate
        Cert(
            "apiserver",
            cn="kube-apiserver",
            org=None,
            ext=(
                "basicConstraints = critical, CA:FALSE",
                "keyUsage = critical, digitalSignature, keyEncipherment",
                "extendedKeyUsage = serverAuth",
                "subjectAltName = " + ", ".join(apiserver_sans(s)),
            ),
        ),
        # clients
        Cert("admin", cn="lamina-admin", org="system:masters", ext=CLIENT_EXT),
        Cert(
            "kube-controller-manager",
            cn="system:kube-controller-manager",
            org=None,
            ext=CLIENT_EXT,
        ),
        # node tier clients: the default RBAC knows these users (system:kube-scheduler,
        # system:kube-proxy -> system:node-proxier); the kubelet is authorised by the Node
        # authorizer and NodeRestriction as system:node:<name>; the API server's client for the
        # kubelet API (logs, exec) is bound to system:kubelet-api-admin by `up`.
        Cert("kube-scheduler", cn="system:kube-scheduler", org=None, ext=CLIENT_EXT),
        Cert("kube-proxy", cn="system:kube-proxy", org=None, ext=CLIENT_EXT),
        Cert("kubelet", cn=f"system:node:{s.node_name}", org="system:nodes", ext=CLIENT_EXT),
        Cert(
            "apiserver-kubelet-client",
            cn="kube-apiserver-kubelet-client",
            org=None,
            ext=CLIENT_EXT,
        ),
        # Front proxy (request-header authentication, as kubeadm sets it up): the aggregation
        # layer needs it, and without it every delegating component (the controller manager's
        # own /healthz server, later the operator's webhooks) logs a missing-CA error forever.
        CA("front-proxy-ca", "lamina-front-proxy-ca"),
        Cert(
            "front-proxy-client",
            cn="front-proxy-client",
            org=None,
            ext=CLIENT_EXT,
            ca="front-proxy-ca",
        ),
        KeyPair("sa"),
    ]


def plan_files(plan: list[PkiItem]) -> list[str]:
    """The files a plan leaves in the PKI directory."""
    out: list[str] = []
    for item in plan:
        if isinstance(item, KeyPair):
            out += [f"{item.name}.key", f"{item.name}.pub"]
        else:
            out += [f"{item.name}.crt", f"{item.name}.key"]
    return out


def openssl_cnf(cn: str, org: str | None, ext: tuple[str, ...]) -> str:
    """An openssl request configuration: the subject and the `ext` extension section."""
    dn = [f"CN = {cn}"] + ([f"O = {org}"] if org else [])
    return (
        "[req]\ndistinguished_name = dn\nprompt = no\nutf8 = yes\n"
        "[dn]\n" + "\n".join(dn) + "\n[ext]\n" + "\n".join(ext) + "\n"
    )
