"""Time series on every engine."""

from __future__ import annotations

import datetime as dt

import pytest

from satchel import InvalidInput

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def test_empty_series(store):
    ts = store.series("temp")
    assert len(ts) == 0
    assert ts.first() is None and ts.last() is None
    assert list(ts.range()) == []
    assert ts.remove() == 0
    assert store.series_names() == []


def test_extend_range_first_last(store):
    ts = store.series("temp")
    assert ts.extend([(3, 30.5), (1, 10), (2, "two")]) == 3
    ts.add(5, {"v": [1, 2]})
    assert list(ts.range()) == [(1, 10), (2, "two"), (3, 30.5), (5, {"v": [1, 2]})]
    assert list(ts) == list(ts.range())
    assert list(ts.range(2, 5)) == [(2, "two"), (3, 30.5)]  # half-open
    assert list(ts.range(start=3)) == [(3, 30.5), (5, {"v": [1, 2]})]
    assert list(ts.range(stop=2)) == [(1, 10)]
    assert list(ts.range(4, 4)) == []
    assert list(ts.range(5, 1)) == []
    assert ts.first() == (1, 10)
    assert ts.last() == (5, {"v": [1, 2]})
    assert len(ts) == 4


def test_values_keep_types(store):
    ts = store.series("typed")
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    ts.extend({1: (1, 2), 2: {1, 2}, 3: moment, 4: b"\x00raw", 5: None})
    assert dict(ts.range()) == {1: (1, 2), 2: {1, 2}, 3: moment, 4: b"\x00raw", 5: None}


def test_overwrite_at_same_time(store):
    ts = store.series("s")
    ts.add(1, "a")
    ts.add(1, "b")
    ts.extend([(2, "x"), (2, "y")])  # a later pair wins, as in dict()
    assert list(ts.range()) == [(1, "b"), (2, "y")]
    assert len(ts) == 2


def test_negative_and_64_bit_extremes(store):
    ts = store.series("wide")
    points = [(INT64_MIN, "min"), (-1, "minus one"), (0, "zero"), (2**53 + 1, "odd"),
              (INT64_MAX, "max")]  # fmt: skip
    ts.extend(points)
    assert list(ts.range()) == points
    assert ts.first() == (INT64_MIN, "min")
    assert ts.last() == (INT64_MAX, "max")
    assert list(ts.range(2**53, INT64_MAX)) == [(2**53 + 1, "odd")]
    assert list(ts.range(-5, 1)) == [(-1, "minus one"), (0, "zero")]


def test_bad_timestamps_are_refused_and_nothing_is_written(store):
    ts = store.series("s")
    for bad in (1.5, "1", True, None, 2**63, INT64_MIN - 1):
        with pytest.raises(InvalidInput):
            ts.extend([(0, "ok"), (bad, "x")])
    with pytest.raises(InvalidInput):
        ts.extend([(1, 2, 3)])
    with pytest.raises(TypeError):
        ts.add(1, object())
    assert len(ts) == 0
    with pytest.raises(InvalidInput):
        store.series("")
    with pytest.raises(InvalidInput):
        list(ts.range(start=1.0))


def test_paging_through_many_points(store):
    ts = store.series("many")
    ts.extend((t * 10, t) for t in range(2500))
    got = list(ts.range())
    assert len(got) == 2500 and got[0] == (0, 0) and got[-1] == (24990, 2499)
    assert [t for t, _ in got] == sorted(t for t, _ in got)
    assert list(ts.range(10000, 10030)) == [(10000, 1000), (10010, 1001), (10020, 1002)]


def test_missing_and_is_complete(store):
    ts = store.series("grid")
    ts.extend([(0, 1), (10, 1), (30, 1), (35, 1), (50, 1)])
    assert ts.missing(0, 60, 10) == [20, 40]
    assert ts.is_complete(0, 60, 10) is False
    assert ts.is_complete(0, 20, 10) is True
    assert ts.missing(30, 40, 5) == []
    assert ts.missing(100, 130, 10) == [100, 110, 120]
    with pytest.raises(InvalidInput):
        ts.missing(0, 10, 0)


def test_remove(store):
    ts = store.series("r")
    ts.extend((t, t) for t in range(10))
    assert ts.remove(2, 5) == 3
    assert [t for t, _ in ts.range()] == [0, 1, 5, 6, 7, 8, 9]
    assert ts.remove(start=8) == 2
    assert ts.remove(stop=1) == 1
    assert [t for t, _ in ts.range()] == [1, 5, 6, 7]
    assert ts.remove() == 4
    assert len(ts) == 0
    assert store.series_names() == []


def test_names_scopes_and_isolation_from_keys(store):
    store.series("temp:kitchen").add(1, 1)
    store.series("temp:hall").add(1, 1)
    store.series("power").add(1, 1)
    store.set("temp:kitchen", "a plain key")
    assert store.series_names() == ["power", "temp:hall", "temp:kitchen"]
    assert store.series_names("temp:*") == ["temp:hall", "temp:kitchen"]
    assert store.series_names("power") == ["power"]
    assert store.series_names("pow") == []
    assert list(store.keys()) == ["temp:kitchen"]
    assert len(store) == 1
    other = store.scope("other")
    assert other.series_names() == []
    assert len(other.series("power")) == 0
    other.series("power").add(2, "theirs")
    assert list(store.series("power").range()) == [(1, 1)]
    store.clear()  # keys only
    assert store.series_names() == ["power", "temp:hall", "temp:kitchen"]
    assert store.get("temp:kitchen", None) is None


def test_odd_names(store):
    for name in ("a/b", "../x", "with space", "ünï", "*", "%_"):
        store.series(name).add(1, name)
    assert sorted(store.series_names()) == sorted(("a/b", "../x", "with space", "ünï", "*", "%_"))
    assert store.series_names("%_") == ["%_"]
    assert list(store.series("../x").range()) == [(1, "../x")]


def test_encrypted_series(make_store):
    secret = make_store(encryption_key=bytes(range(32)))
    ts = secret.series("s")
    ts.extend([(1, "one"), (2, "two")])
    assert list(ts.range()) == [(1, "one"), (2, "two")]
    assert ts.last() == (2, "two")
