"""The operator's own Image watch (off kopf): a paged listing fills the store and tells the
loop what changed, the loop waits for every scope, every event reaches the Events reader,
and deletions (also those missed while not watching) leave the store.

The Kube here is a stand-in for the API server's list and watch answers: what is tested is
the watch's bookkeeping, not the API server (the API tier runs it against a real one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from lamina.domain.changes import Changes
from lamina.handlers.image_watch import ImageStore, record_of, watch_images
from lamina.handlers.layer_watch import LayerStore
from lamina.handlers.state import ClusterView

DIGEST = "sha256:" + "c" * 64


def image(name: str, version: str, digest: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "lamina.dev/v1alpha1",
        "kind": "Image",
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": version,
        },
        "spec": {
            "parent": {"ref": "registry.example/base:1"},
            "build": {"steps": ["RUN true"]},
            "output": {"repository": f"registry.example/{name}"},
        },
        "status": {"digest": digest} if digest else {},
    }


class _Kube:
    """Answers one paged listing, then the given watch events, then waits forever."""

    def __init__(self, pages: list[list[dict[str, Any]]], events: list[tuple[str, Any]]):
        self.pages, self.events = pages, events
        self.listed_with: list[tuple[str, str | None, int]] = []

    async def list_pages(
        self, plural: str, namespace: str | None, limit: int = 500
    ) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        self.listed_with.append((plural, namespace, limit))
        for page in self.pages:
            yield page, "100"

    async def watch_objects(
        self, plural: str, namespace: str | None, resource_version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        assert resource_version == "100"  # from the listing on
        for event in self.events:
            yield event
        await asyncio.Event().wait()


async def _run(kube: _Kube, store: ImageStore, view: ClusterView) -> list[tuple[str, Any]]:
    touched: list[tuple[str, Changes]] = []
    seen: list[tuple[str, Any]] = []

    async def on_event(event: str, body: Mapping[str, Any]) -> None:
        seen.append((event, body["metadata"]["name"]))

    task = asyncio.create_task(
        watch_images(
            kube,  # type: ignore[arg-type]
            "ns",
            store=store,
            saw=view,
            touch=lambda namespace, changes: touched.append((namespace, changes)),
            logger=None,
            on_event=on_event,
        )
    )
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return [*seen, *(("touch", t) for t in touched)]


def test_a_paged_listing_fills_the_store_then_the_watch_keeps_it() -> None:
    kube = _Kube(
        [[image("a", "1"), image("b", "2")], [image("c", "3")]],
        [("MODIFIED", image("a", "4", DIGEST)), ("DELETED", image("b", "5"))],
    )
    store, view = ImageStore(["ns"]), ClusterView()
    seen = asyncio.run(_run(kube, store, view))
    assert kube.listed_with == [("images", "ns", 500)]
    assert store.ready
    assert sorted(r.name for r in store.get("ns")) == ["a", "c"]
    assert next(r for r in store.get("ns") if r.name == "a").digest == DIGEST
    events = [s for s in seen if s[0] != "touch"]
    assert events == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("ADDED", "c"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    touches = [t for kind, t in seen if kind == "touch"]
    # Each listed Image is news (its subtree too); the ready signal is an empty touch of "".
    assert ("ns", Changes(frozenset({"a"}), frozenset({"a"}))) in touches
    assert ("", Changes()) in touches
    # The digest moved: a's tree facts changed, so its subtree is rendered again.
    assert touches[-2] == ("ns", Changes(frozenset({"a"}), frozenset({"a"})))
    assert touches[-1][1].images == frozenset({"b"})  # the deletion


def test_a_relisting_drops_what_was_deleted_while_not_watching() -> None:
    store, view = ImageStore(["ns"]), ClusterView()
    gone = record_of(image("gone", "1"))
    store.put(gone)
    view.saw(gone)
    seen = asyncio.run(_run(_Kube([[image("kept", "2")]], []), store, view))
    assert [r.name for r in store.get("ns")] == ["kept"]
    assert ("DELETED", "gone") in seen


def test_the_loop_waits_for_every_image_scope() -> None:
    view = ClusterView()
    images, layers = ImageStore(["a", "b"]), LayerStore(["a"])
    view.attach(images, layers)
    layers.listed.add("a")
    images.listed.add("a")
    assert not view.attached
    images.listed.add("b")
    assert view.attached
