"""Hostile input on every engine (issue 11): only documented errors, never a wrong state.

A hypothesis test draws lists of operations whose keys, scopes, patterns, TTLs, deltas
and values are of every shape: sizes at and just over the limits (1024-byte keys,
255-byte scopes, in 1-, 2- and 4-byte characters), lone surrogates, NUL, wrong types,
huge ints, NaN and infinities, deep nesting, unsupported objects, mixed with valid
operations on a small set of keys. Every operation either succeeds as a plain-dict model
says, or raises one of the documented input errors (InvalidInput, InvalidInputType,
UnsupportedValue, KeyNotFound), and then changes nothing. Anything else (a bare
TypeError, ValueError, OverflowError, RecursionError, a BackendError) is a failure. At
the end of every example the whole store is compared with the model.

A second test writes tampered records straight into the backend (random bytes, and a
header claiming pickle with a payload that would create a file when unpickled): a
typed store reports CorruptData and never runs the payload.

``--long`` raises the number of examples tenfold.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import math
import os
import pickle
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import satchel
from conftest import ENGINES, Engine
from satchel import (
    CorruptData,
    DecryptionError,
    InvalidInput,
    InvalidInputType,
    KeyNotFound,
    UnsupportedValue,
)
from satchel._backends.base import Put

ALLOWED = (InvalidInput, InvalidInputType, UnsupportedValue, KeyNotFound)
EXAMPLES = 100  # per engine; x10 under --long

# -- inputs ------------------------------------------------------------------------------

VALID_KEYS = [
    "a",
    "b",
    "a*",
    "%_",
    "é\n",
    "../x",
    "[x]",
    "\\",
    "k" * 1024,
    "é" * 512,  # 1024 bytes
    "😀" * 256,  # 1024 bytes
    "a" * 1022 + "é",  # 1024 bytes
]
INVALID_KEYS = [
    "",
    "k" * 1025,
    "é" * 512 + "a",  # 1025 bytes
    "a" * 1023 + "é",  # 1025 bytes
    "😀" * 256 + "a",
    "a\x00b",
    "\x00",
    "\ud800",
    "x\udfffy",
    "😀\udc00",
]
WRONG_TYPE_KEYS = [None, 1, 1.5, b"a", ("a",), ["a"], object()]

VALID_SCOPES = ["s", "s:a", "é", "s" * 255, "é" * 127 + "s", "😀" * 63 + "abc"]
INVALID_SCOPES = [
    "",
    "s" * 256,
    "é" * 128,  # 256 bytes
    "😀" * 64,  # 256 bytes
    "s\x00",
    "\udcff",
    "__satchel__",
]
WRONG_TYPE_SCOPES = [None, 7, b"s", ["s"]]

PATTERNS = ["*", "a*", "?", "[ab]*", "[!a]*", "*\n", "%", "_*", "\\*", "k*", "é*", "😀*"]
BAD_PATTERNS = [
    "",
    "\\",
    "a\\",
    "[z-a]",
    "[",
    "[!",
    "a\x00*",
    "\ud800*",  # a lone surrogate in the literal prefix: matches nothing
    "a\udc00?",
    "*\ud800",
    "[\ud800]*",
    "x" * 5000 + "*",
    "[" * 300,
]
WRONG_TYPE_PATTERNS = [None, 1, b"*", ["*"]]

VALID_TTLS = [None, 3600, 1e6, 1e10, dt.timedelta(days=1)]
INVALID_TTLS = [
    0,
    -1,
    0.0,
    -0.0,
    math.nan,
    math.inf,
    -math.inf,
    1e10 + 1e4,
    1e300,
    2**63,
    2**1100,  # too large for a float
    -(2**1100),
    dt.timedelta(0),
    dt.timedelta(seconds=-5),
    dt.timedelta.max,
]
WRONG_TYPE_TTLS = ["60", b"60", True, [60], decimal.Decimal(60), 1j]

GOOD_DELTAS = [1, -1, 0, 2**64, -(2**100), 2**2000]
BAD_DELTAS = [1.0, math.nan, True, None, "1", decimal.Decimal(1)]

BAD_VERSIONS = [0, -1, 1.0, "1", True, math.nan]


class Opaque:
    """A user class: the typed codec cannot store it."""


class Nested:
    """A value nested `depth` deep, built when used (hypothesis cannot print one)."""

    def __init__(self, depth: int, leaf: Any, kind: type = list) -> None:
        self.depth, self.leaf, self.kind = depth, leaf, kind

    def make(self) -> Any:
        value = self.leaf
        for _ in range(self.depth):
            value = self.kind([value]) if self.kind is not dict else {"k": value}
        return value

    def __repr__(self) -> str:
        return f"Nested({self.depth}, {self.leaf!r}, {self.kind.__name__})"


def _nested(depth: int, leaf: Any, kind: type = list) -> Nested:
    return Nested(depth, leaf, kind)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 2**200, -(2**4000)]),
    st.floats(),  # NaN, infinities, -0.0, subnormals
    st.text(max_size=20),
    st.binary(max_size=20),
    st.sampled_from(["x" * 70000, b"\x00" * 70000, "\x00", "\ufeff", "😀"]),
    st.decimals(allow_nan=True),
    st.uuids(),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
    st.dates(),
    st.times(),
    st.timedeltas(),
)
hashable = st.one_of(st.integers(), st.text(max_size=5), st.binary(max_size=5), st.booleans())
supported = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=5), children, max_size=4),
        st.dictionaries(st.integers(), children, max_size=3),
        st.frozensets(hashable, max_size=4),
        st.sets(hashable, max_size=4),
    ),
    max_leaves=12,
)
# Values the typed codec must refuse with UnsupportedValue (nothing stored).
unsupported = st.sampled_from(
    [
        object(),
        Opaque(),
        lambda: None,
        1j,
        range(3),
        [1, object()],
        {"k": Opaque()},
        (1, {2: 1j}),
        _nested(100_000, 0),
        Path("/etc/passwd"),
    ]
)
# Values that are either stored intact or refused with UnsupportedValue.
either = st.sampled_from(
    [
        "\ud800",
        "a\udfffb",
        bytearray(b"ab"),
        {frozenset(): 1},
        {(1, 2): "tuple key"},
        ["\udc80"],
        {"\ud800": 1},
        _nested(50, 1),
        _nested(50, 1, tuple),
        _nested(50, 1, dict),
        _nested(2000, 1),
        _nested(2000, 1, tuple),
        _nested(2000, 1, dict),
    ]
)


def _label(strategy: st.SearchStrategy[Any], label: str) -> st.SearchStrategy[tuple[str, Any]]:
    return strategy.map(lambda x: (label, x))


def _pick(good: list[Any], bad: list[Any], wrong: list[Any]) -> st.SearchStrategy:
    """(label, value): mostly valid, often invalid, sometimes of the wrong type."""
    return st.one_of(
        _label(st.sampled_from(good), "ok"),
        _label(st.sampled_from(good), "ok"),
        _label(st.sampled_from(bad), "bad"),
        _label(st.sampled_from(wrong), "bad"),
    )


keys = _pick(VALID_KEYS, INVALID_KEYS, WRONG_TYPE_KEYS)
scopes = _pick(VALID_SCOPES, INVALID_SCOPES, WRONG_TYPE_SCOPES)
patterns = _pick(PATTERNS, BAD_PATTERNS, WRONG_TYPE_PATTERNS)
ttls = _pick(VALID_TTLS, INVALID_TTLS, WRONG_TYPE_TTLS)
deltas = st.one_of(
    _label(st.sampled_from(GOOD_DELTAS), "ok"), _label(st.sampled_from(BAD_DELTAS), "bad")
)
values = st.one_of(
    _label(supported, "ok"),
    _label(supported, "ok"),
    _label(unsupported, "bad"),
    _label(either, "either"),
)

operations = st.one_of(
    st.tuples(st.just("set"), scopes, keys, values, ttls, st.booleans()),
    st.tuples(st.just("set"), scopes, keys, values, ttls, st.booleans()),
    st.tuples(st.just("get"), scopes, keys),
    st.tuples(st.just("delete"), scopes, keys),
    st.tuples(st.just("incr"), scopes, keys, deltas),
    st.tuples(st.just("set_many"), scopes, st.lists(st.tuples(keys, values), max_size=4), ttls),
    st.tuples(st.just("delete_many"), scopes, st.lists(keys, max_size=4)),
    st.tuples(st.just("keys"), scopes, patterns),
    st.tuples(st.just("delete_key_pattern"), scopes, keys),
    st.tuples(st.just("contains"), scopes, keys),
    st.tuples(st.just("info"), scopes, keys),
    st.tuples(st.just("pop"), scopes, keys),
    st.tuples(st.just("touch"), scopes, keys, ttls),
    st.tuples(
        st.just("cas"),
        scopes,
        keys,
        st.one_of(
            _label(st.sampled_from([None, 1, 2]), "ok"),
            _label(st.sampled_from(BAD_VERSIONS), "bad"),
        ),
        values,
    ),
)

# -- the model ---------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Deep equality that also compares types, NaN with NaN and the sign of zero."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, decimal.Decimal):
        return (a.is_nan() and b.is_nan()) or str(a) == str(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, dt.datetime):
        if a.tzinfo is None or b.tzinfo is None:
            return a == b and a.tzinfo is b.tzinfo
        # The offset is kept, a zone name is not (README). Compare wall time and offset:
        # `==` across zones is never true for a time in a DST gap or fold (PEP 495).
        return a.replace(tzinfo=None) == b.replace(tzinfo=None) and (a.utcoffset() == b.utcoffset())
    return bool(a == b)


def _materialize(arg: Any) -> Any:
    """Build the Nested values inside an operation's (label, value) arguments."""
    if isinstance(arg, tuple) and len(arg) == 2 and isinstance(arg[1], Nested):
        return (arg[0], arg[1].make())
    if isinstance(arg, list):
        return [_materialize(x) for x in arg]
    if isinstance(arg, tuple) and len(arg) == 2 and isinstance(arg[0], tuple):
        return (_materialize(arg[0]), _materialize(arg[1]))  # a (key, value) pair
    return arg


