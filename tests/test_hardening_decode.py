"""Reading what an attacker planted (issue 17): every decode is a SatchelError, in
bounded time and memory, whatever the stored bytes claim.

Records are crafted by hand (msgpack, zlib, zstd) and planted under the Store with the
engine's own `put`, as someone who can write the database would.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import satchel
from satchel import _codecs as codecs
from satchel import _crypto as crypto
from satchel import _exchange as exchange
from satchel._backends.base import Put
from satchel._cli import cli
from satchel._codecs import COUNT_FROM, MAX_SAME_HASH, get_codec
from satchel._crypto import Keyring, unseal

TYPED, JSON, RAW = get_codec("typed"), get_codec("json"), get_codec("raw")
KEY = bytes(range(32))
MiB = 1 << 20
P61 = 2**61 - 1  # Python hashes ints modulo this: its multiples all hash to 0


def typed(value: Any) -> bytes:
    """A typed record whose payload is `value` packed by plain msgpack (ExtTypes kept)."""
    return b"\x01t\x00" + msgpack.packb(value, use_bin_type=True)


def ext(code: int, data: bytes) -> msgpack.ExtType:
    return msgpack.ExtType(code, data)


def bigint(n: int) -> msgpack.ExtType:
    return ext(4, n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True))


@contextlib.contextmanager
def peak_memory() -> Iterator[list[int]]:
    """Yields a list that holds, after the block, the peak bytes traced inside it."""
    result: list[int] = []
    tracemalloc.start()
    try:
        yield result
    finally:
        result.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def plant(store: satchel.Store, key: str, data: bytes) -> None:
    """Write raw bytes under `key`, bypassing the Store (an attacker editing the database)."""
    store._shared.backend.apply(store.scope_name, [Put(key, data)], time.time())


# --- 11: every decode failure is CorruptData -------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        typed(ext(5, b"2024-13-45T00:00:00")),  # datetime: no such month
        typed(ext(5, b"\xff\xfe")),  # datetime: not UTF-8
        typed(ext(6, b"yesterday")),
        typed(ext(7, b"25:61")),
        typed(ext(9, b"1.2.3")),  # Decimal
        typed(ext(9, b"")),
        typed(ext(10, b"\x00" * 15)),  # UUID: 15 bytes
        typed(ext(10, b"\x00" * 17)),
        typed(ext(8, msgpack.packb([1, 2, 3, 4]))),  # timedelta: four fields
        typed(ext(8, msgpack.packb([1, 2]))),
        typed(ext(8, msgpack.packb("abc" * 1000))),  # would be 3000 positional arguments
        typed(ext(8, msgpack.packb({"days": 1}))),
        typed(ext(8, msgpack.packb([1.5, 0, 0]))),
        typed(ext(8, msgpack.packb([10**9, 0, 0]))),  # beyond timedelta's range
        typed(ext(8, b"\xc1")),
        typed(ext(1, b"\xc1")),  # tuple holding a byte msgpack never uses
        typed(ext(2, msgpack.packb([[1]]))),  # set of a list
        typed(ext(3, msgpack.packb(1))),  # frozenset of an int
        typed({ext(2, msgpack.packb([1])): 1}),  # a set as a dict key
        typed(ext(42, b"")),
        b"\x01t\x00" + b"\x91" * 5000 + b"\xc0",  # nested past msgpack's stack
        b"\x01j\x00" + b"[" * 100_000 + b"]" * 100_000,  # json: RecursionError
        b"\x01j\x00" + b"1" * 5000,  # json: int beyond Python's digit limit
        b"\x01t",  # header cut short
        b"\x01",
        b"",
    ],
    ids=lambda record: repr(record[:24]),
)
def test_crafted_typed_and_json_records_are_corrupt_data(record: bytes) -> None:
    for codec in (TYPED, JSON, RAW):
        with pytest.raises(satchel.CorruptData):
            codec.decode(record)


def test_a_huge_bigint_decodes_in_linear_time() -> None:
    n = 7**400_000  # 140 KB of bits
    started = time.perf_counter()
    assert TYPED.decode(typed(bigint(n))) == n
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize(
    "payload",
    [
        b"\xdd\xff\xff\xff\xff",  # array of 2**32 - 1 items
        b"\xdf\xff\xff\xff\xff",  # map
        b"\xdb\xff\xff\xff\xff",  # str
        b"\xc6\xff\xff\xff\xff",  # bin
        b"\xc9\xff\xff\xff\xff\x01",  # ext
        msgpack.packb(ext(1, b"\xdd\xff\xff\xff\xff")),  # inside a tuple
        msgpack.packb(ext(8, b"\xdd\xff\xff\xff\xff")),  # inside a timedelta
        b"\x92" + b"\xdd\x00\x10\x00\x00" + b"\xc0" * 1000,  # 1M-item array, 1000 there
    ],
    ids=repr,
)
def test_declared_lengths_allocate_no_more_than_the_record_holds(payload: bytes) -> None:
    with peak_memory() as peak, pytest.raises(satchel.CorruptData):
        TYPED.decode(b"\x01t\x00" + payload)
    assert peak[0] < MiB, peak


def _colliding(count: int) -> list[list[Any]]:
    """Several kinds of `count` distinct values that all share one hash."""
    return [
        [bigint(k * P61) for k in range(1, count + 1)],
        [ext(9, str(k * P61).encode()) for k in range(1, count + 1)],  # Decimal
        [ext(10, (k * P61).to_bytes(16, "big")) for k in range(1, count + 1)],  # UUID
        [ext(1, msgpack.packb([bigint(k * P61)])) for k in range(1, count + 1)],  # (n,)
    ]


@pytest.mark.parametrize("kind", ["bigint", "Decimal", "UUID", "tuple"])
@pytest.mark.parametrize("container", ["dict", "set", "frozenset"])
def test_keys_crafted_to_share_a_hash_are_refused_quickly(kind: str, container: str) -> None:
    keys = dict(zip(["bigint", "Decimal", "UUID", "tuple"], _colliding(20_000), strict=True))
    items = keys[kind]
    if container == "dict":
        record = typed(dict.fromkeys(items, 0))
    else:
        record = typed(ext(2 if container == "set" else 3, msgpack.packb(items)))
    started = time.perf_counter()
    with pytest.raises(satchel.CorruptData, match="share one hash"):
        TYPED.decode(record)
    assert time.perf_counter() - started < 1  # unguarded: about 10 s


def test_a_small_record_is_not_counted_and_cannot_flood() -> None:
    keys, count = _colliding(400)[0], 400
    while len(record := typed(dict.fromkeys(keys[:count], 0))) >= COUNT_FROM:
        count -= 10  # as many as fit under COUNT_FROM
    started = time.perf_counter()
    assert len(TYPED.decode(record)) > 300
    assert time.perf_counter() - started < 0.05


def test_the_count_is_per_record_and_cleared_after_an_error() -> None:
    flood = typed(dict.fromkeys(_colliding(MAX_SAME_HASH + 1)[0], 0))
    with pytest.raises(satchel.CorruptData):
        TYPED.decode(flood + b"\xc1" * COUNT_FROM)
    assert codecs._local.hashes is None
    keys = _colliding(3 * MAX_SAME_HASH)[0]
    for part in range(3):  # each record's values are counted afresh
        some = keys[part * MAX_SAME_HASH : (part + 1) * MAX_SAME_HASH]
        assert len(TYPED.decode(typed([some, "x" * COUNT_FROM]))[0]) == MAX_SAME_HASH


def test_values_that_share_a_hash_honestly_still_decode() -> None:
    same = [k * P61 for k in range(1, MAX_SAME_HASH + 1)]  # as many as allowed
    value = {"keys": dict.fromkeys(same, 1), "set": set(same), "equal": [decimal.Decimal(1)] * 5000}
    value["many"] = {decimal.Decimal(k) for k in range(20_000)}
    assert TYPED.decode(TYPED.encode(value)) == value
    assert TYPED.decode(TYPED.encode([(1, 2)] * 5000)) == [(1, 2)] * 5000
    assert TYPED.decode(TYPED.encode(value)) == value  # per record: nothing carried over


def test_unseal_of_records_cut_short_is_a_satchel_error() -> None:
    ring = Keyring(KEY, None)
    for record in (b"", b"\x01", b"\x01t", b"\x01t\x01", b"\x01t\x01" + ring.current_id + b"n"):
        for keyring in (None, ring):
            with pytest.raises(satchel.SatchelError):
                unseal(record, keyring, "default", "k")
    for record in (b"\x01t\x02", b"\x01t\x02z", b"\x01t\x02S\x01"):
        with pytest.raises(satchel.CorruptData):
            unseal(record, None, "default", "k")


# Valid records of every codec, as seeds for mutation.
_VALUES = [
    None, 0, -(2**70), 1.5, "text", b"\x00bytes", [1, [2, [3]]], {"a": {"b": None}},
    (1, "t", (2,)), {1, 2}, frozenset({"f"}), dt.datetime(2024, 5, 1, tzinfo=dt.UTC),
    dt.date(2020, 1, 1), dt.time(1, 2), dt.timedelta(1, 2, 3), decimal.Decimal("1.10"),
    uuid.UUID(int=7), {(1, 2): {3: [b"x"]}},
]  # fmt: skip
_SEEDS = [TYPED.encode(v) for v in _VALUES] + [
    JSON.encode({"a": [1, 2.5, None, "x"]}),
    JSON.encode([[[]]]),
    RAW.encode(b"raw bytes"),
]


class _Custom:
    def dumps(self, value: Any) -> bytes:
        return json.dumps(value).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


# pickle is left out: a pickle store trusts its records by choice (see codecs).
_CODECS = [TYPED, JSON, RAW, get_codec(_Custom())]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    record = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(record)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if action == "flip" and where < len(record):
            record[where] = draw(st.integers(0, 255))
        elif action == "insert":
            record[where:where] = draw(st.binary(min_size=1, max_size=6))
        elif action == "delete":
            del record[where : where + draw(st.integers(1, 4))]
        else:
            del record[where:]
    return bytes(record)


def _decodes_or_corrupt(record: bytes) -> None:
    for codec in _CODECS:
        with contextlib.suppress(satchel.CorruptData):  # anything else fails the test
            codec.decode(record)


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mutated_records_decode_or_raise_corrupt_data(record: bytes) -> None:
    _decodes_or_corrupt(record)


@settings(max_examples=300, deadline=2000)
@given(st.sampled_from([b"\x01t\x00", b"\x01j\x00", b"\x01x\x00", b"\x01b\x00"]), st.binary())
def test_random_payloads_decode_or_raise_corrupt_data(header: bytes, body: bytes) -> None:
    _decodes_or_corrupt(header + body)


# --- 6: decompression is bounded by the size a record declares --------------------------


def _zstd(data: bytes, content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_content_size=content_size).compress(data)


def _zstd_claiming(data: bytes, claimed: int) -> bytes:
    """A zstd frame of `data` whose header claims `claimed` bytes (a lie when they differ)."""
    frame = _zstd(data, content_size=False)
    descriptor = frame[4]
    assert descriptor & 0xE0 == 0  # no size, not single-segment: a window byte follows
    return (
        frame[:4]
        + bytes((0x80 | descriptor,))
        + frame[5:6]
        + claimed.to_bytes(4, "little")
        + frame[6:]
    )


@pytest.fixture(scope="module")
def zeros() -> bytes:
    return bytes(64 * MiB)


def _sized(n: int) -> bytes:
    """A size field: its width (1, 2, 4 or 8), then the size, big-endian."""
    width = next(w for w in (1, 2, 4, 8) if n < 1 << 8 * w)
    return bytes((width,)) + n.to_bytes(width, "big")


@pytest.fixture(scope="module")
def bombs(zeros: bytes) -> dict[str, bytes]:
    """Compressed inners (algorithm, [size], data) that inflate to 64 MiB, claiming 1 KiB."""
    return {
        "zlib": b"Z" + _sized(1024) + zlib.compress(zeros, 9),
        "zstd": b"S" + _sized(1024) + _zstd(zeros),
        "zstd, lying frame": b"S" + _sized(1024) + _zstd_claiming(zeros, 1024),
        "zstd, frame without size": b"S" + _sized(1024) + _zstd(zeros, content_size=False),
        "old zlib": b"z" + zlib.compress(zeros, 9),
        "old zstd": b"s" + _zstd(zeros),
        "old zstd, lying frame": b"s" + _zstd_claiming(zeros, 1024),
        "old zstd, frame without size": b"s" + _zstd(zeros, content_size=False),
    }


def _seal(inner: bytes, keyring: Keyring | None, key: str, codec: bytes = b"b") -> bytes:
    """A record holding `inner` compressed (and encrypted with `keyring`)."""
    if keyring is None:
        return b"\x01" + codec + b"\x02" + inner
    header = b"\x01" + codec + b"\x03"
    return header + keyring.encrypt(inner, crypto._aad(header, "default", key))


@pytest.fixture
def small_legacy_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Old records are capped at 4 MiB here, so a 64 MiB bomb shows the cap at work."""
    monkeypatch.setattr(crypto, "LEGACY_INFLATE_MAX", 4 * MiB, raising=False)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize(
    "kind",
    [
        "zlib", "zstd", "zstd, lying frame", "zstd, frame without size", "old zlib",
        "old zstd", "old zstd, lying frame", "old zstd, frame without size",
    ],
)  # fmt: skip
def test_a_planted_bomb_is_corrupt_data_in_bounded_memory(
    tmp_path: Path, bombs: dict[str, bytes], kind: str, encrypted: bool, small_legacy_cap: None
) -> None:
    options: dict[str, Any] = {"encryption_key": KEY} if encrypted else {}
    with satchel.open(tmp_path / "bomb.db", compress="zstd", **options) as store:
        keyring = Keyring(KEY, None) if encrypted else None
        plant(store, "bomb", _seal(bombs[kind], keyring, "bomb"))
        with peak_memory() as peak, pytest.raises(satchel.CorruptData) as caught:
            store.get("bomb")
    assert "'bomb'" in str(caught.value)
    assert peak[0] < 12 * MiB, (kind, peak)  # the bomb is 64 MiB; the old cap here 4 MiB


