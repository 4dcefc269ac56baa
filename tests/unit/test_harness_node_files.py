"""The node tier's configuration files (containerd, registry mirrors, CNI, kubelet,
kube-proxy, Lamina's registries.yaml) for given settings."""

from __future__ import annotations

import json
import tomllib

from harness.config.node_files import (
    MIRRORED,
    containerd_config,
    hosts_toml,
    node_config_files,
)
from tests.unit.test_harness_settings import STATE, make_settings

NODE = {
    "LAMINA_ADVERTISE_ADDRESS": "10.213.1.8",
    "LAMINA_REGISTRY_PORT": "5108",
    "LAMINA_POD_CIDR": "10.55.0.0/24",
    "LAMINA_SERVICE_CIDR": "10.100.0.0/16",
    "LAMINA_KUBELET_HEALTHZ_PORT": "17083",
    "LAMINA_PROXY_HEALTHZ_PORT": "17084",
    "LAMINA_NODE_NAME": "n1",
}


def files() -> dict[str, str]:
    return {
        str(p.relative_to(STATE)): text
        for p, text in node_config_files(make_settings("node", **NODE)).items()
    }


def test_every_file_is_under_the_state_dir() -> None:
    s = make_settings("node", **NODE)
    assert all(p.is_relative_to(STATE) for p in node_config_files(s))
    assert set(files()) == {
        "containerd/config.toml",
        *(f"containerd/certs.d/{h}/hosts.toml" for h in (*MIRRORED, "_default", s.registry)),
        "containerd/cni/net.d/10-lamina.conflist",
        "resolv.conf",
        "kubelet-config.yaml",
        "kube-proxy-config.yaml",
        "registries.yaml",
    }


def test_containerd_config_keeps_everything_under_the_state_dir_and_pins_pause() -> None:
    cfg = tomllib.loads(containerd_config(make_settings("node", **NODE)))
    ctrd = str(STATE / "containerd")
    assert cfg["version"] == 3
    assert (cfg["root"], cfg["state"]) == (f"{ctrd}/root", f"{ctrd}/state")
    assert cfg["grpc"]["address"] == f"{ctrd}/containerd.sock"
    plugins = cfg["plugins"]
    images = plugins["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.10.1"
    assert images["registry"]["config_path"] == f"{ctrd}/certs.d"
    runtime = plugins["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]["options"]
    assert runc == {"BinaryName": "/usr/sbin/runc", "Root": f"{ctrd}/runc", "SystemdCgroup": False}
    assert runtime["cni"]["conf_dir"] == f"{ctrd}/cni/net.d"
    assert runtime["cni"]["bin_dirs"] == ["/usr/lib/cni"]
    assert plugins["io.containerd.grpc.v1.cri"]["disable_tcp_service"] is True


def test_every_mirrored_registry_goes_to_the_local_one_over_http() -> None:
    text = hosts_toml("10.213.1.8:5108")
    parsed = tomllib.loads(text)
    assert parsed["server"] == "http://10.213.1.8:5108"
    assert parsed["host"]["http://10.213.1.8:5108"]["capabilities"] == ["pull", "resolve", "push"]
    for host in (*MIRRORED, "_default", "10.213.1.8:5108"):
        assert files()[f"containerd/certs.d/{host}/hosts.toml"] == text


def test_pods_get_routes_to_services_and_the_advertise_address_only() -> None:
    conf = json.loads(files()["containerd/cni/net.d/10-lamina.conflist"])
    bridge, portmap = conf["plugins"]
    assert (bridge["type"], bridge["bridge"], bridge["ipMasq"]) == ("bridge", "cni0", False)
    ipam = bridge["ipam"]
    assert ipam["ranges"] == [[{"subnet": "10.55.0.0/24", "gateway": "10.55.0.1"}]]
    assert ipam["routes"] == [{"dst": "10.100.0.0/16"}, {"dst": "10.213.1.8/32"}]
    assert not any(r["dst"] in ("0.0.0.0/0", "default") for r in ipam["routes"])
    assert ipam["dataDir"] == str(STATE / "containerd" / "cni" / "ipam")
    assert portmap["type"] == "portmap"


def test_kubelet_config_for_the_settings() -> None:
    cfg = json.loads(files()["kubelet-config.yaml"])
    assert cfg["kind"] == "KubeletConfiguration"
    assert (cfg["address"], cfg["port"], cfg["readOnlyPort"]) == ("10.213.1.8", 10250, 0)
    assert (cfg["healthzBindAddress"], cfg["healthzPort"]) == ("127.0.0.1", 17083)
    assert cfg["containerRuntimeEndpoint"] == f"unix://{STATE / 'containerd' / 'containerd.sock'}"
    assert cfg["authentication"]["anonymous"] == {"enabled": False}
    assert cfg["authentication"]["x509"]["clientCAFile"] == str(STATE / "pki" / "ca.crt")
    assert cfg["authorization"] == {"mode": "Webhook"}
    assert (cfg["cgroupDriver"], cfg["failSwapOn"], cfg["failCgroupV1"]) == (
        "cgroupfs",
        False,
        False,
    )
    assert cfg["resolvConf"] == str(STATE / "resolv.conf")
    assert cfg["imageGCHighThresholdPercent"] == 100
    assert files()["resolv.conf"].splitlines()[1] == "nameserver 127.0.0.1"


def test_kube_proxy_config_for_the_settings() -> None:
    cfg = json.loads(files()["kube-proxy-config.yaml"])
    assert cfg["mode"] == "iptables"
    assert cfg["clientConnection"]["kubeconfig"] == str(
        STATE / "kubeconfig" / "kube-proxy.kubeconfig"
    )
    assert cfg["hostnameOverride"] == "n1"
    assert cfg["clusterCIDR"] == "10.55.0.0/24"
    assert cfg["healthzBindAddress"] == "127.0.0.1:17084"
    assert cfg["metricsBindAddress"] == "127.0.0.1:17085"
    assert cfg["nodePortAddresses"] == ["10.213.1.8/32"]
    assert cfg["conntrack"]["maxPerCore"] == 0


def test_laminas_registry_settings_mirror_the_same_registries() -> None:
    lines = files()["registries.yaml"].splitlines()
    body = [ln for ln in lines if not ln.startswith("#")]
    assert body[0] == "registries:"
    for host in MIRRORED:
        i = body.index(f"  {host}:")
        assert body[i + 1] == "    mirrors: [http://10.213.1.8:5108]"
    assert body[-2:] == ['  "10.213.1.8:5108":', "    insecure: true"]
