"""The typed codec (default): every supported value comes back with its exact type."""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict, namedtuple
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import IntEnum
from fractions import Fraction
from uuid import UUID

import pytest

from satchel import UnsupportedValue


def same(expected, actual):
    """Deep equality that also compares exact types, float sign/NaN, tz offsets."""
    if type(expected) is not type(actual):
        return False
    if isinstance(expected, float):
        if math.isnan(expected):
            return math.isnan(actual)
        return expected == actual and math.copysign(1, expected) == math.copysign(1, actual)
    if isinstance(expected, Decimal):
        return str(expected) == str(actual)
    if isinstance(expected, (datetime, time)):
        if (expected.tzinfo is None) != (actual.tzinfo is None):
            return False
        return (
            expected == actual
            and expected.utcoffset() == actual.utcoffset()
            and expected.fold == actual.fold
            and expected.isoformat() == actual.isoformat()
        )
    if isinstance(expected, (list, tuple)):
        return len(expected) == len(actual) and all(map(same, expected, actual))
    if isinstance(expected, dict):
        if len(expected) != len(actual):
            return False
        remaining = list(actual.items())
        for k, v in expected.items():
            for i, (ak, av) in enumerate(remaining):
                if same(k, ak) and same(v, av):
                    del remaining[i]
                    break
            else:
                return False
        return not remaining
    if isinstance(expected, (set, frozenset)):
        remaining = list(actual)
        for e in expected:
            for i, a in enumerate(remaining):
                if same(e, a):
                    del remaining[i]
                    break
            else:
                return False
        return not remaining
    return expected == actual


IST = timezone(timedelta(hours=5, minutes=30))
NEG = timezone(-timedelta(hours=3, minutes=15))
U = UUID("12345678-1234-5678-1234-567812345678")

VALUES = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "one": 1,
    "minus-one": -1,
    "int64-max": 2**63 - 1,
    "int64-min": -(2**63),
    "2**63": 2**63,
    "2**64": 2**64,
    "below-int64": -(2**63) - 1,
    "2**200": 2**200,
    "-2**200": -(2**200),
    "float": 1.5,
    "float-one": 1.0,
    "float-zero": 0.0,
    "float-neg-zero": -0.0,
    "float-tiny": 5e-324,
    "float-huge": 1.7976931348623157e308,
    "float-third": 1 / 3,
    "inf": math.inf,
    "-inf": -math.inf,
    "nan": math.nan,
    "str-empty": "",
    "str-digits": "123",
    "str-float": "1.5",
    "str-true": "true",
    "str-null": "null",
    "str-unicode": "héllo 😀 \n\t\x00 \u200b",
    "str-lone-surrogate": "a\ud800b",
    "str-large": "x" * 200_000,
    "bytes-empty": b"",
    "bytes": b"\x00\x01\xff",
    "bytes-all": bytes(range(256)),
    "bytes-digits": b"123",
    "bytes-large": bytes(range(256)) * 1000,
    "list-empty": [],
    "list": [1, "a", None, 2.5, b"b", True],
    "tuple-empty": (),
    "tuple-1": (1,),
    "tuple": (1, "a", None),
    "tuple-nested": (1, (2, [3, (4,)]), [()]),
    "list-of-tuples": [(1, 2), (3, 4)],
    "dict-empty": {},
    "dict": {"a": 1, "b": [1, 2], "c": {"d": None}},
    "dict-int-keys": {1: "one", 2: "two", -5: "minus five", 2**70: "big"},
    "dict-tuple-keys": {(1, 2): "pair", (1, (2, 3)): "nested", (): "empty"},
    "dict-mixed-keys": {
        1: "int",
        "1": "str",
        1.5: "float",
        None: "none",
        b"1": "bytes",
        (1,): "tuple",
        frozenset({1, 2}): "frozenset",
        date(2024, 1, 2): "date",
        U: "uuid",
        Decimal("0.1"): "decimal",
    },
    "set-empty": set(),
    "set": {1, 2, 3},
    "set-of-tuples": {(1, 2), (3, 4), ("a", None)},
    "set-mixed": {1, "1", b"1", 2.5, None, frozenset({"x"})},
    "frozenset-empty": frozenset(),
    "frozenset": frozenset({"a", "b"}),
    "frozenset-nested": frozenset({frozenset({1}), (1, 2)}),
    "datetime-naive": datetime(2024, 2, 29, 23, 59, 58, 123456),
    "datetime-utc": datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    "datetime-ist": datetime(2024, 1, 2, 3, 4, 5, tzinfo=IST),
    "datetime-negative-offset": datetime(1999, 12, 31, 23, 0, tzinfo=NEG),
    "datetime-min": datetime.min,
    "datetime-max": datetime.max,
    "date": date(2024, 2, 29),
    "date-min": date.min,
    "time": time(12, 30, 15, 123456),
    "time-midnight": time(0, 0),
    "timedelta": timedelta(days=3, seconds=5, microseconds=7),
    "timedelta-negative": timedelta(days=-1, seconds=5, microseconds=7),
    "timedelta-zero": timedelta(0),
    "decimal": Decimal("3.14159265358979323846264338327950288419716939937510"),
    "decimal-trailing-zero": Decimal("1.10"),
    "decimal-neg-zero": Decimal("-0"),
    "decimal-exponent": Decimal("1E+100"),
    "decimal-inf": Decimal("-Infinity"),
    "decimal-nan": Decimal("NaN"),
    "uuid": U,
    "uuid-nil": UUID(int=0),
    "nested": {
        "when": datetime(2024, 1, 1, tzinfo=IST),
        "ids": [U, (U,)],
        "money": (Decimal("9.99"), {Decimal("0.01")}),
        "tags": frozenset({"x", (1, date(2020, 1, 1))}),
        "matrix": [[1.0, -0.0], (math.inf,), []],
        "deep": [[[[[[[[[["bottom"]]]]]]]]]],
        (1, 2): {3: {4: (5, {"six": {7}})}},
    },
}


