"""series_reseal and Events._reseal (compare-and-swap rewrites of stored bytes) on every
engine, called as Store.rotate_encryption does."""

from __future__ import annotations

import time

import httpx
import msgpack
import pytest

import satchel
import support_server
from satchel import QuotaExceeded, ReadOnlyError
from satchel._events import KIND as EVENTS
from satchel._events import PAGE_EVENTS
from satchel._keys import kind_scope, name_key
from satchel._series import series_of


def _raw(store, name):
    """The stored bytes of the points of series `name`."""
    return dict(series_of(store._shared.backend).series_range(store._scope, name, None, None, 100))


def test_series_reseal_replaces_only_what_is_unchanged(store):
    store.series("s").extend([(1, "a"), (2, "b"), (3, "c")])
    backend, scope = series_of(store._shared.backend), store._scope
    before = _raw(store, "s")
    points = [(1, before[1], b"new-1"), (2, b"stale", b"new-2"), (3, before[3], before[3] + b"!")]
    assert backend.series_reseal(scope, "s", points) == 2
    assert _raw(store, "s") == {1: b"new-1", 2: before[2], 3: before[3] + b"!"}
    assert backend.series_reseal(scope, "s", points) == 0  # old is stale now
    assert backend.series_count(scope, "s") == 3


def test_series_reseal_leaves_removed_and_missing_points_alone(store):
    series = store.series("s")
    series.extend([(1, "a"), (2, "b")])
    backend, scope = series_of(store._shared.backend), store._scope
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


def _event_records(store, name):
    """The stored records of event sequence `name`: {key: value}."""
    scope = kind_scope(store._scope, EVENTS)
    records = store._shared.backend.scan(scope, name_key(name), None, 100, time.time())
    return {r.key: r.value for r in records}


def _marked(data, name):
    return b"!" + data


def _unmarked(data, name):
    return data[1:] if data.startswith(b"!") else None


def test_events_reseal_rewrites_events_base_and_head(store):
    cart = store.events("cart")
    for i in range(3):
        cart.apply({"n": i})
    assert cart.compact(before=None) == 3
    for i in range(PAGE_EVENTS + 1):  # a page of events, and one in the head's tail
        cart.apply({"m": i})
    before = _event_records(store, "cart")
    assert len(before) == 3  # head, base, page
    stored = PAGE_EVENTS + 1 + 2  # events, base and head states
    assert cart._reseal(_marked) == (stored, stored)
    after = _event_records(store, "cart")
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in after)
    assert cart._reseal(_unmarked) == (stored, stored)  # back to the originals
    assert _event_records(store, "cart") == before
    assert cart.current() == {"n": 2, "m": PAGE_EVENTS} and len(cart) == PAGE_EVENTS + 4
    assert [e.value for e in cart.history()] == list(range(PAGE_EVENTS + 1))
    assert cart._reseal(lambda data, name: None) == (stored, 0)  # nothing to do: nothing written


def test_events_reseal_leaves_what_changed_meanwhile(store):
    cart = store.events("cart")
    cart.apply({"a": 1})
    cart.apply({"b": 2})
    calls = []

    def append_then_mark(data, name):
        calls.append(name)
        if len(calls) == 1:  # the head moves on while the events are resealed
            cart.apply({"c": 3})
        return b"!" + data

    # The head it read first (state, events 1 and 2) had moved on when it was written
    # back: read again (state, events 1 to 3) and resealed then.
    assert cart._reseal(append_then_mark) == (3 + 4, 4)
    head = msgpack.unpackb(_event_records(store, "cart")[name_key("cart")])
    assert head[4].startswith(b"!") and all(data.startswith(b"!") for _, data in head[5])
    assert len(head[5]) == 3
    assert cart._reseal(_unmarked)[1] == 4
    assert cart.current() == {"a": 1, "b": 2, "c": 3}

    def delete_then_mark(data, name):
        cart.delete()
        return b"!" + data

    assert cart._reseal(delete_then_mark)[1] == 0  # deleted: nothing comes back
    assert _event_records(store, "cart") == {} and store.event_names() == []


def test_reseal_refused_on_a_read_only_store(tmp_path):
    url = f"sqlite:///{tmp_path}/ro.db"
    with satchel.open(url) as store:
        store.series("s").add(1, "a")
        store.events("e").apply({"a": 1})
        point = _raw(store, "s")[1]
    with satchel.open(url, readonly=True) as store:
        backend, scope = series_of(store._shared.backend), store._scope
        with pytest.raises(ReadOnlyError):
            backend.series_reseal(scope, "s", [(1, point, b"x")])
        with pytest.raises(ReadOnlyError):
            store.events("e")._reseal(_marked)
        assert _raw(store, "s") == {1: point}


def test_reseal_over_http_is_charged_against_the_quota():
    server = support_server.running()
    token = server.tenant(quota_bytes=20_000)
    headers = {"Authorization": f"Bearer {token}"}
    with satchel.open(f"{server.url}?token={token}") as store, httpx.Client(
        base_url=server.url, headers=headers, timeout=10
    ) as c:
        store.series("s").add(1, b"x" * 5000)
        backend, scope = series_of(store._shared.backend), store._scope
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
