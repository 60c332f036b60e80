"""`Backend.apply`, the one write primitive of every engine, tested at the engine boundary.

The Store's own tests cover what users see; these pin down what an engine promises the
Store: the count it returns, conditions checked before anything is written, and one
atomic step for the whole batch.
"""

from __future__ import annotations

import threading
import time

import pytest

import satchel
from satchel._backends.base import Backend, Delete, Expect, Put, Record, Touch

SCOPE = "default"


@pytest.fixture
def backend(store: satchel.Store) -> Backend:
    return store._shared.backend


def record(backend: Backend, key: str) -> Record | None:
    return backend.get(SCOPE, key, time.time())


def value(backend: Backend, key: str) -> bytes | None:
    found = record(backend, key)
    return None if found is None else found.value


def apply(backend: Backend, *changes: Put | Delete | Touch, expect: tuple[Expect, ...] = ()):
    return backend.apply(SCOPE, changes, time.time(), expect)


def test_put_counts_a_new_key_and_versions_an_overwrite(backend):
    assert apply(backend, Put("k", b"one")) == 1
    first = record(backend, "k")
    assert first is not None and first.version == 1 and first.value == b"one"
    time.sleep(0.01)
    assert apply(backend, Put("k", b"two")) == 0
    second = record(backend, "k")
    assert second is not None and second.value == b"two" and second.version == 2
    assert second.created_at == pytest.approx(first.created_at, abs=1e-6)
    assert second.updated_at > first.updated_at


def test_put_if_absent_skips_a_live_key(backend):
    apply(backend, Put("k", b"old"))
    assert apply(backend, Put("k", b"new", if_absent=True)) == 0
    assert value(backend, "k") == b"old"
    assert apply(backend, Put("other", b"new", if_absent=True)) == 1
    assert value(backend, "other") == b"new"


def test_an_expired_record_is_absent_for_every_change(backend):
    now = time.time()
    expiring = now + 0.3
    for key in ("p", "i", "d", "t"):
        assert backend.apply(SCOPE, [Put(key, b"old", expiring)], now) == 1
    time.sleep(0.5)
    assert apply(backend, Put("p", b"new")) == 1  # counts as new, starts again at 1
    fresh = record(backend, "p")
    assert fresh is not None and fresh.version == 1 and fresh.created_at > now + 0.3
    assert apply(backend, Put("i", b"new", if_absent=True)) == 1
    assert value(backend, "i") == b"new"
    assert apply(backend, Delete("d")) == 0
    assert apply(backend, Touch("t", None)) == 0
    assert record(backend, "d") is None and record(backend, "t") is None


def test_delete_counts_live_keys_only(backend):
    apply(backend, Put("a", b"1"), Put("b", b"2"))
    assert apply(backend, Delete("a"), Delete("missing")) == 1
    assert record(backend, "a") is None and value(backend, "b") == b"2"


def test_touch_sets_the_expiry_and_nothing_else(backend):
    apply(backend, Put("k", b"v"))
    before = record(backend, "k")
    time.sleep(0.01)
    later = time.time() + 100
    assert apply(backend, Touch("k", later)) == 1
    after = record(backend, "k")
    assert after is not None and before is not None
    assert after.expires_at == pytest.approx(later, abs=0.01)
    assert (after.value, after.version) == (before.value, before.version)
    assert after.updated_at == pytest.approx(before.updated_at, abs=1e-6)
    assert apply(backend, Touch("k", None)) == 1
    again = record(backend, "k")
    assert again is not None and again.expires_at is None
    assert apply(backend, Touch("missing", later)) == 0
    assert record(backend, "missing") is None


def test_a_mixed_batch_counts_each_kind(backend):
    apply(backend, Put("old", b"1"), Put("gone", b"2"), Put("timed", b"3"))
    result = apply(
        backend, Put("old", b"x"), Put("new", b"y"), Delete("gone"), Touch("timed", None)
    )
    assert result == 3  # "new" created, "gone" deleted, "timed" touched; "old" overwritten
    assert value(backend, "old") == b"x" and value(backend, "new") == b"y"
    assert record(backend, "gone") is None


def test_a_matching_version_lets_the_batch_through(backend):
    apply(backend, Put("k", b"v1"))
    current = record(backend, "k")
    assert current is not None
    condition = Expect("k", current.version, current.created_at)
    assert apply(backend, Put("k", b"v2"), expect=(condition,)) == 0
    assert value(backend, "k") == b"v2"


