"""The commit Job and what its outcome means, as pure functions."""

from __future__ import annotations

import argparse
import base64
import json

import pytest

from lamina.api.commit import ContainerCommitSpec
from lamina.cli.snapshot import commit_values, register
from lamina.domain.attestations import CommitSource
from lamina.domain.commit_job import (
    CommitSettings,
    CommitTarget,
    commit_job,
    commit_job_name,
    commit_of,
    parent_reference,
    push_secret_copy,
    thaw_job,
)
from lamina.domain.commit_outcome import JobOutcome, judge_commit_job
from lamina.domain.manifest_facts import layer_facts
from lamina.handlers.registry_access import PushSecretError, docker_config_of

DIGEST = "sha256:" + "d" * 64
SETTINGS = CommitSettings(namespace="lamina-system", image="registry.local/lamina:1")
TARGET = CommitTarget("node-1", "containerd://abc", "docker.io/library/busybox:1.36", DIGEST)


def spec(**extra: object) -> ContainerCommitSpec:
    return ContainerCommitSpec.model_validate(
        {"pod": "web", "output": {"repository": "registry.local/demo/web", "tag": "v2"}, **extra}
    )


def test_job_is_pinned_privileged_and_named_after_the_uid() -> None:
    job = commit_job(
        namespace="team", name="snap", uid="u-1", spec=spec(), target=TARGET, settings=SETTINGS
    )
    assert job["metadata"]["name"] == commit_job_name("u-1")
    assert job["metadata"]["namespace"] == "lamina-system"
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeName"] == "node-1"
    assert pod["hostPID"] is True
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] == 0
    container = pod["containers"][0]
    assert container["securityContext"] == {"privileged": True, "runAsUser": 0}
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    # Only containerd's CRI task bundles and overlay snapshots, read-only, plus the cgroups
    # (writable: --pause freezes); never the host's /.
    assert set(mounts) == {"containerd-tasks", "containerd-snapshots", "cgroup"}
    tasks = "/run/containerd/io.containerd.runtime.v2.task/k8s.io"
    snapshots = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"
    assert volumes["containerd-tasks"]["hostPath"] == {"path": tasks, "type": "Directory"}
    assert volumes["containerd-snapshots"]["hostPath"] == {"path": snapshots, "type": "Directory"}
    for name, path in (("containerd-tasks", tasks), ("containerd-snapshots", snapshots)):
        assert mounts[name] == {
            "name": name,
            "mountPath": "/host" + path,
            "readOnly": True,
            "recursiveReadOnly": "IfPossible",
        }
    assert all(v["hostPath"]["path"] != "/" for v in pod["volumes"] if "hostPath" in v)
    args = container["args"]
    assert args[:6] == [
        "snapshot",
        "--container-id=containerd://abc",
        "--containerd-root=/var/lib/containerd",
        "--containerd-state=/run/containerd",
        "--containerd-namespace=k8s.io",
        "--host-root=/host",
    ]
    assert f"--parent=docker.io/library/busybox@{DIGEST}" in args
    assert "--to=registry.local/demo/web:v2" in args
    assert "--pause" in args  # the default
    # Same commit, same Job: a restarted operator adopts instead of duplicating.
    again = commit_job(
        namespace="team", name="snap", uid="u-1", spec=spec(), target=TARGET, settings=SETTINGS
    )
    assert again == job


