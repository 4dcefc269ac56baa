"""Image assembly: config + manifest of a commit, from the parent's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from lamina.oci.image import (
    BASE_DIGEST,
    BASE_NAME,
    CommitInfo,
    ConfigChanges,
    NewLayer,
    commit_config,
    commit_manifest,
    select_platform,
)
from lamina.oci.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
)

L1 = "sha256:" + "1" * 64
NEW = NewLayer("sha256:" + "2" * 64, "sha256:" + "3" * 64, 123, "gzip")
PARENT_CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "Labels": {"x": "1"}},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "4" * 64]},
    "history": [{"created_by": "base"}],
    "container_config": {"Cmd": ["stale"]},
}
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_config_appends_diff_id_history_and_applies_changes() -> None:
    changes = ConfigChanges.from_json(
        {
            "env": [{"name": "A", "value": "2"}, {"name": "B", "value": "x=y"}],
            "labels": {"y": "2"},
            "exposedPorts": ["8080", "53/udp"],
            "workingDir": "/app",
            "user": "1000",
        }
    )
    info = CommitInfo("ContainerCommit ns/c", WHEN, "msg", "me", changes)
    config = json.loads(commit_config(PARENT_CONFIG, NEW, info).data)
    assert config["rootfs"]["diff_ids"] == ["sha256:" + "4" * 64, NEW.diff_id]
    assert config["history"][-1] == {
        "created": "2026-01-02T03:04:05Z",
        "created_by": "ContainerCommit ns/c",
        "comment": "msg",
        "author": "me",
    }
    runtime = config["config"]
    assert runtime["Env"] == ["PATH=/bin", "A=2", "B=x=y"]
    assert runtime["Labels"] == {"x": "1", "y": "2"}
    assert runtime["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert (runtime["WorkingDir"], runtime["User"], runtime["Cmd"]) == ("/app", "1000", ["sh"])
    assert "container_config" not in config
    assert PARENT_CONFIG["rootfs"]["diff_ids"] == ["sha256:" + "4" * 64]  # parent untouched


def test_entrypoint_without_cmd_clears_the_inherited_cmd() -> None:
    changes = ConfigChanges.from_json({"entrypoint": ["/app"]})
    config = json.loads(
        commit_config(PARENT_CONFIG, NEW, CommitInfo("c", WHEN, changes=changes)).data
    )
    assert config["config"]["Entrypoint"] == ["/app"]
    assert "Cmd" not in config["config"]


def test_unknown_changes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown change"):
        ConfigChanges.from_json({"volumes": ["/x"]})


def test_manifest_is_oci_with_translated_parent_types_and_base_annotations() -> None:
    parent_manifest = {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": DOCKER_CONFIG, "digest": "sha256:" + "5" * 64, "size": 1},
        "layers": [{"mediaType": DOCKER_LAYER_GZIP, "digest": L1, "size": 10}],
    }
    config = commit_config(PARENT_CONFIG, NEW, CommitInfo("c", WHEN))
    zstd = NewLayer(NEW.digest, NEW.diff_id, NEW.size, "zstd")
    blob = commit_manifest(parent_manifest, config, zstd, base_name="docker.io/x:1", base_digest=L1)
    manifest = json.loads(blob.data)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"] == config.descriptor()
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["layers"] == [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": L1, "size": 10},
        {"mediaType": OCI_LAYER_ZSTD, "digest": NEW.digest, "size": 123},
    ]
    assert manifest["annotations"] == {BASE_DIGEST: L1, BASE_NAME: "docker.io/x:1"}
    again = commit_manifest(
        parent_manifest, config, zstd, base_name="docker.io/x:1", base_digest=L1
    )
    assert again.digest == blob.digest  # deterministic bytes


def _entry(digest: str, architecture: str, media_type: str = OCI_MANIFEST) -> dict[str, Any]:
    platform = {"os": "linux", "architecture": architecture}
    return {"mediaType": media_type, "digest": digest, "size": 1, "platform": platform}


def test_select_platform_from_an_index() -> None:
    index = {"manifests": [_entry("sha256:arm", "arm64"), _entry("sha256:amd", "amd64")]}
    assert select_platform(index)["digest"] == "sha256:amd"
    with pytest.raises(LookupError, match=r"no linux/s390x manifest.*linux/amd64"):
        select_platform(index, architecture="s390x")


@pytest.mark.parametrize(
    "media_type",
    [OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json", None, "x/y"],
)
def test_an_entry_that_is_not_an_image_manifest_is_never_the_platforms_image(
    media_type: str | None,
) -> None:
    # A hostile parent index names a nested index (or leaves the type out) for linux/amd64:
    # pinned, no build could use it.
    nested = _entry("sha256:nested", "amd64", media_type or "")
    if media_type is None:
        del nested["mediaType"]
    with pytest.raises(LookupError, match=r"no linux/amd64 manifest.*1 other entries are not"):
        select_platform({"manifests": [nested]})
    # Listed beside a real image manifest, the image manifest is taken whatever the order.
    index = {"manifests": [nested, _entry("sha256:amd", "amd64", DOCKER_MANIFEST)]}
    assert select_platform(index)["digest"] == "sha256:amd"


def test_an_image_manifest_entry_is_known_whatever_its_case_or_parameters() -> None:
    entry = _entry("sha256:amd", "amd64", OCI_MANIFEST.upper() + "; charset=utf-8")
    assert select_platform({"manifests": [entry]})["digest"] == "sha256:amd"
