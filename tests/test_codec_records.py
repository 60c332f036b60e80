"""Codecs: the record header, typed round trips, damaged records, codec choice, pickle safety.

Most tests work on `satchel._codecs.get_codec(...)` directly; the ones about what is on
disk go through a SQLite store and read the database with a separate `sqlite3`
connection. Cases that could crash the interpreter run in a subprocess.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import math
import pickle
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import satchel
from satchel._codecs import FORMAT_VERSION, HEADER_SIZE, get_codec

TYPED = get_codec("typed")

# --- comparing values by value AND exact type, recursively -----------------------------------


def canon(value: Any) -> Any:
    """A hashable form of `value` that differs whenever a value or any type differs.

    nan compares equal to nan here, -0.0 differs from 0.0, 1 differs from True and 1.0,
    a tuple from a list, Decimal("1.10") from Decimal("1.1"), and a datetime's UTC
    offset counts.
    """
    kind = type(value)
    if kind is float:
        return (kind, repr(value))
    if kind is Decimal:
        return (kind, str(value))
    if kind is list or kind is tuple:
        return (kind, tuple(canon(item) for item in value))
    if kind is dict:
        return (kind, tuple((canon(k), canon(v)) for k, v in value.items()))
    if kind is set or kind is frozenset:
        return (kind, frozenset(canon(item) for item in value))
    if kind is dt.datetime or kind is dt.time:
        return (kind, value.isoformat(), value.utcoffset())
    return (kind, value)


def assert_same(got: Any, want: Any) -> None:
    assert canon(got) == canon(want), (got, want)


def roundtrip(value: Any, codec: Any = TYPED) -> Any:
    return codec.decode(codec.encode(value))


# --- strategies built from the supported types ------------------------------------------------

fixed_offsets = st.builds(
    dt.timezone,
    st.timedeltas(
        min_value=-dt.timedelta(hours=23, minutes=59), max_value=dt.timedelta(hours=23, minutes=59)
    ),
)
tzinfos = st.none() | st.just(dt.UTC) | fixed_offsets
any_text = st.text(st.characters(exclude_categories=()), max_size=20)  # lone surrogates too

hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),  # past 64 bits
    st.floats(allow_nan=False),
    any_text,
    st.binary(max_size=20),
    st.datetimes(timezones=tzinfos),
    st.dates(),
    st.times(timezones=tzinfos),
    st.timedeltas(),
    st.decimals(allow_nan=False),
    st.uuids(),
)
hashables = st.recursive(
    hashable_leaves,
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
leaves = hashable_leaves | st.floats() | st.decimals()  # nan (and sNaN) where not hashed
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(hashables, inner, max_size=4),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
    ),
    max_leaves=20,
)

# --- the header -----------------------------------------------------------------------------


def test_header_constants() -> None:
    assert HEADER_SIZE == 3
    assert FORMAT_VERSION == 1


@pytest.mark.parametrize(
    ("codec", "value", "header"),
    [
        ("typed", 42, b"\x01t\x00"),
        ("typed", [1, "a"], b"\x01t\x00"),
        ("typed", None, b"\x01t\x00"),
        ("typed", "text", b"\x01s\x00"),
        ("typed", b"bytes", b"\x01b\x00"),
        ("json", {"a": 1}, b"\x01j\x00"),
        ("json", "text", b"\x01j\x00"),
        ("raw", b"bytes", b"\x01b\x00"),
        ("pickle", {"a": 1}, b"\x01p\x00"),
    ],
)
def test_every_record_starts_with_the_header(codec: str, value: Any, header: bytes) -> None:
    record = get_codec(codec).encode(value)
    assert record[:HEADER_SIZE] == header
    assert_same(get_codec(codec).decode(record), value)


def test_str_and_bytes_records_hold_the_raw_payload() -> None:
    assert TYPED.encode("héllo") == b"\x01s\x00" + "héllo".encode()
    assert TYPED.encode(b"\x00\xff") == b"\x01b\x00\x00\xff"
    assert TYPED.encode("") == b"\x01s\x00"
    assert TYPED.encode(b"") == b"\x01b\x00"
    assert get_codec("json").encode({"a": [1, 2]}) == b'\x01j\x00{"a":[1,2]}'


def test_str_and_bytes_are_readable_in_the_database(tmp_path: Path) -> None:
    path = tmp_path / "readable.db"
    with satchel.open(path) as store:
        store.set("greeting", "hello, wörld")
        store.set("blob", b"\x89PNG\r\n")
    db = sqlite3.connect(path)
    try:
        rows = dict(db.execute("SELECT key, value FROM satchel_kv"))
    finally:
        db.close()
    assert rows["greeting"] == b"\x01s\x00" + "hello, wörld".encode()
    assert rows["blob"] == b"\x01b\x00\x89PNG\r\n"


# --- typed round trips ----------------------------------------------------------------------

TOP_LEVEL = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    2**64,
    -(2**64) - 1,
    2**1000,
    -(2**1000),
    0.0,
    -0.0,
    1.5,
    math.inf,
    -math.inf,
    math.nan,
    5e-324,
    "",
    "héllo ☃ 😀",
    "\ud800 lone surrogate",
    "\x00 nul",
    b"",
    b"\x00\xff",
    [],
    (),
    {},
    set(),
    frozenset(),
    [1, "a", None],
    (1,),
    {1, 2},
    frozenset({"a"}),
    {"a": 1, 2: "b", (1, 2): None, frozenset({3}): [], None: 0, 1.5: 2, b"k": 3},
    dt.datetime(2024, 2, 29, 12, 30, 15, 123456),
    dt.datetime(2024, 2, 29, 12, 30, tzinfo=dt.UTC),
    dt.datetime(2024, 2, 29, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-9, minutes=-30))),
    dt.datetime.min,
    dt.datetime.max,
    dt.date(1, 1, 1),
    dt.date(9999, 12, 31),
    dt.time(0, 0),
    dt.time(23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=14))),
    dt.timedelta(0),
    dt.timedelta(days=-1, microseconds=1),
    dt.timedelta.max,
    Decimal("1.10"),
    Decimal("-0"),
    Decimal("1E+400"),
    Decimal("NaN"),
    Decimal("-Infinity"),
    Decimal("sNaN"),
    uuid.UUID(int=0),
    uuid.uuid4(),
]


@pytest.mark.parametrize("value", TOP_LEVEL, ids=repr)
def test_typed_round_trip_top_level(value: Any) -> None:
    assert_same(roundtrip(value), value)


@pytest.mark.parametrize("value", TOP_LEVEL, ids=repr)
def test_typed_round_trip_nested(value: Any) -> None:
    nested = [value, (value,), {"k": value}, [[value]]]
    assert_same(roundtrip(nested), nested)


def test_typed_round_trip_through_sqlite(tmp_path: Path) -> None:
    items = {f"v{i}": value for i, value in enumerate(TOP_LEVEL)}
    with satchel.open(tmp_path / "typed.db") as store:
        store.set_many(items)
    with satchel.open(tmp_path / "typed.db") as store:
        got = store.get_many(list(items))
    assert list(got) == list(items)
    for key, value in items.items():
        assert_same(got[key], value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_typed_round_trip_any_value(value: Any) -> None:
    assert_same(roundtrip(value), value)


@pytest.mark.parametrize(
    "value",
    [
        object(),
        bytearray(b"x"),
        memoryview(b"x"),
        [bytearray(b"x")],
        {"k": memoryview(b"x")},
        ({1: [bytearray(b"x")]},),
        type("StrSub", (str,), {})("x"),
        [type("IntSub", (int,), {})(1)],
        {"a": {1: type("FloatSub", (float,), {})(1.0)}},
        __import__("collections").OrderedDict(a=1),
        [__import__("collections").defaultdict(list)],
        complex(1, 2),
        [range(3)],
    ],
    ids=repr,
)
def test_typed_refuses_other_types(value: Any) -> None:
    with pytest.raises(satchel.UnsupportedValue):
        TYPED.encode(value)


def test_a_refused_value_leaves_no_residue_in_the_next_record() -> None:
    for bad in ([1, "a" * 50, object()], [b"x" * 20, bytearray(b"a")]):
        with pytest.raises(satchel.UnsupportedValue):
            TYPED.encode(bad)
        assert TYPED.encode([2]) == b"\x01t\x00" + msgpack.packb([2])
    assert_same(roundtrip(["\ud800", 1]), ["\ud800", 1])
    assert TYPED.encode([3]) == b"\x01t\x00" + msgpack.packb([3])


# --- damaged and foreign records ---------------------------------------------------------------

BODY = msgpack.packb([1, "abc", {"k": 2.5}])


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"\x01",
        b"\x01t",
        b"\x01t\x00",  # header, no body
        b"\x00t\x00" + BODY,  # format 0
        b"\x01z\x00" + BODY,  # unknown codec id
        b"\x01T\x00" + BODY,
        b"\x01t\x01" + BODY,  # flags: encrypted
        b"\x01t\x02" + BODY,  # flags: compressed
        b"\x01s\x80hello",
        b"\x01b\x01\x00",
        b"\x01t\x00" + BODY[:-2],  # truncated msgpack
        b"\x01t\x00" + BODY + b"\x00",  # trailing bytes
        b"\x01t\x00\xc1",  # a byte msgpack never uses
        b"\x01t\x00" + msgpack.packb(msgpack.ExtType(99, b"")),  # unknown extension
        b"\x01t\x00" + msgpack.packb(msgpack.ExtType(5, b"not a date")),
        b"\x01t\x00" + msgpack.packb(msgpack.ExtType(10, b"short")),  # UUID needs 16 bytes
        b"\x01s\x00\xff\xfe",  # not UTF-8
        b"\x01j\x00{not json",
        b"\x01x\x00custom",  # a custom codec this store does not have
        b"PK\x03\x04garbage",
        bytes(range(256)),
    ],
    ids=repr,
)
def test_damaged_records_are_corrupt_data(record: bytes) -> None:
    with pytest.raises(satchel.CorruptData):
        TYPED.decode(record)


@pytest.mark.parametrize("codec_id", [b"t", b"s", b"b", b"j"])
def test_newer_format_version_is_corrupt_data(codec_id: bytes) -> None:
    record = bytes((FORMAT_VERSION + 1,)) + codec_id + b"\x00" + BODY
    with pytest.raises(satchel.CorruptData) as info:
        TYPED.decode(record)
    assert "newer" in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"t", b"s", b"b", b"j", b"x", b"p", b"?"]), st.binary(max_size=64))
def test_any_bytes_after_a_header_decode_or_raise_corrupt_data(
    codec_id: bytes, body: bytes
) -> None:
    for codec in (TYPED, get_codec("json"), get_codec("raw")):
        with contextlib.suppress(satchel.CorruptData):  # anything else fails the test
            codec.decode(b"\x01" + codec_id + b"\x00" + body)


def test_damaged_record_in_a_store_names_key_and_scope(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    with satchel.open(path, scope="users") as store:
        store.set("alice", {"age": 30})
    db = sqlite3.connect(path)
    db.execute("UPDATE satchel_kv SET value = ? WHERE key = 'alice'", (b"\x01t\x00\xc1",))
    db.commit()
    db.close()
    with satchel.open(path, scope="users") as store:
        with pytest.raises(satchel.CorruptData) as info:
            store.get("alice")
        assert "'alice'" in str(info.value)
        assert "'users'" in str(info.value)
        with pytest.raises(satchel.CorruptData):
            list(store.values())


# --- pickle ---------------------------------------------------------------------------------


def test_pickle_record_is_refused_by_other_codecs_and_read_by_pickle() -> None:
    value = {"a": (1, 2), "when": dt.date(2020, 1, 1)}
    record = get_codec("pickle").encode(value)
    assert record[:HEADER_SIZE] == b"\x01p\x00"
    for name in ("typed", "json", "raw"):
        with pytest.raises(satchel.CorruptData):
            get_codec(name).decode(record)
    with pytest.raises(satchel.CorruptData):
        get_codec(_JsonCodec()).decode(record)
    assert get_codec("pickle").decode(record) == value


def test_pickle_codec_stores_arbitrary_objects(tmp_path: Path) -> None:
    with satchel.open(tmp_path / "p.db", codec="pickle") as store:
        store.set("c", complex(1, 2))
        store.set("r", range(3))
    with satchel.open(tmp_path / "p.db", codec="pickle") as store:
        assert store.get("c") == complex(1, 2)
        assert store.get("r") == range(3)
    with satchel.open(tmp_path / "p.db") as store, pytest.raises(satchel.CorruptData):
        store.get("c")


class _Armed:
    """Unpickling this calls open(marker, "w"): a visible side effect."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_tampered_pickle_record_never_runs_code_in_a_typed_store(tmp_path: Path) -> None:
    path = tmp_path / "tampered.db"
    marker = tmp_path / "pwned"
    with satchel.open(path) as store:
        store.set("innocent", "text")
    payload = pickle.dumps(_Armed(marker))
    db = sqlite3.connect(path)
    db.execute("UPDATE satchel_kv SET value = ? WHERE key = 'innocent'", (b"\x01p\x00" + payload,))
    db.commit()
    db.close()
    with satchel.open(path) as store:
        with pytest.raises(satchel.CorruptData):
            store.get("innocent")
        with pytest.raises(satchel.CorruptData):
            dict(store.items())
        with pytest.raises(satchel.CorruptData):
            store.incr("innocent")
    with satchel.open(path, codec="json") as store, pytest.raises(satchel.CorruptData):
        store.get("innocent")
    assert not marker.exists()
    # The payload is armed: a store that opted into pickle does run it.
    with satchel.open(path, codec="pickle") as store:
        store.get("innocent").close()
    assert marker.exists()


