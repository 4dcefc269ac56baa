"""kind on hosts with a Docker engine: the node tier as kind's node container, with a registry
container on kind's network.  (Not exercised on the development machine: it has no Docker.)

The registry's one address for pods and node pulls is `lamina-registry:5000` inside the kind
network, and 127.0.0.1:5001 on the host; containerd's hosts.toml on every node mirrors
docker.io and the others to it, so the same tests and images apply."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from harness.config.kind import (
    KIND_CLUSTER,
    KIND_REGISTRY,
    KIND_REGISTRY_IN_CLUSTER,
    KIND_REGISTRY_ON_HOST,
    create_cluster_argv,
    node_hosts_dirs,
    node_hosts_toml,
    registry_container_argv,
)
from harness.environment import read_versions_sh
from harness.errors import Fail
from harness.files import Record, read_json, write_file
from harness.host.tools import push_images
from harness.paths import BUILD_SCRIPT, KIND_YAML
from harness.providers.base import print_env, print_kubeconfig
from harness.settings import Settings
from harness.steps.base import Step, UpContext, run_steps


def kind_wanted() -> bool:
    """LAMINA_USE_KIND=0/1 decides; otherwise kind when `docker info` succeeds."""
    forced = os.environ.get("LAMINA_USE_KIND", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def kind_record(s: Settings) -> Record | None:
    """The record `up` left when kind runs this cluster instance."""
    return read_json(s.run / "kind.json")


def kind_bin(s: Settings) -> str:
    version = read_versions_sh(("KIND_VERSION",))["KIND_VERSION"]
    path = s.cache / "bin" / f"kind-{version}" / "kind"
    if not path.is_file():
        r = subprocess.run(["bash", str(BUILD_SCRIPT), "kind"], stdout=sys.stderr, check=False)
        if r.returncode != 0:
            raise Fail("building kind failed")
    return str(path)


@dataclass
class KindUp(UpContext):
    kind: str = "kind"  # the kind binary


def _binary(ctx: KindUp) -> None:
    ctx.kind = kind_bin(ctx.s)
    ctx.s.run.mkdir(parents=True, exist_ok=True)


def _cluster(ctx: KindUp) -> None:
    s, kind = ctx.s, ctx.kind
    clusters = subprocess.run(
        [kind, "get", "clusters"], capture_output=True, text=True, check=False
    ).stdout.split()
    if KIND_CLUSTER not in clusters:
        argv = create_cluster_argv(kind, KIND_YAML, s.admin_kubeconfig)
        if subprocess.run(argv, stdout=sys.stderr, check=False).returncode != 0:
            raise Fail("kind create cluster failed")
    else:
        subprocess.run(
            [
                kind,
                "export",
                "kubeconfig",
                "--name",
                KIND_CLUSTER,
                "--kubeconfig",
                str(s.admin_kubeconfig),
            ],
            stdout=sys.stderr,
            check=False,
        )


def _registry(ctx: KindUp) -> None:
    inspect = ["docker", "inspect", KIND_REGISTRY]
    if subprocess.run(inspect, capture_output=True, check=False).returncode != 0:
        subprocess.run(registry_container_argv(), stdout=sys.stderr, check=True)


def _mirrors(ctx: KindUp) -> None:
    """Every node: containerd's hosts.toml sends the mirrored registries to the registry."""
    nodes = subprocess.run(
        [ctx.kind, "get", "nodes", "--name", KIND_CLUSTER],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    toml = node_hosts_toml().encode()
    for node in nodes:
        for d in node_hosts_dirs():
            subprocess.run(
                ["docker", "exec", node, "sh", "-c", f"mkdir -p {d} && cat > {d}/hosts.toml"],
                input=toml,
                check=True,
            )


def _records(ctx: KindUp) -> None:
    run = ctx.s.run
    record = {"cluster": KIND_CLUSTER, "kind": ctx.kind, "registry": KIND_REGISTRY_IN_CLUSTER}
    write_file(run / "kind.json", json.dumps(record) + "\n")
    write_file(run / "cluster.json", json.dumps({"tier": "node", "kind": True}) + "\n")


def _images(ctx: KindUp) -> None:
    # The images the tests use are pushed by e2e/lib/build-images.sh to the host's address.
    try:
        push_images(KIND_REGISTRY_ON_HOST)
    except Fail:
        raise Fail("pushing the images to the kind registry failed") from None


KIND_UP: tuple[Step[KindUp], ...] = (
    Step("kind", _binary),
    Step("cluster", _cluster),
    Step("registry", _registry),
    Step("mirrors", _mirrors),
    Step("records", _records),
    Step("images", _images),
)


class KindProvider:
    name = "kind"

    def __init__(self, s: Settings) -> None:
        self.s = s

    def up(self) -> int:
        ctx = KindUp(self.s, "node")
        run_steps(ctx, KIND_UP)
        print(f"cluster up (kind) in {time.monotonic() - ctx.t0:.1f}s")
        return 0

    def down(self) -> int:
        s = self.s
        rec = kind_record(s) or {}
        kind = rec.get("kind") or "kind"
        subprocess.run(
            [kind, "delete", "cluster", "--name", KIND_CLUSTER], stdout=sys.stderr, check=False
        )
        subprocess.run(["docker", "rm", "-f", KIND_REGISTRY], capture_output=True, check=False)
        for f in ("kind.json", "cluster.json"):
            with contextlib.suppress(FileNotFoundError):
                (s.run / f).unlink()
        print("cluster down (kind)")
        return 0

    def status(self) -> int:
        s = self.s
        print(f"state dir: {s.state}")
        readyz = [str(s.kubectl), "--kubeconfig", str(s.admin_kubeconfig), "get", "--raw=/readyz"]
        ok = subprocess.run(readyz, capture_output=True, check=False).returncode == 0
        print(f"cluster (node tier): {'up and healthy' if ok else 'NOT healthy'} (kind)")
        return 0 if ok else 1

    def kubeconfig(self) -> int:
        return print_kubeconfig(self.s)

    def env(self) -> int:
        return print_env(self.s)

    def registry(self) -> int:
        rec = kind_record(self.s) or {}
        print(rec.get("registry", KIND_REGISTRY_IN_CLUSTER))
        return 0
