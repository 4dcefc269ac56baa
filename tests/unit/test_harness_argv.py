"""The command line of every component the harness starts, for given settings."""

from __future__ import annotations

import pytest

from harness.components import API_COMPONENTS, COMPONENTS, NODE_COMPONENTS
from harness.config.argv import ARGV, apiserver_argv, component_env, component_ports
from tests.unit.test_harness_settings import STATE, make_settings

PKI = STATE / "pki"


def flags(argv: list[str]) -> dict[str, str]:
    """--name=value flags of a command line (the harness always writes them so)."""
    out = {}
    for arg in argv[1:]:
        name, _, value = arg.partition("=")
        assert name.startswith("--"), arg
        assert name not in out, f"{name} given twice"
        out[name] = value
    return out


def test_every_component_has_a_command_line_and_the_tiers_are_nested() -> None:
    assert set(ARGV) == set(NODE_COMPONENTS)
    assert NODE_COMPONENTS[: len(API_COMPONENTS)] == API_COMPONENTS
    assert COMPONENTS == {"api": API_COMPONENTS, "node": NODE_COMPONENTS}


def test_etcd_listens_on_loopback_with_its_ports_and_throwaway_data() -> None:
    argv = ARGV["etcd"](make_settings(LAMINA_ETCD_PORT="24080", LAMINA_ETCD_PEER_PORT="24081"))
    assert argv[0] == "/cache/lamina/bin/etcd-v3.6.16/etcd"
    f = flags(argv)
    assert f["--data-dir"] == str(STATE / "etcd")
    assert f["--listen-client-urls"] == f["--advertise-client-urls"] == "http://127.0.0.1:24080"
    assert f["--listen-peer-urls"] == "http://127.0.0.1:24081"
    assert f["--initial-cluster"] == "lamina=http://127.0.0.1:24081"
    assert f["--unsafe-no-fsync"] == "true"


def test_apiserver_api_tier_binds_loopback_and_uses_the_pki() -> None:
    s = make_settings(
        LAMINA_APISERVER_PORT="17080",
        LAMINA_ETCD_PORT="24080",
        LAMINA_ADVERTISE_ADDRESS="10.213.1.8",
        LAMINA_SERVICE_CIDR="10.100.0.0/24",
    )
    argv = apiserver_argv(s)
    assert argv[0] == "/cache/lamina/bin/kubernetes-v1.34.4/kube-apiserver"
    f = flags(argv)
    assert f["--bind-address"] == "127.0.0.1"
    assert f["--secure-port"] == "17080"
    assert f["--etcd-servers"] == "http://127.0.0.1:24080"
    assert f["--advertise-address"] == "10.213.1.8"
    assert f["--service-cluster-ip-range"] == "10.100.0.0/24"
    assert f["--tls-cert-file"] == str(PKI / "apiserver.crt")
    assert f["--client-ca-file"] == str(PKI / "ca.crt")
    assert f["--service-account-key-file"] == str(PKI / "sa.pub")
    assert f["--service-account-signing-key-file"] == str(PKI / "sa.key")
    assert f["--requestheader-client-ca-file"] == str(PKI / "front-proxy-ca.crt")
    assert f["--authorization-mode"] == "Node,RBAC"
    assert f["--enable-admission-plugins"] == "NodeRestriction"
    assert not any(a.startswith("--kubelet-") for a in argv)


def test_apiserver_node_tier_binds_everywhere_and_talks_to_the_kubelet() -> None:
    api = apiserver_argv(make_settings("api"))
    node = apiserver_argv(make_settings("node"))
    f = flags(node)
    assert f["--bind-address"] == "0.0.0.0"
    assert f["--kubelet-client-certificate"] == str(PKI / "apiserver-kubelet-client.crt")
    assert f["--kubelet-client-key"] == str(PKI / "apiserver-kubelet-client.key")
    assert f["--kubelet-preferred-address-types"] == "InternalIP"
    # Only those differ: the same control plane serves both tiers.
    assert set(node) - set(api) == {
        "--bind-address=0.0.0.0",
        f"--kubelet-client-certificate={PKI / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={PKI / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP",
    }


def test_controller_manager_publishes_the_root_ca_and_signs_with_the_cluster_ca() -> None:
    f = flags(ARGV["kube-controller-manager"](make_settings(LAMINA_KCM_PORT="17081")))
    kc = str(STATE / "kubeconfig" / "kube-controller-manager.kubeconfig")
    assert f["--kubeconfig"] == f["--authentication-kubeconfig"] == kc
    assert f["--secure-port"] == "17081"
    assert f["--bind-address"] == "127.0.0.1"
    assert f["--root-ca-file"] == str(PKI / "ca.crt")
    assert f["--service-account-private-key-file"] == str(PKI / "sa.key")
    assert f["--cluster-signing-key-file"] == str(PKI / "ca.key")
    assert f["--flex-volume-plugin-dir"] == str(STATE / "flexvolume")
    assert f["--leader-elect"] == "false"


def test_node_components_use_their_configs_under_the_state_dir() -> None:
    s = make_settings("node", LAMINA_NODE_NAME="n1", LAMINA_ADVERTISE_ADDRESS="10.213.0.2")
    sched = flags(ARGV["kube-scheduler"](s))
    assert sched["--kubeconfig"] == str(STATE / "kubeconfig" / "kube-scheduler.kubeconfig")
    assert sched["--secure-port"] == "16259"
    ctrd = ARGV["containerd"](s)
    assert ctrd[0] == "/cache/lamina/bin/containerd-v2.2.9/containerd"
    assert flags(ctrd)["--config"] == str(STATE / "containerd" / "config.toml")
    kubelet = flags(ARGV["kubelet"](s))
    assert kubelet["--config"] == str(STATE / "kubelet-config.yaml")
    assert kubelet["--kubeconfig"] == str(STATE / "kubeconfig" / "kubelet.kubeconfig")
    assert kubelet["--root-dir"] == str(STATE / "kubelet")
    assert kubelet["--hostname-override"] == "n1"
    assert kubelet["--node-ip"] == "10.213.0.2"
    proxy = flags(ARGV["kube-proxy"](s))
    assert proxy["--config"] == str(STATE / "kube-proxy-config.yaml")


@pytest.mark.parametrize(
    ("component", "expected"),
    [
        ("etcd", [("LAMINA_ETCD_PORT", 23790), ("LAMINA_ETCD_PEER_PORT", 23800)]),
        ("kube-apiserver", [("LAMINA_APISERVER_PORT", 16443)]),
        ("containerd", []),
        (
            "kube-proxy",
            [
                ("LAMINA_PROXY_HEALTHZ_PORT", 16254),
                ("LAMINA_PROXY_HEALTHZ_PORT (+1, metrics)", 16255),
            ],
        ),
    ],
)
def test_ports_checked_before_a_start_name_the_variable_that_moves_them(
    component: str, expected: list[tuple[str, int]]
) -> None:
    assert component_ports(make_settings("node"), component) == expected


def test_only_the_runtime_pieces_get_a_path_with_containerds_shim() -> None:
    s = make_settings("node")
    environ = {"PATH": "/usr/bin", "HOME": "/root"}
    assert component_env(s, "kube-apiserver", environ) is None
    env = component_env(s, "containerd", environ)
    assert env is not None
    assert env["HOME"] == "/root"
    assert env["PATH"].split(":")[0] == "/cache/lamina/bin/containerd-v2.2.9"
    assert "/usr/sbin" in env["PATH"].split(":")
    assert environ["PATH"] == "/usr/bin"  # the caller's environment is not changed
