"""The operator's own Layer store answers like the kopf index it replaced, and tells the loop
when every scope is listed (the loop must not decide on half a listing)."""

from __future__ import annotations

from lamina.domain.layers import layer_name
from lamina.handlers.layer_watch import LayerStore, record_of
from lamina.handlers.no_diffbase import needed

L1 = "sha256:" + "a" * 64
L2 = "sha256:" + "b" * 64


def layer(namespace: str, digest: str, version: str = "1") -> dict[str, object]:
    return {
        "metadata": {
            "namespace": namespace,
            "name": layer_name(digest),
            "resourceVersion": version,
            "generation": 1,
            "labels": {"app.kubernetes.io/managed-by": "lamina"},
        },
        "status": {"digest": digest, "usedByCount": 2},
    }


def test_the_store_answers_per_namespace_like_an_index() -> None:
    store = LayerStore(["a", "b"])
    store.put(record_of(layer("a", L1)))
    store.put(record_of(layer("a", L2)))
    store.put(record_of(layer("b", L1)))
    assert sorted(r.name for r in store.get("a")) == sorted([layer_name(L1), layer_name(L2)])
    assert store.get("missing", ()) == ()
    assert sorted(store) == ["a", "b"]
    record = next(iter(store.get("b")))
    assert (record.managed, record.status.used_by_count, record.digest) == (True, 2, L1)
    store.drop("b", layer_name(L1))
    assert sorted(store) == ["a"]  # an emptied namespace is gone, as from an index
    assert store.in_scope("a") == [("a", layer_name(L1)), ("a", layer_name(L2))]


def test_the_store_is_ready_once_every_scope_is_listed() -> None:
    store = LayerStore(["a", "b"])
    store.listed.add("a")
    assert not store.ready
    store.listed.add("b")
    assert store.ready
    assert LayerStore([None]).ready is False


class _Handlers:
    def __init__(self, handlers: list[object]) -> None:
        self._handlers = handlers

    def get_all_handlers(self) -> list[object]:
        return self._handlers


class _Registry:
    def __init__(self, changing: list[object]) -> None:
        self._changing = _Handlers(changing)


def test_a_diff_base_is_kept_only_for_change_detecting_handlers() -> None:
    assert needed(_Registry([])) is False
    assert needed(_Registry([object()])) is True
    assert needed(object()) is True  # a kopf that does not look as expected keeps its own
