"""Rebase splices an image's own layers onto a new parent, or refuses with the reason."""

from __future__ import annotations

import pytest

from lamina.domain.rebase import RebaseRefused, config_digest, rebase


def digest(char: str) -> str:
    return "sha256:" + char * 64


def manifest(*layers: str) -> dict[str, object]:
    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"digest": digest("c"), "size": 1},
        "layers": [{"digest": digest(c), "size": 1, "mediaType": "gzip"} for c in layers],
        "annotations": {"org.opencontainers.image.base.digest": digest("0")},
    }


def config(diff_ids: str, history: list[tuple[str, bool]], env: str = "A=1") -> dict[str, object]:
    return {
        "config": {"Env": [env]},
        "rootfs": {"type": "layers", "diff_ids": [digest(c) for c in diff_ids]},
        "history": [
            {"created_by": what, **({"empty_layer": True} if empty else {})}
            for what, empty in history
        ],
    }


OLD_PARENT = manifest("1", "2")
IMAGE = manifest("1", "2", "9")
IMAGE_CONFIG = config(
    "abz",
    [("ADD base", False), ("RUN old fix", False), ("ENV A=1", True), ("RUN app", False)],
)
NEW_PARENT = manifest("1", "3")
NEW_PARENT_CONFIG = config("ay", [("ADD base", False), ("RUN new fix", False)], env="B=2")


def test_own_layers_move_onto_the_new_parent() -> None:
    result = rebase(
        image_manifest=IMAGE,
        image_config=IMAGE_CONFIG,
        old_parent_manifest=OLD_PARENT,
        new_parent_manifest=NEW_PARENT,
        new_parent_config=NEW_PARENT_CONFIG,
        new_parent_digest=digest("5"),
        new_parent_name="registry.local/base",
    )
    assert not isinstance(result, RebaseRefused)
    new_manifest, new_config = result
    assert [layer["digest"] for layer in new_manifest["layers"]] == [
        digest("1"),
        digest("3"),
        digest("9"),
    ]
    assert new_config["rootfs"]["diff_ids"] == [digest("a"), digest("y"), digest("z")]
    assert [h["created_by"] for h in new_config["history"]] == [
        "ADD base",
        "RUN new fix",
        "ENV A=1",
        "RUN app",
    ]
    # The image's own runtime settings stay its own.
    assert new_config["config"] == {"Env": ["A=1"]}
    assert new_manifest["annotations"]["org.opencontainers.image.base.digest"] == digest("5")


def test_refused_when_the_old_parent_is_not_a_prefix() -> None:
    result = rebase(
        image_manifest=manifest("1", "4", "9"),
        image_config=IMAGE_CONFIG,
        old_parent_manifest=OLD_PARENT,
        new_parent_manifest=NEW_PARENT,
        new_parent_config=NEW_PARENT_CONFIG,
        new_parent_digest=digest("5"),
        new_parent_name="registry.local/base",
    )
    assert result == RebaseRefused("the old parent's layers are not the first layers of the image")


def test_refused_when_config_and_layers_disagree() -> None:
    result = rebase(
        image_manifest=IMAGE,
        image_config=config("ab", [("ADD", False)]),
        old_parent_manifest=OLD_PARENT,
        new_parent_manifest=NEW_PARENT,
        new_parent_config=NEW_PARENT_CONFIG,
        new_parent_digest=digest("5"),
        new_parent_name="registry.local/base",
    )
    assert isinstance(result, RebaseRefused)


HOSTILE = "registry answers of the wrong shape are a refusal, never an exception"


@pytest.mark.parametrize(
    ("documents", "reason"),
    [
        # Finding 1c of the attack review: the new parent's config (a blob its registry
        # chooses; only its digest is checked) with rootfs not an object raised AttributeError,
        # which the rebase handler did not catch.
        (
            {"new_parent_config": {"rootfs": ["hostile"]}},
            "the new parent config has a rootfs that is not an object",
        ),
        (
            {"new_parent_config": {"rootfs": {"diff_ids": "sha256:x"}}},
            "in the new parent config's rootfs, diff_ids is not a list",
        ),
        (
            {"new_parent_config": {"rootfs": {"diff_ids": [1, 2]}}},
            "the new parent config has a diff_id that is not a string",
        ),
        (
            {"new_parent_config": {**NEW_PARENT_CONFIG, "history": ["RUN x"]}},
            "the new parent config has a history entry that is not an object",
        ),
        # A manifest whose layers hold strings raised TypeError in the handler's own loop.
        (
            {"new_parent_manifest": {**NEW_PARENT, "layers": ["sha256:" + "3" * 64]}},
            "the new parent manifest has a layer that is not a descriptor",
        ),
        (
            {"new_parent_manifest": {**NEW_PARENT, "layers": {"digest": digest("3")}}},
            "in the new parent manifest, layers is not a list",
        ),
        (
            {"new_parent_manifest": manifest("1", "3", "4")},
            "the new parent config's diff_ids do not match its layers",
        ),
        (
            {"old_parent_manifest": {"layers": [{"size": 1}]}},
            "the old parent manifest has a layer that is not a descriptor",
        ),
        (
            {"image_config": {**IMAGE_CONFIG, "rootfs": "layers"}},
            "the image config has a rootfs that is not an object",
        ),
    ],
)
def test_hostile_documents_are_refused(documents: dict[str, object], reason: str) -> None:
    arguments: dict[str, object] = {
        "image_manifest": IMAGE,
        "image_config": IMAGE_CONFIG,
        "old_parent_manifest": OLD_PARENT,
        "new_parent_manifest": NEW_PARENT,
        "new_parent_config": NEW_PARENT_CONFIG,
        "new_parent_digest": digest("5"),
        "new_parent_name": "registry.local/base",
        **documents,
    }
    assert rebase(**arguments) == RebaseRefused(reason), HOSTILE  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "manifest", [None, "x", [], {}, {"config": "sha256:1"}, {"config": {"digest": 7}}]
)
def test_a_manifest_without_a_config_digest_is_refused_by_name(manifest: object) -> None:
    with pytest.raises(ValueError, match="the new parent manifest names no config digest"):
        config_digest(manifest, "new parent")


def test_a_config_digest_is_read_from_its_descriptor() -> None:
    assert config_digest({"config": {"digest": "sha256:ab"}}, "image") == "sha256:ab"