def test_the_legacy_cap_bounds_a_gib_bomb_without_inflating_it() -> None:
    co = zstandard.ZstdCompressor(level=3).compressobj(size=1 << 30)  # the 32 KiB bomb
    frame = b"".join([co.compress(bytes(MiB)) for _ in range(1024)] + [co.flush()])
    assert len(frame) < 40_000
    with peak_memory() as peak, pytest.raises(satchel.CorruptData, match="LEGACY_INFLATE_MAX"):
        unseal(b"\x01b\x02s" + frame, None, "default", "k")
    assert peak[0] < MiB


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_records_compressed_before_the_size_existed_still_read(
    tmp_path: Path, encrypted: bool
) -> None:
    value = {"text": "abc" * 5000, "n": list(range(1000))}
    payload = TYPED.encode(value)[3:]
    keyring = Keyring(KEY, None) if encrypted else None
    options: dict[str, Any] = {"encryption_key": KEY} if encrypted else {}
    with satchel.open(tmp_path / "old.db", **options) as store:
        for key, inner in (("z", b"z" + zlib.compress(payload, 6)), ("s", b"s" + _zstd(payload))):
            plant(store, key, _seal(inner, keyring, key, codec=b"t"))
            assert store.get(key) == value


@pytest.mark.parametrize("algorithm", ["zlib", "zstd"])
def test_new_records_declare_their_size_and_round_trip(tmp_path: Path, algorithm: str) -> None:
    with satchel.open(tmp_path / "new.db", compress=algorithm) as store:
        for size in (1024, 70_000, 3 * MiB):
            value = os.urandom(16).hex() * (size // 32)
            store.set("k", value)
            inner = store._shared.backend.get(store.scope_name, "k", time.time()).value[3:]
            assert inner[:1] == {"zlib": b"Z", "zstd": b"S"}[algorithm]
            declared = int.from_bytes(inner[2 : 2 + inner[1]], "big")
            assert declared == len(TYPED.encode(value)) - 3
            assert store.get("k") == value


def test_threads_sharing_a_zstd_store_neither_fail_nor_corrupt() -> None:
    sealer = crypto.Sealer(None, "zstd", 64)  # one per store, shared by its threads
    failures: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for i in range(1500):
                record = b"\x01s\x00" + b"%d-%d " % (thread, i) * (20 + i % 400)
                sealed = sealer.seal(record, "default", "k")
                assert unseal(sealed, None, "default", "k") == record
        except BaseException as exc:  # a shared zstd context fails, or writes garbage
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]


