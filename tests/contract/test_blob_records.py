"""Large values kept as records in a blob scope: what frees their chunks, and what hides them.

The Store's blob tests say what users see; these check the bookkeeping underneath on
every engine: chunks are records of `kind_scope(scope, "b")`, freed by `collect` once no
record holds their manifest (after COMMIT_GRACE), or once staged too long.
"""

from __future__ import annotations

import time

import pytest

import satchel
from satchel._backends.base import Backend
from satchel._blobs import CHUNK_SIZE, COMMIT_GRACE, STAGED_LIFETIME, BlobWriter, collect
from satchel._keys import kind_scope
from satchel._store import core_of

BIG = b"0123456789abcdef" * (CHUNK_SIZE // 16) * 2 + b"tail"  # three chunks


def _records(backend: Backend, scope: str) -> list[str]:
    return [r.key for r in backend.scan(kind_scope(scope, "b"), "", None, 1000, time.time())]


def _collect_all(backend: Backend, now: float) -> None:
    after = collect(backend, now, 1000, None)
    while after is not None:
        after = collect(backend, now, 1000, after)


def test_chunks_are_records_of_the_blob_scope_and_stay_hidden(store):
    with store.open_blob("big", "wb") as f:
        f.write(BIG)
    backend = store._shared.backend
    names = _records(backend, store.scope_name)
    assert len([n for n in names if n.startswith("c/")]) == 3
    assert len([n for n in names if n.startswith("h/")]) == 1
    assert store.scopes() == [store.scope_name]
    assert list(store.keys()) == ["big"] and len(store) == 1


def test_a_replaced_or_deleted_blob_is_collected_after_the_grace(store):
    backend = store._shared.backend
    for key in ("replaced", "deleted", "kept"):
        with store.open_blob(key, "wb") as f:
            f.write(BIG)
    store.set("replaced", b"small now")
    store.delete("deleted")
    _collect_all(backend, time.time())  # too early: a writer may be between head and value
    assert len(_records(backend, store.scope_name)) == 3 * 4
    _collect_all(backend, time.time() + COMMIT_GRACE + 1)
    assert len(_records(backend, store.scope_name)) == 4  # only "kept": 3 chunks and a head
    assert store.get("kept") == BIG


def test_an_abandoned_upload_is_collected_after_the_staging_lifetime(store):
    backend = store._shared.backend
    writer = BlobWriter(core_of(store), "k", None)
    writer.write(BIG)  # two chunks staged, never committed
    assert len(_records(backend, store.scope_name)) == 3
    _collect_all(backend, time.time() + COMMIT_GRACE + 1)
    assert len(_records(backend, store.scope_name)) == 3  # a slow upload goes on
    _collect_all(backend, time.time() + STAGED_LIFETIME + 1)
    assert _records(backend, store.scope_name) == []
    writer.discard()
    assert not store.exists("k")


def test_clear_takes_the_chunks_with_the_records(store):
    with store.open_blob("big", "wb") as f:
        f.write(BIG)
    other = store.scope("other")
    with other.open_blob("big", "wb") as f:
        f.write(BIG)
    store.clear()
    backend = store._shared.backend
    assert _records(backend, store.scope_name) == []
    assert len(_records(backend, "other")) == 4 and other.get("big") == BIG


def test_a_failed_conditional_commit_leaves_no_chunk(store):
    store.set("k", b"first")
    version = store.info("k").version
    store.set("k", b"second")
    writer = BlobWriter(core_of(store), "k", None, version)
    writer.write(BIG)
    with pytest.raises(satchel.ValueChanged):
        writer.close()
    assert _records(store._shared.backend, store.scope_name) == []
    assert store.get("k") == b"second"


def test_clearing_the_scope_under_a_writer_fails_its_commit(store):
    store.set("k", b"old")
    writer = BlobWriter(core_of(store), "k", None)
    writer.write(BIG)
    store.clear()
    with pytest.raises(satchel.BackendError, match="freed before the commit"):
        writer.close()
    assert not store.exists("k")
    assert _records(store._shared.backend, store.scope_name) == []