def escape(key: str) -> str:
    """A glob pattern matching exactly `key`."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in key)


class Runner:
    """Applies operations to a store and to the model, and checks they agree."""

    def __init__(self, root: satchel.Store) -> None:
        self.root = root
        self.model: dict[str, dict[str, Any]] = {}

    def view(self, scope: tuple[str, Any]) -> tuple[satchel.Store | None, dict[str, Any]]:
        label, name = scope
        if label == "ok":
            return self.root.scope(name), self.model.setdefault(name, {})
        with pytest.raises(ALLOWED):
            self.root.scope(name)
        return None, {}

    def apply(self, op: tuple[Any, ...]) -> None:
        store, data = self.view(op[1])
        if store is None:
            return
        getattr(self, f"op_{op[0]}")(store, data, *map(_materialize, op[2:]))

    # An operation with an invalid argument must raise a documented error and change
    # nothing; `expect_error` checks both.
    def expect_error(self, store: satchel.Store, data: dict[str, Any], call: Any) -> None:
        before = {k: data[k] for k in data}
        with pytest.raises(ALLOWED):
            call()
        assert data == before or all(same(before[k], data[k]) for k in data)

    def check(self, store: satchel.Store, data: dict[str, Any], key: str) -> None:
        if key in data:
            assert same(store.get(key), data[key]), key
        else:
            assert store.get(key, KeyNotFound) is KeyNotFound, key

    def op_set(self, store, data, key, value, ttl, if_absent) -> None:
        if "bad" in (key[0], value[0], ttl[0]):
            self.expect_error(store, data, lambda: store.set(key[1], value[1], ttl[1], if_absent))
            if key[0] == "ok":
                self.check(store, data, key[1])
            return
        try:
            new = store.set(key[1], value[1], ttl=ttl[1], if_absent=if_absent)
        except UnsupportedValue:
            assert value[0] == "either"
            self.check(store, data, key[1])
            return
        assert new is (key[1] not in data)
        if new or not if_absent:
            data[key[1]] = value[1]
        self.check(store, data, key[1])

    def op_get(self, store, data, key) -> None:
        if key[0] == "bad":
            self.expect_error(store, data, lambda: store.get(key[1]))
            self.expect_error(store, data, lambda: store.get(key[1], None))
        elif key[1] in data:
            assert same(store.get(key[1]), data[key[1]])
        else:
            with pytest.raises(KeyNotFound):
                store.get(key[1])

    def op_delete(self, store, data, key) -> None:
        if key[0] == "bad":
            self.expect_error(store, data, lambda: store.delete(key[1]))
        else:
            assert store.delete(key[1]) is (key[1] in data)
            data.pop(key[1], None)

    def op_incr(self, store, data, key, delta) -> None:
        current = data.get(key[1]) if key[0] == "ok" else None
        if "bad" in (key[0], delta[0]) or (key[1] in data and type(current) is not int):
            self.expect_error(store, data, lambda: store.incr(key[1], delta[1]))
            return
        result = store.incr(key[1], delta[1])
        assert result == (current or 0) + delta[1]
        data[key[1]] = result

    def op_set_many(self, store, data, pairs, ttl) -> None:
        labels = {k[0] for k, _ in pairs} | {v[0] for _, v in pairs} | {ttl[0]}
        plain = [(k[1], v[1]) for k, v in pairs]
        if "bad" in labels or ("either" in labels and ttl[0] == "bad"):
            self.expect_error(store, data, lambda: store.set_many(plain, ttl=ttl[1]))
            return
        try:
            written = store.set_many(plain, ttl=ttl[1])
        except UnsupportedValue:
            assert "either" in labels
            for k, _ in plain:
                self.check(store, data, k)
            return
        final = dict(plain)
        assert written == len(final)
        data.update(final)

    def op_delete_many(self, store, data, keys) -> None:
        if any(k[0] == "bad" for k in keys):
            self.expect_error(store, data, lambda: store.delete_many([k for _, k in keys]))
            return
        wanted = {k for _, k in keys}
        assert store.delete_many([k for _, k in keys]) == len(wanted & set(data))
        for k in wanted:
            data.pop(k, None)

    def op_keys(self, store, data, pattern) -> None:
        if pattern[0] == "bad":
            try:
                found = list(store.keys(pattern[1]))
            except ALLOWED:
                return
            # A malformed pattern may also be read literally; it still matches no more
            # than stored keys.
            assert set(found) <= set(data)
            return
        found = list(store.keys(pattern[1]))
        assert found == sorted(found)
        assert set(found) <= set(data)
        if pattern[1] == "*":
            assert found == sorted(data)

    def op_delete_key_pattern(self, store, data, key) -> None:
        if key[0] == "bad":
            if isinstance(key[1], str) and key[1]:
                assert store.delete_matching(escape(key[1])) == 0
            else:
                self.expect_error(store, data, lambda: store.delete_matching(key[1]))
            return
        assert list(store.keys(escape(key[1]))) == ([key[1]] if key[1] in data else [])
        assert store.delete_matching(escape(key[1])) == (key[1] in data)
        data.pop(key[1], None)

    def op_contains(self, store, data, key) -> None:
        assert (key[1] in store) is (key[0] == "ok" and key[1] in data)

    def op_info(self, store, data, key) -> None:
        if key[0] == "bad" or key[1] not in data:
            self.expect_error(store, data, lambda: store.info(key[1]))
            self.expect_error(store, data, lambda: store.ttl(key[1]))
        else:
            assert store.info(key[1]).key == key[1]
            assert store.exists(key[1])

    def op_pop(self, store, data, key) -> None:
        if key[0] == "bad" or key[1] not in data:
            self.expect_error(store, data, lambda: store.pop(key[1]))
        else:
            assert same(store.pop(key[1]), data.pop(key[1]))

    def op_touch(self, store, data, key, ttl) -> None:
        if "bad" in (key[0], ttl[0]):
            self.expect_error(store, data, lambda: store.touch(key[1], ttl[1]))
        else:
            assert store.touch(key[1], ttl[1]) is (key[1] in data)

    def op_cas(self, store, data, key, version, value) -> None:
        if "bad" in (key[0], version[0], value[0]):
            self.expect_error(
                store, data, lambda: store.compare_and_set(key[1], version[1], value[1])
            )
            return
        try:
            actual = store.info(key[1]).version if key[1] in data else None
            written = store.compare_and_set(key[1], version[1], value[1])
        except UnsupportedValue:
            assert value[0] == "either"
            return
        assert written is (actual == version[1])
        if written:
            data[key[1]] = value[1]

    def verify(self) -> None:
        """The whole store against the model: scopes, keys and every value."""
        live = sorted(name for name, data in self.model.items() if data)
        assert self.root.scopes() == live
        for name, data in self.model.items():
            got = dict(self.root.scope(name).items())
            assert sorted(got) == sorted(data), name
            for k, v in data.items():
                assert same(got[k], v), (name, k)
            assert len(self.root.scope(name)) == len(data)


def _open_root(engine: Engine, tmp_path: Path) -> tuple[satchel.Store, str]:
    url = engine(tmp_path)
    return satchel.open(url), url


@pytest.mark.parametrize("name", list(ENGINES))
def test_hostile_operations_keep_the_model(name: str, tmp_path: Path, long_run: bool) -> None:
    engine = ENGINES[name]
    root, url = _open_root(engine, tmp_path)
    counts = {"examples": 0, "ops": 0}

    @settings(
        max_examples=EXAMPLES * (10 if long_run else 1),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(ops=st.lists(operations, min_size=1, max_size=12))
    def run(ops: list[tuple[Any, ...]]) -> None:
        for scope in root.scopes():  # a fresh, empty store for every example
            root.scope(scope).clear()
        runner = Runner(root)
        for op in ops:
            runner.apply(op)
            counts["ops"] += 1
        runner.verify()
        counts["examples"] += 1

    try:
        run()
        print(f"{name}: {counts['examples']} examples, {counts['ops']} operations")
    finally:
        root.close()
        if engine.cleanup is not None:
            engine.cleanup(url)


@pytest.mark.parametrize("ttl", [2**1100, -(2**1100)], ids=["2**1100", "-2**1100"])
def test_ttl_too_large_for_a_float(ttl: int) -> None:
    with satchel.open("memory://") as store:
        store.set("k", 1)
        for call in (
            lambda: store.set("k", 2, ttl=ttl),
            lambda: store.set_many({"k": 2}, ttl=ttl),
            lambda: store.touch("k", ttl),
            lambda: store.compare_and_set("k", None, 2, ttl=ttl),
        ):
            with pytest.raises(InvalidInput):
                call()
        assert store.get("k") == 1
        assert store.ttl("k") is None


@pytest.mark.parametrize("name", ["sqlite", "postgres", "redis", "redis-cluster"])
@pytest.mark.parametrize("pattern", ["\ud800*", "a\udc00?"], ids=["prefix", "prefix-2"])
def test_surrogate_in_pattern_prefix(name: str, pattern: str, tmp_path: Path) -> None:
    engine = ENGINES[name]
    root, url = _open_root(engine, tmp_path)
    try:
        root.set("a", 1)
        for call in (
            lambda: list(root.keys(pattern)),
            lambda: list(root.items(pattern)),
            lambda: root.delete_matching(pattern),
        ):
            # No stored key can match: an empty answer or InvalidInput are both fine.
            with contextlib.suppress(InvalidInput):
                assert call() in ([], 0)
        assert root.get("a") == 1
    finally:
        root.close()
        if engine.cleanup is not None:
            engine.cleanup(url)


# -- tampered records --------------------------------------------------------------------


class _Marker:
    """Unpickling this creates the file `path`: proof that pickled code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