# --- json and raw ---------------------------------------------------------------------------


def test_json_codec_round_trip() -> None:
    json_codec = get_codec("json")
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": "é"}}
    assert roundtrip(value, json_codec) == value
    assert roundtrip((1, 2), json_codec) == [1, 2]  # tuples come back as lists
    assert json.loads(json_codec.encode(value)[HEADER_SIZE:]) == value


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, [math.nan], b"x", {"k": b"x"}, {1, 2}, object(), "\ud800"],
    ids=repr,
)
def test_json_codec_refuses_non_json(value: Any) -> None:
    with pytest.raises(satchel.UnsupportedValue):
        get_codec("json").encode(value)


def test_json_store_writes_nothing_on_refusal() -> None:
    with satchel.open("memory://", codec="json") as store:
        with pytest.raises(satchel.UnsupportedValue):
            store.set("k", math.nan)
        assert "k" not in store


@pytest.mark.parametrize("value", [b"abc", bytearray(b"abc"), memoryview(b"abc")], ids=repr)
def test_raw_codec_accepts_bytes_like(value: Any) -> None:
    raw = get_codec("raw")
    record = raw.encode(value)
    assert record == b"\x01b\x00abc"
    got = raw.decode(record)
    assert type(got) is bytes and got == b"abc"


@pytest.mark.parametrize("value", ["abc", 1, None, [b"a"]], ids=repr)
def test_raw_codec_refuses_everything_else(value: Any) -> None:
    with pytest.raises(satchel.UnsupportedValue):
        get_codec("raw").encode(value)


