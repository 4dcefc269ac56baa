"""The command line of every component, from the settings."""

from __future__ import annotations

from collections.abc import Callable

from harness.settings import Settings


def etcd_argv(s: Settings) -> list[str]:
    client = f"http://127.0.0.1:{s.etcd_port}"
    peer = f"http://127.0.0.1:{s.etcd_peer_port}"
    return [
        str(s.etcd_bin / "etcd"),
        "--name=lamina",
        f"--data-dir={s.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=lamina={peer}",
        "--initial-cluster-state=new",
        "--initial-cluster-token=lamina",
        # Throw-away test data: no fsync makes every API write much faster.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def apiserver_argv(s: Settings) -> list[str]:
    p = s.pki
    argv = [
        str(s.k8s_bin / "kube-apiserver"),
        f"--etcd-servers={s.etcd_url}",
        "--bind-address=127.0.0.1",
        f"--secure-port={s.apiserver_port}",
        f"--advertise-address={s.advertise}",
        f"--cert-dir={s.state / 'apiserver-certs'}",
        f"--tls-cert-file={p / 'apiserver.crt'}",
        f"--tls-private-key-file={p / 'apiserver.key'}",
        f"--client-ca-file={p / 'ca.crt'}",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        f"--service-cluster-ip-range={s.service_cidr}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={p / 'sa.pub'}",
        f"--service-account-signing-key-file={p / 'sa.key'}",
        f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
        "--enable-admission-plugins=NodeRestriction",
        "--profiling=false",
        "--v=1",
    ]
    if s.tier == "node":
        # Pods reach the API server through the `kubernetes` Service, whose endpoint is the
        # advertise address, and the host keeps using 127.0.0.1: one --bind-address can only
        # be both as 0.0.0.0.  The LAMINA-INPUT chain (host preparation) accepts the port only
        # from lo (the host, incl. the advertise address) and cni0 (pods), nothing from outside.
        argv[argv.index("--bind-address=127.0.0.1")] = "--bind-address=0.0.0.0"
        argv += [
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
        ]
    return argv


def kcm_argv(s: Settings) -> list[str]:
    p = s.pki
    kc = s.kubeconfig / "kube-controller-manager.kubeconfig"
    return [
        str(s.k8s_bin / "kube-controller-manager"),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1",
        f"--secure-port={s.kcm_port}",
        f"--cert-dir={s.state / 'kcm-certs'}",
        f"--root-ca-file={p / 'ca.crt'}",
        f"--service-account-private-key-file={p / 'sa.key'}",
        "--use-service-account-credentials=true",
        f"--cluster-signing-cert-file={p / 'ca.crt'}",
        f"--cluster-signing-key-file={p / 'ca.key'}",
        f"--service-cluster-ip-range={s.service_cidr}",
        "--leader-elect=false",
        "--controllers=*",
        # A test cluster: client-side throttling (default 20 qps) only slows start-up (each
        # controller gets its own service-account credentials) and reconciliation.
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        # Default is /usr/libexec/kubernetes/...; it would be created outside the state dir.
        f"--flex-volume-plugin-dir={s.state / 'flexvolume'}",
        "--profiling=false",
        "--v=1",
    ]


def scheduler_argv(s: Settings) -> list[str]:
    kc = s.kubeconfig / "kube-scheduler.kubeconfig"
    return [
        str(s.k8s_bin / "kube-scheduler"),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1",
        f"--secure-port={s.scheduler_port}",
        f"--cert-dir={s.state / 'scheduler-certs'}",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ]


def containerd_argv(s: Settings) -> list[str]:
    return [
        str(s.containerd_bin / "containerd"),
        f"--config={s.ctrd / 'config.toml'}",
        "--log-level=warn",
    ]


def kubelet_argv(s: Settings) -> list[str]:
    return [
        str(s.k8s_bin / "kubelet"),
        f"--config={s.state / 'kubelet-config.yaml'}",
        f"--kubeconfig={s.kubeconfig / 'kubelet.kubeconfig'}",
        f"--root-dir={s.state / 'kubelet'}",
        f"--cert-dir={s.state / 'kubelet' / 'pki'}",
        f"--hostname-override={s.node_name}",
        f"--node-ip={s.advertise}",
        "--v=1",
    ]


def proxy_argv(s: Settings) -> list[str]:
    return [
        str(s.k8s_bin / "kube-proxy"),
        f"--config={s.state / 'kube-proxy-config.yaml'}",
        "--v=1",
    ]


ARGV: dict[str, Callable[[Settings], list[str]]] = {
    "etcd": etcd_argv,
    "kube-apiserver": apiserver_argv,
    "kube-controller-manager": kcm_argv,
    "kube-scheduler": scheduler_argv,
    "containerd": containerd_argv,
    "kubelet": kubelet_argv,
    "kube-proxy": proxy_argv,
}


def component_ports(s: Settings, name: str) -> list[tuple[str, int]]:
    """The 127.0.0.1 ports a component listens on, each with the variable that moves it."""
    ports: dict[str, list[tuple[str, int]]] = {
        "etcd": [("LAMINA_ETCD_PORT", s.etcd_port), ("LAMINA_ETCD_PEER_PORT", s.etcd_peer_port)],
        "kube-apiserver": [("LAMINA_APISERVER_PORT", s.apiserver_port)],
        "kube-controller-manager": [("LAMINA_KCM_PORT", s.kcm_port)],
        "kube-scheduler": [("LAMINA_SCHEDULER_PORT", s.scheduler_port)],
        "containerd": [],
        "kubelet": [("LAMINA_KUBELET_HEALTHZ_PORT", s.kubelet_healthz_port)],
        "kube-proxy": [
            ("LAMINA_PROXY_HEALTHZ_PORT", s.proxy_healthz_port),
            ("LAMINA_PROXY_HEALTHZ_PORT (+1, metrics)", s.proxy_metrics_port),
        ],
    }
    return ports[name]


def component_env(s: Settings, name: str, environ: dict[str, str]) -> dict[str, str] | None:
    """The environment of a component: the caller's (None), or for the node's runtime pieces
    a PATH on which containerd finds its shim and runc, iptables and mount are found."""
    if name not in ("containerd", "kubelet", "kube-proxy"):
        return None
    path = f"{s.containerd_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return dict(environ, PATH=path)
