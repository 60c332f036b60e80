"""Encryption at rest, key rotation, compression and read-only stores, on every engine."""

from __future__ import annotations

import base64
import os
import time

import pytest

import satchel
from satchel import DecryptionError, ReadOnlyError
from satchel._backends.base import Put

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SECRET = "PLAINTEXT-canary-4f1d9b"


def _stored(store: satchel.Store, key: str) -> bytes:
    """The bytes the engine holds for `key` (what an attacker with the database sees)."""
    record = store._shared.backend.get(store.scope_name, key, time.time())
    assert record is not None
    return record.value


def _plant(store: satchel.Store, key: str, data: bytes, scope: str | None = None) -> None:
    """Write raw bytes under `key`, bypassing the Store (an attacker editing the database)."""
    backend = store._shared.backend
    backend.apply(scope or store.scope_name, [Put(key, data)], time.time())


def test_values_are_encrypted_at_rest_and_read_back(make_store):
    store = make_store(encryption_key=KEY)
    value = {"token": SECRET, "n": (1, 2)}
    assert store.set("api", value) is True
    store.set("plain-text", SECRET)
    store.set_many({"a": SECRET, "b": [SECRET]})
    for key in ("api", "plain-text", "a", "b"):
        stored = _stored(store, key)
        assert SECRET.encode() not in stored
        assert stored[2] & 0x01  # the header says "encrypted"
    assert store.get("api") == value
    assert store.get_many(["a", "b"]) == {"a": SECRET, "b": [SECRET]}
    assert dict(store.items()) == {
        "a": SECRET, "api": value, "b": [SECRET], "plain-text": SECRET,
    }  # fmt: skip
    assert store.pop("a") == SECRET
    assert store.incr("counter", 5) == 5
    assert store.update("counter", lambda n: n * 2) == 10
    assert SECRET.encode() not in _stored(store, "api")


def test_two_writes_of_one_value_differ(make_store):
    store = make_store(encryption_key=KEY)
    store.set("k", SECRET)
    first = _stored(store, "k")
    store.set("k", SECRET)
    assert _stored(store, "k") != first  # a fresh nonce per write


def test_ciphertext_moved_to_another_key_or_scope_fails(make_store):
    store = make_store(encryption_key=KEY)
    store.set("alice", "alice's secret")
    store.set("bob", "bob's secret")
    alice, bob = _stored(store, "alice"), _stored(store, "bob")
    _plant(store, "alice", bob)
    _plant(store, "bob", alice)
    for key in ("alice", "bob"):
        with pytest.raises(DecryptionError) as caught:
            store.get(key)
        assert repr(key) in str(caught.value)
    other = store.scope("other")
    _plant(store, "alice", alice, scope="other")
    with pytest.raises(DecryptionError):
        other.get("alice")


def test_tampered_ciphertext_or_header_fails(make_store):
    store = make_store(encryption_key=KEY)
    store.set("k", SECRET)
    good = _stored(store, "k")
    flipped = bytearray(good)
    flipped[-1] ^= 0x01
    _plant(store, "k", bytes(flipped))
    with pytest.raises(DecryptionError):
        store.get("k")
    _plant(store, "k", good[:1] + b"j" + good[2:])  # claims another codec
    with pytest.raises(DecryptionError):
        store.get("k")
    _plant(store, "k", good[:2] + b"\x03" + good[3:])  # claims compression too
    with pytest.raises(satchel.SatchelError):
        store.get("k")


def test_missing_and_wrong_key_are_decryption_errors(make_store):
    store = make_store(encryption_key=KEY)
    store.set("k", SECRET)
    for other in (make_store(), make_store(encryption_key=OTHER_KEY)):
        with pytest.raises(DecryptionError) as caught:
            other.get("k")
        assert "'k'" in str(caught.value) and "default" in str(caught.value)
        with pytest.raises(DecryptionError):
            list(other.values())
        assert other.exists("k")  # unreadable, but there: nothing was lost
    assert store.get("k") == SECRET


