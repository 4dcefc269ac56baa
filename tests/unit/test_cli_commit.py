"""``lamina commit``: the ContainerCommit it creates and the progress lines it prints."""

from __future__ import annotations

import pytest

from lamina.cli.commit import commit_body, split_target
from lamina.cli.main import build_parser
from lamina.cli.views import commit_progress_line, commit_summary

REGISTRY = "10.213.0.1:5000"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (f"{REGISTRY}/demo/web:v1", (f"{REGISTRY}/demo/web", "v1")),
        (f"{REGISTRY}/demo/web", (f"{REGISTRY}/demo/web", "latest")),
        ("registry.local/team/app:2026.01-rc1", ("registry.local/team/app", "2026.01-rc1")),
    ],
)
def test_targets(target: str, expected: tuple[str, str]) -> None:
    assert split_target(target) == expected


@pytest.mark.parametrize("target", ["Demo/Web:v1", f"{REGISTRY}/demo/web:-bad", "", "a b:c"])
def test_bad_targets_are_refused_before_anything_is_created(target: str) -> None:
    with pytest.raises(ValueError, match="--to"):
        split_target(target)


def test_the_body_carries_every_flag() -> None:
    args = build_parser().parse_args(
        [
            "commit",
            "web",
            "-c",
            "main",
            "--to",
            f"{REGISTRY}/demo/web:v2",
            "-n",
            "demo",
            "--no-pause",
            "-m",
            "add tools",
            "-a",
            "Jane <j@x>",
            "--push-secret",
            "creds",
            "--insecure",
        ]
    )
    body = commit_body(args)
    assert body["metadata"] == {"generateName": "web-"}
    assert body["spec"] == {
        "pod": "web",
        "container": "main",
        "pause": False,
        "message": "add tools",
        "author": "Jane <j@x>",
        "output": {
            "repository": f"{REGISTRY}/demo/web",
            "tag": "v2",
            "insecure": True,
            "pushSecret": "creds",
        },
    }
    assert args.namespace == "demo"
    minimal = commit_body(build_parser().parse_args(["commit", "web", "--to", "r.io/x"]))
    assert minimal["spec"] == {
        "pod": "web",
        "pause": True,
        "output": {"repository": "r.io/x", "tag": "latest"},
    }


def test_progress_lines_and_summary() -> None:
    running = {
        "phase": "Running",
        "node": "n1",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Committing",
                "message": "commit Job started",
            }
        ],
    }
    assert commit_progress_line(1.25, running) == (
        "[   1.2s] Running   Committing: commit Job started [node n1]"
    )
    assert commit_progress_line(0.0, {}) == "[   0.0s] Pending   waiting"
    done = {
        "phase": "Succeeded",
        "node": "n1",
        "image": {"ref": f"{REGISTRY}/demo/web@sha256:ab", "digest": "sha256:ab"},
        "parent": {"ref": "busybox", "digest": "sha256:cd"},
        "layer": {"digest": "sha256:ef", "size": 2048, "entries": 3},
        "frozenSeconds": 0.125,
        "pushSeconds": 1.5,
    }
    assert commit_summary(done) == [
        f"image:   {REGISTRY}/demo/web@sha256:ab",
        "parent:  busybox@sha256:cd",
        "layer:   sha256:ef (2.0kB, 3 entries)",
        "node:    n1",
        "timings: frozen 0.12s, push 1.50s",
    ]