@pytest.mark.parametrize(
    "inner",
    [
        b"Z", b"Z\x00", b"Z\x09" + bytes(9), b"Z\x03" + bytes(3), b"Z\x02\x01",  # bad sizes
        b"Z\x01\x05" + zlib.compress(b"abc"),  # declares more than it holds
        b"Z\x01\x02" + zlib.compress(b"abc"),  # less
        b"Z\x01\x03" + zlib.compress(b"abc")[:-3],  # cut short
        b"S\x01\x05" + zstandard.ZstdCompressor().compress(b"abc"),
        b"S\x01\x03" + b"garbage",
        b"s" + b"garbage", b"z" + b"garbage", b"?abc",
    ],
    ids=repr,
)  # fmt: skip
def test_damaged_compressed_records_are_corrupt_data(inner: bytes) -> None:
    with pytest.raises(satchel.CorruptData):
        unseal(b"\x01b\x02" + inner, None, "default", "k")


# --- 10: the passphrase salt -------------------------------------------------------------

PASSPHRASE = "correct horse battery staple"


def _plant_salt(path: Path, data: bytes) -> None:
    with satchel.open(path) as store:
        salt = Put("encryption-salt", data, None, True)
        store._shared.backend.apply("__satchel__", [salt], time.time())


def _stored_salt(path: Path) -> bytes:
    with satchel.open(path) as store:
        data = store._shared.backend.get_value("__satchel__", "encryption-salt", time.time())
    assert data is not None
    return data