# --- custom codecs and codec choice ------------------------------------------------------------


class _JsonCodec:
    def __init__(self) -> None:
        self.calls = 0

    def dumps(self, value: Any) -> bytes:
        self.calls += 1
        return json.dumps(value).encode()

    def loads(self, data: bytes) -> Any:
        self.calls += 1
        return json.loads(data)


def test_custom_codec_object_is_used() -> None:
    custom = _JsonCodec()
    with satchel.open("memory://", codec=custom) as store:
        store.set("k", {"a": [1, 2]})
        assert custom.calls == 1
        assert store.get("k") == {"a": [1, 2]}
        assert custom.calls == 2
    record = get_codec(custom).encode([1])
    assert record == b"\x01x\x00[1]"
    assert get_codec(custom).decode(record) == [1]
    with pytest.raises(satchel.CorruptData):
        TYPED.decode(record)


class _StrCodec:
    def dumps(self, value: Any) -> Any:
        return json.dumps(value)  # str, not bytes

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class _FailingLoads(_JsonCodec):
    def loads(self, data: bytes) -> Any:
        raise RuntimeError("cannot read this")


def test_custom_codec_returning_str_is_unsupported_value() -> None:
    with satchel.open("memory://", codec=_StrCodec()) as store:
        with pytest.raises(satchel.UnsupportedValue):
            store.set("k", 1)
        assert "k" not in store


