"""Stored bytes are hostile: a store with a key reads only what was sealed with it, and a
damaged large value is an error, never a hang. On every engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

import satchel
from satchel import CorruptData, DecryptionError
from satchel._backends.base import Put
from satchel._blobs import CHUNK_SIZE, BlobWriter, Manifest, chunk_key, read_manifest
from satchel._codecs import HEADER_SIZE, get_codec
from satchel._events import KIND as EVENTS
from satchel._keys import kind_scope, name_key
from satchel._series import series_of
from satchel._store import core_of

KEY = bytes(range(32))
BIG = bytes(range(256)) * (CHUNK_SIZE // 256) * 2 + b"tail"  # three chunks
_typed = get_codec("typed")


def _stored(store: satchel.Store, key: str) -> bytes:
    record = store._shared.backend.get(store.scope_name, key, time.time())
    assert record is not None
    return record.value


def _plant(store: satchel.Store, key: str, data: bytes) -> None:
    """Write raw bytes under `key`, bypassing the Store (an attacker editing the database)."""
    store._shared.backend.apply(store.scope_name, [Put(key, data)], time.time())


def _refused(call: Callable[[], Any]) -> DecryptionError:
    with pytest.raises(DecryptionError) as caught:
        call()
    return caught.value


def test_a_planted_plaintext_record_is_refused(make_store):
    keyed = make_store(encryption_key=KEY)
    keyed.set("k", "genuine")
    keyed.set("n", 1)
    _plant(keyed, "k", _typed.encode("planted"))
    _plant(keyed, "n", _typed.encode(41))
    error = _refused(lambda: keyed.get("k"))
    assert "'k'" in str(error) and "allow_plaintext" in str(error)
    _refused(lambda: keyed.get_many(["k"]))
    _refused(lambda: list(keyed.items("k")))
    _refused(lambda: keyed.info("k"))
    _refused(lambda: keyed.pop("k"))
    _refused(lambda: keyed.incr("n"))
    _refused(lambda: keyed.update("n", lambda v: v + 1))
    assert keyed.exists("k") and keyed.exists("n")  # refused, not lost
    migrating = make_store(encryption_key=KEY, allow_plaintext=True)
    assert migrating.get("k") == "planted" and migrating.incr("n") == 42
    assert migrating.rotate_encryption() == 1  # "k": "n" was sealed again by incr
    assert keyed.get("k") == "planted" and keyed.get("n") == 42


def test_an_encrypted_value_with_its_flags_cleared_is_refused(make_store):
    keyed = make_store(encryption_key=KEY)
    keyed.set("b", b"secret bytes")
    sealed = _stored(keyed, "b")
    _plant(keyed, "b", sealed[:2] + b"\x00" + sealed[HEADER_SIZE:])  # "not encrypted"
    _refused(lambda: keyed.get("b"))
    _refused(lambda: keyed.open_blob("b").read())


def test_plaintext_series_points_and_events_are_refused(make_store):
    keyed = make_store(encryption_key=KEY)
    keyed.series("s").add(1, "genuine")
    keyed.events("e").apply({"x": 1})
    backend, scope = keyed._shared.backend, keyed.scope_name
    series_of(backend).series_put(scope, "s", [(2, _typed.encode("planted"))])
    _refused(lambda: list(keyed.series("s").range()))
    _refused(lambda: keyed.series("s").last())
    # an event appended in the clear to the head's tail (see _events)
    events_scope, head_key = kind_scope(scope, EVENTS), name_key("e")
    head = backend.get(events_scope, head_key, time.time())
    assert head is not None
    name, generation, seq, ts, _, tail = msgpack.unpackb(head.value)
    tail.append([ts + 1, _typed.encode(["y", "set", 2])])
    new_head = [name, generation, seq + 1, ts + 1, _typed.encode({"x": 1, "y": 2}), tail]
    assert backend.apply(events_scope, [Put(head_key, msgpack.packb(new_head))], time.time()) == 0
    _refused(lambda: keyed.events("e").current())
    _refused(lambda: list(keyed.events("e").history()))
    migrating = make_store(encryption_key=KEY, allow_plaintext=True)
    assert migrating.series("s").last() == (2, "planted")
    assert migrating.events("e").current() == {"x": 1, "y": 2}


def test_a_plaintext_chunk_is_refused_on_seek_and_read(make_store):
    keyed = make_store(encryption_key=KEY)
    backend, scope = keyed._shared.backend, keyed.scope_name
    # Chunks staged in the clear under a manifest that says "sealed": what an attacker
    # who swaps a chunk's bytes in the database leaves behind.
    blob_id, now = "f" * 32, time.time()
    parts = [BIG[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE] for i in range(3)]
    chunks = [Put(chunk_key(blob_id, i), b"\x01b\x00" + part) for i, part in enumerate(parts)]
    backend.apply(kind_scope(scope, "b"), chunks, now)
    manifest = Manifest(blob_id, len(BIG), CHUNK_SIZE, 3, "0" * 32, True)
    _plant(keyed, "big", core_of(keyed).seal(manifest.pack(), "big"))
    with keyed.open_blob("big") as reader:
        reader.seek(CHUNK_SIZE + 10)
        error = _refused(lambda: reader.read(100))
        assert "'big'" in str(error) and "default" in str(error)
    _refused(lambda: keyed.get("big"))


def _finishes(call: Callable[[], Any], seconds: float = 20.0) -> BaseException | None:
    """Run `call` in a thread; fail the test if it does not end in time; return its error."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still running after {seconds} s"
    return outcome[0]