@pytest.mark.parametrize(
    "data",
    [
        RAW.encode(b""),  # empty: every store's keys would derive from the passphrase alone
        RAW.encode(b"abc"),
        RAW.encode(bytes(17)),
        RAW.encode(b"\x01\x1e" + bytes(16)),  # asks for scrypt N = 2**30: 128 GiB
        RAW.encode(b"\x02\x11" + bytes(16)),  # a format this satchel does not know
        TYPED.encode("a str, not bytes"),
        TYPED.encode([bytes(16)]),
        b"\x01t\x00" + msgpack.packb(bytes(16)),  # bytes, but not as the raw codec writes them
        b"\x01b\x02" + bytes(16),  # flags: compressed
        b"garbage",
    ],
    ids=repr,
)
def test_a_planted_or_damaged_salt_is_corrupt_data(tmp_path: Path, data: bytes) -> None:
    _plant_salt(tmp_path / "salt.db", data)
    with pytest.raises(satchel.CorruptData) as caught:
        satchel.open(tmp_path / "salt.db", encryption_key=PASSPHRASE)
    assert "'__satchel__'" in str(caught.value) and "'encryption-salt'" in str(caught.value)
    with satchel.open(tmp_path / "salt.db", encryption_key=KEY) as store:  # no passphrase
        store.set("k", 1)