def test_custom_codec_failing_loads_is_corrupt_data() -> None:
    codec = get_codec(_FailingLoads())
    with pytest.raises(satchel.CorruptData):
        codec.decode(codec.encode(1))


def test_unknown_codec_name_and_bad_codec_objects() -> None:
    with pytest.raises(satchel.InvalidInput):
        get_codec("nope")
    with pytest.raises(satchel.InvalidInput):
        satchel.open("memory://", codec="nope")
    with pytest.raises(satchel.InvalidInputType):
        get_codec(object())  # type: ignore[arg-type]


# --- nesting depth: refuse or round-trip, never RecursionError, never a crash -------------------

_DEPTH_SCRIPT = textwrap.dedent(
    """
    import sys
    import satchel
    from satchel._codecs import get_codec

    kind, depth, leaf = sys.argv[1], int(sys.argv[2]), eval(sys.argv[3])
    wrap = {"list": list, "tuple": tuple, "frozenset": frozenset,
            "dict": lambda x: {"k": x[0]}}[kind]
    value = leaf
    for _ in range(depth):
        value = wrap([value])
    codec = get_codec("typed")
    try:
        record = codec.encode(value)
    except satchel.UnsupportedValue:
        print("refused")
        sys.exit(0)
    got = codec.decode(record)
    for _ in range(depth):  # compare level by level: == itself would recurse too deep
        assert type(got) is type(value) and len(got) == 1, (type(got), type(value))
        got, value = next(iter(got.values() if kind == "dict" else got)), next(
            iter(value.values() if kind == "dict" else value))
    assert type(got) is type(value) and got == value
    print("round trip")
    """
)


