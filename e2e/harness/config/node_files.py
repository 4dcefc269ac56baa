"""The node tier's configuration files, from the settings: containerd's config.toml and its
registry hosts.toml files, the CNI network, the kubelet's and kube-proxy's configurations, the
pods' resolv.conf and Lamina's own registry settings."""

from __future__ import annotations

import json
from pathlib import Path

from harness.settings import Settings

CNI_BIN_DIR = "/usr/lib/cni"
RUNC = "/usr/sbin/runc"
# Registries whose pulls containerd (and Lamina) send to the local registry.
MIRRORED = ("docker.io", "registry.k8s.io", "ghcr.io", "quay.io")


def containerd_config(s: Settings) -> str:
    c = s.ctrd
    return f"""# Written by e2e/cluster: containerd for Lamina's node.
version = 3
root = '{c / "root"}'
state = '{c / "state"}'
temp = '{c / "tmp"}'
imports = []
disabled_plugins = [
  'io.containerd.snapshotter.v1.btrfs', 'io.containerd.snapshotter.v1.zfs',
  'io.containerd.snapshotter.v1.devmapper', 'io.containerd.snapshotter.v1.blockfile',
  'io.containerd.snapshotter.v1.erofs', 'io.containerd.differ.v1.erofs',
  'io.containerd.mount-handler.v1.erofs', 'io.containerd.nri.v1.nri',
  'io.containerd.tracing.processor.v1.otlp', 'io.containerd.internal.v1.tracing',
]

[grpc]
  address = '{s.containerd_sock}'

[ttrpc]
  address = '{c / "containerd.sock.ttrpc"}'

[debug]
  address = ''

[metrics]
  address = ''

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = '{c / "opt"}'

  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = '{c / "image-verifier"}'

  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'

    # Pinned: the kubelet's image GC never removes it (the reason for containerd 2.x here).
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{s.pause_image}'

    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = '{c / "certs.d"}'

  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    # This machine withholds CAP_SYS_RESOURCE: lowering oom_score_adj below containerd's own
    # (the kubelet asks -998 for pause) fails with EPERM, so keep it at or above ours.
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    enable_cdi = false
    cdi_spec_dirs = []
    enable_criu = false

    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'

        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{RUNC}'
          Root = '{c / "runc"}'
          SystemdCgroup = false

    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['{CNI_BIN_DIR}']
      conf_dir = '{c / "cni" / "net.d"}'
      max_conf_num = 1

  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'

  [plugins.'io.containerd.transfer.v1.local']
    config_path = '{c / "certs.d"}'
"""


def hosts_toml(registry: str) -> str:
    """containerd's hosts.toml for one mirrored registry: everything goes to `registry`.

    `server` is the local registry too: if it lacks an image the pull fails here instead of
    going to the internet (nothing leaves the machine).  Plain HTTP."""
    url = f"http://{registry}"
    return (
        f'server = "{url}"\n\n[host."{url}"]\n'
        '  capabilities = ["pull", "resolve", "push"]\n  skip_verify = true\n'
    )


def hosts_toml_files(s: Settings) -> dict[Path, str]:
    return {
        s.ctrd / "certs.d" / host / "hosts.toml": hosts_toml(s.registry)
        for host in (*MIRRORED, "_default", s.registry)
    }


def cni_conflist(s: Settings) -> str:
    c = s.ctrd
    pod_routes = [{"dst": str(s.service_cidr)}, {"dst": f"{s.advertise}/32"}]
    return (
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "lamina",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": "cni0",
                        "isGateway": True,
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": str(s.pod_cidr), "gateway": s.pod_gateway}]],
                            # No default route: a pod can reach pods, Services and the
                            # advertise address (API server, registry), nothing off this machine.
                            "routes": pod_routes,
                            "dataDir": str(c / "cni" / "ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            },
            indent=2,
        )
        + "\n"
    )


def resolv_conf() -> str:
    return (
        "# e2e/cluster: no DNS server in this cluster (pods use KUBERNETES_SERVICE_HOST)\n"
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
    )