def _scrypt(salt: bytes, n: int) -> bytes:
    return hashlib.scrypt(PASSPHRASE.encode(), salt=salt, n=n, r=8, p=1, maxmem=256 * MiB, dklen=32)


def test_a_new_store_stores_the_scrypt_cost_2_17_with_its_salt(tmp_path: Path) -> None:
    with satchel.open(tmp_path / "new.db", encryption_key=PASSPHRASE) as store:
        store.set("k", "secret")
    data = _stored_salt(tmp_path / "new.db")
    assert data[:3] == b"\x01b\x00" and len(data) == 3 + 2 + 16
    assert data[3:5] == b"\x01\x11"  # format 1, log2 N = 17
    with satchel.open(tmp_path / "new.db", encryption_key=_scrypt(data[5:], 2**17)) as store:
        assert store.get("k") == "secret"
    with satchel.open(tmp_path / "new.db", encryption_key=PASSPHRASE) as store:
        assert store.get("k") == "secret"


def test_a_salt_stored_before_the_cost_opens_with_2_15(tmp_path: Path) -> None:
    old_salt = os.urandom(16)
    _plant_salt(tmp_path / "old.db", RAW.encode(old_salt))  # as satchel stored it until now
    with satchel.open(tmp_path / "old.db", encryption_key=_scrypt(old_salt, 2**15)) as store:
        store.set("k", "written with the old derivation")
    with satchel.open(tmp_path / "old.db", encryption_key=PASSPHRASE) as store:
        assert store.get("k") == "written with the old derivation"
        store.set("k2", 2)
    assert _stored_salt(tmp_path / "old.db") == RAW.encode(old_salt)  # left as it was


