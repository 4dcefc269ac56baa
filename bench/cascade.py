#!/usr/bin/env python3
"""Cascade benchmark on the node tier: one root Image and N descendants, depth 3.

    make bench-cascade                                  (100 descendants: 4 -> 24 -> 72)
    .venv/bin/python bench/cascade.py --fanout 2,3,2    (20 descendants: 2 -> 6 -> 12)
    .venv/bin/python bench/cascade.py --fanout 2,3,2 --modes rebuild --cache-tag lamina-buildcache

Real kubelet, containerd and BuildKit Jobs; the operator is installed by its Helm chart and
its image built in the cluster, exactly as the e2e tier does (``tests/e2e/conftest.py``).
The node tier is machine-wide: run it under ``flock /work/locks/node-tier``.

Every step is trivial (``RUN echo <name> > /<name>``); the root starts from busybox.  A
tree is applied in a fresh namespace and built (its first builds are themselves a cascade and
their figures are printed too), then the root's step is changed and the cascade measured.
Everything is timed from three watch streams opened before the change (Images in the
namespace; build Jobs and their pods in the operator's namespace), each event stamped when it
arrives; nothing is sampled.

Modes (``--modes``, each its own tree and namespace):

- ``rebase``: descendants with ``spec.rebuild.strategy: Rebase``.  Figure: seconds from the
  root's new digest (first Image event carrying it) until every descendant is re-pointed:
  its ``status.parent.digest`` is its parent's new digest and it is Ready/UpToDate.
  Target: under 30 s.
- ``rebuild``: ``strategy: Rebuild``.  Figures:

  * ``W``: seconds from the root's new digest until every descendant is rebuilt on its
    parent's new digest (the same completion test as above);
  * each build Job's own run time ``R`` = from the Job's ADDED event to the first event
    saying it finished (pod scheduling, buildkitd, pull, build and push: none of it the
    operator's);
  * ``LB`` = max(critical path of ``R`` along the deepest chain, sum(R) / limit): no
    scheduler honouring the build limit can finish the descendants' Jobs sooner;
  * operator overhead per image = (W - LB) / N.  Target: under 1 s.  (LB is a lower bound,
    so this over-states the overhead, never hides it.)  Two diagnostics say where it goes:
    "handoff" = mean seconds from a Job's finish to its Image's new digest in status, and
    "idle slots" = slot-seconds during which a build slot was free while some descendant's
    parent was already done and its own Job not yet created, divided by N;
  * peak build Jobs at once: the largest number of Jobs between their ADDED and finished
    events (and pods between ADDED and Succeeded/Failed/DELETED), from the watch order.
    Target: never above the operator's ``LAMINA_MAX_CONCURRENT_BUILDS`` (``--limit``).

``--cache-tag TAG``: after the rebuild mode's cascades (no cache), the operator is reinstalled
with ``LAMINA_BUILD_CACHE_TAG=TAG`` (the registry build cache) and ``--cache-cascades`` more
root changes are measured on the same tree: the first exports every Image's cache, the next
can import it, so the two modes compare on one tree, one machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubernetes_asyncio import client, config, watch  # noqa: E402
from tests.e2e.conftest import (  # noqa: E402
    NodeCluster,
    cluster_cmd,
    node_operator,
    node_tier_up,
    state_dir,
)

BUSYBOX = {"ref": "docker.io/library/busybox:latest", "pollInterval": "1h"}
REBASE_TARGET_S = 30.0
OVERHEAD_TARGET_S = 1.0


# -- the tree -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    name: str
    parent: str | None
    depth: int


def tree(fanout: list[int]) -> list[Node]:
    """root, then each level's children: ``fanout[i]`` children per node of level i."""
    nodes = [Node("root", None, 0)]
    level = [nodes[0]]
    for depth, per in enumerate(fanout, start=1):
        level = [
            Node(f"{parent.name}-{i}" if parent.parent else f"d{i}", parent.name, depth)
            for parent in level
            for i in range(per)
        ]
        nodes += level
    return nodes


def manifest(node: Node, registry: str, ns: str, strategy: str, step: str) -> dict[str, Any]:
    return {
        "apiVersion": "lamina.dev/v1alpha1",
        "kind": "Image",
        "metadata": {"name": node.name},
        "spec": {
            "parent": BUSYBOX if node.parent is None else {"image": node.parent},
            "build": {"steps": [step]},
            "output": {"repository": f"{registry}/bench/{ns}/{node.name}", "insecure": True},
            "rebuild": {"strategy": strategy},
        },
    }


