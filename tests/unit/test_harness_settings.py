"""The cluster harness's settings: defaults, overrides and refusals, from the environment."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from harness.errors import Fail
from harness.settings import Settings, Tier, Versions, as_tier, settings_from_env

VERSIONS = Versions(
    k8s="v1.34.4",
    etcd="v3.6.16",
    cache=Path("/cache/lamina"),
    containerd="v2.2.9",
    pause="3.10.1",
)
STATE = Path("/state/cluster")


def make_settings(tier: Tier = "api", **env: str) -> Settings:
    """Settings for `tier` from exactly these LAMINA_* variables."""
    return settings_from_env(env, VERSIONS, state=STATE, tier=tier)


def test_defaults_are_the_documented_ones() -> None:
    s = make_settings("node")
    assert (s.etcd_port, s.etcd_peer_port, s.apiserver_port, s.kcm_port) == (
        23790,
        23800,
        16443,
        16257,
    )
    assert (s.scheduler_port, s.kubelet_port, s.kubelet_healthz_port) == (16259, 10250, 16248)
    assert (s.proxy_healthz_port, s.proxy_metrics_port, s.registry_port) == (16254, 16255, 5000)
    assert s.pod_cidr == ipaddress.ip_network("10.244.0.0/24")
    assert s.service_cidr == ipaddress.ip_network("10.96.0.0/16")
    assert (s.advertise, s.netdev, s.node_name) == ("10.213.0.1", "lamina0", "lamina-node")
    assert s.start_timeout == 180.0
    assert s.pause_image == "registry.k8s.io/pause:3.10.1"


def test_derived_addresses_and_layout() -> None:
    s = make_settings(
        "node",
        LAMINA_POD_CIDR="10.55.0.0/16",
        LAMINA_SERVICE_CIDR="10.100.0.0/24",
        LAMINA_ADVERTISE_ADDRESS="10.213.1.8",
        LAMINA_REGISTRY_PORT="5108",
        LAMINA_APISERVER_PORT="17080",
    )
    assert s.pod_gateway == "10.55.0.1"
    assert s.first_service_ip == "10.100.0.1"
    assert s.registry == "10.213.1.8:5108"
    assert s.apiserver_url == "https://127.0.0.1:17080"
    assert s.admin_kubeconfig == STATE / "kubeconfig" / "admin.kubeconfig"
    assert s.containerd_sock == STATE / "containerd" / "containerd.sock"
    assert s.k8s_bin == Path("/cache/lamina/bin/kubernetes-v1.34.4")
    assert s.etcd_bin == Path("/cache/lamina/bin/etcd-v3.6.16")
    assert s.containerd_bin == Path("/cache/lamina/bin/containerd-v2.2.9")
    assert s.kubectl == s.k8s_bin / "kubectl"


def test_blank_values_mean_the_default() -> None:
    s = make_settings(LAMINA_ETCD_PORT="  ", LAMINA_NETDEV="", LAMINA_NODE_NAME=" ")
    assert (s.etcd_port, s.netdev, s.node_name) == (23790, "lamina0", "lamina-node")


@pytest.mark.parametrize(
    ("env", "tier", "message"),
    [
        ({"LAMINA_ETCD_PORT": "x"}, "api", "LAMINA_ETCD_PORT='x' is not an integer"),
        ({"LAMINA_KCM_PORT": "0"}, "api", "LAMINA_KCM_PORT=0 is not a TCP port"),
        ({"LAMINA_REGISTRY_PORT": "65536"}, "api", "LAMINA_REGISTRY_PORT=65536 is not a TCP port"),
        ({"LAMINA_START_TIMEOUT": "1.5"}, "api", "LAMINA_START_TIMEOUT='1.5' is not an integer"),
        (
            {"LAMINA_POD_CIDR": "10.0.0.1/24"},
            "api",
            "LAMINA_POD_CIDR='10.0.0.1/24': 10.0.0.1/24 has host bits set",
        ),
        (
            {"LAMINA_ADVERTISE_ADDRESS": "127.0.0.2"},
            "api",
            "LAMINA_ADVERTISE_ADDRESS=127.0.0.2: need an IPv4 address that is neither loopback "
            "nor link-local",
        ),
        (
            {"LAMINA_ADVERTISE_ADDRESS": "169.254.1.1"},
            "api",
            "LAMINA_ADVERTISE_ADDRESS=169.254.1.1: need an IPv4 address",
        ),
        ({"LAMINA_ADVERTISE_ADDRESS": "fd00::1"}, "api", "need an IPv4 address"),
        ({"LAMINA_NETDEV": "a b"}, "api", "LAMINA_NETDEV='a b' is not a valid interface name"),
        ({"LAMINA_NETDEV": "x" * 16}, "api", "is not a valid interface name"),
        (
            {"LAMINA_KCM_PORT": "23790"},
            "api",
            "the LAMINA_*_PORT settings must differ, got [23790, 23800, 16443, 23790]",
        ),
        # The proxy's metrics port is its healthz port + 1.
        (
            {"LAMINA_PROXY_HEALTHZ_PORT": "16258", "LAMINA_SCHEDULER_PORT": "16259"},
            "node",
            "the LAMINA_*_PORT settings must differ",
        ),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(
    env: dict[str, str], tier: Tier, message: str
) -> None:
    with pytest.raises(Fail) as refused:
        make_settings(tier, **env)
    assert message in str(refused.value)
    assert refused.value.code == 1


def test_node_ports_only_have_to_differ_on_the_node_tier() -> None:
    clash = {"LAMINA_SCHEDULER_PORT": "23790"}
    assert make_settings("api", **clash).scheduler_port == 23790
    with pytest.raises(Fail, match="must differ"):
        make_settings("node", **clash)


def test_a_recorded_tier_is_node_or_else_api() -> None:
    assert as_tier("node") == "node"
    assert [as_tier(v) for v in ("api", None, "", "kind", 3)] == ["api"] * 5
