"""The commit Job and what its outcome means, as pure functions."""

from __future__ import annotations

import base64
import json

import pytest

from lamina.api.commit import ContainerCommitSpec
from lamina.domain.commit_job import (
    CommitSettings,
    CommitTarget,
    commit_job,
    commit_job_name,
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
    host_root = next(m for m in container["volumeMounts"] if m["name"] == "host-root")
    assert host_root["readOnly"] is True
    args = container["args"]
    assert args[:3] == ["snapshot", "--container-id", "containerd://abc"]
    assert args[args.index("--parent") + 1] == f"docker.io/library/busybox@{DIGEST}"
    assert args[args.index("--to") + 1] == "registry.local/demo/web:v2"
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
    container = job["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert "--pause" not in args
    assert args[args.index("--message") + 1] == "tools"
    assert args[args.index("--exclude") + 1] == "/tmp"
    assert json.loads(args[args.index("--change-json") + 1]) == {
        "cmd": ["sh"],
        "env": [{"name": "A", "value": "1"}],
    }
    assert "--insecure" in args
    assert args[args.index("--docker-config") + 1].endswith("/config.json")
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
    assert pod["containers"][0]["args"] == ["thaw", "--container-id", "containerd://abc"]


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