# Keys of one conditional batch share a hash tag ({g}), as Redis Cluster needs to make
# the batch atomic (it refuses one that spans slots); other engines ignore it.


def test_a_failed_condition_writes_nothing(backend):
    apply(backend, Put("{g}k", b"v1"), Put("{g}doomed", b"d"))
    stale = Expect("{g}k", 7)
    changes = (Put("{g}k", b"v2"), Put("{g}x", b"x"), Delete("{g}doomed"))
    assert apply(backend, *changes, expect=(stale,)) is None
    assert value(backend, "{g}k") == b"v1"
    assert record(backend, "{g}x") is None and value(backend, "{g}doomed") == b"d"


def test_expecting_absence(backend):
    assert apply(backend, Put("k", b"v"), expect=(Expect("k", None),)) == 1
    assert apply(backend, Put("k", b"w"), expect=(Expect("k", None),)) is None
    assert value(backend, "k") == b"v"


def test_expecting_absence_of_an_expired_record_holds(backend):
    now = time.time()
    backend.apply(SCOPE, [Put("k", b"old", now + 0.3)], now)
    time.sleep(0.5)
    assert apply(backend, Put("k", b"new"), expect=(Expect("k", None),)) == 1
    assert value(backend, "k") == b"new"


def test_created_at_tells_two_lives_of_a_key_apart(backend):
    apply(backend, Put("k", b"first"))
    first = record(backend, "k")
    assert first is not None
    time.sleep(0.01)
    apply(backend, Delete("k"))
    apply(backend, Put("k", b"second"))  # version 1 again, another life
    assert apply(backend, Delete("k"), expect=(Expect("k", 1, first.created_at),)) is None
    assert value(backend, "k") == b"second"
    assert apply(backend, Delete("k"), expect=(Expect("k", 1),)) == 1


def test_conditions_on_other_keys_and_a_pure_check(backend):
    apply(backend, Put("{g}lock", b"1"))
    held = record(backend, "{g}lock")
    assert held is not None
    assert apply(backend, Put("{g}data", b"d"), expect=(Expect("{g}lock", held.version),)) == 1
    assert apply(backend, expect=(Expect("{g}lock", held.version),)) == 0
    assert apply(backend, expect=(Expect("{g}lock", None),)) is None


def test_batches_of_10000_count_exactly(backend):
    n = 10_000
    assert apply(backend, *(Put(f"k{i:05d}", b"old") for i in range(0, n, 2))) == n // 2
    assert apply(backend, *(Put(f"k{i:05d}", b"new") for i in range(n))) == n // 2
    assert value(backend, "k00000") == b"new"
    assert apply(backend, *(Put(f"k{i:05d}", b"x", if_absent=True) for i in range(n))) == 0
    assert apply(backend, *(Delete(f"k{i:05d}") for i in range(0, n, 2))) == n // 2
    assert apply(backend, *(Put(f"k{i:05d}", b"x", if_absent=True) for i in range(n))) == n // 2
    assert value(backend, "k00000") == b"x" and value(backend, "k00001") == b"new"
    assert backend.count(SCOPE, time.time()) == n


def test_a_condition_keeps_a_large_batch_out(backend):
    apply(backend, Put("{g}guard", b"g"))
    changes = [Put(f"{{g}}k{i:05d}", b"v") for i in range(5000)]
    assert apply(backend, *changes, expect=(Expect("{g}guard", 99),)) is None
    assert backend.count(SCOPE, time.time()) == 1


def test_changes_stay_in_their_scope(backend):
    now = time.time()
    backend.apply("elsewhere", [Put("k", b"there")], now)
    assert apply(backend, Put("k", b"here")) == 1
    assert apply(backend, Delete("k")) == 1
    assert backend.get("elsewhere", "k", time.time()) is not None


def test_conditional_writes_from_threads_lose_no_update(open_store):
    stores = [open_store() for _ in range(4)]
    backends = [s._shared.backend for s in stores]
    backends[0].apply(SCOPE, [Put("n", b"0")], time.time())

    def add_one(backend: Backend, times: int) -> None:
        for _ in range(times):
            while True:
                now = time.time()
                found = backend.get(SCOPE, "n", now)
                assert found is not None
                bumped = Put("n", str(int(found.value) + 1).encode())
                condition = Expect("n", found.version, found.created_at)
                if backend.apply(SCOPE, [bumped], now, [condition]) is not None:
                    break

    threads = [threading.Thread(target=add_one, args=(b, 25)) for b in backends]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert value(backends[0], "n") == b"100"