def test_key_formats_and_passphrase(make_store):
    store = make_store(encryption_key=KEY)
    store.set("k", SECRET)
    as_base64 = make_store(encryption_key=base64.b64encode(KEY).decode())
    assert as_base64.get("k") == SECRET
    as_urlsafe = make_store(encryption_key=base64.urlsafe_b64encode(KEY).decode())
    assert as_urlsafe.get("k") == SECRET
    first = make_store(encryption_key="correct horse battery staple")
    first.set("p", SECRET)
    second = make_store(encryption_key="correct horse battery staple")
    assert second.get("p") == SECRET  # the salt is stored with the data
    with pytest.raises(DecryptionError):
        make_store(encryption_key="wrong horse").get("p")
    assert "__satchel__" not in store.scopes()
    with pytest.raises(satchel.InvalidInput):
        make_store(encryption_key=b"too short")


def test_keyring_reads_old_keys_and_rotation_moves_everything(make_store):
    old = make_store(encryption_key=OTHER_KEY)
    values = {f"k{i:04d}": {"i": i, "s": SECRET} for i in range(1200)}
    old.set_many(values)
    old.set("expiring", SECRET, ttl=1000)
    make_store().set("was-plain", SECRET)
    make_store(scope="migrate").set("was-plain", SECRET)
    with pytest.raises(DecryptionError) as caught:  # a plain value needs allow_plaintext
        make_store(encryption_key=KEY, scope="migrate").rotate_encryption()
    assert "'was-plain'" in str(caught.value)
    ring = make_store(encryption_key=[KEY, OTHER_KEY], allow_plaintext=True)
    assert ring.get("k0001") == values["k0001"]
    seen: list[tuple[int, int]] = []
    assert ring.rotate_encryption(progress=lambda c, r: seen.append((c, r))) == 1202
    assert seen[-1] == (1202, 1202)
    assert ring.rotate_encryption() == 0  # resumable: nothing left to do
    new_only = make_store(encryption_key=KEY)
    assert dict(new_only.items("k*")) == values
    assert new_only.get("was-plain") == SECRET
    assert 900 < new_only.ttl("expiring") <= 1000
    with pytest.raises(DecryptionError):
        make_store(encryption_key=OTHER_KEY).get("k0001")


def test_rotation_needs_a_key(make_store):
    with pytest.raises(satchel.InvalidInput):
        make_store().rotate_encryption()


def test_compressed_and_plain_records_mix(make_store):
    squeezed = make_store(compress="zlib", compress_min_size=100)
    big, small = "abc" * 2000, "tiny"
    squeezed.set("big", big)
    squeezed.set("small", small)
    assert len(_stored(squeezed, "big")) < len(big) // 10
    assert _stored(squeezed, "big")[2] == 0x02
    assert _stored(squeezed, "small")[2] == 0  # below the threshold: left as is
    assert squeezed.info("big").size == len(big)  # info describes the value
    plain = make_store()
    assert plain.get("big") == big  # the header says how to read it
    plain.set("plain", big)
    assert squeezed.get("plain") == big
    both = make_store(compress="zstd", encryption_key=KEY)
    both.set("both", big)
    assert _stored(both, "both")[2] == 0x03
    assert make_store(encryption_key=KEY).get("both") == big
    with pytest.raises(satchel.InvalidInput):
        make_store(compress="lzma")


def test_readonly_refuses_every_write_and_reads(make_store):
    writer = make_store()
    writer.set_many({"a": 1, "b": 2})
    reader = make_store(readonly=True)
    assert reader.get("a") == 1
    assert list(reader.keys()) == ["a", "b"]
    writes = [
        lambda: reader.set("c", 3),
        lambda: reader.set_many({"c": 3}),
        lambda: reader.delete("a"),
        lambda: reader.delete_many(["a"]),
        lambda: reader.delete_matching("*"),
        lambda: reader.clear(),
        lambda: reader.pop("a"),
        lambda: reader.incr("a"),
        lambda: reader.compare_and_set("a", 1, 5),
        lambda: reader.update("a", lambda v: v + 1),
        lambda: reader.touch("a", 10),
        lambda: reader.__setitem__("c", 3),
    ]
    for write in writes:
        with pytest.raises(ReadOnlyError):
            write()
    assert dict(writer.items()) == {"a": 1, "b": 2}


def test_random_keys_each_work(make_store):
    key = os.urandom(32)
    store = make_store(encryption_key=key)
    store.set("k", b"\x00bytes")
    assert make_store(encryption_key=key).get("k") == b"\x00bytes"
