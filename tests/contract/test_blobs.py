"""Large values through open_blob / stream_lines, on every engine."""

from __future__ import annotations

import hashlib
import io
import os
import time

import pytest

import satchel
from satchel import InvalidInput, KeyNotFound, UnsupportedValue, ValueChanged
from satchel._blobs import CHUNK_SIZE

BIG = os.urandom(2 * CHUNK_SIZE + 12345)  # three chunks, the last one partial


def _write(store: satchel.Store, key: str, data: bytes, piece: int = 100_000, **kw: object) -> None:
    with store.open_blob(key, "wb", **kw) as f:
        for start in range(0, len(data), piece):
            f.write(data[start : start + piece])


def _checksum(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def test_write_then_read_back(store):
    _write(store, "big", BIG)
    with store.open_blob("big", "rb") as f:
        assert f.read() == BIG
    assert store.get("big") == BIG
    assert store.exists("big") and "big" in store


def test_small_and_empty_values(store):
    _write(store, "small", b"tiny")
    _write(store, "empty", b"")
    assert store.get("small") == b"tiny"
    assert store.get("empty") == b""
    assert store.open_blob("small").read() == b"tiny"


def test_exact_chunk_multiple(store):
    data = os.urandom(CHUNK_SIZE * 2)
    _write(store, "k", data, piece=CHUNK_SIZE)
    assert store.get("k") == data
    assert store.info("k").size == len(data)


def test_write_accepts_bytes_like(store):
    with store.open_blob("k", "wb") as f:
        assert f.write(bytearray(b"ab")) == 2
        assert f.write(memoryview(b"cd")) == 2
        f.write(b"e" * CHUNK_SIZE)
    assert store.get("k") == b"abcd" + b"e" * CHUNK_SIZE


def test_read_a_plain_bytes_value(store):
    store.set("plain", b"hello\nworld\n")
    assert store.open_blob("plain", "rb").read() == b"hello\nworld\n"
    assert list(store.stream_lines("plain")) == [b"hello\n", b"world\n"]


def test_info_reports_size_and_checksum(store):
    _write(store, "big", BIG)
    store.set("plain", BIG[:1000])
    info = store.info("big")
    assert info.size == len(BIG)
    assert info.checksum == _checksum(BIG)
    assert info.version == 1 and info.created_at <= info.updated_at
    assert store.info("plain").checksum == _checksum(BIG[:1000])
    assert store.info("plain").size == 1000


def test_seek_and_tell_across_chunks(store):
    _write(store, "big", BIG)
    with store.open_blob("big", "rb") as f:
        assert f.seekable() and f.readable()
        f.seek(CHUNK_SIZE - 5)
        assert f.tell() == CHUNK_SIZE - 5
        assert f.read(10) == BIG[CHUNK_SIZE - 5 : CHUNK_SIZE + 5]
        f.seek(-3, io.SEEK_END)
        assert f.read() == BIG[-3:]
        f.seek(7)
        assert f.read(4) == BIG[7:11]
        f.seek(len(BIG) + 10)
        assert f.read(5) == b""


def test_stream_lines_across_chunks(store):
    lines = [f"line {i} {'x' * (i % 300)}\n".encode() for i in range(20_000)]
    data = b"".join(lines) + b"last line without newline"
    assert len(data) > CHUNK_SIZE * 2
    _write(store, "log", data)
    assert list(store.stream_lines("log")) == [*lines, b"last line without newline"]
    text = store.stream_lines("log", encoding="utf-8")
    assert next(text) == "line 0 \n"
    text.close()


def test_overwrite_replaces_whole_value(store):
    _write(store, "k", BIG)
    other = os.urandom(CHUNK_SIZE + 1)
    _write(store, "k", other)
    assert store.get("k") == other
    store.set("k", "now a str")
    assert store.get("k") == "now a str"
    _write(store, "k", BIG)
    assert store.get("k") == BIG
    assert store.info("k").version == 4


def test_readers_see_old_value_until_close(store, open_store):
    other = open_store()
    store.set("k", b"old")
    f = store.open_blob("k", "wb")
    f.write(BIG)
    assert other.get("k") == b"old"
    assert list(other.keys()) == ["k"]
    f.close()
    assert other.get("k") == BIG
    f.close()  # idempotent


def test_exception_in_with_keeps_old_value(store):
    store.set("k", b"old")
    with pytest.raises(RuntimeError), store.open_blob("k", "wb") as f:
        f.write(BIG)
        raise RuntimeError("boom")
    assert store.get("k") == b"old"
    with pytest.raises(RuntimeError), store.open_blob("new", "wb") as f:
        f.write(BIG)
        raise RuntimeError("boom")
    assert not store.exists("new")


def test_discard(store):
    f = store.open_blob("k", "wb")
    f.write(BIG)
    f.discard()
    f.close()
    assert not store.exists("k")


def test_write_after_close_is_a_clear_error(store):
    f = store.open_blob("k", "wb")
    f.write(b"x")
    f.close()
    with pytest.raises(InvalidInput, match="closed") as caught:
        f.write(b"y")
    assert isinstance(caught.value, ValueError)
    assert "'k'" in str(caught.value)
    assert store.get("k") == b"x"


def test_read_after_close_is_a_clear_error(store):
    _write(store, "k", BIG)
    raw = store.open_blob("k", "rb").raw
    raw.close()
    with pytest.raises(ValueError, match="closed"):
        raw.read(1)


def test_missing_key_and_bad_mode(store):
    with pytest.raises(KeyNotFound) as caught:
        store.open_blob("nope", "rb")
    assert "'nope'" in str(caught.value)
    with pytest.raises(KeyNotFound):
        store.stream_lines("nope")
    for mode in ("r", "w", "ab", "rb+", "x"):
        with pytest.raises(InvalidInput, match="mode"):
            store.open_blob("k", mode)
    with pytest.raises(InvalidInput):
        store.open_blob("", "wb")


def test_reading_a_non_bytes_value(store):
    store.set("n", 42)
    with pytest.raises(UnsupportedValue, match="int"):
        store.open_blob("n", "rb")


def test_value_replaced_while_reading(store):
    _write(store, "k", BIG)
    f = store.open_blob("k", "rb")
    assert f.read(10) == BIG[:10]
    store.set("k", b"new")
    with pytest.raises(ValueChanged):
        f.read()
    assert store.get("k") == b"new"


def test_blob_obeys_delete_keys_patterns_and_scopes(store):
    _write(store, "files/a", BIG)
    _write(store, "files/b", b"small")
    store.set("other", 1)
    assert list(store.keys("files/*")) == ["files/a", "files/b"]
    assert dict(store.items("files/a")) == {"files/a": BIG}
    assert len(store) == 3
    elsewhere = store.scope("elsewhere")
    assert not elsewhere.exists("files/a")
    _write(elsewhere, "files/a", b"mine")
    assert store.get("files/a") == BIG
    assert store.delete("files/a") is True
    assert not store.exists("files/a")
    with pytest.raises(KeyNotFound):
        store.open_blob("files/a", "rb")
    assert store.delete_matching("files/*") == 1
    assert elsewhere.get("files/a") == b"mine"
    store.scope("third").clear()
    _write(store, "again", BIG)
    store.clear()
    assert not store.exists("again")
    assert elsewhere.get("files/a") == b"mine"


def test_blob_with_ttl_expires(store):
    _write(store, "k", BIG, ttl=0.3)
    assert store.ttl("k") is not None
    assert store.get("k") == BIG
    time.sleep(0.4)
    assert not store.exists("k")
    with pytest.raises(KeyNotFound):
        store.open_blob("k", "rb")
    _write(store, "k", b"fresh")
    assert store.info("k").version == 1


def test_pop_update_and_cas_on_a_blob(store):
    _write(store, "k", BIG)
    assert store.pop("k") == BIG
    assert not store.exists("k")
    _write(store, "k", BIG)
    assert store.update("k", lambda v: v[:5]) == BIG[:5]
    assert store.get("k") == BIG[:5]
    _write(store, "k", BIG)
    info = store.info("k")
    assert store.compare_and_set("k", info, b"small") is True
    assert store.get("k") == b"small"


def test_incr_on_a_blob_is_refused(store):
    _write(store, "k", BIG)
    with pytest.raises(UnsupportedValue):
        store.incr("k")
    assert store.get("k") == BIG


def test_encrypted_blob(make_store):
    secret = make_store(encryption_key=bytes(range(32)))
    _write(secret, "k", BIG)
    assert secret.get("k") == BIG
    assert secret.info("k").checksum == _checksum(BIG)
    assert next(secret.stream_lines("k")) == BIG[: BIG.index(b"\n") + 1]
    plain = make_store()
    if plain.exists("k"):  # the same data (shared engines): no key, no value
        with pytest.raises(satchel.DecryptionError):
            plain.get("k")


def test_compressed_blob(make_store):
    squeezed = make_store(compress="zlib")
    data = b"abc" * CHUNK_SIZE
    _write(squeezed, "k", data)
    assert squeezed.get("k") == data
    assert squeezed.open_blob("k").read(6) == b"abcabc"


def test_a_writer_dropped_without_close_keeps_the_old_value(store):
    import gc

    store.set("k", b"old")
    f = store.open_blob("k", "wb")
    f.write(BIG)
    del f
    gc.collect()
    assert store.get("k") == b"old"


def test_any_codec_stores_bytes_of_any_size(make_store):
    plain = make_store(codec="json", scope="json-blobs")
    _write(plain, "small", b"tiny")
    _write(plain, "big", BIG)
    _write(plain, "one-chunk", BIG[:CHUNK_SIZE])
    assert plain.get("small") == b"tiny" and plain.get("big") == BIG
    assert plain.get("one-chunk") == BIG[:CHUNK_SIZE]


def test_ttl_counts_from_close(store):
    f = store.open_blob("k", "wb", ttl=0.4)
    f.write(b"x" * 10)
    time.sleep(0.5)
    f.close()
    assert store.get("k") == b"x" * 10
    ttl = store.ttl("k")
    assert ttl is not None and 0 < ttl <= 0.4


def test_conditional_commit_writes_nothing_when_the_key_moved(store):
    from satchel._blobs import BlobWriter
    from satchel._store import core_of

    core = core_of(store)  # the writer works on the store's private core
    store.set("k", b"first")
    version = store.info("k").version
    store.set("k", b"second")  # moves past `version`
    for data in (BIG, b"small"):
        with pytest.raises(ValueChanged), BlobWriter(core, "k", None, version) as f:
            f.write(data)
        with pytest.raises(ValueChanged), BlobWriter(core, "k", None, None) as f:
            f.write(data)  # None: only if the key has no value
        assert store.get("k") == b"second"
    with BlobWriter(core, "k", None, store.info("k").version) as f:
        f.write(BIG)
    with BlobWriter(core, "new", None, None) as f:
        f.write(BIG)
    assert store.get("k") == BIG and store.get("new") == BIG


def test_rotation_reencrypts_large_values(make_store):
    old, new = bytes(range(32)), bytes(range(1, 33))
    first = make_store(encryption_key=old, scope="rotate-blobs")
    _write(first, "big", BIG)
    first.set("small", "x")
    both = make_store(encryption_key=[new, old], scope="rotate-blobs")
    assert both.rotate_encryption() == 2
    assert both.rotate_encryption() == 0
    only_new = make_store(encryption_key=new, scope="rotate-blobs")
    assert only_new.get("big") == BIG and only_new.get("small") == "x"
