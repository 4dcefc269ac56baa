"""`up` as ordered named steps, the command line, and the choice of provider."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness import cli
from harness.components import API_COMPONENTS, NODE_COMPONENTS
from harness.config.kind import (
    KIND_REGISTRY,
    create_cluster_argv,
    node_hosts_dirs,
    node_hosts_toml,
    registry_container_argv,
)
from harness.providers.kind import KindProvider
from harness.providers.node import NodeProvider
from harness.settings import Settings, Tier
from harness.steps import LOCKED, PREPARE, Step, UpContext, run_steps, timings_line
from tests.unit.test_harness_settings import make_settings


def names(tier: Tier) -> list[str]:
    return [step.name for step in (*PREPARE, *LOCKED) if tier in step.tiers]


def test_api_tier_steps_in_order() -> None:
    assert names("api") == [
        "binaries",
        "plan",
        "state",
        "pki",
        "kubeconfigs",
        "netdev",
        "restarts",
        *API_COMPONENTS,
        "service-accounts",
    ]


def test_node_tier_steps_in_order() -> None:
    steps = names("node")
    assert steps[:2] == ["packages", "binaries"]
    # Components in start order, the kubelet's RBAC just before it.
    comps = [n for n in steps if n in NODE_COMPONENTS]
    assert comps == list(NODE_COMPONENTS)
    assert steps.index("rbac") == steps.index("kubelet") - 1
    # Everything the components need exists before the first one starts.
    first = steps.index("etcd")
    for before in ("pki", "kubeconfigs", "netdev", "node-config", "host", "registry", "images"):
        assert steps.index(before) < first
    assert steps[-2:] == ["service-accounts", "node-ready"]
    assert len(steps) == len(set(steps))


def recording(log: list[str], name: str, *, finish: bool = False) -> Step[UpContext]:
    def run(ctx: UpContext) -> None:
        log.append(name)
        ctx.finished = finish

    return Step(name, run, ("node",) if name.startswith("node-") else ("api", "node"))


def test_run_steps_skips_the_other_tier_stops_when_finished_and_times_each() -> None:
    log: list[str] = []
    steps = [
        recording(log, "a"),
        recording(log, "node-b"),
        recording(log, "c", finish=True),
        recording(log, "d"),
    ]
    ctx = UpContext(make_settings("api"), "api")
    run_steps(ctx, steps)
    assert log == ["a", "c"]
    assert [name for name, _ in ctx.timings] == ["a", "c"]
    assert all(took >= 0 for _, took in ctx.timings)
    assert timings_line([("pki", 0.04), ("etcd", 1.25)]) == "pki 0.0s, etcd 1.2s"


def test_components_from_the_first_to_restart_are_started() -> None:
    ctx = UpContext(make_settings("node"), "node")
    assert not any(ctx.starts(c) for c in NODE_COMPONENTS)
    ctx.start_from = NODE_COMPONENTS.index("containerd")
    assert [c for c in NODE_COMPONENTS if ctx.starts(c)] == ["containerd", "kubelet", "kube-proxy"]


@pytest.mark.parametrize(
    ("argv", "cmd", "tier"),
    [
        (["up"], "up", "node"),
        (["up", "--tier", "api"], "up", "api"),
        (["down"], "down", None),
        (["status"], "status", None),
        (["kubeconfig"], "kubeconfig", None),
        (["env"], "env", None),
        (["registry"], "registry", None),
    ],
)
def test_command_line(argv: list[str], cmd: str, tier: str | None) -> None:
    ns = cli.parser().parse_args(argv)
    assert ns.cmd == cmd
    assert getattr(ns, "tier", None) == tier


def test_unknown_tier_is_refused() -> None:
    with pytest.raises(SystemExit) as refused:
        cli.parser().parse_args(["up", "--tier", "kind"])
    assert refused.value.code == 2


@pytest.fixture
def settings_for(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Tier | None]:
    """`load_settings` without reading the machine; records the tiers asked for."""
    asked: list[Tier | None] = []

    def load(tier: Tier | None = None) -> Settings:
        asked.append(tier)
        return dataclasses.replace(make_settings(tier or "api"), state=tmp_path)

    monkeypatch.setattr(cli, "load_settings", load)
    return asked


def test_up_uses_kind_only_for_the_node_tier_when_wanted(
    settings_for: list[Tier | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAMINA_USE_KIND", "1")
    assert isinstance(cli.provider_for("up", "node"), KindProvider)
    assert isinstance(cli.provider_for("up", "api"), NodeProvider)
    monkeypatch.setenv("LAMINA_USE_KIND", "0")
    assert isinstance(cli.provider_for("up", "node"), NodeProvider)
    assert settings_for == ["node", "api", "node"]


def test_other_commands_go_to_kind_only_when_kind_runs_the_cluster(
    settings_for: list[Tier | None], tmp_path: Path
) -> None:
    assert isinstance(cli.provider_for("status", None), NodeProvider)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "kind.json").write_text('{"cluster": "lamina"}\n')
    assert isinstance(cli.provider_for("down", None), KindProvider)
    assert settings_for == [None, None]


def test_kind_registry_and_mirrors() -> None:
    argv = registry_container_argv()
    assert argv[:2] == ["docker", "run"]
    assert argv[argv.index("--name") + 1] == KIND_REGISTRY
    assert argv[argv.index("--network") + 1] == "kind"
    assert argv[argv.index("-p") + 1] == "127.0.0.1:5001:5000"
    assert node_hosts_toml().startswith('server = "http://lamina-registry:5000"\n')
    assert node_hosts_dirs()[0] == "/etc/containerd/certs.d/docker.io"
    assert node_hosts_dirs()[-1] == "/etc/containerd/certs.d/lamina-registry:5000"
    create = create_cluster_argv("kind", Path("/r/e2e/kind.yaml"), Path("/s/admin.kubeconfig"))
    assert create[create.index("--config") + 1] == "/r/e2e/kind.yaml"
    assert create[create.index("--kubeconfig") + 1] == "/s/admin.kubeconfig"