@pytest.mark.parametrize(
    ("kind", "depth", "leaf"),
    [
        ("list", 1000, "0"),
        ("list", 100_000, "0"),
        ("list", 1000, "b'x'"),
        ("list", 990, "196"),
        ("dict", 1000, "b'x'"),
        ("tuple", 1000, "0"),
        ("frozenset", 1000, "0"),
        ("tuple", 250, "0"),
    ],
)
def test_deep_nesting_is_refused_or_round_trips(kind: str, depth: int, leaf: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _DEPTH_SCRIPT, kind, str(depth), leaf],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.strip() in ("refused", "round trip")


def test_deep_list_in_a_store_is_unsupported_value() -> None:
    value: Any = 0
    for _ in range(100_000):
        value = [value]
    with satchel.open("memory://") as store:
        with pytest.raises(satchel.UnsupportedValue):
            store.set("deep", value)
        assert "deep" not in store


_CRAFTED_SCRIPT = textwrap.dedent(
    """
    import sys
    import msgpack
    import satchel
    from satchel._codecs import get_codec

    body = msgpack.packb(0)
    for _ in range(int(sys.argv[1])):  # tuple(tuple(...)) as typed extension 1
        body = msgpack.packb(msgpack.ExtType(1, msgpack.packb([msgpack.ExtType(1, body)])))
    try:
        get_codec("typed").decode(b"\\x01t\\x00" + body)
    except satchel.CorruptData:
        print("corrupt")
    else:
        print("decoded")
    """
)


def test_crafted_deeply_nested_record_cannot_crash_the_reader() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CRAFTED_SCRIPT, "2000"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.strip() in ("corrupt", "decoded")


def test_decimal_context_does_not_change_stored_decimals() -> None:
    value = Decimal("3.14159265358979323846264338327950288419716939937510")
    with decimal.localcontext() as ctx:
        ctx.prec = 5
        got = roundtrip(value)
    assert str(got) == str(value)