@pytest.mark.parametrize("name", list(ENGINES))
def test_tampered_records_never_execute(name: str, tmp_path: Path, long_run: bool) -> None:
    engine = ENGINES[name]
    root, url = _open_root(engine, tmp_path)
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    evil = pickle.dumps(_Marker(str(marker)))
    records = {
        "pickle": b"\x01p\x00" + evil,
        "pickle-flags": b"\x01p\x01" + evil,
        "pickle-compressed": b"\x01p\x02" + evil,
        "pickle-no-header": evil,
        "typed-pickle": b"\x01t\x00" + evil,
        "custom-pickle": b"\x01x\x00" + evil,
        "json-pickle": b"\x01j\x00" + evil,
        "empty": b"",
        "short": b"\x01",
        "future": b"\x09t\x00\x00",
        "bad-typed": b"\x01t\x00\xc1\xff",
        "bad-ext": b"\x01t\x00\xd4\x7f\x00",
        "bad-utf8": b"\x01s\x00\xff\xfe",
        "encrypted": b"\x01t\x01" + os.urandom(40),
    }
    rng_records = int.from_bytes(os.urandom(2)) % 5 + (200 if long_run else 20)
    for i in range(rng_records):
        records[f"random-{i}"] = os.urandom(i % 64)
    backend = root._shared.backend
    try:
        for key, data in records.items():
            backend.apply("default", [Put(key, data)], time.time())
        for key in records:
            try:
                root.get(key)
            except (CorruptData, DecryptionError) as exc:
                assert exc.key == key
            else:
                assert key.startswith("random-"), f"{key}: tampered record read back"
            # A random record may happen to be a valid one: then it just reads.
            for call in (root.pop, root.info):
                with contextlib.suppress(CorruptData, DecryptionError, KeyNotFound):
                    call(key)
        with contextlib.suppress(CorruptData, DecryptionError):
            dict(root.items())
        assert not marker.exists(), "a tampered record ran code when read"
    finally:
        root.close()
        if engine.cleanup is not None:
            engine.cleanup(url)
