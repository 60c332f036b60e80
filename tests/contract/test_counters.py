"""incr, compare_and_set, update, and their atomicity under concurrent writers."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from satchel import InvalidInput, InvalidInputType, KeyNotFound, UnsupportedValue

# -- incr --------------------------------------------------------------------------------


def test_incr_missing_key_starts_at_zero(store):
    assert store.incr("n") == 1
    assert store.get("n") == 1
    assert store.info("n").version == 1


def test_incr_with_delta(store):
    result = store.incr("n", 5)
    assert type(result) is int and result == 5
    assert store.incr("n", 10) == 15
    assert store.incr("n", -20) == -5
    assert store.incr("n", 0) == -5
    value = store.get("n")
    assert type(value) is int and value == -5


def test_incr_negative_delta_on_missing_key(store):
    assert store.incr("n", -3) == -3


def test_incr_existing_int(store):
    store.set("n", 41)
    assert store.incr("n") == 42
    assert store.get("n") == 42


def test_incr_counts_versions(store):
    store.set("n", 0)
    store.incr("n")
    store.incr("n")
    assert store.info("n").version == 3


def test_incr_beyond_64_bits(store):
    store.set("n", 2**63 - 1)
    assert store.incr("n") == 2**63
    assert store.incr("n", 2**64) == 2**63 + 2**64
    store.set("m", -(2**63))
    assert store.incr("m", -1) == -(2**63) - 1
    assert store.incr("big", 2**200) == 2**200
    assert store.incr("big", 2**200) == 2**201
    assert store.get("big") == 2**201
    assert store.incr("big", -(2**201)) == 0


@pytest.mark.parametrize("existing", ["7", 7.0, True, False, None, [1], b"1", {"n": 1}], ids=repr)
def test_incr_non_int_value_is_rejected_and_unchanged(store, existing):
    store.set("n", existing)
    with pytest.raises(UnsupportedValue) as exc_info:
        store.incr("n")
    assert isinstance(exc_info.value, TypeError)
    value = store.get("n")
    assert type(value) is type(existing) and value == existing
    assert store.info("n").version == 1


@pytest.mark.parametrize("delta", [True, False, 1.0, 1.5, "1", None], ids=repr)
def test_incr_delta_must_be_int(store, delta):
    store.set("n", 1)
    with pytest.raises(InvalidInputType):
        store.incr("n", delta)
    with pytest.raises(InvalidInputType):
        store.incr("fresh", delta)
    assert store.get("n") == 1
    assert not store.exists("fresh")


def test_incr_keeps_expiry(store):
    store.set("n", 1, ttl=100)
    store.incr("n")
    remaining = store.ttl("n")
    assert remaining is not None and 90 < remaining <= 100
    store.set("m", 1)
    store.incr("m")
    assert store.ttl("m") is None


def test_incr_invalid_key(store):
    with pytest.raises(InvalidInput):
        store.incr("")
    with pytest.raises(InvalidInputType):
        store.incr(1)


# -- compare_and_set ---------------------------------------------------------------------


def test_compare_and_set_version_flow(store):
    assert store.compare_and_set("k", None, "v1") is True
    assert store.get("k") == "v1"
    assert store.info("k").version == 1
    assert store.compare_and_set("k", 1, "v2") is True
    assert store.info("k").version == 2
    # stale version
    assert store.compare_and_set("k", 1, "v3") is False
    assert store.get("k") == "v2"
    assert store.info("k").version == 2
    assert store.compare_and_set("k", 2, "v3") is True
    assert store.get("k") == "v3"


def test_compare_and_set_none_means_absent(store):
    store.set("k", "old")
    assert store.compare_and_set("k", None, "new") is False
    assert store.get("k") == "old"
    assert store.info("k").version == 1


def test_compare_and_set_with_version_on_missing_key_fails(store):
    assert store.compare_and_set("k", 1, "v") is False
    assert not store.exists("k")


def test_compare_and_set_future_version_fails(store):
    store.set("k", "old")
    assert store.compare_and_set("k", 2, "new") is False
    assert store.get("k") == "old"


def test_compare_and_set_after_set_and_incr_sees_new_versions(store):
    store.set("k", 1)
    store.set("k", 2)
    store.incr("k")
    assert store.compare_and_set("k", 2, 0) is False
    assert store.compare_and_set("k", 3, 0) is True
    assert store.get("k") == 0


def test_compare_and_set_after_delete_needs_none(store):
    store.set("k", 1)
    store.delete("k")
    assert store.compare_and_set("k", 1, "x") is False
    assert store.compare_and_set("k", None, "x") is True
    assert store.info("k").version == 1


def test_compare_and_set_with_ttl(store):
    assert store.compare_and_set("k", None, "v", ttl=100) is True
    remaining = store.ttl("k")
    assert remaining is not None and 90 < remaining <= 100
    assert store.compare_and_set("k", 1, "w", ttl=timedelta(seconds=200)) is True
    remaining = store.ttl("k")
    assert remaining is not None and 190 < remaining <= 200


def test_compare_and_set_unsupported_value_writes_nothing(store):
    store.set("k", "old")
    with pytest.raises(UnsupportedValue):
        store.compare_and_set("k", 1, object())
    with pytest.raises(UnsupportedValue):
        store.compare_and_set("fresh", None, object())
    assert store.get("k") == "old"
    assert store.info("k").version == 1
    assert not store.exists("fresh")


def test_compare_and_set_invalid_ttl_writes_nothing(store):
    store.set("k", "old")
    with pytest.raises(InvalidInput):
        store.compare_and_set("k", 1, "new", ttl=0)
    assert store.get("k") == "old"


# -- update ------------------------------------------------------------------------------


def test_update_applies_fn(store):
    store.set("k", [1])
    result = store.update("k", lambda old: [*old, 2])
    assert result == [1, 2]
    assert store.get("k") == [1, 2]
    assert store.info("k").version == 2


def test_update_missing_key_raises_and_does_not_call_fn(store):
    calls = []

    def fn(old):
        calls.append(old)
        return 1

    with pytest.raises(KeyNotFound):
        store.update("k", fn)
    assert calls == []
    assert not store.exists("k")


def test_update_missing_key_with_default(store):
    assert store.update("k", lambda old: old + 1, default=10) == 11
    assert store.get("k") == 11
    assert store.info("k").version == 1
    # default is not used when the key exists
    assert store.update("k", lambda old: old + 1, default=100) == 12


def test_update_with_none_default(store):
    assert store.update("k", lambda old: [old], default=None) == [None]
    assert store.get("k") == [None]


def test_update_keeps_expiry(store):
    store.set("k", 1, ttl=100)
    store.update("k", lambda old: old + 1)
    remaining = store.ttl("k")
    assert remaining is not None and 90 < remaining <= 100
    assert store.get("k") == 2


def test_update_fn_error_propagates_and_changes_nothing(store):
    store.set("k", 1)

    def boom(old):
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        store.update("k", boom)
    assert store.get("k") == 1
    assert store.info("k").version == 1


def test_update_unsupported_result_changes_nothing(store):
    store.set("k", 1)
    with pytest.raises(UnsupportedValue):
        store.update("k", lambda old: object())
    assert store.get("k") == 1
    assert store.info("k").version == 1


# -- atomicity under concurrency ---------------------------------------------------------

THREADS = 8


def _run_threads(fn, n=THREADS):
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def worker(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def test_concurrent_incr_loses_no_update(store, open_store):
    other = open_store()
    per_thread = 25

    def work(i):
        s = store if i % 2 else other
        for _ in range(per_thread):
            s.incr("n")

    _run_threads(work)
    assert store.get("n") == THREADS * per_thread
    assert store.info("n").version == THREADS * per_thread


def test_concurrent_update_loses_no_update(store, open_store):
    other = open_store()
    store.set("n", 0)
    per_thread = 10

    def work(i):
        s = store if i % 2 else other
        for _ in range(per_thread):
            s.update("n", lambda old: old + 1)

    _run_threads(work)
    assert store.get("n") == THREADS * per_thread


def test_concurrent_pop_hands_out_the_value_once(store, open_store):
    other = open_store()
    missing = object()
    for round_ in range(5):
        store.set("k", round_)
        results = _run_threads(lambda i: (store if i % 2 else other).pop("k", missing))
        winners = [r for r in results if r is not missing]
        assert winners == [round_]
        assert not store.exists("k")


def test_concurrent_set_if_absent_has_one_winner(store, open_store):
    other = open_store()
    for round_ in range(5):
        key = f"k{round_}"
        results = _run_threads(
            lambda i, key=key: (store if i % 2 else other).set(key, i, if_absent=True)
        )
        assert results.count(True) == 1
        winner = results.index(True)
        assert store.get(key) == winner


def test_concurrent_compare_and_set_has_one_winner(store, open_store):
    other = open_store()
    store.set("k", "start")
    for round_ in range(5):
        version = store.info("k").version
        results = _run_threads(
            lambda i, v=version: (store if i % 2 else other).compare_and_set("k", v, i)
        )
        assert results.count(True) == 1
        assert store.get("k") == results.index(True)
        assert store.info("k").version == version + 1, round_