def test_job_carries_message_changes_excludes_and_credentials() -> None:
    job = commit_job(
        namespace="team",
        name="snap",
        uid="u-1",
        spec=spec(
            message="tools",
            author="Jane",
            pause=False,
            excludePaths=["/tmp"],
            changes={"env": [{"name": "A", "value": "1"}], "cmd": ["sh"]},
            output={
                "repository": "registry.local/demo/web",
                "pushSecret": "creds",
                "insecure": True,
            },
        ),
        target=TARGET,
        settings=SETTINGS,
    )
    pod = job["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert "--pause" not in args
    assert "cgroup" not in {v["name"] for v in pod["volumes"]}  # nothing to freeze
    values = next(a for a in args if a.startswith("--commit-json="))
    assert json.loads(values.split("=", 1)[1]) == {
        "message": "tools",
        "author": "Jane",
        "exclude": ["/tmp"],
        "changes": {"cmd": ["sh"], "env": [{"name": "A", "value": "1"}]},
    }
    assert "--insecure" in args
    assert "--docker-config=/var/run/lamina/docker/config.json" in args
    secret = push_secret_copy(
        uid="u-1",
        settings=SETTINGS,
        docker_config_json="{}",
        owner={"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "x"},
    )
    volume = job["spec"]["template"]["spec"]["volumes"][-1]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert secret["metadata"]["namespace"] == "lamina-system"


def test_thaw_job_runs_on_the_same_node() -> None:
    job = thaw_job(namespace="team", name="snap", uid="u-1", target=TARGET, settings=SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeName"] == "node-1"
    assert pod["containers"][0]["args"] == ["thaw", "--container-id=containerd://abc"]
    assert [v["hostPath"]["path"] for v in pod["volumes"]] == ["/sys/fs/cgroup"]


def test_runtime_directories_come_from_the_settings() -> None:
    settings = CommitSettings(
        namespace="lamina-system",
        image="lamina:1",
        containerd_root="/data/containerd/",
        containerd_state="/var/run/k3s/containerd",
    )
    job = commit_job(
        namespace="team", name="snap", uid="u-1", spec=spec(), target=TARGET, settings=settings
    )
    pod = job["spec"]["template"]["spec"]
    paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    assert (
        paths["containerd-tasks"] == "/var/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io"
    )
    assert paths["containerd-snapshots"] == (
        "/data/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"
    )
    args = pod["containers"][0]["args"]
    assert "--containerd-root=/data/containerd/" in args
    assert "--containerd-state=/var/run/k3s/containerd" in args


def _committer_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lamina", exit_on_error=False)
    register(parser.add_subparsers(dest="command", required=True))
    return parser


HOSTILE = [
    "--help",
    "-h",
    "--to=registry.evil/x:y",
    "--upper=/",
    "-",
    "--",
    "--pause",
    "--container-id=containerd://" + "f" * 64,
    "@/etc/shadow",
    "a value\nwith --newline",
    "=",
    "--exclude",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_spec_values_never_become_committer_options(value: str) -> None:
    # model_copy does not validate: the generator must be safe whatever the schema admits.
    commit_spec = spec(
        pause=False, changes={"env": [{"name": "A", "value": value}], "cmd": [value]}
    ).model_copy(update={"message": value, "author": value, "exclude_paths": [value, "/tmp"]})
    args = commit_job(
        namespace="team",
        name="snap",
        uid="u-1",
        spec=commit_spec,
        target=TARGET,
        settings=SETTINGS,
        container="app",
    )["spec"]["template"]["spec"]["containers"][0]["args"]
    # The committer's own parser reads back exactly what the spec said, and nothing else.
    parsed = _committer_parser().parse_args(args)
    values = commit_values(parsed)
    assert values.message == value
    assert values.author == value
    assert values.exclude == (value, "/tmp")
    assert values.changes == {"cmd": [value], "env": [{"name": "A", "value": value}]}
    assert parsed.to == "registry.local/demo/web:v2"
    assert parsed.container_id == "containerd://abc"
    assert parsed.upper is None
    assert parsed.pause is False
    assert parsed.docker_config is None or str(parsed.docker_config).endswith("config.json")
    # Identifiers go as one --name=VALUE element each; the free text in one JSON object.
    assert [a.split("=", 1)[0] for a in args] == [
        "snapshot",
        "--container-id",
        "--containerd-root",
        "--containerd-state",
        "--containerd-namespace",
        "--host-root",
        "--parent",
        "--to",
        "--created-by",
        "--commit-json",
        "--source-json",
    ]
    # Who asked and which container: one JSON object the committer reads back exactly.
    source = CommitSource.from_json(json.loads(parsed.source_json))
    assert source == CommitSource(
        namespace="team",
        name="snap",
        uid="u-1",
        pod=commit_spec.pod,
        container="app",
        container_id="containerd://abc",
        node=TARGET.node,
    )


def test_commit_json_is_checked() -> None:
    parser = _committer_parser()
    base = ["snapshot", "--container-id=containerd://abc", "--parent=p", "--to=r/x:y"]
    for document, error in [
        ("[]", "must be a JSON object"),
        ('{"to": "x"}', "unknown keys"),
        ('{"message": 1}', "message must be a string"),
        ('{"exclude": "/tmp"}', "exclude must be a list of strings"),
        ('{"changes": []}', "changes must be a JSON object"),
    ]:
        with pytest.raises(ValueError, match=error):
            commit_values(parser.parse_args([*base, f"--commit-json={document}"]))
    with pytest.raises(ValueError, match="give one or the other"):
        commit_values(parser.parse_args([*base, "--commit-json={}", "--message=m"]))
    # By hand, the separate options still work.
    by_hand = commit_values(parser.parse_args([*base, "--message=m", "--exclude=/a"]))
    assert (by_hand.message, by_hand.exclude) == ("m", ("/a",))


def test_the_committer_refuses_leftovers_and_abbreviations() -> None:
    base = ["snapshot", "--container-id=containerd://abc", "--parent=p", "--to=r/x:y"]
    parser = _committer_parser()
    assert parser.parse_args(base).to == "r/x:y"
    for extra in (["stray"], ["--auth=Jane"], ["--to"], ["--unknown=1"]):
        with pytest.raises((argparse.ArgumentError, SystemExit)):
            parser.parse_args(base + extra)


def test_parent_reference_pins_the_digest() -> None:
    assert parent_reference(TARGET) == f"docker.io/library/busybox@{DIGEST}"
    local = CommitTarget("n", "c", "10.0.0.1:5000/a/b:tag", DIGEST)
    assert parent_reference(local) == f"10.0.0.1:5000/a/b@{DIGEST}"
    unpinned = CommitTarget("n", "c", "busybox:1", None)
    assert parent_reference(unpinned) == "busybox:1"


RESULT = json.dumps(
    {
        "image": f"registry.local/demo/web@{DIGEST}",
        "digest": DIGEST,
        "parent": {"ref": "busybox", "digest": DIGEST},
        "layer": {"digest": DIGEST, "diffID": DIGEST, "size": 10, "entries": 3},
        "timings": {"frozenSeconds": 0.1, "diffSeconds": 0.2, "pushSeconds": 0.3},
    }
)


@pytest.mark.parametrize(
    ("outcome", "phase", "reason", "fragment"),
    [
        (JobOutcome("running"), "Running", "Committing", "snapshotting"),
        (JobOutcome("succeeded", termination_message=RESULT), "Succeeded", "Committed", "pushed"),
        (
            JobOutcome("succeeded", termination_message="{cut"),
            "Failed",
            "InvalidResult",
            "no readable result",
        ),
        (
            JobOutcome("failed", termination_message="registry said: denied: requested access"),
            "Failed",
            "CommitFailed",
            "denied: requested access",
        ),
        (  # a runtime refusal (the committer's stderr, the log tail) reaches the status
            JobOutcome(
                "failed",
                termination_message="lamina snapshot: upperdir /tmp/x is outside the runtime's "
                "snapshot root /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/"
                "snapshots: refusing to read it\n",
            ),
            "Failed",
            "CommitFailed",
            "upperdir /tmp/x is outside the runtime's snapshot root",
        ),
        (
            JobOutcome("failed", job_reason="DeadlineExceeded"),
            "Failed",
            "DeadlineExceeded",
            "deadline",
        ),
        (JobOutcome("failed", exit_reason="OOMKilled"), "Failed", "CommitterKilled", "OOMKilled"),
    ],
)
def test_judge_commit_job(outcome: JobOutcome, phase: str, reason: str, fragment: str) -> None:
    verdict = judge_commit_job(outcome)
    ready = next(v for v in verdict.conditions if v.type == "Ready")
    assert (verdict.phase, ready.reason) == (phase, reason)
    assert fragment in ready.message


def test_success_fills_image_layer_and_timings() -> None:
    fields = judge_commit_job(JobOutcome("succeeded", termination_message=RESULT)).fields
    assert fields["image"] == {"ref": f"registry.local/demo/web@{DIGEST}", "digest": DIGEST}
    assert fields["layer"]["entries"] == 3
    assert (fields["frozenSeconds"], fields["pushSeconds"]) == (0.1, 0.3)


def test_layer_facts_align_history_and_mark_own() -> None:
    manifest = {
        "layers": [
            {"digest": "sha256:" + "1" * 64, "size": 5, "mediaType": "gzip"},
            {"digest": "sha256:" + "2" * 64, "size": 7, "mediaType": "gzip"},
        ]
    }
    config = {
        "rootfs": {"diff_ids": ["sha256:" + "a" * 64, "sha256:" + "b" * 64]},
        "history": [
            {"created_by": "ADD rootfs"},
            {"created_by": "CMD sh", "empty_layer": True},
            {"created_by": "lamina ContainerCommit team/snap"},
        ],
    }
    facts = layer_facts(manifest, config, inherited=1)
    assert [(f.created_by, f.own, f.diff_id[-1]) for f in facts] == [  # type: ignore[index]
        ("ADD rootfs", False, "a"),
        ("lamina ContainerCommit team/snap", True, "b"),
    ]


def _secret(payload: object, kind: str = "kubernetes.io/dockerconfigjson") -> dict[str, object]:
    encoded = base64.b64encode(json.dumps(payload).encode()).decode()
    return {"type": kind, "data": {".dockerconfigjson": encoded}}


def test_push_secret_checks() -> None:
    good = {"auths": {"registry.local": {"auth": "dTpw"}}}
    assert json.loads(docker_config_of(_secret(good), "ns", "creds")) == good
    for secret, reason in [
        (None, "PushSecretNotFound"),
        (_secret(good, kind="Opaque"), "PushSecretInvalid"),
        (_secret(["not", "a", "map"]), "PushSecretInvalid"),
        (
            {"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "!!"}},
            "PushSecretInvalid",
        ),
    ]:
        with pytest.raises(PushSecretError) as raised:
            docker_config_of(secret, "ns", "creds")
        assert raised.value.reason == reason


def test_a_long_commit_name_gives_valid_labels_and_is_found_again_by_its_annotations() -> None:
    name = "c" * 128
    job = commit_job(
        namespace="team-a", name=name, uid="u-1", spec=spec(), target=TARGET, settings=SETTINGS
    )
    labels = job["metadata"]["labels"]
    assert all(len(value) <= 63 for value in labels.values())
    assert labels["lamina.dev/commit-name"] != name
    for metadata in (job["metadata"], job["spec"]["template"]["metadata"]):
        assert commit_of(metadata["labels"], metadata["annotations"]) == ("team-a", name)
    # A Job made before the annotations existed is still found by its labels.
    assert commit_of({"lamina.dev/commit-namespace": "ns", "lamina.dev/commit-name": "x"}, {}) == (
        "ns",
        "x",
    )