def kubelet_config(s: Settings) -> str:
    pki = s.pki
    return (
        json.dumps(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "address": s.advertise,
                "port": s.kubelet_port,
                "readOnlyPort": 0,
                "healthzBindAddress": "127.0.0.1",
                "healthzPort": s.kubelet_healthz_port,
                "authentication": {
                    "anonymous": {"enabled": False},
                    "webhook": {"enabled": True},
                    "x509": {"clientCAFile": str(pki / "ca.crt")},
                },
                "authorization": {"mode": "Webhook"},
                "cgroupDriver": "cgroupfs",
                "failSwapOn": False,
                "failCgroupV1": False,
                "containerRuntimeEndpoint": f"unix://{s.containerd_sock}",
                "clusterDomain": "cluster.local",
                "resolvConf": str(s.state / "resolv.conf"),
                "podLogsDir": str(s.state / "pod-logs"),
                "volumePluginDir": str(s.state / "kubelet-plugins"),
                # Relaxed: a filling disk never evicts pods or GCs images during a test run.
                "imageGCHighThresholdPercent": 100,
                "imageGCLowThresholdPercent": 99,
                "evictionHard": {
                    "memory.available": "100Mi",
                    "nodefs.available": "1%",
                    "nodefs.inodesFree": "1%",
                    "imagefs.available": "1%",
                    "imagefs.inodesFree": "1%",
                },
                "evictionPressureTransitionPeriod": "30s",
                "serializeImagePulls": False,
                "maxPods": 110,
                "rotateCertificates": False,
                "serverTLSBootstrap": False,
                "protectKernelDefaults": False,
                "shutdownGracePeriod": "0s",
                "nodeStatusReportFrequency": "10s",
                "nodeStatusUpdateFrequency": "5s",
                "syncFrequency": "10s",
                "fileCheckFrequency": "10s",
                "logging": {"format": "text"},
            },
            indent=2,
        )
        + "\n"
    )


def kube_proxy_config(s: Settings) -> str:
    return (
        json.dumps(
            {
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "clientConnection": {
                    "kubeconfig": str(s.kubeconfig / "kube-proxy.kubeconfig"),
                    "qps": 50,
                    "burst": 100,
                },
                "mode": "iptables",
                "hostnameOverride": s.node_name,
                "clusterCIDR": str(s.pod_cidr),
                "healthzBindAddress": f"127.0.0.1:{s.proxy_healthz_port}",
                "metricsBindAddress": f"127.0.0.1:{s.proxy_metrics_port}",
                "nodePortAddresses": [f"{s.advertise}/32"],
                # Leave the host's conntrack sysctls alone (0 = as they are).
                "conntrack": {
                    "maxPerCore": 0,
                    "min": 0,
                    "tcpEstablishedTimeout": "0s",
                    "tcpCloseWaitTimeout": "0s",
                },
                "iptables": {
                    "localhostNodePorts": False,
                    "syncPeriod": "30s",
                    "minSyncPeriod": "1s",
                },
            },
            indent=2,
        )
        + "\n"
    )


def lamina_registries_yaml(s: Settings) -> str:
    """Lamina's own registry settings (LAMINA_REGISTRY_CONFIG): the same mirrors as containerd."""
    url = f"http://{s.registry}"
    lines = [
        "# Written by e2e/cluster: registry settings for Lamina (LAMINA_REGISTRY_CONFIG).",
        "# registries.<host>.mirrors: tried in order instead of <host> for pulls;",
        "# registries.<host>.insecure: speak plain HTTP to <host>.",
        "registries:",
    ]
    for host in MIRRORED:
        lines += [f"  {host}:", f"    mirrors: [{url}]"]
    lines += [f'  "{s.registry}":', "    insecure: true"]
    return "\n".join(lines) + "\n"


def node_config_files(s: Settings) -> dict[Path, str]:
    """Every configuration file of the node tier, by path (all under the state dir)."""
    files: dict[Path, str] = {s.ctrd / "config.toml": containerd_config(s)}
    files |= hosts_toml_files(s)
    files[s.ctrd / "cni" / "net.d" / "10-lamina.conflist"] = cni_conflist(s)
    files[s.state / "resolv.conf"] = resolv_conf()
    files[s.state / "kubelet-config.yaml"] = kubelet_config(s)
    files[s.state / "kube-proxy-config.yaml"] = kube_proxy_config(s)
    files[s.registries_yaml] = lamina_registries_yaml(s)
    return files
