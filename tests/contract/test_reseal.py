"""series_reseal / events_reseal (compare-and-swap rewrites of stored bytes) on every engine,
called on the store's engine as Store.rotate_encryption does."""

from __future__ import annotations

import httpx
import pytest

import satchel
import support_server
from satchel import QuotaExceeded, ReadOnlyError


def _raw(store, name):
    """The stored bytes of the points of series `name`."""
    return dict(store._shared.backend.series_range(store._scope, name, None, None, 100))


def test_series_reseal_replaces_only_what_is_unchanged(store):
    store.series("s").extend([(1, "a"), (2, "b"), (3, "c")])
    backend, scope = store._shared.backend, store._scope
    before = _raw(store, "s")
    points = [(1, before[1], b"new-1"), (2, b"stale", b"new-2"), (3, before[3], before[3] + b"!")]
    assert backend.series_reseal(scope, "s", points) == 2
    assert _raw(store, "s") == {1: b"new-1", 2: before[2], 3: before[3] + b"!"}
    assert backend.series_reseal(scope, "s", points) == 0  # old is stale now
    assert backend.series_count(scope, "s") == 3


def test_series_reseal_leaves_removed_and_missing_points_alone(store):
    series = store.series("s")
    series.extend([(1, "a"), (2, "b")])
    backend, scope = store._shared.backend, store._scope
    before = _raw(store, "s")
    assert series.remove(1, 2) == 1
    assert backend.series_reseal(scope, "s", [(1, before[1], b"x")]) == 0
    assert backend.series_reseal(scope, "s", [(7, before[2], b"x")]) == 0
    assert backend.series_reseal(scope, "nope", [(2, before[2], b"x")]) == 0
    assert backend.series_reseal(scope, "s", []) == 0
    assert _raw(store, "s") == {2: before[2]}
    assert store.series_names() == ["s"]
    series.add(3, "c")  # the series still takes writes
    assert [t for t, _ in series.range()] == [2, 3]


def test_events_reseal_events_and_head(store):
    cart = store.events("cart")
    cart.apply({"a": 1})
    cart.apply({"b": 2})
    backend, scope = store._shared.backend, store._scope
    (_, ts1, e1), (_, ts2, e2) = backend.events_read(scope, "cart", 0, 10)
    seq, ts, head = backend.events_state(scope, "cart", "head")
    replaced = backend.events_reseal(
        scope, "cart", [(1, e1, b"event-1"), (2, b"stale", b"event-2")],
        [("head", head, b"head!"), ("base", b"", b"base!")],
    )  # fmt: skip
    assert replaced == 2
    assert backend.events_read(scope, "cart", 0, 10) == [(1, ts1, b"event-1"), (2, ts2, e2)]
    assert backend.events_state(scope, "cart", "head") == (seq, ts, b"head!")
    assert backend.events_state(scope, "cart", "base") is None
    # Back to the originals: the sequence reads and takes events as before.
    assert backend.events_reseal(scope, "cart", [(1, b"event-1", e1)],
                                 [("head", b"head!", head)]) == 2  # fmt: skip
    assert [e.item for e in cart.history()] == ["a", "b"]
    assert cart.apply({"c": 3}) == {"a": 1, "b": 2, "c": 3}
    assert len(cart) == 3


def test_events_reseal_after_compact_and_delete(store):
    cart = store.events("cart")
    for i in range(3):
        cart.apply({"n": i})
    backend, scope = store._shared.backend, store._scope
    (_, _, e1), *_ = backend.events_read(scope, "cart", 0, 10)
    assert cart.compact() == 3
    base = backend.events_state(scope, "cart", "base")
    assert base is not None
    # Event 1 was folded into the base: gone, so not replaced; the base is.
    assert backend.events_reseal(scope, "cart", [(1, e1, b"x")], [("base", base[2], b"b")]) == 1
    assert backend.events_state(scope, "cart", "base") == (base[0], base[1], b"b")
    assert backend.events_read(scope, "cart", 0, 10) == []
    assert backend.events_reseal(scope, "cart", [], [("base", b"b", base[2])]) == 1
    assert cart.current() == {"n": 2}
    assert cart.delete()
    assert backend.events_reseal(scope, "cart", [(1, e1, b"x")], [("base", base[2], b"b")]) == 0
    assert backend.events_reseal(scope, "cart", []) == 0
    assert store.event_names() == []


def test_reseal_refused_on_a_read_only_store(tmp_path):
    url = f"sqlite:///{tmp_path}/ro.db"
    with satchel.open(url) as store:
        store.series("s").add(1, "a")
        store.events("e").apply({"a": 1})
        point = _raw(store, "s")[1]
    with satchel.open(url, readonly=True) as store:
        backend, scope = store._shared.backend, store._scope
        with pytest.raises(ReadOnlyError):
            backend.series_reseal(scope, "s", [(1, point, b"x")])
        with pytest.raises(ReadOnlyError):
            backend.events_reseal(scope, "e", [], [("head", b"", b"x")])
        assert _raw(store, "s") == {1: point}


def test_reseal_over_http_is_charged_against_the_quota():
    server = support_server.running()
    token = server.tenant(quota_bytes=20_000)
    headers = {"Authorization": f"Bearer {token}"}
    with satchel.open(f"{server.url}?token={token}") as store, httpx.Client(
        base_url=server.url, headers=headers, timeout=10
    ) as c:
        store.series("s").add(1, b"x" * 5000)
        backend, scope = store._shared.backend, store._scope
        old = _raw(store, "s")[1]
        used = c.get("/v1/usage").json()["bytes"]
        with pytest.raises(QuotaExceeded):
            backend.series_reseal(scope, "s", [(1, old, b"y" * 30_000)])
        assert _raw(store, "s") == {1: old}
        assert backend.series_reseal(scope, "s", [(1, old, b"small")]) == 1
        assert c.get("/v1/usage").json()["bytes"] == used - len(old) + len(b"small")
        twice = {"scope": "default", "name": "s", "points": [
            {"t": 1, "old": "", "new": ""}, {"t": 1, "old": "", "new": ""}]}  # fmt: skip
        assert c.post("/v1/series/reseal", json=twice).status_code == 400