def step_of(node: Node, version: int = 0) -> str:
    return f"RUN echo {node.name}-v{version} > /bench-{node.name}"


# -- the watches ---------------------------------------------------------------------------


@dataclass
class Recorder:
    """Events of the three watch streams, each stamped (monotonic) when it arrived."""

    images: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    jobs: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    pods: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


async def follow(
    sink: list[tuple[float, str, dict[str, Any]]],
    wake: asyncio.Event,
    list_fn: Any,
    *args: Any,
    **kwargs: Any,
) -> None:
    """Watch from the current resourceVersion on (no synthetic ADDED for what exists),
    reconnecting from the last version seen."""
    listed = await list_fn(*args, **kwargs, _preload_content=False)
    version = json.loads(await listed.read())["metadata"]["resourceVersion"]
    while True:
        stream = watch.Watch()
        async with stream.stream(
            list_fn, *args, **kwargs, resource_version=version, timeout_seconds=300
        ) as events:
            async for event in events:
                raw = event["raw_object"]
                if event["type"] == "ERROR":  # 410 Gone: relist
                    listed = await list_fn(*args, **kwargs, _preload_content=False)
                    version = json.loads(await listed.read())["metadata"]["resourceVersion"]
                    break
                sink.append((time.monotonic(), event["type"], raw))
                version = raw["metadata"]["resourceVersion"]
                wake.set()


def job_finished(job: dict[str, Any]) -> bool:
    status = job.get("status") or {}
    if status.get("succeeded") or status.get("failed") or status.get("completionTime"):
        return True
    done = {"Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"}
    return any(
        c.get("type") in done and c.get("status") == "True" for c in status.get("conditions") or []
    )


def pod_finished(event: str, pod: dict[str, Any]) -> bool:
    return event == "DELETED" or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def intervals(
    events: list[tuple[float, str, dict[str, Any]]], finished: Any
) -> dict[str, list[float]]:
    """name -> [added, finished] (finished = inf while still running)."""
    spans: dict[str, list[float]] = {}
    for at, kind, obj in events:
        name = obj["metadata"]["name"]
        if kind == "ADDED" and name not in spans:
            spans[name] = [at, float("inf")]
        if name in spans and spans[name][1] == float("inf") and finished(kind, obj):
            spans[name][1] = at
    return spans


def peak(spans: dict[str, list[float]]) -> int:
    """The most intervals open at once; at equal times a finish comes before a start
    (the watch order already separates them: a stamp per event)."""
    edges = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()])
    running = best = 0
    for _, delta in edges:
        running += delta
        best = max(best, running)
    return best


# -- one cascade ---------------------------------------------------------------------------


def ready_on(image: dict[str, Any] | None, parent_digest: str | None) -> bool:
    if not image:
        return False
    status = image.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    ready = conditions.get("Ready", {})
    return (
        ready.get("status") == "True"
        and ready.get("reason") == "UpToDate"
        and (status.get("parent") or {}).get("digest") == parent_digest
        and status.get("observedGeneration") == image["metadata"].get("generation")
    )


@dataclass
class Cascade:
    """The measured figures of one cascade."""

    mode: str
    n: int
    limit: int
    wall: float | None = None  # root's new digest -> all descendants done
    root_build: float | None = None  # change -> root's new digest
    jobs: int = 0
    job_runtime_mean: float | None = None
    lower_bound: float | None = None
    overhead_per_image: float | None = None
    handoff_mean: float | None = None
    idle_slot_per_image: float | None = None
    peak_jobs: int = 0
    peak_pods: int = 0
    failed: list[str] = field(default_factory=list)


@dataclass
class Progress:
    """What the Image events said so far: when the root and each descendant were done."""

    nodes: list[Node]
    old: dict[str, str | None]
    latest: dict[str, dict[str, Any]]
    root_at: float | None = None
    done: dict[str, float] = field(default_factory=dict)

    def digest(self, name: str) -> str | None:
        return (self.latest.get(name, {}).get("status") or {}).get("digest")

    def moved(self, name: str) -> bool:
        return self.digest(name) not in (None, self.old.get(name))

    def see(self, at: float, image: dict[str, Any]) -> None:
        name = image["metadata"]["name"]
        self.latest[name] = image
        build = (image.get("status") or {}).get("build") or {}
        if build.get("phase") == "Failed":
            raise SystemExit(
                f"{name}: build failed: {build.get('failure')}: {build.get('message')}"
            )
        root = self.latest["root"]
        root_parent = ((root.get("status") or {}).get("parent") or {}).get("digest")
        if self.root_at is None and self.moved("root") and ready_on(root, root_parent):
            self.root_at = at
        for node in self.nodes[1:]:
            parent = node.parent or ""
            if node.name in self.done or not self.moved(parent):
                continue
            if self.moved(node.name) and ready_on(self.latest.get(node.name), self.digest(parent)):
                self.done[node.name] = at