def test_a_manifest_naming_a_missing_chunk_is_corrupt_data(store):
    with BlobWriter(core_of(store), "big", None) as f:
        f.write(BIG)
    manifest = read_manifest(_stored(store, "big"))
    fields = [manifest.blob_id, manifest.size + CHUNK_SIZE, manifest.chunk_size,
              manifest.chunks + 1, manifest.checksum, False]  # fmt: skip
    _plant(store, "big", b"\x01B\x00" + msgpack.packb(fields))
    for read in (lambda: store.get("big"), lambda: store.open_blob("big").read()):
        error = _finishes(read)
        assert isinstance(error, CorruptData), error
        assert "missing" in str(error) and "'big'" in str(error) and "default" in str(error)


@pytest.mark.parametrize(
    "fields",
    [
        ["b" * 32, 10, 0, 1, "0" * 32, False],  # no chunk size
        ["b" * 32, -5, CHUNK_SIZE, 1, "0" * 32, False],
        ["b" * 32, 3 * CHUNK_SIZE, CHUNK_SIZE, 1, "0" * 32, False],  # chunk count wrong
        ["b" * 32, 2**40, 2**40, 1, "0" * 32, False],  # a chunk no reader should hold
    ],
)
def test_a_crafted_manifest_is_corrupt_data(store, fields):
    _plant(store, "big", b"\x01B\x00" + msgpack.packb(fields))
    error = _finishes(lambda: store.get("big"))
    assert isinstance(error, CorruptData), error
    with pytest.raises(CorruptData):
        store.info("big")


def test_rotation_covers_series_and_events_so_the_old_key_can_go(make_store):
    old_key = bytes(range(1, 33))
    first = make_store(encryption_key=old_key)
    first.set("k", {"v": 1})
    points = {t: t * 1.5 for t in range(2_500)}  # more than one page of points
    first.series("temps").extend(points)
    log = first.events("log")
    for i in range(1_200):  # more than one page of events
        log.apply({f"item{i % 7}": i})
    log.compact(before=None)  # a base snapshot too
    log.apply({"after": True})
    history, state = list(log.history()), log.current()
    ring = make_store(encryption_key=[KEY, old_key])
    seen: list[tuple[int, int]] = []
    rewritten = ring.rotate_encryption(progress=lambda c, r: seen.append((c, r)))
    assert rewritten == 1 + 2_500 + 1 + 2  # value, points, the event after compact, states
    assert seen[-1] == (rewritten, rewritten)
    assert ring.rotate_encryption() == 0  # nothing left on the old key
    new_only = make_store(encryption_key=KEY)
    assert new_only.get("k") == {"v": 1}
    assert dict(new_only.series("temps").range()) == points
    assert list(new_only.events("log").history()) == history
    assert new_only.events("log").current() == state
    with pytest.raises(DecryptionError):
        list(make_store(encryption_key=old_key).series("temps").range())
