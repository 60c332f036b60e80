"""Errors, the dict protocol, the context manager, close(), and large batches."""

from __future__ import annotations

import time

import pytest

import satchel
from satchel import (
    InvalidInput,
    InvalidInputType,
    KeyNotFound,
    SatchelError,
    StoreClosed,
    UnsupportedValue,
)

# -- errors ------------------------------------------------------------------------------


def test_error_hierarchy(store):
    for name in (
        "KeyNotFound",
        "InvalidInput",
        "InvalidInputType",
        "UnsupportedValue",
        "CorruptData",
        "StoreClosed",
        "BackendError",
        "BackendUnavailable",
        "IncompatibleDatabase",
    ):
        assert issubclass(getattr(satchel, name), SatchelError), name
    assert issubclass(KeyNotFound, KeyError)
    assert issubclass(InvalidInput, ValueError)
    assert issubclass(InvalidInputType, InvalidInput)
    assert issubclass(InvalidInputType, TypeError)
    assert issubclass(UnsupportedValue, TypeError)
    assert issubclass(satchel.BackendUnavailable, satchel.BackendError)
    assert issubclass(satchel.IncompatibleDatabase, satchel.BackendError)


def test_key_not_found_names_key_and_scope(store):
    with pytest.raises(KeyNotFound) as exc_info:
        store.scope("my-scope").get("my-key")
    err = exc_info.value
    assert isinstance(err, KeyError)
    assert isinstance(err, SatchelError)
    assert "my-key" in str(err)
    assert "my-scope" in str(err)
    assert err.key == "my-key"
    assert err.scope == "my-scope"


def test_key_not_found_names_the_engine(store):
    with pytest.raises(KeyNotFound) as exc_info:
        store.get("my-key")
    assert exc_info.value.engine


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s["missing"],
        lambda s: s.__delitem__("missing"),
        lambda s: s.pop("missing"),
        lambda s: s.info("missing"),
        lambda s: s.ttl("missing"),
        lambda s: s.update("missing", lambda v: v),
    ],
    ids=["getitem", "delitem", "pop", "info", "ttl", "update"],
)
def test_every_key_not_found_names_key_and_scope(store, call):
    with pytest.raises(KeyNotFound) as exc_info:
        call(store.scope("sc"))
    assert "missing" in str(exc_info.value)
    assert "sc" in str(exc_info.value)


def test_unsupported_value_names_key_and_scope(store):
    with pytest.raises(UnsupportedValue) as exc_info:
        store.scope("vals").set("the-key", object())
    assert "the-key" in str(exc_info.value)
    assert "vals" in str(exc_info.value)
    assert isinstance(exc_info.value, SatchelError)


def test_unsupported_value_in_batch_names_the_key(store):
    with pytest.raises(UnsupportedValue) as exc_info:
        store.set_many({"fine": 1, "culprit": object(), "also-fine": 2})
    assert "culprit" in str(exc_info.value)


def test_invalid_input_is_a_satchel_error(store):
    with pytest.raises(SatchelError):
        store.set("", 1)
    with pytest.raises(SatchelError):
        store.set("k", 1, ttl=-1)
    with pytest.raises(SatchelError):
        list(store.keys(""))


# -- dict protocol -----------------------------------------------------------------------


def test_setitem_getitem(store):
    store["k"] = [1, (2,)]
    assert store["k"] == [1, (2,)]
    store["k"] = "v2"
    assert store["k"] == "v2"
    assert store.info("k").version == 2


def test_getitem_missing_is_key_error(store):
    with pytest.raises(KeyNotFound):
        store["missing"]
    with pytest.raises(KeyError):
        store["missing"]


def test_delitem(store):
    store["k"] = 1
    del store["k"]
    assert "k" not in store
    with pytest.raises(KeyNotFound):
        del store["k"]


def test_contains(store):
    assert "k" not in store
    store["k"] = None
    assert "k" in store
    assert ("k" in store) is True
    assert ("other" in store) is False


def test_len_and_iter(store):
    assert len(store) == 0
    assert list(store) == []
    store.set_many({"b": 1, "a": 2, "c": 3})
    store.scope("other").set("z", 1)
    assert len(store) == 3
    assert list(store) == ["a", "b", "c"]
    assert list(iter(store)) == ["a", "b", "c"]
    assert len(store.scope("other")) == 1


def test_dict_round_trip(store):
    source = {"x": 1, "y": [2], "z": {"w": None}}
    for k, v in source.items():
        store[k] = v
    assert {k: store[k] for k in store} == source
    assert dict(store.items()) == source


# -- context manager and close -----------------------------------------------------------


def test_context_manager_closes(store, store_url):
    with satchel.open(store_url) as s:
        s.set("k", 1)
        assert s.get("k") == 1
    with pytest.raises(StoreClosed):
        s.get("k")


def test_context_manager_closes_on_error(store, store_url):
    with pytest.raises(RuntimeError), satchel.open(store_url) as s:
        s.set("k", 1)
        raise RuntimeError("boom")
    with pytest.raises(StoreClosed):
        s.get("k")


