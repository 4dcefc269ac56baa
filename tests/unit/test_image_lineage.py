"""Lineage annotations of rebased images, and the no-op cascade, as pure decisions.

A rebase re-points the manifest's base at the new parent and keeps what the build wrote
(created, anything else).  A rebuild that pushes the digest it already had moves no child:
the children's wanted parent digest is the parent's digest, which did not change.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from lamina.api.image import ImageSpec
from lamina.domain.builds import BuildState, plan_namespace
from lamina.domain.image_annotations import (
    BASE_DIGEST,
    BASE_NAME,
    CREATED,
    base_name,
    build_annotations,
    created_at,
)
from lamina.domain.rebase import RebaseRefused, rebase
from lamina.domain.rebuild import BuiltFrom


def digest(char: str) -> str:
    return "sha256:" + char * 64


def manifest(*layers: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"digest": digest("c"), "size": 1},
        "layers": [{"digest": digest(c), "size": 1, "mediaType": "gzip"} for c in layers],
    }
    if annotations is not None:
        body["annotations"] = annotations
    return body


CONFIG = {
    "rootfs": {"type": "layers", "diff_ids": [digest("a"), digest("b"), digest("z")]},
    "history": [{"created_by": "ADD"}, {"created_by": "RUN fix"}, {"created_by": "RUN app"}],
}
NEW_PARENT_CONFIG = {
    "rootfs": {"type": "layers", "diff_ids": [digest("a"), digest("y")]},
    "history": [{"created_by": "ADD"}, {"created_by": "RUN new fix"}],
}
BUILT = {
    BASE_NAME: "registry.local/base",
    BASE_DIGEST: digest("0"),
    CREATED: "1970-01-01T00:00:00Z",
    "com.example.team": "payments",
}


def rebased(image: dict[str, Any], **overrides: Any) -> tuple[dict[str, Any], Any] | RebaseRefused:
    arguments: dict[str, Any] = {
        "image_manifest": image,
        "image_config": CONFIG,
        "old_parent_manifest": manifest("1", "2"),
        "new_parent_manifest": manifest("1", "3"),
        "new_parent_config": NEW_PARENT_CONFIG,
        "new_parent_digest": digest("5"),
        "new_parent_name": "registry.local/base",
        **overrides,
    }
    return rebase(**arguments)


def test_a_rebase_points_the_base_at_the_new_parent_and_keeps_the_rest() -> None:
    result = rebased(manifest("1", "2", "9", annotations=BUILT))
    assert not isinstance(result, RebaseRefused)
    new_manifest, _ = result
    assert new_manifest["annotations"] == {
        **BUILT,
        BASE_DIGEST: digest("5"),
        BASE_NAME: "registry.local/base",
    }


def test_a_rebase_names_a_parent_whose_repository_moved() -> None:
    result = rebased(
        manifest("1", "2", "9", annotations=BUILT), new_parent_name="registry.local/base-v2"
    )
    assert not isinstance(result, RebaseRefused)
    assert result[0]["annotations"][BASE_NAME] == "registry.local/base-v2"


def test_an_image_built_without_lineage_gets_it_on_rebase() -> None:
    result = rebased(manifest("1", "2", "9"))
    assert not isinstance(result, RebaseRefused)
    assert result[0]["annotations"] == {BASE_NAME: "registry.local/base", BASE_DIGEST: digest("5")}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"new_parent_digest": "sha256:short"}, "the new parent digest"),
        ({"new_parent_name": 'r/x",push=false'}, "the new parent name"),
    ],
)
def test_a_rebase_refuses_lineage_it_cannot_write(override: dict[str, str], message: str) -> None:
    result = rebased(manifest("1", "2", "9", annotations=BUILT), **override)
    assert isinstance(result, RebaseRefused) and result.reason.startswith(message)


def test_build_and_rebase_name_the_base_the_same_way() -> None:
    image = ImageSpec.model_validate(
        {
            "parent": {"image": "base"},
            "build": {"steps": ["RUN true"]},
            "output": {"repository": "registry.local/app"},
        }
    )
    pinned = f"registry.local/base@{digest('5')}"
    built = build_annotations(image, pinned)
    result = rebased(manifest("1", "2", "9"), new_parent_name=base_name(image, pinned))
    assert not isinstance(result, RebaseRefused)
    assert result[0]["annotations"][BASE_NAME] == built[BASE_NAME] == "registry.local/base"
    assert built[BASE_DIGEST] == result[0]["annotations"][BASE_DIGEST] == digest("5")
    assert built[CREATED] == created_at(0) == "1970-01-01T00:00:00Z"


# -- the no-op cascade ---------------------------------------------------------------------

B1 = digest("b")
P1 = digest("1")
BASE = BuildState(
    "base", "u-base", 1, None, "busybox:1", resolved_digest=P1, digest=B1,
    built_from=BuiltFrom(1, P1),
)  # fmt: skip
APP = BuildState("app", "u-app", 1, "base", None, digest=digest("a"), built_from=BuiltFrom(1, B1))


def actions(*states: BuildState) -> dict[str, str]:
    return {name: plan.action for name, plan in plan_namespace(states).items()}


def test_a_rebuild_that_pushes_the_same_digest_moves_no_child() -> None:
    # Asked to rebuild: the parent builds, its child waits for the result.
    asked = replace(BASE, trigger="t1")
    assert actions(asked, APP) == {"base": "queued", "app": "wait-parent"}
    running = replace(asked, build_phase="Running")
    assert actions(running, APP) == {"base": "building", "app": "wait-parent"}
    # The build pushed the digest the parent already had: nothing changed below it.
    done = replace(asked, build_phase="Succeeded", built_from=BuiltFrom(1, P1, "t1"))
    assert actions(done, APP) == {"base": "none", "app": "none"}
    # A different digest would have been a parent change for the child.
    moved = replace(done, digest=digest("d"))
    (reason,) = plan_namespace([moved, APP])["app"].reasons
    assert str(reason) == f"ParentChanged {B1} -> {digest('d')}"
