"""The harness's configuration: `Settings`, made from environment variables by a pure function.

Reading the machine (the environment itself, e2e/lib/versions.sh, the tier recorded by a
running cluster) is `harness.environment`'s job; everything here is computed from its answers,
so the unit tests can check every setting and every error for given inputs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.errors import Fail

Tier = Literal["api", "node"]
TIERS: tuple[Tier, ...] = ("api", "node")


def as_tier(value: object) -> Tier:
    """A recorded tier, read back from a file: anything but "node" is the api tier."""
    return "node" if value == "node" else "api"


@dataclass(frozen=True)
class Versions:
    """What e2e/lib/versions.sh says (the single source of truth for versions and the cache)."""

    k8s: str
    etcd: str
    cache: Path
    containerd: str
    pause: str


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Fail(f"{name}={raw!r} is not an integer") from None
    return value


def env_port(env: Mapping[str, str], name: str, default: int) -> int:
    port = env_int(env, name, default)
    if not 1 <= port <= 65535:
        raise Fail(f"{name}={port} is not a TCP port")
    return port


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, "").strip() or default


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know about the cluster instance; immutable."""

    state: Path
    tier: Tier
    etcd_port: int
    etcd_peer_port: int
    apiserver_port: int
    kcm_port: int
    scheduler_port: int
    kubelet_port: int
    kubelet_healthz_port: int
    proxy_healthz_port: int
    registry_port: int
    node_name: str
    pod_cidr: ipaddress.IPv4Network | ipaddress.IPv6Network
    service_cidr: ipaddress.IPv4Network | ipaddress.IPv6Network
    advertise: str
    netdev: str
    start_timeout: float
    k8s_version: str
    etcd_version: str
    cache: Path
    containerd_version: str
    pause_image: str

    # derived values ------------------------------------------------------------------------
    @property
    def proxy_metrics_port(self) -> int:
        return self.proxy_healthz_port + 1

    @property
    def pod_gateway(self) -> str:
        return str(next(self.pod_cidr.hosts()))

    @property
    def first_service_ip(self) -> str:
        return str(next(self.service_cidr.hosts()))

    # layout of the state directory ---------------------------------------------------------
    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def run(self) -> Path:
        return self.state / "run"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def etcd_data(self) -> Path:
        return self.state / "etcd"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.kubeconfig / "admin.kubeconfig"

    @property
    def kube_cache(self) -> Path:
        return self.state / "kube-cache"

    @property
    def ctrd(self) -> Path:
        """containerd's root, state, sockets and configuration."""
        return self.state / "containerd"

    @property
    def containerd_sock(self) -> Path:
        return self.ctrd / "containerd.sock"

    @property
    def registry_state(self) -> Path:
        return self.state / "registry"

    @property
    def registries_yaml(self) -> Path:
        return self.state / "registries.yaml"

    # binaries (in the cache, keyed by version) ---------------------------------------------
    @property
    def k8s_bin(self) -> Path:
        return self.cache / "bin" / f"kubernetes-{self.k8s_version}"

    @property
    def etcd_bin(self) -> Path:
        return self.cache / "bin" / f"etcd-{self.etcd_version}"

    @property
    def containerd_bin(self) -> Path:
        return self.cache / "bin" / f"containerd-{self.containerd_version}"

    @property
    def kubectl(self) -> Path:
        return self.k8s_bin / "kubectl"

    # addresses -----------------------------------------------------------------------------
    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def registry(self) -> str:
        return f"{self.advertise}:{self.registry_port}"


def _network(
    env: Mapping[str, str], name: str, default: str
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    raw = env_str(env, name, default)
    try:
        return ipaddress.ip_network(raw, strict=True)
    except ValueError as e:
        raise Fail(f"{name}={raw!r}: {e}") from None


def _advertise(env: Mapping[str, str]) -> str:
    adv = env_str(env, "LAMINA_ADVERTISE_ADDRESS", "10.213.0.1")
    try:
        addr = ipaddress.ip_address(adv)
    except ValueError as e:
        raise Fail(f"LAMINA_ADVERTISE_ADDRESS: {e}") from None
    if addr.version != 4 or addr.is_loopback or addr.is_link_local or addr.is_unspecified:
        # Endpoints validation refuses loopback and link-local addresses for the
        # `kubernetes` Service, so neither can be the advertise address.
        raise Fail(
            f"LAMINA_ADVERTISE_ADDRESS={adv}: need an IPv4 address that is neither "
            "loopback nor link-local"
        )
    return str(addr)


def _netdev(env: Mapping[str, str]) -> str:
    netdev = env_str(env, "LAMINA_NETDEV", "lamina0")
    if len(netdev) > 15 or not netdev.replace("-", "").replace("_", "").isalnum():
        raise Fail(f"LAMINA_NETDEV={netdev!r} is not a valid interface name")
    return netdev


def settings_from_env(
    env: Mapping[str, str], versions: Versions, *, state: Path, tier: Tier
) -> Settings:
    """The settings for `tier` from LAMINA_* variables (defaults in e2e/cluster's help).

    Checked in the order the variables are documented; the first bad one is the error."""
    etcd_port = env_port(env, "LAMINA_ETCD_PORT", 23790)
    etcd_peer_port = env_port(env, "LAMINA_ETCD_PEER_PORT", 23800)
    apiserver_port = env_port(env, "LAMINA_APISERVER_PORT", 16443)
    kcm_port = env_port(env, "LAMINA_KCM_PORT", 16257)
    scheduler_port = env_port(env, "LAMINA_SCHEDULER_PORT", 16259)
    kubelet_port = env_port(env, "LAMINA_KUBELET_PORT", 10250)
    kubelet_healthz_port = env_port(env, "LAMINA_KUBELET_HEALTHZ_PORT", 16248)
    proxy_healthz_port = env_port(env, "LAMINA_PROXY_HEALTHZ_PORT", 16254)
    registry_port = env_port(env, "LAMINA_REGISTRY_PORT", 5000)
    node_name = env_str(env, "LAMINA_NODE_NAME", "lamina-node")
    pod_cidr = _network(env, "LAMINA_POD_CIDR", "10.244.0.0/24")
    ports = [etcd_port, etcd_peer_port, apiserver_port, kcm_port]
    if tier == "node":
        ports += [scheduler_port, kubelet_healthz_port, proxy_healthz_port, proxy_healthz_port + 1]
    if len(set(ports)) != len(ports):
        raise Fail(f"the LAMINA_*_PORT settings must differ, got {ports}")
    service_cidr = _network(env, "LAMINA_SERVICE_CIDR", "10.96.0.0/16")
    advertise = _advertise(env)
    netdev = _netdev(env)
    start_timeout = float(env_int(env, "LAMINA_START_TIMEOUT", 180))
    return Settings(
        state=state,
        tier=tier,
        etcd_port=etcd_port,
        etcd_peer_port=etcd_peer_port,
        apiserver_port=apiserver_port,
        kcm_port=kcm_port,
        scheduler_port=scheduler_port,
        kubelet_port=kubelet_port,
        kubelet_healthz_port=kubelet_healthz_port,
        proxy_healthz_port=proxy_healthz_port,
        registry_port=registry_port,
        node_name=node_name,
        pod_cidr=pod_cidr,
        service_cidr=service_cidr,
        advertise=advertise,
        netdev=netdev,
        start_timeout=start_timeout,
        k8s_version=versions.k8s,
        etcd_version=versions.etcd,
        cache=versions.cache,
        containerd_version=versions.containerd,
        pause_image=f"registry.k8s.io/pause:{versions.pause}",
    )