def test_context_manager_returns_a_usable_store(store):
    with store as s:
        s.set("k", 1)
        assert store.get("k") == 1
    with pytest.raises(StoreClosed):
        store.get("k")


CLOSED_CALLS = {
    "get": lambda s: s.get("k"),
    "get-default": lambda s: s.get("k", None),
    "set": lambda s: s.set("k", 2),
    "get_many": lambda s: s.get_many(["k"]),
    "set_many": lambda s: s.set_many({"k": 2}),
    "delete": lambda s: s.delete("k"),
    "delete_many": lambda s: s.delete_many(["k"]),
    "delete_matching": lambda s: s.delete_matching("*"),
    "clear": lambda s: s.clear(),
    "keys": lambda s: list(s.keys()),
    "items": lambda s: list(s.items()),
    "values": lambda s: list(s.values()),
    "pop": lambda s: s.pop("k", None),
    "exists": lambda s: s.exists("k"),
    "incr": lambda s: s.incr("n"),
    "cas": lambda s: s.compare_and_set("k", 1, 2),
    "update": lambda s: s.update("k", lambda v: v),
    "info": lambda s: s.info("k"),
    "touch": lambda s: s.touch("k", 10),
    "ttl": lambda s: s.ttl("k"),
    "scopes": lambda s: s.scopes(),
    "getitem": lambda s: s["k"],
    "setitem": lambda s: s.__setitem__("k", 2),
    "delitem": lambda s: s.__delitem__("k"),
    "contains": lambda s: "k" in s,
    "len": len,
    "iter": lambda s: list(s),
}


@pytest.mark.parametrize("call", list(CLOSED_CALLS.values()), ids=list(CLOSED_CALLS))
def test_every_operation_after_close_raises_store_closed(store, call):
    store.set("k", 1)
    store.close()
    with pytest.raises(StoreClosed):
        call(store)


def test_close_is_idempotent(store):
    store.close()
    store.close()
    with pytest.raises(StoreClosed):
        store.get("k")


def test_closing_a_scope_view_closes_the_shared_connection(store):
    view = store.scope("other")
    view.set("k", 1)
    view.close()
    with pytest.raises(StoreClosed):
        store.get("k")
    with pytest.raises(StoreClosed):
        view.get("k")


def test_closing_the_store_closes_its_views(store):
    view = store.scope("other")
    store.close()
    with pytest.raises(StoreClosed):
        view.set("k", 1)
    with pytest.raises(StoreClosed):
        store.scope("third").get("k")


def test_store_closed_is_a_satchel_error(store):
    store.close()
    with pytest.raises(SatchelError):
        store.get("k")


def test_iterator_started_before_close_stops_with_store_closed(store):
    store.set_many({f"k{i:04d}": i for i in range(3000)})
    it = store.keys()
    assert next(it) == "k0000"
    store.close()
    with pytest.raises(StoreClosed):
        list(it)


def test_data_outlives_close_only_on_persistent_engines(engine, store, store_url):
    store.set("k", {"a": (1, 2)}, ttl=100)
    store.scope("s").set("k2", 2)
    store.close()
    with satchel.open(store_url) as again:
        if not engine.persistent:  # memory: the records went with the last open store
            assert again.scopes() == []
            assert "k" not in again
            return
        assert again.get("k") == {"a": (1, 2)}
        assert 90 < again.ttl("k") <= 100
        assert again.scope("s").get("k2") == 2
        assert again.scopes() == ["default", "s"]


# -- large batches -----------------------------------------------------------------------

N = 10_000


def test_batch_of_10000_keys(store):
    data = {f"key:{i:05d}": i for i in range(N)}
    assert store.set_many(data) == N
    assert len(store) == N
    got = store.get_many(list(reversed(data)))
    assert list(got) == list(reversed(data))
    assert all(got[k] == v for k, v in data.items())
    assert sum(1 for _ in store.keys("key:*")) == N
    assert store.set_many(data, if_absent=True) == 0
    assert store.delete_many(list(data)[: N // 2]) == N // 2
    assert len(store) == N // 2
    assert store.delete_matching("key:*") == N // 2
    assert len(store) == 0


def test_batch_of_10000_is_atomic(store):
    data = {f"key:{i:05d}": i for i in range(N)}
    data["key:09999"] = object()
    with pytest.raises(UnsupportedValue):
        store.set_many(data)
    assert len(store) == 0


def test_batch_of_10000_with_ttl_and_if_absent(store):
    store.set_many({f"k{i:05d}": "old" for i in range(0, N, 2)})
    # The TTL counts from the write; on a slow machine 10,000 keys take a while.
    started = time.monotonic()
    assert store.set_many({f"k{i:05d}": "new" for i in range(N)}, if_absent=True, ttl=100) == N // 2
    assert len(store) == N
    assert store.get("k00000") == "old"
    assert store.ttl("k00000") is None
    assert store.get("k00001") == "new"
    assert 99 - (time.monotonic() - started) < store.ttl("k00001") <= 100


def test_clear_10000_keys(store):
    store.set_many({f"k{i}": i for i in range(N)})
    store.scope("keep").set("k", 1)
    store.clear()
    assert len(store) == 0
    assert store.scopes() == ["keep"]
