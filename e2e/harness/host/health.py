"""Health checks of every component, and waiting for one to pass."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from harness.errors import Fail
from harness.files import Record, tail
from harness.host.procs import load_record, record_alive
from harness.settings import Settings

Check = Callable[[Settings], tuple[bool, str]]


def http_get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:
            return int(r.status), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, ssl.SSLError) as e:
        return 0, str(getattr(e, "reason", e))


def admin_ssl(s: Settings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(s.pki / "ca.crt"))
    ctx.load_cert_chain(str(s.pki / "admin.crt"), str(s.pki / "admin.key"))
    return ctx


def self_signed_ssl(s: Settings) -> ssl.SSLContext:
    # kube-controller-manager (and the scheduler) serve /healthz with a self-signed certificate
    # they made themselves; it is on 127.0.0.1, so the check presents the admin certificate but
    # skips verification.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(str(s.pki / "admin.crt"), str(s.pki / "admin.key"))
    return ctx


def check_etcd(s: Settings) -> tuple[bool, str]:
    code, body = http_get(f"{s.etcd_url}/health")
    if code == 200:
        try:
            if json.loads(body).get("health") == "true":
                return True, "healthy"
        except ValueError:
            pass
    return False, f"/health: {code} {body.strip()[:200]}"


def check_apiserver(s: Settings) -> tuple[bool, str]:
    try:
        ctx = admin_ssl(s)
    except (OSError, ssl.SSLError) as e:
        return False, f"no admin credentials: {e}"
    code, body = http_get(f"{s.apiserver_url}/readyz", ctx)
    if code == 200:
        return True, "healthy (/readyz ok)"
    return False, f"/readyz: {code} {body.strip()[-300:]}"


def _check_local_healthz(s: Settings, port: int) -> tuple[bool, str]:
    try:
        ctx = self_signed_ssl(s)
    except (OSError, ssl.SSLError) as e:
        return False, f"no admin credentials: {e}"
    code, body = http_get(f"https://127.0.0.1:{port}/healthz", ctx)
    if code == 200:
        return True, "healthy (/healthz ok)"
    return False, f"/healthz: {code} {body.strip()[-300:]}"


def check_kcm(s: Settings) -> tuple[bool, str]:
    return _check_local_healthz(s, s.kcm_port)


def check_scheduler(s: Settings) -> tuple[bool, str]:
    return _check_local_healthz(s, s.scheduler_port)


def check_default_sa(s: Settings) -> tuple[bool, str]:
    """The controller manager created the `default` ServiceAccount and the root CA ConfigMap:
    Pods (and workloads that create them) are accepted from here on."""
    ctx = admin_ssl(s)
    for path in (
        "/api/v1/namespaces/default/serviceaccounts/default",
        "/api/v1/namespaces/default/configmaps/kube-root-ca.crt",
    ):
        code, _body = http_get(s.apiserver_url + path, ctx)
        if code != 200:
            return False, f"{path}: {code}"
    return True, "ok"


def check_containerd(s: Settings) -> tuple[bool, str]:
    if not s.containerd_sock.is_socket():
        return False, f"no socket at {s.containerd_sock}"
    ctr = [str(s.containerd_bin / "ctr"), "--address", str(s.containerd_sock), "--timeout", "3s"]
    try:
        r = subprocess.run(
            [*ctr, "version"], capture_output=True, text=True, timeout=5, check=False
        )
    except subprocess.TimeoutExpired:
        return False, "ctr version timed out"
    if r.returncode != 0:
        return False, f"ctr version: {r.stderr.strip()[-300:]}"
    # The CRI plugin is what the kubelet talks to; it can fail to load while containerd runs.
    r = subprocess.run(
        [*ctr, "plugins", "ls", "id==cri"], capture_output=True, text=True, timeout=5, check=False
    )
    if not any(ln.split()[-1:] == ["ok"] for ln in r.stdout.splitlines()[1:]):
        return False, f"CRI plugin not loaded: {r.stdout.strip()[-300:]} {r.stderr.strip()}"
    return True, "healthy (CRI plugin loaded)"


def _check_plain_healthz(port: int) -> tuple[bool, str]:
    code, body = http_get(f"http://127.0.0.1:{port}/healthz")
    if code == 200:
        return True, "healthy (/healthz ok)"
    return False, f"/healthz: {code} {body.strip()[-300:]}"


def check_kubelet(s: Settings) -> tuple[bool, str]:
    return _check_plain_healthz(s.kubelet_healthz_port)


def check_proxy(s: Settings) -> tuple[bool, str]:
    return _check_plain_healthz(s.proxy_healthz_port)


def check_node_ready(s: Settings) -> tuple[bool, str]:
    code, body = http_get(f"{s.apiserver_url}/api/v1/nodes/{s.node_name}", admin_ssl(s))
    if code != 200:
        return False, f"node {s.node_name}: {code}"
    for cond in json.loads(body).get("status", {}).get("conditions", []):
        if cond.get("type") == "Ready":
            if cond.get("status") == "True":
                return True, f"node {s.node_name} Ready"
            return False, f"node {s.node_name} not Ready: {cond.get('message', '')[:300]}"
    return False, f"node {s.node_name}: no Ready condition yet"


def registry_ok(s: Settings) -> bool:
    code, _ = http_get(f"http://{s.registry}/v2/")
    return code == 200


CHECKS: dict[str, Check] = {
    "etcd": check_etcd,
    "kube-apiserver": check_apiserver,
    "kube-controller-manager": check_kcm,
    "kube-scheduler": check_scheduler,
    "containerd": check_containerd,
    "kubelet": check_kubelet,
    "kube-proxy": check_proxy,
}


def wait_ready(s: Settings, name: str, rec: Record | None, check: Check, what: str) -> float:
    """Poll `check` until it passes (seconds taken); fail with the log's end if the process
    exits or the start timeout passes."""
    t0 = time.monotonic()
    deadline = t0 + s.start_timeout
    last = ""
    while True:
        if rec is not None and not record_alive(rec):
            raise Fail(
                f"{name} exited while starting. Last lines of {rec['log']}:\n"
                f"{tail(Path(rec['log']), rec['log_offset'])}"
            )
        ok, last = check(s)
        if ok:
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            logtail = (
                f" Last lines of {rec['log']}:\n{tail(Path(rec['log']), rec['log_offset'])}"
                if rec
                else ""
            )
            raise Fail(
                f"{name}: {what} not reached within {s.start_timeout:.0f}s "
                f"(last check: {last}).{logtail}"
            )
        time.sleep(0.2)


def component_healthy(s: Settings, name: str, patience: float) -> bool:
    """Alive and healthy; an alive process gets `patience` seconds to answer."""
    rec = load_record(s, name)
    if not record_alive(rec):
        return False
    deadline = time.monotonic() + patience
    while True:
        if CHECKS[name](s)[0]:
            return True
        if time.monotonic() > deadline or not record_alive(rec):
            return False
        time.sleep(0.25)
