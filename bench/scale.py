#!/usr/bin/env python3
"""Scale benchmark: the operator started on N built, up-to-date Images and about 4N Layers.

    make bench-scale                           (N = 500, 1000, 2000, 5000; starts the API tier)
    .venv/bin/python bench/scale.py --sizes 500,1000,2000,5000 [--operator-src DIR]

On the API tier (a real etcd + kube-apiserver, started by ``e2e/cluster up --tier api`` when
it is not up), one namespace per N gets N Images in a forest (roots on external parents, each
child one to four levels below, 6 to 15 layers each, 2 to 5 of them its own) and their Layers,
with realistic status: digests, ``builtFrom`` equal to the parent's digest, ``resolved`` for
the roots (fresh, with a poll interval of an hour: resolution is a no-op for the run, so no
registry is needed and no build starts), the build record and one history entry, and what
the operator itself renders from those (conditions, lineage, observedGeneration; Layer usage),
computed with its own pure status functions: the cluster a running Lamina leaves behind, on
which a start must write nothing.  ``--upgrade`` leaves those rendered fields out, as after an
upgrade from a version that did not write them (every object is then written once, by
design).  Then, per N:

1. first start: the operator (``lamina operator -n NS``) is started; measured are the time
   until every Image is Ready, the time until quiescence (10 s without a status write and
   with the operator's CPU use under 5% of a core: it lists and renders everything even when
   nothing is to be written), its CPU seconds until then (a figure a loaded machine inflates
   far less than wall time), the peak RSS, and requests per second while idle (30 s after
   quiescence);
2. restart on the synced cluster: the operator is restarted, a new Image is created right
   away, and the time until it has its lineage is measured, with the writes the restart made
   and its CPU seconds.

Seeding is slow on a loaded machine (two requests per object): ``--keep`` keeps the seeded
namespace (``kept-bench-N``) and the next ``--keep`` run within 45 minutes reuses it (an
interrupted seeding is resumed).  ``LAMINA_BENCH_PROFILE=1`` samples the operator with py-spy
(``pip install py-spy`` into the venv) into ``.state/bench-scale/profile-N-PHASE.txt``.

Writes and requests are counted by the API server (``apiserver_request_total``): status PATCHes
of Images and Layers, and every request on Lamina's resources, Jobs and Pods (what the
operator reads and writes).  ``--operator-src`` runs the operator from another checkout's
``operator/`` directory (e.g. ``/work/main/operator``) for a before/after comparison; a phase
that does not settle within ``--timeout`` is reported as not reached.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "e2e" / "cluster"
sys.path.insert(0, str(REPO / "operator"))

TARGETS = {
    "quiescent_s": 60.0,
    "rss_mb": 300.0,
    "idle_rps": 0.5,
    "new_image_s": 10.0,
}
TARGET_N = 5000
ROOT_REFS = [f"registry.invalid/library/base-{k}:1" for k in range(10)]
BASE_LAYERS = 5  # layers every root inherits from its external parent


def digest(seed: str) -> str:
    return "sha256:" + uuid.uuid5(uuid.NAMESPACE_URL, seed).hex * 2


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        [str(CLUSTER), "kubectl", *args], input=input, text=True, capture_output=True, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


# -- the synthetic cluster -------------------------------------------------------------------


@dataclass
class Synthetic:
    images: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> status


def synthesize(n: int, seed: int = 7) -> Synthetic:
    """N Images (a forest, 6-15 layers each) and their Layers, as built and up to date."""
    rng = random.Random(seed)
    out = Synthetic()
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    chains: dict[str, list[str]] = {}
    depth: dict[str, int] = {}
    names: list[str] = []
    roots = max(1, n // 25)
    for index in range(n):
        name = f"img-{index:05}"
        own = rng.randint(3, 5)
        if index < roots:
            ref = ROOT_REFS[index % len(ROOT_REFS)]
            inherited = [digest(f"{ref}/layer/{k}") for k in range(BASE_LAYERS)]
            parent: dict[str, Any] = {"ref": ref, "pollInterval": "1h"}
            parent_digest = digest(ref)
            parent_status: dict[str, Any] = {"ref": ref, "digest": parent_digest}
            depth[name] = 0
        else:
            for _ in range(20):
                above = names[rng.randrange(len(names))]
                if len(chains[above]) + 3 <= 15 and depth[above] < 3:
                    break
            inherited = chains[above]
            own = min(own, 15 - len(inherited))
            parent = {"image": above}
            parent_digest = out.statuses[above]["digest"]
            parent_status = {"image": above, "digest": parent_digest}
            depth[name] = depth[above] + 1
        own_layers = [digest(f"{name}/layer/{k}") for k in range(own)]
        chains[name] = [*inherited, *own_layers]
        names.append(name)
        image_digest = digest(f"{name}/image")
        repository = f"registry.invalid/team/{name}"
        out.images.append(
            {
                "apiVersion": "lamina.dev/v1alpha1",
                "kind": "Image",
                "metadata": {"name": name},
                "spec": {
                    "parent": parent,
                    "build": {"steps": ["RUN make install"]},
                    "output": {"repository": repository},
                },
            }
        )
        wanted = {"generation": 1, "parentDigest": parent_digest}
        status: dict[str, Any] = {
            "digest": image_digest,
            "imageRef": f"{repository}@{image_digest}",
            "parent": parent_status,
            "builtFrom": wanted,
            "layers": [
                {"digest": d, "size": rng.randint(10_000, 50_000_000), "own": d in own_layers}
                for d in chains[name]
            ],
            "build": {
                "job": f"lamina-build-{index:012x}",
                "phase": "Succeeded",
                "reasons": ["FirstBuild - -> " + parent_digest],
                "inputs": f"{index:012x}",
                "wanted": wanted,
                "startedAt": now,
                "completedAt": now,
                "message": f"pushed {image_digest}",
            },
            "history": [
                {
                    "digest": image_digest,
                    "parentDigest": parent_digest,
                    "reason": "FirstBuild",
                    "builtAt": now,
                }
            ],
        }
        if "ref" in parent:
            status["resolved"] = {"ref": parent["ref"], "digest": parent_digest, "resolvedAt": now}
        out.statuses[name] = status
        for layer in status["layers"]:
            out.layers.setdefault(
                layer["digest"].replace(":", "-"),
                {
                    "digest": layer["digest"],
                    "size": layer["size"],
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "diffID": digest(layer["digest"] + "/diff"),
                    "createdBy": "RUN make install",
                },
            )
    return out


def render_synced(synthetic: Synthetic) -> None:
    """Complete each seeded status with what the operator itself renders for it (conditions,
    lineage, observedGeneration; Layer usage), with its own pure status functions: the
    cluster a running Lamina leaves behind, so a started operator has nothing to write.

    Without it (``--upgrade``) the bench measures an upgrade from a version that did not
    write those fields: every object is then written once, by design.
    """
    from lamina.api.layer import LayerStatus  # noqa: PLC0415
    from lamina.domain.snapshot import (  # noqa: PLC0415
        ImageRecord,
        LayerRecord,
        NamespaceSnapshot,
        parse_status,
    )

    meta = {"generation": 1, "uid": "", "resourceVersion": "1"}
    images = [
        ImageRecord.parse(
            "bench",
            body["metadata"]["name"],
            body["spec"],
            synthetic.statuses[body["metadata"]["name"]],
            meta,
        )
        for body in synthetic.images
    ]
    layers = [
        LayerRecord(
            namespace="bench",
            name=name,
            generation=1,
            managed=True,
            status=parse_status(LayerStatus, status),
        )
        for name, status in synthetic.layers.items()
    ]
    view = NamespaceSnapshot("bench", images, layers)
    now = datetime.now(UTC).replace(microsecond=0)
    dump: dict[str, Any] = {"by_alias": True, "exclude_none": True, "mode": "json"}
    for record in images:
        synthetic.statuses[record.name] = view.image_status(record.name, now).model_dump(**dump)
    for record in layers:
        synthetic.layers[record.name] = view.layer_status(record.name).model_dump(**dump)


def existing(namespace: str, plural: str) -> set[str]:
    out = kubectl("get", plural, "-n", namespace, "-o", "name", check=False)
    return {line.rsplit("/", 1)[-1] for line in out.split()}


async def create_all(
    namespace: str, synthetic: Synthetic, in_flight: int = 48, *, skip: set[str] | None = None
) -> None:
    """Create the objects and set their status, ``in_flight`` objects at a time (each a
    create and a status patch: the status subresource ignores a created object's status).
    ``skip``: names (Images and Layers) that are there already (an interrupted seeding)."""
    skip = skip or set()
    from lamina.kube import Kube  # noqa: PLC0415

    kube = await Kube.connect()
    gate = asyncio.Semaphore(in_flight)

    async def gated(coro: Any) -> None:
        async with gate:
            await coro

    async def image(body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        await kube.create_object("images", namespace, body)
        await kube.patch_status("images", namespace, name, synthetic.statuses[name])

    async def layer(name: str, status: dict[str, Any]) -> None:
        body = {
            "apiVersion": "lamina.dev/v1alpha1",
            "kind": "Layer",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "lamina"}},
        }
        await kube.create_object("layers", namespace, body)
        await kube.patch_status("layers", namespace, name, status)

    try:
        await asyncio.gather(
            *(gated(layer(n, s)) for n, s in synthetic.layers.items() if n not in skip)
        )
        await asyncio.gather(
            *(
                gated(image(body))
                for body in synthetic.images
                if body["metadata"]["name"] not in skip
            )
        )
    finally:
        await kube.close()


# -- measuring -------------------------------------------------------------------------------

_REQUEST = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def counters() -> tuple[int, int]:
    """(status PATCHes of Images and Layers, requests on Lamina's resources, Jobs and Pods)."""
    writes = requests = 0
    for line in kubectl("get", "--raw", "/metrics").splitlines():
        match = _REQUEST.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        value = int(float(match["value"]))
        ours = labels.get("group") == "lamina.dev" or labels.get("resource") in ("jobs", "pods")
        if ours and labels.get("verb") != "WATCH":
            requests += value
        if (
            labels.get("verb") == "PATCH"
            and labels.get("subresource") == "status"
            and labels.get("resource") in ("images", "layers")
        ):
            writes += value
    return writes, requests


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used: a figure a loaded machine does not inflate
    the way it inflates wall-clock times (the bench shares its cores with whatever runs)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_operator(namespace: str, log: Path, source: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig(),
        "PYTHONPATH": str(source),
        "LAMINA_NAMESPACE": namespace,
        "LAMINA_BUILDER_IMAGE": "builder:bench",
        "LAMINA_RESYNC_SECONDS": "0",
    }
    with log.open("w") as sink:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lamina.cli.main",
                "operator",
                "-n",
                namespace,
                "--metrics-port=0",
                "--health-port=0",
                *(["--verbose"] if os.environ.get("LAMINA_BENCH_VERBOSE") else []),
            ],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=str(source),
        )