async def follow_cascade(
    kube: NodeCluster, *, ns: str, operator_ns: str, nodes: list[Node], version: int, seconds: float
) -> tuple[Recorder, Progress, float]:
    """Open the watches, change the root's step, and follow until every descendant is done
    (or ``seconds`` pass); returns the events, the progress and when the change was sent."""
    await config.load_kube_config(config_file=kube.kubeconfig)
    async with client.ApiClient() as api:
        custom = client.CustomObjectsApi(api)
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        rec = Recorder()
        builds = {"label_selector": "lamina.dev/purpose=build"}
        images = ("lamina.dev", "v1alpha1", ns, "images")
        tasks = [
            asyncio.create_task(
                follow(rec.images, rec.changed, custom.list_namespaced_custom_object, *images)
            ),
            asyncio.create_task(
                follow(rec.jobs, rec.changed, batch.list_namespaced_job, operator_ns, **builds)
            ),
            asyncio.create_task(
                follow(rec.pods, rec.changed, core.list_namespaced_pod, operator_ns, **builds)
            ),
        ]
        await asyncio.sleep(1.0)  # the streams are open
        listed = await custom.list_namespaced_custom_object(*images)
        before = {item["metadata"]["name"]: item for item in listed["items"]}
        old = {name: (obj.get("status") or {}).get("digest") for name, obj in before.items()}
        progress = Progress(nodes, old, dict(before))
        changed_at = time.monotonic()
        await custom.patch_namespaced_custom_object(
            *images,
            "root",
            {"spec": {"build": {"steps": [step_of(nodes[0], version)]}}},
            _content_type="application/merge-patch+json",  # type: ignore[call-arg]
        )
        seen = 0
        deadline = changed_at + seconds
        while len(progress.done) < len(nodes) - 1 and time.monotonic() < deadline:
            rec.changed.clear()
            for at, _, image in rec.images[seen:]:
                progress.see(at, image)
            seen = len(rec.images)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rec.changed.wait(), 5)
        await asyncio.sleep(1.0)  # the streams catch up with the last finish events
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return rec, progress, changed_at


def idle_slots(
    spans: list[list[float]],
    ready_at: dict[str, float],
    created_at: dict[str, float],
    window: tuple[float, float],
    limit: int,
) -> float:
    """Slot-seconds in ``window`` when a build slot was free while some descendant could
    start (its parent done, its own Job not created yet)."""
    edges = {t for span in spans for t in span} | set(ready_at.values()) | set(created_at.values())
    times = [*sorted(t for t in edges if window[0] <= t <= window[1]), window[1]]
    idle = 0.0
    for start, end in itertools.pairwise(times):
        mid = (start + end) / 2
        running = sum(1 for s, e in spans if s <= mid < e)
        waiting = sum(1 for n, r in ready_at.items() if r <= mid < created_at.get(n, math.inf))
        idle += min(waiting, max(0, limit - running)) * (end - start)
    return idle


