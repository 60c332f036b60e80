"""Codecs other than the default: json, raw, pickle, a user object; the pickle rule."""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import datetime
from decimal import Decimal

import pytest

import satchel
from satchel import CorruptData, InvalidInput, UnsupportedValue

# -- json --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -7,
        2**70,
        1.5,
        "",
        "text é😀",
        [],
        [1, "a", None],
        {},
        {"a": {"b": [1, 2.5, None, True]}},
    ],
    ids=repr,
)
def test_json_round_trip(make_store, value):
    s = make_store(codec="json")
    s.set("k", value)
    got = s.get("k")
    assert got == value
    assert type(got) is type(value)


def test_json_tuples_come_back_as_lists(make_store):
    s = make_store(codec="json")
    s.set("k", (1, (2, 3), [4, (5,)]))
    got = s.get("k")
    assert got == [1, [2, 3], [4, [5]]]
    assert type(got) is list and type(got[1]) is list and type(got[2][1]) is list


@pytest.mark.parametrize(
    "value",
    [
        b"bytes",
        {1, 2},
        frozenset(),
        datetime(2024, 1, 1),
        Decimal("1.5"),
        object(),
        [1, b"x"],
        {"a": {1, 2}},
        1 + 2j,
    ],
    ids=repr,
)
def test_json_rejects_non_json_values(make_store, value):
    s = make_store(codec="json")
    s.set("k", "old")
    with pytest.raises(UnsupportedValue):
        s.set("k", value)
    with pytest.raises(UnsupportedValue):
        s.set("new", value)
    assert s.get("k") == "old"
    assert not s.exists("new")


def test_json_codec_keeps_store_rules(make_store):
    s = make_store(codec="json")
    assert s.incr("n", 5) == 5
    assert s.incr("n") == 6
    s.set_many({"a": [1], "b": {"x": 2}})
    assert list(s.keys()) == ["a", "b", "n"]
    assert s.pop("a") == [1]
    assert s.compare_and_set("b", 1, {"x": 3}) is True
    assert s.get("b") == {"x": 3}


# -- raw ---------------------------------------------------------------------------------


def test_raw_bytes_round_trip(make_store):
    s = make_store(codec="raw")
    for value in (b"", b"\x00\xff", bytes(range(256)) * 100):
        s.set("k", value)
        got = s.get("k")
        assert type(got) is bytes and got == value
        assert s.info("k").size == len(value)


def test_raw_accepts_bytes_like_and_returns_bytes(make_store):
    s = make_store(codec="raw")
    s.set("ba", bytearray(b"abc"))
    s.set("mv", memoryview(b"def"))
    assert s.get("ba") == b"abc" and type(s.get("ba")) is bytes
    assert s.get("mv") == b"def" and type(s.get("mv")) is bytes


@pytest.mark.parametrize("value", ["text", 1, None, [b"x"], {"a": b"x"}, True], ids=repr)
def test_raw_rejects_everything_else(make_store, value):
    s = make_store(codec="raw")
    s.set("k", b"old")
    with pytest.raises(UnsupportedValue):
        s.set("k", value)
    assert s.get("k") == b"old"
    with pytest.raises(UnsupportedValue):
        s.set_many({"a": b"ok", "b": value})
    assert not s.exists("a")


# -- pickle ------------------------------------------------------------------------------


class Thing:
    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return type(other) is Thing and other.x == self.x

    __hash__ = None


UNPICKLED: list[str] = []


def _record_unpickle(tag):
    UNPICKLED.append(tag)
    return tag


class Canary:
    """Unpickling this runs code: proof that a store unpickled a record."""

    def __init__(self, tag):
        self.tag = tag

    def __reduce__(self):
        return (_record_unpickle, (self.tag,))


def test_pickle_round_trips_picklable_objects(make_store):
    s = make_store(codec="pickle")
    values = [Thing(1), OrderedDict(a=1), bytearray(b"x"), 1 + 2j, {"t": (Thing(2), {3})}]
    for i, value in enumerate(values):
        s.set(f"k{i}", value)
    for i, value in enumerate(values):
        got = s.get(f"k{i}")
        assert type(got) is type(value) and got == value


def test_pickle_unpicklable_value_is_unsupported(make_store):
    s = make_store(codec="pickle")
    with pytest.raises(UnsupportedValue):
        s.set("k", lambda: None)
    assert not s.exists("k")