def profiler(process: subprocess.Popen[bytes], out: Path) -> subprocess.Popen[bytes] | None:
    """With LAMINA_BENCH_PROFILE=1, py-spy (if installed in the venv) samples the operator
    into ``out`` (collapsed stacks: ``flamegraph.pl`` or speedscope read them)."""
    spy = Path(sys.executable).parent / "py-spy"
    if not os.environ.get("LAMINA_BENCH_PROFILE") or not spy.exists():
        return None
    return subprocess.Popen(
        [
            str(spy),
            "record",
            "--pid",
            str(process.pid),
            "--format",
            "raw",
            "-o",
            str(out),
            "--rate",
            "50",
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def ready_count(namespace: str) -> tuple[int, int]:
    out = kubectl(
        "get",
        "images",
        "-n",
        namespace,
        "-o",
        "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}",
    )
    lines = out.splitlines()
    return sum(1 for line in lines if line.strip() == "True"), len(lines)


# An operator using less than this share of a core is idle (a watch's keep-alive, a timer).
IDLE_CPU_SHARE = 0.05


def wait_quiet(quiet_s: float, timeout: float, started: float, pid: int) -> float | None:
    """Seconds from ``started`` until the operator's last activity before ``quiet_s`` without
    any: a status write, or CPU use above :data:`IDLE_CPU_SHARE` (on a synced cluster a start
    writes nothing, and is still busy listing and rendering until it is done)."""
    last_writes, last_cpu, last_change = counters()[0], cpu_seconds(pid), time.monotonic()
    checked = last_change
    while time.monotonic() - started < timeout:
        time.sleep(1.0)
        writes, cpu, at = counters()[0], cpu_seconds(pid), time.monotonic()
        busy = cpu - last_cpu > IDLE_CPU_SHARE * (at - checked)
        checked, last_cpu = at, cpu
        if writes != last_writes or busy:
            last_writes, last_change = writes, at
        elif at - last_change >= quiet_s:
            return last_change - started
    return None


@dataclass
class Figures:
    n: int
    layers: int
    ready_s: float | None = None
    quiescent_s: float | None = None
    first_writes: int = 0
    rss_mb: float = 0.0
    cpu_s: float = 0.0
    idle_rps: float | None = None
    new_image_s: float | None = None
    restart_writes: int = 0
    restart_cpu_s: float = 0.0
    load: float = 0.0
    ran: tuple[str, ...] = ("first", "restart")


def first_start(namespace: str, figures: Figures, source: Path, timeout: float, work: Path) -> None:
    writes0, _ = counters()
    started = time.monotonic()
    process = start_operator(namespace, work / f"operator-{figures.n}-first.log", source)
    spy = profiler(process, work / f"profile-{figures.n}-first.txt")
    try:
        while time.monotonic() - started < timeout:
            ready, total = ready_count(namespace)
            if total == figures.n and ready == figures.n:
                figures.ready_s = time.monotonic() - started
                break
            time.sleep(2.0)
        figures.quiescent_s = wait_quiet(10.0, timeout, started, process.pid)
        figures.first_writes = counters()[0] - writes0
        figures.cpu_s = cpu_seconds(process.pid)
        figures.load = os.getloadavg()[1]
        if figures.quiescent_s is not None:
            _, requests0 = counters()
            time.sleep(30.0)
            _, requests1 = counters()
            figures.idle_rps = (requests1 - requests0) / 30.0
        figures.rss_mb = peak_rss_mb(process.pid)
    finally:
        spy_stop(spy)
        stop(process)


def restart(
    namespace: str, parent: str, figures: Figures, *, source: Path, timeout: float, work: Path
) -> None:
    """Restart on the synced cluster, and create a new Image right away."""
    writes0, _ = counters()
    process = start_operator(namespace, work / f"operator-{figures.n}-restart.log", source)
    spy = profiler(process, work / f"profile-{figures.n}-restart.txt")
    try:
        created = time.monotonic()
        newcomer = {
            "apiVersion": "lamina.dev/v1alpha1",
            "kind": "Image",
            "metadata": {"name": "newcomer"},
            "spec": {
                "parent": {"image": parent},
                "build": {"steps": ["RUN true"]},
                "output": {"repository": "registry.invalid/team/newcomer"},
            },
        }
        kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(newcomer))
        while time.monotonic() - created < timeout:
            lineage = kubectl(
                "get",
                "image",
                "newcomer",
                "-n",
                namespace,
                "-o",
                "jsonpath={.status.lineage[0].name}",
            ).strip()
            if lineage == parent:
                figures.new_image_s = time.monotonic() - created
                break
            time.sleep(0.25)
        wait_quiet(10.0, timeout, created, process.pid)
        figures.restart_cpu_s = cpu_seconds(process.pid)
        figures.load = figures.load or os.getloadavg()[1]
        # The newcomer's own status (and its build's) is all a restart should cost.
        figures.restart_writes = counters()[0] - writes0
    finally:
        spy_stop(spy)
        stop(process)


def spy_stop(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()


def settle_namespaces() -> None:
    """Wait until earlier runs' namespaces are gone: their deletion is API traffic too."""
    for line in kubectl("get", "namespaces", "-o", "name").split():
        if line.startswith("namespace/bench-"):
            kubectl("wait", "--for=delete", line, "--timeout=300s", check=False)


KEPT_PREFIX = "kept-bench-"
# The roots' parents were resolved when seeded, with a poll interval of an hour: a kept
# namespace older than this would start polling (unreachable) registries, so it is seeded anew.
KEPT_FOR_S = 45 * 60
PHASES = ("first", "restart")
SEEDED = "lamina.dev/bench-seeded"  # when the seeding finished (seconds since the epoch)


def kept_namespace(n: int) -> str | None:
    """A namespace an earlier ``--keep`` run seeded with N synced Images, still fresh."""
    name = f"{KEPT_PREFIX}{n}"
    found = kubectl("get", "namespace", name, "-o", "json", check=False)
    if not found:
        return None
    meta = json.loads(found)["metadata"]
    seeded = (meta.get("annotations") or {}).get(SEEDED, "")
    complete = seeded.isdigit()
    # What the last run's restart phase added (its Image and the build Job it queued).
    kubectl("delete", "image", "newcomer", "-n", name, "--ignore-not-found", check=False)
    kubectl("delete", "jobs", "--all", "-n", name, "--wait=true", check=False)
    if complete and time.time() - int(seeded) < KEPT_FOR_S:
        return name
    if not complete:
        return None  # an interrupted seeding: run_one resumes it
    kubectl("delete", "namespace", name, "--wait=true", "--timeout=600s", check=False)
    return None


def run_one(
    n: int,
    source: Path,
    timeout: float,
    work: Path,
    *,
    upgrade: bool,
    keep: bool,
    phases: tuple[str, ...] = PHASES,
) -> Figures:
    settle_namespaces()
    synthetic = synthesize(n)
    if not upgrade:
        render_synced(synthetic)
    figures = Figures(n, len(synthetic.layers), ran=phases)
    reused = kept_namespace(n) if keep and not upgrade else None
    namespace = reused or (
        f"{KEPT_PREFIX}{n}" if keep and not upgrade else f"bench-{n}-{uuid.uuid4().hex[:5]}"
    )
    if reused:
        print(f"  N={n}: reusing {namespace} (seeded by an earlier --keep run)", flush=True)
    else:
        skip: set[str] = set()
        if kubectl("get", "namespace", namespace, "-o", "name", check=False):
            skip = existing(namespace, "images") | existing(namespace, "layers")  # resume
        else:
            kubectl("create", "namespace", namespace)
        print(f"  N={n}: creating {n} Images and {len(synthetic.layers)} Layers ...", flush=True)
        began = time.monotonic()
        asyncio.run(create_all(namespace, synthetic, skip=skip))
        kubectl("annotate", "--overwrite", "namespace", namespace, f"{SEEDED}={int(time.time())}")
        print(f"  N={n}: created in {time.monotonic() - began:.0f}s", flush=True)
    print(f"  N={n}: starting the operator", flush=True)
    try:
        if "first" in phases:
            first_start(namespace, figures, source, timeout, work)
        if "restart" in phases:
            restart(
                namespace,
                synthetic.images[-1]["metadata"]["name"],
                figures,
                source=source,
                timeout=timeout,
                work=work,
            )
    finally:
        if not keep:
            kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    return figures


# -- report ----------------------------------------------------------------------------------


def fmt(value: float | None, unit: str = "s", digits: int = 1) -> str:
    return "not reached" if value is None else f"{value:.{digits}f} {unit}".strip()


def report(all_figures: list[Figures], label: str, *, upgrade: bool = False) -> None:
    print()
    print(
        f"Lamina scale benchmark ({label}); machine: {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    header = (
        "Images / Layers",
        "all Ready",
        "quiescent",
        "writes",
        "CPU",
        "peak RSS",
        "idle req/s",
        "new Image after restart",
        "restart writes",
        "restart CPU",
        "load (5 min)",
    )
    rows: list[tuple[str, ...]] = [header]
    for f in all_figures:
        first = (
            fmt(f.ready_s),
            fmt(f.quiescent_s),
            f"{f.first_writes:,}",
            fmt(f.cpu_s),
            fmt(f.rss_mb, "MB", 0),
            fmt(f.idle_rps, "", 2),
        )
        again = (fmt(f.new_image_s), f"{f.restart_writes:,}", fmt(f.restart_cpu_s))
        rows.append(
            (
                f"{f.n:,} / {f.layers:,}",
                *(first if "first" in f.ran else ("not run",) * len(first)),
                *(again if "restart" in f.ran else ("not run",) * len(again)),
                f"{f.load:.1f}",
            )
        )
    rows.append(
        (
            f"target at {TARGET_N:,} / {4 * TARGET_N:,}",
            "",
            f"< {TARGETS['quiescent_s']:.0f} s",
            "~ Images + Layers" if upgrade else "0 (synced)",
            "~ linear",
            f"< {TARGETS['rss_mb']:.0f} MB",
            f"< {TARGETS['idle_rps']}",
            f"< {TARGETS['new_image_s']:.0f} s",
            "~ 1",
            "~ linear",
            "",
        )
    )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    growth(all_figures)


def growth(all_figures: list[Figures]) -> None:
    """Each figure's growth between consecutive sizes, beside the growth in N (linear means
    the same factor; below it, better than linear)."""
    columns: list[tuple[str, Any]] = [
        ("all Ready", lambda f: f.ready_s),
        ("quiescent", lambda f: f.quiescent_s),
        ("writes", lambda f: float(f.first_writes)),
        ("CPU", lambda f: f.cpu_s),
        ("peak RSS", lambda f: f.rss_mb),
        ("new Image after restart", lambda f: f.new_image_s),
    ]
    for a, b in itertools.pairwise(all_figures):
        parts = []
        for label, value in columns:
            before, after = value(a), value(b)
            if before is None or after is None or before <= 0:
                parts.append(f"{label} -")
            else:
                parts.append(f"{label} x{after / before:.1f}")
        print(f"growth {a.n:,} -> {b.n:,} Images (x{b.n / a.n:.1f}): " + ", ".join(parts))


def kubeconfig() -> str:
    return subprocess.run(
        [str(CLUSTER), "kubeconfig"], capture_output=True, text=True, check=True
    ).stdout.strip()


def ensure_cluster(crds: Path) -> None:
    status = subprocess.run([str(CLUSTER), "status"], capture_output=True, text=True, check=False)
    if "(api tier): up and healthy" not in status.stdout:
        subprocess.run([str(CLUSTER), "up", "--tier", "api"], check=True)
    kubectl("apply", "-f", str(crds))
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=lamina",
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="500,1000,2000,5000", help="comma-separated N values")
    parser.add_argument(
        "--operator-src",
        type=Path,
        default=REPO / "operator",
        help="the operator/ directory to run (default: this checkout's)",
    )
    parser.add_argument(
        "--crds", type=Path, default=REPO / "crds", help="the CRDs to install (with --operator-src)"
    )
    parser.add_argument("--label", default="this checkout")
    parser.add_argument(
        "--upgrade",
        action="store_true",
        help="seed statuses without what the operator renders (conditions, lineage, Layer "
        "usage), as after an upgrade from a version that did not write them: every object "
        "is then written once",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per phase, seconds")
    parser.add_argument(
        "--keep",
        action="store_true",
        help=f"keep each seeded namespace ({KEPT_PREFIX}N) and reuse it on the next --keep "
        f"run within {KEPT_FOR_S // 60} minutes (creating 20,000 Images takes a while); "
        "delete it with kubectl when done",
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="which phases to run: first,restart (restart alone on a --keep namespace is "
        "the quick loop for restart work: the cluster is synced already)",
    )
    args = parser.parse_args()
    phases = tuple(args.phases.split(","))
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases {sorted(unknown)}: choose from {list(PHASES)}")
    ensure_cluster(args.crds)
    os.environ["KUBECONFIG"] = kubeconfig()
    work = REPO / ".state" / "bench-scale"
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for n in (int(size) for size in args.sizes.split(",")):
        results.append(
            run_one(
                n,
                args.operator_src.resolve(),
                args.timeout,
                work,
                upgrade=args.upgrade,
                keep=args.keep,
                phases=phases,
            )
        )
        report(results, args.label, upgrade=args.upgrade)
    # Leave the cluster as found: a cluster-wide operator started next (the API tests') would
    # otherwise spend minutes on the last namespace's deletion.
    settle_namespaces()
    return 0


if __name__ == "__main__":
    sys.exit(main())