# --- 13: export writes every value the Store accepted -----------------------------------


def _nest(depth: int, leaf: Any = "leaf") -> Any:
    """Lists `depth` deep, with a tuple, a dict with a non-str key and a frozenset every
    300 levels."""
    value = leaf
    for level in range(depth):
        if level % 300 == 299:
            value = ({(level, frozenset({"k"})): [value]},)
        else:
            value = [value, level] if level % 7 == 0 else [value]
    return value


def _depth_and_leaf(value: Any) -> tuple[int, Any]:
    """How deep `value` (from `_nest`) goes and what is at the bottom, without recursion."""
    depth = 0
    while type(value) in (list, tuple, dict):
        value = next(iter(value.values())) if type(value) is dict else value[0]
        depth += 1
    return depth, value


def _fresh_stack(call: Callable[[], Any]) -> Any:
    """`call()` in a new thread: a value nested nearly 1000 deep encodes only from a
    stack as shallow as a program's (the codecs recurse), not from inside pytest."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    thread.join()
    assert result, "the call failed (see the thread's traceback above)"
    return result[0]


def _cli(*args: str, url: str, stdin: bytes | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), input=stdin, env={"SATCHEL_URL": url})


def _script(*args: str, url: str, stdin: bytes | None = None) -> Any:
    """The installed console script, in a process of its own (a shallow stack, too)."""
    script = Path(sys.executable).parent / "satchel"
    env = {**os.environ, "SATCHEL_URL": url}
    return subprocess.run([script, *args], input=stdin, capture_output=True, env=env, check=False)


def _lists(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def test_a_deep_value_holding_bin_marker_bytes_is_stored() -> None:
    deep = _lists(900)
    deep[0].append(196)  # 0xc4, a msgpack bin marker: the encoder then looks for bytearrays
    assert _fresh_stack(lambda: _depth_and_leaf(TYPED.decode(TYPED.encode(deep)))) == (900, "leaf")
    bad = _lists(900)
    bad[0].append(bytearray(b"x"))

    def refusal() -> str:
        with pytest.raises(satchel.UnsupportedValue) as caught:
            TYPED.encode(bad)
        return str(caught.value)

    assert "bytearray" in _fresh_stack(refusal)


@pytest.mark.parametrize(
    "deep",
    [_lists(500), _nest(500), _nest(950)],  # 950: deeper than json.dumps recurses there
    ids=["lists 500", "mixed 500", "mixed 950"],
)
def test_export_writes_deep_values_and_import_reads_them_back(tmp_path: Path, deep: Any) -> None:
    src, dst = f"sqlite:///{tmp_path}/src.db", f"sqlite:///{tmp_path}/dst.db"
    with satchel.open(src) as store:
        _fresh_stack(lambda: store.set_many({"a": 1, "deep": deep, "z": [2]}))
    exported = _script("export", url=src)
    assert exported.returncode == 0, exported.stderr
    assert len(exported.stdout.splitlines()) == 3
    imported = _script("import", url=dst, stdin=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    with satchel.open(dst) as store:
        assert store.get("a") == 1 and store.get("z") == [2]
        back = store.get("deep")
    assert _depth_and_leaf(back) == _depth_and_leaf(deep)
    assert exchange.dumps(back) == exchange.dumps(deep)  # every type on the way, exactly


def test_typed_json_converts_any_depth_both_ways() -> None:
    deep = _nest(20_000, leaf={"$not a tag": {1.5, None}})
    text = exchange.dumps(deep)
    assert exchange.dumps(exchange.loads(text)) == text
    assert _depth_and_leaf(exchange.loads(text))[0] == _depth_and_leaf(deep)[0]
    with satchel.open("memory://") as store:
        store.set("k", 1)
        line = exchange.export_line("k", deep, store.info("k"))
    assert exchange.dumps(exchange.parse_line(line).value) == text


def test_deep_text_errors_still_say_where(tmp_path: Path) -> None:
    text = "[" * 2000 + '{"$date": "nope"}' + "]" * 2000
    with pytest.raises(exchange.BadTypedJSON, match=r"^(\[0\]){2000}\.\$date: not an ISO"):
        exchange.loads(text)
    with pytest.raises(exchange.BadTypedJSON, match="not JSON"):
        exchange.loads("[" * 2000 + "1,]" + "]" * 1999)


def test_one_bad_value_is_named_and_the_rest_exported(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/bad.db"
    with satchel.open(url) as store:
        store.set_many({f"k{i}": i for i in range(5)})
        plant(store, "k2", b"\x01t\x00\xc1")  # damaged
        plant(store, "k3", b"\x01p\x00" + b"\x80\x05N.")  # pickle: this store never unpickles
    result = _cli("export", url=url)
    assert result.exit_code == 3
    assert [json.loads(line)["key"] for line in result.stdout.splitlines()] == ["k0", "k1", "k4"]
    errors = result.stderr.splitlines()
    assert len(errors) == 3, errors
    assert "'k2'" in errors[0] and "'k3'" in errors[1] and "pickle" in errors[1]
    assert "2 key(s) not exported" in errors[2]


def test_a_value_without_a_typed_json_form_is_named_and_skipped(tmp_path: Path) -> None:
    with satchel.open(tmp_path / "p.db", codec="pickle") as store:
        store.set_many({"a": 1, "b": 1j, "c": [3]})
        skipped: list[satchel.SatchelError] = []
        lines = list(exchange.export_lines(store, "*", skipped.append))
    assert [json.loads(line)["key"] for line in lines] == ["a", "c"]
    assert len(skipped) == 1 and skipped[0].key == "b" and "complex" in str(skipped[0])


def test_an_import_line_whose_keys_share_a_hash_is_refused_quickly(tmp_path: Path) -> None:
    keys = [{"$int": str(k * P61)} for k in range(1, 20_001)]
    for value in ({"$set": keys}, {"$dict": [[key, 0] for key in keys]}):
        line = json.dumps({"key": "k", "value": value}).encode()
        with satchel.open(tmp_path / "i.db") as store:
            started = time.perf_counter()
            with pytest.raises(exchange.BadLine, match="share one hash"):
                exchange.import_lines(store, [line])
            assert time.perf_counter() - started < 1


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_json_values, st.sampled_from([None, 0, 2]))
def test_the_iterative_json_writer_and_reader_match_the_json_module(
    data: Any, spaces: int | None
) -> None:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    assert exchange._dumps_deep(data) == text
    spaced = json.dumps(data, indent=spaces)  # any layout reads the same
    assert repr(exchange._loads_deep(spaced)) == repr(json.loads(spaced))


@settings(max_examples=300, deadline=None)
@given(_json_values, st.data())
def test_the_iterative_json_reader_refuses_what_the_json_module_refuses(
    data: Any, draw: st.DataObject
) -> None:
    text = json.dumps(data)
    where = draw.draw(st.integers(0, len(text)))
    text = (
        text[:where]
        + draw.draw(st.sampled_from(["", ",", "]", "}", ":", '"', "x", "[{"]))
        + text[where + 1 :]
    )
    try:
        expected: Any = repr(json.loads(text))
    except ValueError:
        expected = ValueError
    try:
        got: Any = repr(exchange._loads_deep(text))
    except ValueError:
        got = ValueError
    assert got == expected, text