@pytest.mark.parametrize("value", list(VALUES.values()), ids=list(VALUES))
def test_value_round_trips_with_exact_type(store, value):
    assert store.set("k", value) is True
    got = store.get("k")
    assert same(value, got), f"{value!r} came back as {got!r}"


def test_values_round_trip_through_every_read_path(store):
    store.set_many({name: value for name, value in VALUES.items()})
    got = store.get_many(list(VALUES))
    assert list(got) == list(VALUES)
    for name, value in VALUES.items():
        assert same(value, got[name]), name
    for name, value in store.items():
        assert same(VALUES[name], value), name
    for name, value in zip(sorted(VALUES), store.values(), strict=True):
        assert same(VALUES[name], value), name
    for name in ("tuple-nested", "set-of-tuples", "datetime-ist"):
        assert same(VALUES[name], store.pop(name)), name


def test_values_round_trip_through_other_writers(store):
    for i, (name, value) in enumerate(VALUES.items()):
        if i % 3 == 0:
            store.compare_and_set(name, None, value)
        elif i % 3 == 1:
            store[name] = value
        else:
            store.update(name, lambda old, v=value: v, default=None)
    for name, value in VALUES.items():
        assert same(value, store[name]), name


def test_dict_insertion_order_is_kept(store):
    value = {"z": 1, "a": 2, "m": 3, 10: 4, 2: 5}
    store.set("k", value)
    assert list(store.get("k").items()) == list(value.items())


def test_bool_and_int_stay_distinct_in_containers(store):
    value = [True, 1, False, 0, 1.0, (True,), {True: 1}]
    store.set("k", value)
    assert same(value, store.get("k"))


def test_list_stays_list_and_tuple_stays_tuple(store):
    store.set("l", [1, [2, (3,)]])
    store.set("t", (1, [2, (3,)]))
    assert same([1, [2, (3,)]], store.get("l"))
    assert same((1, [2, (3,)]), store.get("t"))


def test_stored_value_is_a_copy(store):
    value = {"a": [1, 2]}
    store.set("k", value)
    value["a"].append(3)
    got = store.get("k")
    assert got == {"a": [1, 2]}
    got["a"].append(4)
    assert store.get("k") == {"a": [1, 2]}


# -- unsupported values ------------------------------------------------------------------


class Custom:
    pass


class MyStr(str):
    pass


class MyInt(int):
    pass


class MyDict(dict):
    pass


class MyList(list):
    pass


class Color(IntEnum):
    RED = 1


Point = namedtuple("Point", "x y")

UNSUPPORTED = {
    "object": object(),
    "custom-instance": Custom(),
    "class": Custom,
    "function": len,
    "lambda": lambda: None,
    "bytearray": bytearray(b"x"),
    "memoryview": memoryview(b"x"),
    "ordereddict": OrderedDict(a=1),
    "defaultdict": defaultdict(int),
    "str-subclass": MyStr("x"),
    "int-subclass": MyInt(1),
    "dict-subclass": MyDict(a=1),
    "list-subclass": MyList([1]),
    "intenum": Color.RED,
    "namedtuple": Point(1, 2),
    "complex": 1 + 2j,
    "fraction": Fraction(1, 3),
    "range": range(3),
    "generator": (i for i in range(3)),
    "exception": ValueError("x"),
    "nested-in-list": [1, 2, object()],
    "nested-in-tuple": (1, (2, bytearray())),
    "nested-bytearray-in-list": [b"ok", bytearray(b"x")],
    "nested-memoryview-in-dict": {"a": memoryview(b"x")},
    "nested-bytearray-in-dict-in-list": [{"k": (2, bytearray(b"y"))}],
    "nested-in-dict-value": {"a": {"b": Custom()}},
    "nested-in-dict-key": {Custom(): 1},
    "nested-in-set": {1, Custom()},
    "nested-str-subclass": ["ok", MyStr("x")],
    "nested-deep": [[[[{"x": (1, {2: 1 + 1j})}]]]],
}


@pytest.mark.parametrize("value", list(UNSUPPORTED.values()), ids=list(UNSUPPORTED))
def test_unsupported_value_is_rejected_and_nothing_stored(store, value):
    with pytest.raises(UnsupportedValue) as exc_info:
        store.set("new", value)
    assert isinstance(exc_info.value, TypeError)
    assert not store.exists("new")
    assert len(store) == 0


@pytest.mark.parametrize(
    "value",
    [UNSUPPORTED[n] for n in ("object", "bytearray", "str-subclass", "nested-in-dict-value")],
    ids=["object", "bytearray", "str-subclass", "nested-in-dict-value"],
)
def test_unsupported_value_keeps_existing_value(store, value):
    store.set("k", "old", ttl=100)
    with pytest.raises(UnsupportedValue):
        store.set("k", value)
    with pytest.raises(UnsupportedValue):
        store["k"] = value
    with pytest.raises(UnsupportedValue):
        store.set_many({"k": value})
    assert store.get("k") == "old"
    assert store.info("k").version == 1
    assert 90 < store.ttl("k") <= 100


def test_unsupported_value_with_if_absent_writes_nothing(store):
    with pytest.raises(UnsupportedValue):
        store.set("k", object(), if_absent=True)
    assert not store.exists("k")
    assert store.set("k", 1, if_absent=True) is True
