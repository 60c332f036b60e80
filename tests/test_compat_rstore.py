"""satchel.compat.rstore: rlib-store's documented examples, run on satchel (SQLite and
memory), plus what satchel does differently on purpose."""

from __future__ import annotations

import json
import operator
import time
from pathlib import Path

import pytest

import satchel
from satchel.compat.rstore import Store


@pytest.fixture(params=["sqlite", "memory"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/r.db" if request.param == "sqlite" else ""


def test_key_value_example(dsn: str) -> None:
    value = {"any": ["value", 1]}
    with Store(dsn, frozen=False) as kv:
        kv.set("some_key", value)
        assert kv.get("some_key") == value
        assert kv.has("some_key") and "some_key" in kv and len(kv) == 1
        assert kv.keys() == ["some_key"] and list(kv) == ["some_key"]
        kv["other"] = (1, 2)
        assert kv["other"] == (1, 2)
        del kv["some_key"]
        assert kv.get("some_key") is None
        with pytest.raises(KeyError):
            kv["some_key"]
        assert kv.delete("other") is True and kv.delete("other") is False


def test_time_series_example(dsn: str) -> None:
    with Store(dsn, frozen=False) as ts:
        ts.extend("some_series", (10, 1.5), (20, 2.5), (40, 4.5))
        timestamp, value = ts.last("some_series")
        assert (timestamp, value) == (40, 4.5)
        assert ts.first("some_series") == (10, 1.5)
        assert ts.range("some_series", 10, 40) == [(10, 1.5), (20, 2.5)]
        assert ts.range("some_series") == [(10, 1.5), (20, 2.5), (40, 4.5)]
        assert ts.missing("some_series", 10, 50, 10) == [30]
        assert ts.iscomplete("some_series", 10, 30, 10) is True
        assert ts.iscomplete("some_series", 10, 50, 10) is False
        assert ts.timeseries() == ["some_series"]
        assert ts.remove("some_series", 20) == 2
        assert ts.range("some_series") == [(10, 1.5)]


def test_event_sequence_example(dsn: str) -> None:
    with Store(dsn, frozen=False) as es:
        es.apply("some_dict", {"item": 1})  # op defaults to operator.setitem
        time.sleep(0.002)
        es.apply("some_dict", {"item": (operator.add, 1)})
        events = es.events("some_dict")
        assert [(item, op, value) for _, item, op, value in events] == [
            ("item", operator.setitem, 1), ("item", operator.add, 1)]  # fmt: skip
        assert all(type(ts) is int for ts, *_ in events)
        assert es.current("some_dict") == {"item": 2}
        assert es.past("some_dict", events[0][0]) == {"item": 1}
        es.apply("some_dict", {"item": (operator.delitem,), "other": (max, 3)})
        assert es.current("some_dict") == {"other": 3}
        assert es.eventsources() == ["some_dict"]
        assert es.prune("some_dict") == 4
        assert es.current("some_dict") == {"other": 3}
        assert es.prune("some_dict", remove=True) == 4
        assert es.eventsources() == []
        assert es.current("some_dict") == {}


def test_ops_are_stored_by_name_never_pickled(dsn: str) -> None:
    with Store(dsn, frozen=False) as es:
        with pytest.raises(ValueError, match="cannot be stored"):
            es.apply("d", {"item": (operator.truediv, 2)})
        with pytest.raises(ValueError):
            es.apply("d", {"item": (lambda a, b: a, 2)})
        assert es.current("d") == {} and es.eventsources() == []


def test_frozen_by_default_and_namespaces(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path}/n.db"
    with Store(dsn, namespace="a", frozen=False) as a, Store(dsn, namespace="b", frozen=False) as b:
        a.set("k", "in a")
        b.set("k", "in b")
    with Store(dsn, namespace="a") as frozen:
        assert frozen.get("k") == "in a"
        with pytest.raises(satchel.ReadOnlyError):
            frozen.set("k", "x")
        with pytest.raises(satchel.ReadOnlyError):
            frozen.extend("s", (1, 1))


def test_relative_sqlite_dsn_and_encryption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with Store("sqlite://datafile.db", key=bytes(range(32)), frozen=False) as s:
        s.set("secret", "canary-9f3e")
        s.extend("series", (1, "point"))
    assert (tmp_path / "datafile.db").is_file()
    assert b"canary-9f3e" not in (tmp_path / "datafile.db").read_bytes()
    with Store("sqlite://datafile.db", key=bytes(range(32))) as s:
        assert s.get("secret") == "canary-9f3e"
        assert s.last("series") == (1, "point")
    with Store("sqlite://datafile.db") as s, pytest.raises(satchel.DecryptionError):
        s.get("secret")


def test_values_keep_types_not_pickled(dsn: str) -> None:
    with Store(dsn, frozen=False) as s:
        s.set("t", (1, {2, 3}))
        assert s.get("t") == (1, {2, 3})
        with pytest.raises(TypeError):
            s.set("obj", object())
        assert json.dumps(s.keys()) == "[\"t\"]"
