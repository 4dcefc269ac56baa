"""Lamina's local Kubernetes harness: a real single-node cluster, or just its control plane.

    e2e/cluster up [--tier node|api]  build what is missing, start the tier, wait until ready
    e2e/cluster down              stop what `up` started (by recorded PID), remove its state
                                  (but the logs, and the registry's storage: a cache)
    e2e/cluster status            one line per component; exit 0 when everything is healthy
    e2e/cluster kubeconfig        absolute path of the admin kubeconfig
    e2e/cluster kubectl ARGS...   the built kubectl, pointed at this cluster
    e2e/cluster env               shell exports (eval "$(e2e/cluster env)")
    e2e/cluster registry          host:port of the cluster's registry (node tier)

Tiers:
    api    etcd + kube-apiserver + kube-controller-manager (the API-server test tier)
    node   (default) the api tier + kube-scheduler, containerd, kubelet, kube-proxy, a CNI
           bridge and a local OCI registry, with images made offline (pause, busybox, a BuildKit
           builder, a Python base) pushed to it under their usual names.  See "Node tier" below.

On a host with a working Docker engine (`docker info` succeeds), `up` (node tier) runs kind
with e2e/kind.yaml instead (LAMINA_USE_KIND=0 forces the built-in node, =1 forces kind).

Standard library only: it runs before any virtualenv exists.  Certificates are made with the
openssl CLI.  Everything lives in one state directory (LAMINA_STATE_DIR, default
<repo>/.state/cluster); binaries are built once into $LAMINA_CACHE by e2e/lib/build-binaries.sh.
Each component logs to <state>/logs/<component>.log; `down` keeps the logs, and a fresh `up`
moves the previous run's to <component>.log.1.  When a component fails to start, `up` prints
the end of its log and exits 1.

Networking (api tier; the node tier's differences are below): every listener is on
127.0.0.1.  kube-apiserver also needs a *non-loopback* advertise address (it publishes it as
the endpoint of the `kubernetes` Service, and Endpoints validation refuses loopback and
link-local addresses), so `up` puts one /32 address on a device of its own (a `dummy` link,
or, on kernels without the dummy driver, a bridge with no ports, which behaves the same) and
`down` deletes that device.  A /32 adds a single local route, so nothing is routed off the
machine.

Process safety: each started process is recorded with its PID, its kernel start time and its
executable; `down` only signals a PID whose start time and executable still match, so a
recycled PID is never killed.

Node tier (everything under the state directory unless said otherwise):
    containerd 2.2 (built from Go modules by e2e/lib/build-binaries.sh: it pins the sandbox
    image registry.k8s.io/pause:$PAUSE_VERSION, which Debian's 1.6 cannot) with its root, state,
    sockets, runc root, CNI config and network namespaces under <state>/containerd.  runc, the
    CNI plugins, iptables, docker-registry, skopeo, umoci, debootstrap and busybox-static are
    Debian packages, installed through e2e/lib/packages.sh.  Pods get LAMINA_POD_CIDR on the
    bridge cni0 (CNI bridge + host-local IPAM) with routes only to the service range and the
    advertise address: no default route, so nothing a pod sends can leave the machine (a
    FORWARD rule also drops anything from the pod range leaving by another device).
    kube-proxy (iptables mode) carries the `kubernetes` Service to the API server, which in
    this tier listens on 0.0.0.0 (the host keeps using 127.0.0.1, pods reach the advertise
    address); the LAMINA-INPUT chain accepts its port only from lo and cni0.  No CoreDNS:
    pods use KUBERNETES_SERVICE_HOST/PORT, and their resolv.conf points at nothing.
    The registry is a second instance of e2e/registry (storage in <state>/registry, kept
    across `down` as a cache) on <advertise>:LAMINA_REGISTRY_PORT: one address for the host,
    pods (builds push there) and the node's pulls.  containerd's hosts.toml files
    (<state>/containerd/certs.d) send docker.io, registry.k8s.io, ghcr.io, quay.io and any
    other registry to it over plain HTTP; LAMINA_REGISTRY_CONFIG (from `env`) names a YAML
    file that says the same for Lamina.  e2e/lib/build-images.sh makes the images offline.
    Switching tiers keeps the control plane: `up` on a running api tier upgrades it in place,
    `up --tier api` on a running node tier stops the node's parts (as `down` does) and keeps
    etcd and its data; the API server restarts with its tier's flags.
    This machine withholds CAP_SYS_RESOURCE, so containerd runs with restrict_oom_score_adj
    (pods' oom_score_adj stays at or above containerd's own).
    `down` also kills the pods' processes (the kubepods cgroups) and the containerd shims
    (of our binary and our containerd's address: another containerd may share the binary),
    unmounts everything under the state directory, removes the kubepods cgroups, cni0 and its
    veths, the iptables chains and rules the cluster added (KUBE-*, CNI-*, LAMINA-*: only
    chains absent before `up`), the advertise device, the fixed paths the components use
    whatever their configuration (/run/containerd for the shims' sockets,
    /var/log/containers, /var/lib/cni, /var/lib/kubelet/device-plugins: only if `up` found
    them absent, and kept if another program has bound a socket under one since), and
    restores what host preparation changed: the sysctls net.ipv4.ip_forward and
    net.bridge.bridge-nf-call-ip(6)tables (this kernel has br_netfilter built in; no modprobe
    needed) and the propagation of / (made shared for pods' HostToContainer
    mounts, as systemd does on real nodes; private again after `down` if it was).

Settings (environment variables, with defaults):
    LAMINA_STATE_DIR            <repo>/.state/cluster
    LAMINA_ETCD_PORT            23790   etcd client port (127.0.0.1)
    LAMINA_ETCD_PEER_PORT       23800   etcd peer port (127.0.0.1)
    LAMINA_APISERVER_PORT       16443   kube-apiserver secure port (127.0.0.1)
    LAMINA_KCM_PORT             16257   kube-controller-manager secure (health) port (127.0.0.1)
    LAMINA_SERVICE_CIDR         10.96.0.0/16
    LAMINA_ADVERTISE_ADDRESS    10.213.0.1   (put on LAMINA_NETDEV unless already local)
    LAMINA_NETDEV               lamina0
    LAMINA_START_TIMEOUT        180     seconds to wait for each component to become ready
    LAMINA_SCHEDULER_PORT       16259   kube-scheduler secure (health) port (127.0.0.1)
    LAMINA_KUBELET_PORT         10250   kubelet API port (on the advertise address)
    LAMINA_KUBELET_HEALTHZ_PORT 16248   kubelet /healthz (127.0.0.1)
    LAMINA_PROXY_HEALTHZ_PORT   16254   kube-proxy /healthz (127.0.0.1); metrics on port + 1
    LAMINA_REGISTRY_PORT        5000    the registry's port (on the advertise address)
    LAMINA_POD_CIDR             10.244.0.0/24
    LAMINA_NODE_NAME            lamina-node
    K8S_VERSION, ETCD_VERSION, LAMINA_CACHE: see e2e/lib/versions.sh

Code: this launcher runs the standard-library package e2e/harness (`harness`): settings from
the environment (harness.settings), pure generators of every command line and configuration
file (harness.config), the machine-facing pieces (harness.host), the ordered, timed steps of
`up` (harness.steps) and one provider per runtime: the built-in node and kind
(harness.providers).
"""