def analyse(
    mode: str,
    *,
    nodes: list[Node],
    limit: int,
    rec: Recorder,
    progress: Progress,
    changed_at: float,
) -> Cascade:
    descendants = nodes[1:]
    result = Cascade(mode, len(descendants), limit)
    done, root_at = progress.done, progress.root_at
    result.failed = [n.name for n in descendants if n.name not in done]
    job_spans = intervals(rec.jobs, lambda kind, job: kind == "DELETED" or job_finished(job))
    result.peak_jobs, result.peak_pods = peak(job_spans), peak(intervals(rec.pods, pod_finished))
    if root_at is None:
        return result
    result.root_build = root_at - changed_at
    if not result.failed:
        result.wall = max(done.values()) - root_at
    image_of = {
        job["metadata"]["name"]: (job["metadata"].get("annotations") or {}).get(
            "lamina.dev/image-name", ""
        )
        for _, _, job in rec.jobs
    }
    by_image = {
        image_of[name]: span
        for name, span in job_spans.items()
        if image_of.get(name) not in ("root", "", None)
    }
    result.jobs = len(by_image)
    if mode == "rebase" or not by_image or result.wall is None:
        return result
    runtimes = {name: end - start for name, (start, end) in by_image.items()}
    result.job_runtime_mean = sum(runtimes.values()) / len(runtimes)
    parent_of = {n.name: n.parent for n in nodes}

    def chain(name: str | None) -> float:
        return 0.0 if name in (None, "root") else runtimes.get(name, 0.0) + chain(parent_of[name])

    critical = max(chain(n.name) for n in descendants)
    result.lower_bound = max(critical, sum(runtimes.values()) / limit)
    result.overhead_per_image = (result.wall - result.lower_bound) / len(descendants)
    handoffs = [done[name] - span[1] for name, span in by_image.items() if name in done]
    result.handoff_mean = sum(handoffs) / len(handoffs)
    ready_at = {
        n.name: root_at if n.parent == "root" else done.get(n.parent or "", math.inf)
        for n in descendants
    }
    created_at = {name: span[0] for name, span in by_image.items()}
    window = (root_at, root_at + result.wall)
    idle = idle_slots(list(job_spans.values()), ready_at, created_at, window, limit)
    result.idle_slot_per_image = idle / len(descendants)
    return result


# -- set-up --------------------------------------------------------------------------------


def build_tree(
    kube: NodeCluster, nodes: list[Node], strategy: str, timeout: float
) -> tuple[str, float]:
    """A namespace with the tree applied and every Image built; returns it and the seconds."""
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    kube.ok("create", "namespace", ns)
    t0 = time.monotonic()
    items = [manifest(node, kube.registry, ns, strategy, step_of(node)) for node in nodes]
    kube.ok(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
    )
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        listed = json.loads(kube.ok("get", "images", "-n", ns, "-o", "json"))["items"]
        ok = 0
        for image in listed:
            status = image.get("status") or {}
            build = status.get("build") or {}
            if build.get("phase") == "Failed":
                name = image["metadata"]["name"]
                failure = f"{build.get('failure')}: {build.get('message')}"
                raise SystemExit(f"set-up: {name}: {failure}")
            conditions = {c["type"]: c for c in status.get("conditions") or []}
            ok += conditions.get("Ready", {}).get("reason") == "UpToDate"
        if ok == len(nodes):
            return ns, time.monotonic() - t0
        time.sleep(2)
    raise SystemExit(f"set-up: the tree was not built in {timeout:.0f}s")


def fmt(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.2f} {unit}"


def line(label: str, value: str, target: str = "", verdict: str = "") -> None:
    print(f"  {label:<46} {value:>12}   {target:<12} {verdict}")


def verdict(value: float | None, target: float) -> str:
    return "" if value is None else ("ok" if value < target else "MISSED")


def report(results: list[Cascade], limit: int) -> None:
    n = results[0].n if results else 0
    print(f"\nbench-cascade: {n} descendants (depth 3), build limit {limit}")
    for r in results:
        print(f"\n[{r.mode}]")
        if r.failed:
            print(f"  NOT DONE: {len(r.failed)} not re-pointed: {', '.join(r.failed[:10])}")
        line("root change -> root's new digest", fmt(r.root_build))
        if r.mode.startswith("rebase"):
            target = f"< {REBASE_TARGET_S:.0f} s"
            line(
                f"root's new digest -> all {r.n} re-pointed",
                fmt(r.wall),
                target,
                verdict(r.wall, REBASE_TARGET_S),
            )
            line("build Jobs for descendants", str(r.jobs))
            continue
        line(f"root's new digest -> all {r.n} rebuilt (W)", fmt(r.wall))
        line("descendant build Jobs", str(r.jobs))
        line("mean Job run time (ADDED -> finished)", fmt(r.job_runtime_mean))
        line("LB = max(critical path, sum(R)/limit)", fmt(r.lower_bound))
        line(
            "operator overhead per image (W - LB) / N",
            fmt(r.overhead_per_image),
            f"< {OVERHEAD_TARGET_S:.0f} s",
            verdict(r.overhead_per_image, OVERHEAD_TARGET_S),
        )
        line("  Job finished -> Image's new digest (mean)", fmt(r.handoff_mean))
        line("  idle build slots per image", fmt(r.idle_slot_per_image, "slot-s"))
        exceeded = "ok" if max(r.peak_jobs, r.peak_pods) <= limit else "EXCEEDED"
        line(
            "peak build Jobs / pods at once (watch)",
            f"{r.peak_jobs} / {r.peak_pods}",
            f"<= {limit}",
            exceeded,
        )


