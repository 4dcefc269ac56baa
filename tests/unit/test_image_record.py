"""An ImageRecord keeps its status packed (JSON) and the facts every pass reads parsed: what
reads the status gets exactly what was set, and the facts agree with it."""

from __future__ import annotations

from dataclasses import replace

from lamina.api.image import ImageStatus
from lamina.domain.snapshot import ImageRecord

DIGEST = "sha256:" + "d" * 64
PARENT = "sha256:" + "e" * 64
L1, L2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64

STATUS = {
    "observedGeneration": 2,
    "digest": DIGEST,
    "builtFrom": {"generation": 2, "parentDigest": PARENT},
    "resolved": {"ref": "r.example/base:1", "digest": PARENT, "resolvedAt": "2026-01-01T00:00:00Z"},
    "build": {"job": "lamina-build-1", "phase": "Succeeded", "inputs": "abc"},
    "layers": [{"digest": L1, "size": 10, "own": False}, {"digest": L2, "size": 20, "own": True}],
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "UpToDate",
            "message": DIGEST,
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 2,
        }
    ],
}
SPEC = {
    "parent": {"ref": "r.example/base:1"},
    "build": {"steps": ["RUN true"]},
    "output": {"repository": "r.example/app"},
}


def record(status: dict[str, object] = STATUS) -> ImageRecord:
    return ImageRecord.parse("ns", "app", SPEC, status, {"generation": 2, "uid": "u"})


def test_the_status_read_back_is_the_status_set() -> None:
    parsed = ImageStatus.model_validate(STATUS)
    got = record()
    assert got.status == parsed
    assert got.status is not got.status  # parsed on each read, not kept
    assert ImageRecord("ns", "app").status == ImageStatus()
    assert ImageRecord("ns", "app", status=parsed).status == parsed


def test_the_facts_agree_with_the_status() -> None:
    got = record()
    status = got.status
    assert got.digest == status.digest == DIGEST
    assert got.resolved == status.resolved
    assert got.built_from == status.built_from
    assert got.build_record == status.build
    assert got.source is None
    assert got.layers.layers == ((L1, False), (L2, True))
    assert got.node.parent_ref_digest == PARENT
    assert got.build is not None and got.build.digest == DIGEST


def test_replace_keeps_the_status_or_sets_a_new_one() -> None:
    got = record()
    assert replace(got, resource_version="9").status == got.status
    newer = got.status.model_copy(update={"digest": PARENT})
    moved = replace(got, status=newer)
    assert (moved.digest, moved.status.digest) == (PARENT, PARENT)
    assert got.digest == DIGEST  # the original is unchanged


def test_equal_statuses_pack_to_equal_text() -> None:
    again = record(dict(reversed(list(STATUS.items()))))  # the same status, keys reordered
    assert again.status_json == record().status_json
    assert record({**STATUS, "digest": PARENT}).status_json != record().status_json


def test_an_unreadable_status_reads_as_empty() -> None:
    got = record({"layers": "not a list"})
    assert got.status_unreadable
    assert got.status == ImageStatus()
    assert got.layers.layers == ()