def test_pickle_record_is_not_unpickled_by_a_typed_store(store, open_store):
    pickled = open_store(codec="pickle")
    UNPICKLED.clear()
    pickled.set("evil", Canary("typed"))
    pickled.set("plain", 1)
    with pytest.raises(CorruptData):
        store.get("evil")
    with pytest.raises(CorruptData):
        store.get("plain")
    assert UNPICKLED == []
    assert store.exists("evil")  # the record is still there, just not readable here
    # the pickle store itself can read both (and so runs the reduce function)
    assert pickled.get("plain") == 1
    assert pickled.get("evil") == "typed"
    assert UNPICKLED == ["typed"]


def test_pop_of_unreadable_record_raises_and_keeps_it(store, open_store):
    # An operation that raises must not have destroyed the record it could not read.
    pickled = open_store(codec="pickle")
    UNPICKLED.clear()
    pickled.set("evil", Canary("pop"))
    with pytest.raises(CorruptData):
        store.pop("evil")
    with pytest.raises(CorruptData):
        store.pop("evil", None)
    assert UNPICKLED == []
    assert store.exists("evil")
    assert pickled.get("evil") == "pop"


@pytest.mark.parametrize("codec", ["json", "raw"])
def test_pickle_record_is_not_unpickled_by_other_codecs(store, open_store, codec):
    pickled = open_store(codec="pickle")
    reader = open_store(codec=codec)
    UNPICKLED.clear()
    pickled.set("evil", Canary(codec))
    with pytest.raises(CorruptData):
        reader.get("evil")
    with pytest.raises(CorruptData):
        list(reader.values())
    assert UNPICKLED == []


def test_pickle_record_in_batch_reads_is_corrupt_data(store, open_store):
    pickled = open_store(codec="pickle")
    UNPICKLED.clear()
    store.set("fine", 1)
    pickled.set("evil", Canary("batch"))
    with pytest.raises(CorruptData):
        store.get_many(["fine", "evil"])
    with pytest.raises(CorruptData):
        list(store.items())
    assert UNPICKLED == []


def test_corrupt_data_names_the_key(store, open_store):
    open_store(codec="pickle").set("evil", Canary("x"))
    with pytest.raises(CorruptData) as exc_info:
        store.get("evil")
    assert "evil" in str(exc_info.value)


# -- custom codec object -----------------------------------------------------------------


class ReversingJson:
    """A user codec: JSON, reversed, so a stored record proves this codec wrote it."""

    def __init__(self):
        self.dumped = []
        self.loaded = []

    def dumps(self, value):
        self.dumped.append(value)
        return json.dumps(value).encode()[::-1]

    def loads(self, data):
        value = json.loads(bytes(data)[::-1])
        self.loaded.append(value)
        return value


def test_custom_codec_is_used_as_is(make_store):
    codec = ReversingJson()
    s = make_store(codec=codec)
    s.set("k", {"a": [1, 2]})
    assert codec.dumped == [{"a": [1, 2]}]
    assert s.get("k") == {"a": [1, 2]}
    assert codec.loaded == [{"a": [1, 2]}]
    assert s.info("k").size == len(json.dumps({"a": [1, 2]}).encode())
    s.set_many({"x": 1, "y": "two"})
    assert s.get_many(["x", "y"]) == {"x": 1, "y": "two"}


def test_custom_codec_round_trips_through_a_second_store(open_store):
    writer = open_store(codec=ReversingJson())
    reader = open_store(codec=ReversingJson())
    writer.set("k", [1, "b"])
    assert reader.get("k") == [1, "b"]


def test_custom_codec_failure_is_unsupported_value(make_store):
    s = make_store(codec=ReversingJson())
    s.set("k", "old")
    with pytest.raises(UnsupportedValue):
        s.set("k", object())  # json.dumps raises TypeError
    assert s.get("k") == "old"


def test_unknown_codec_name_is_invalid_input(store, store_url):
    with pytest.raises(InvalidInput):
        satchel.open(store_url, codec="no-such-codec")


def test_codec_object_without_dumps_loads_is_invalid(store, store_url):
    with pytest.raises(InvalidInput):
        satchel.open(store_url, codec=42)