def cascades(
    kube: NodeCluster,
    operator_ns: str,
    ns: str,
    nodes: list[Node],
    *,
    mode: str,
    label: str,
    versions: range,
    limit: int,
    seconds: float,
) -> list[Cascade]:
    """Measure one root change per version on the tree in ``ns``, printing each at once."""
    found: list[Cascade] = []
    for version in versions:
        rec, progress, changed_at = asyncio.run(
            follow_cascade(
                kube, ns=ns, operator_ns=operator_ns, nodes=nodes, version=version, seconds=seconds
            )
        )
        result = analyse(
            mode, nodes=nodes, limit=limit, rec=rec, progress=progress, changed_at=changed_at
        )
        result.mode = f"{label} #{len(found) + 1}" if len(versions) > 1 else label
        report([result], limit)
        found.append(result)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--fanout", default="4,6,3", help="children per node at each level (4,6,3: 4+24+72=100)"
    )
    parser.add_argument(
        "--modes", default="rebase,rebuild", help="rebase, rebuild (comma-separated)"
    )
    parser.add_argument(
        "--limit", type=int, default=2, help="LAMINA_MAX_CONCURRENT_BUILDS (chart default 2)"
    )
    parser.add_argument(
        "--cache-tag",
        default=None,
        help="after the rebuild mode's cascades, reinstall the operator with "
        "LAMINA_BUILD_CACHE_TAG=TAG and measure --cache-cascades more on the same tree",
    )
    parser.add_argument("--cascades", type=int, default=1, help="root changes measured per tree")
    parser.add_argument(
        "--cache-cascades", type=int, default=2, help="root changes measured with the cache"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds per tree build / cascade"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the namespaces and the node tier up (by default the node tier, machine-wide, "
        "is brought down at the end, whoever started it)",
    )
    args = parser.parse_args()
    nodes = tree([int(x) for x in args.fanout.split(",")])
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not node_tier_up():
        up = cluster_cmd("up", timeout=1800)
        if up.returncode != 0:
            raise SystemExit(f"e2e/cluster up failed:\n{up.stderr[-3000:]}")
    try:
        kube = NodeCluster(
            cluster_cmd("kubeconfig").stdout.strip(),
            cluster_cmd("registry").stdout.strip(),
            state_dir(),
        )
        settings = {"LAMINA_MAX_CONCURRENT_BUILDS": str(args.limit)}
        results: list[Cascade] = []
        work = REPO / ".state" / "bench-cascade"
        work.mkdir(parents=True, exist_ok=True)
        namespaces: dict[str, str] = {}
        with node_operator(kube, work / "operator.log", **settings) as operator_ns:
            for mode in modes:
                strategy = {"rebase": "Rebase", "rebuild": "Rebuild"}[mode]
                ns, took = build_tree(kube, nodes, strategy, args.timeout)
                namespaces[mode] = ns
                print(f"{mode}: tree of {len(nodes)} built in {took:.0f}s ({ns})", flush=True)
                results += cascades(
                    kube,
                    operator_ns,
                    ns,
                    nodes,
                    mode=mode,
                    label=f"{mode}, no cache",
                    versions=range(1, args.cascades + 1),
                    limit=args.limit,
                    seconds=args.timeout,
                )
        if args.cache_tag and "rebuild" in namespaces:
            cached = {**settings, "LAMINA_BUILD_CACHE_TAG": args.cache_tag}
            with node_operator(kube, work / "operator-cache.log", **cached) as operator_ns:
                first = args.cascades + 1
                results += cascades(
                    kube,
                    operator_ns,
                    namespaces["rebuild"],
                    nodes,
                    mode="rebuild",
                    label=f"rebuild, cache {args.cache_tag}",
                    versions=range(first, first + args.cache_cascades),
                    limit=args.limit,
                    seconds=args.timeout,
                )
        if not args.keep:
            for ns in namespaces.values():
                kube.kubectl("delete", "namespace", ns, "--wait=false")
        print("\n==== summary ====")
        report(results, args.limit)
        return 0 if all(not r.failed for r in results) else 1
    finally:
        if not args.keep:
            cluster_cmd("down")


if __name__ == "__main__":
    sys.exit(main())
