"""Files engine and symbolic links: a link planted inside a store is never followed out.

Each test plants a link where the engine keeps its own file or folder, pointing at
``tmp_path / "outside"``, runs operations on the store and checks that the outside is
byte for byte as it was, and that each operation either worked without touching it or
raised a SatchelError naming the link. The outside often holds real store data moved
there (records, chunks, logs), so an engine that followed the link would change it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import satchel
from satchel._backends.base import Put
from satchel._backends.files import FilesBackend, _batch, escape_name
from satchel._blobs import CHUNK_SIZE, Manifest

BIG = b"0123456789" * (CHUNK_SIZE // 10 + 1)  # two chunks
FAR = 10**6  # seconds: a purge this far ahead finds every record expired


def _url(path: Path) -> str:
    return f"file://{path}"


def _snapshot(root: Path) -> dict[str, Any]:
    """Every entry below `root`, links not followed: bytes, "dir" or the link's target."""
    found: dict[str, Any] = {}
    for directory, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(directory, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            else:
                found[rel] = "dir" if path.is_dir() else path.read_bytes()
    return found


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "file").write_bytes(b"01234567 eight bytes a lock would count in")
    (path / "w-0123456789abcdef").write_bytes(b"not a temp file of the store")
    (path / "trash-0123456789abcdef").mkdir()
    (path / "trash-0123456789abcdef" / "kept").write_bytes(b"not a cleared scope")
    return path


def _plant(root: Path, rel: str, outside: Path) -> dict[str, Any]:
    """Move the store's `rel` to `outside` and link it back; return the outside's snapshot."""
    moved = outside / Path(rel).name
    shutil.move(root / rel, moved)
    os.symlink(moved, root / rel)
    return _snapshot(outside)


def _link_error(call: Callable[[], object], link: Path) -> None:
    with pytest.raises(satchel.CorruptData, match="symbolic link") as info:
        call()
    # The store resolves its own directory once: tmp_path may lie behind a link.
    assert os.path.join(os.path.realpath(link.parent), link.name) in str(info.value)


def _write_big(store: satchel.Store) -> None:
    with store.open_blob("big", "wb") as f:
        f.write(BIG)


# --- the store's own files and folders ----------------------------------------------------


@pytest.mark.parametrize("target", ["file", "missing"])
def test_a_linked_lock_file_is_refused(tmp_path: Path, outside: Path, target: str) -> None:
    root = tmp_path / "kv"
    satchel.open(_url(root)).close()
    (root / ".lock").unlink()
    (root / ".lock").symlink_to(outside / target)
    before = _snapshot(outside)
    _link_error(lambda: satchel.open(_url(root)), root / ".lock")
    assert _snapshot(outside) == before  # neither counted in nor created


@pytest.mark.parametrize("new", [False, True], ids=["store", "new-store"])
def test_a_linked_tmp_folder_is_refused(tmp_path: Path, outside: Path, new: bool) -> None:
    root = tmp_path / "kv"
    if new:
        root.mkdir()
    else:
        satchel.open(_url(root)).close()
        shutil.rmtree(root / ".tmp")
    (root / ".tmp").symlink_to(outside)
    before = _snapshot(outside)
    _link_error(lambda: satchel.open(_url(root)), root / ".tmp")
    assert _snapshot(outside) == before  # its w-* and trash-* are not the store's to delete


@pytest.mark.parametrize("name", [".satchel", ".journal"])
def test_a_linked_marker_or_journal_is_refused(tmp_path: Path, outside: Path, name: str) -> None:
    root = tmp_path / "kv"
    with satchel.open(_url(root)) as store:
        store.set("k", 1)
    if name == ".journal":
        (root / name).write_text("[]")  # a plan with nothing to do: following it looks harmless
    before = _plant(root, name, outside)
    _link_error(lambda: satchel.open(_url(root)), root / name)
    assert _snapshot(outside) == before


def test_a_journal_step_into_a_linked_scope_is_refused(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "kv"
    with satchel.open(_url(root), scope="s") as store:
        store.set("k", "mine")
    (root / ".tmp" / "w-00").write_bytes((root / "s" / "k").read_bytes())
    (root / ".journal").write_text(json.dumps([[".tmp/w-00", "s/k"], [None, "s/gone"]]))
    (root / "s" / "gone").write_bytes((root / "s" / "k").read_bytes())
    before = _plant(root, "s", outside)
    _link_error(lambda: satchel.open(_url(root)), root / "s")
    assert _snapshot(outside) == before


def test_linked_entries_of_the_tmp_folder_are_removed_not_followed(
    tmp_path: Path, outside: Path
) -> None:
    root = tmp_path / "kv"
    satchel.open(_url(root)).close()
    (root / ".tmp" / "trash-00").symlink_to(outside / "trash-0123456789abcdef")
    (root / ".tmp" / "w-00").symlink_to(outside / "file")
    before = _snapshot(outside)
    with satchel.open(_url(root)) as store:
        store.set("k", 1)
    assert os.listdir(root / ".tmp") == []
    assert _snapshot(outside) == before


# --- scopes and records ---------------------------------------------------------------------


SCOPE_OPS: dict[str, Callable[[satchel.Store], object]] = {
    "get": lambda s: s.get("k"),
    "get_many": lambda s: s.get_many(["k", "old"]),
    "set": lambda s: s.set("new", 2),
    "set_many": lambda s: s.set_many({"a": 1, "b": 2}),
    "incr": lambda s: s.incr("n"),
    "touch": lambda s: s.touch("k", 100),
    "delete": lambda s: s.delete("k"),
    "pop": lambda s: s.pop("k"),
    "keys": lambda s: list(s.keys()),
    "clear": lambda s: s.clear(),
    "blob": lambda s: s.open_blob("big", "wb").close(),
}


@pytest.mark.parametrize("op", SCOPE_OPS)
def test_a_linked_scope_folder_is_refused(tmp_path: Path, outside: Path, op: str) -> None:
    root = tmp_path / "kv"
    with satchel.open(_url(root), scope="s") as store:
        store.set_many({"k": "theirs", "n": 1})
        before = _plant(root, "s", outside)
        _link_error(lambda: SCOPE_OPS[op](store), root / "s")
        assert (root / "s").is_symlink()
    assert _snapshot(outside) == before


def test_housekeeping_passes_a_linked_scope_folder_by(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "kv"
    backend = FilesBackend(root)
    now = time.time()
    backend.apply("s", [Put("old", b"\x01b\x00", now + 1), Put("k", b"\x01b\x00", now + 1)], now)
    backend.apply("t", [Put("old", b"\x01b\x00", now + 1)], now)
    before = _plant(root, "s", outside)
    assert backend.purge_expired(now + FAR, 100) == 1  # scope t only
    assert backend.scopes(now) == []
    backend.close()
    assert _snapshot(outside) == before


KEY_OPS: dict[str, Callable[[satchel.Store], object]] = {
    "get": lambda s: s.get("k"),
    "set": lambda s: s.set("k", "mine"),
    "update": lambda s: s.update("k", str.upper),
    "touch": lambda s: s.touch("k", 100),
    "delete": lambda s: s.delete("k"),
    "pop": lambda s: s.pop("k"),
    "items": lambda s: list(s.items()),
    "read": lambda s: s.open_blob("k").read(),
}


@pytest.mark.parametrize("op", KEY_OPS)
def test_a_linked_record_is_refused(tmp_path: Path, outside: Path, op: str) -> None:
    root = tmp_path / "kv"
    with satchel.open(_url(root)) as store:
        store.set_many({"k": "theirs", "other": "mine"})
        before = _plant(root, "default/k", outside)  # a record the engine would accept
        _link_error(lambda: KEY_OPS[op](store), root / "default" / "k")
        assert store.get("other") == "mine"
    assert _snapshot(outside) == before


def test_purge_passes_a_linked_record_by(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "kv"
    backend = FilesBackend(root)
    now = time.time()
    backend.apply("s", [Put("k", b"\x01b\x00", now + 1), Put("x", b"\x01b\x00", now + 1)], now)
    before = _plant(root, "s/k", outside)
    assert backend.purge_expired(now + FAR, 100) == 1
    assert (root / "s" / "k").is_symlink()
    backend.close()
    assert _snapshot(outside) == before


# --- large values ---------------------------------------------------------------------------


def _format_1_store(root: Path) -> str:
    """Make `root` a store as releases before 0.2 left it: value "big" (BIG) of scope
    default is a large value whose two chunks are files under ``.blobs``. Return the
    blob's folder, relative to `root`."""
    FilesBackend(root).close()
    (root / ".satchel").write_text('{"application": "satchel", "engine": "files", "format": 1}')
    blob_id = "0" * 32
    checksum = hashlib.blake2b(BIG, digest_size=16).hexdigest()
    manifest = Manifest(blob_id, len(BIG), CHUNK_SIZE, 2, checksum, False).pack()
    now = time.time()
    meta = {"key": "big", "created_at": now, "updated_at": now, "expires_at": None,
            "version": 1, "blob": blob_id, "chunks": 2}  # fmt: skip
    (root / "default").mkdir()
    (root / "default" / "big").write_bytes(manifest + b"\n" + json.dumps(meta).encode() + b"\n")
    blob = root / ".blobs" / "default" / "big" / blob_id
    blob.mkdir(parents=True)
    (blob / "0").write_bytes(BIG[:CHUNK_SIZE])
    (blob / "1").write_bytes(BIG[CHUNK_SIZE:])
    return f".blobs/default/big/{blob_id}"


@pytest.mark.parametrize("level", ["blobs", "scope", "key", "blob", "chunk"])
def test_moving_large_values_of_format_1_never_follows_a_link(
    tmp_path: Path, outside: Path, level: str
) -> None:
    root = tmp_path / "kv"
    blob = _format_1_store(root)
    rel = {"blobs": ".blobs", "scope": ".blobs/default", "key": ".blobs/default/big",
           "blob": blob, "chunk": f"{blob}/1"}[level]  # fmt: skip
    before = _plant(root, rel, outside)
    with satchel.open(_url(root)) as store:  # the blob is passed by: its chunks are lost
        with pytest.raises(satchel.CorruptData, match=r"chunk 0 of 2 .* is missing"):
            store.get("big")
        store.set("big", 1)
        assert store.get("big") == 1
    assert not os.path.lexists(root / ".blobs")  # the link went, not what it points at
    assert _snapshot(outside) == before


# --- logs -----------------------------------------------------------------------------------


LOG_OPS: dict[str, Callable[[satchel.Store], object]] = {
    "series-add": lambda s: s.series("temp").add(5, 5.0),
    "series-range": lambda s: list(s.series("temp").range()),
    "series-len": lambda s: len(s.series("temp")),
    "series-remove-some": lambda s: s.series("temp").remove(0, 1),
    "series-remove-all": lambda s: s.series("temp").remove(),
    "series-reseal": lambda s: s._shared.backend.series_reseal("default", "temp", [(0, b"", b"")]),
}


@pytest.mark.parametrize("op", LOG_OPS)
@pytest.mark.parametrize("level", ["kind", "scope", "log"])
def test_a_linked_log_is_refused(tmp_path: Path, outside: Path, level: str, op: str) -> None:
    root = tmp_path / "kv"
    with satchel.open(_url(root)) as store:
        store.series("temp").extend({0: 0.0, 1: 1.0, 2: 2.0})
        rel = {"kind": ".series", "scope": ".series/default", "log": ".series/default/temp"}
        before = _plant(root, rel[level], outside)
        _link_error(lambda: LOG_OPS[op](store), root / rel[level])
        assert (root / rel[level]).is_symlink()
    assert _snapshot(outside) == before


@pytest.mark.parametrize("level", ["kind", "scope", "log"])
def test_listing_logs_never_follows_a_link(tmp_path: Path, outside: Path, level: str) -> None:
    root = tmp_path / "kv"
    with satchel.open(_url(root)) as store:
        store.series("temp").add(0, 0.0)
        store.series("other").add(0, 0.0)
        rel = {"kind": ".series", "scope": ".series/default", "log": ".series/default/temp"}
        before = _plant(root, rel[level], outside)
        if level == "log":
            assert store.series_names() == ["other"]  # the link is no log of the store's
        else:
            _link_error(store.series_names, root / rel[level])
    assert _snapshot(outside) == before


def _old_event_log(root: Path, scope: str, name: str) -> None:
    """An event log as formats 1 and 2 kept one: sequence `name` of `scope` holds one
    event (data b"e") and its head (b"h")."""
    folder = root / ".events" / escape_name(scope)
    folder.mkdir(parents=True, exist_ok=True)
    payload = b"e 1 1000 1\ne\nh 1 1000 1\nh\n"
    (folder / escape_name(name)).write_bytes(
        b"satchel-events 0123456789abcdef %s\n" % json.dumps(name).encode() + _batch(payload)
    )


@pytest.mark.parametrize("level", ["events", "scope", "log", "records"])
def test_moving_event_logs_of_format_2_never_follows_a_link(
    tmp_path: Path, outside: Path, level: str
) -> None:
    root = tmp_path / "kv"
    hashed = "x" * 255  # its scope is known from the label in its records' folder
    with satchel.open(_url(root), scope=hashed) as store:
        store.set("k", 1)
    (root / ".satchel").write_text('{"application": "satchel", "engine": "files", "format": 2}')
    _old_event_log(root, "default", "log")
    _old_event_log(root, hashed, "log")
    rel = {"events": ".events", "scope": ".events/default", "log": ".events/default/log",
           "records": escape_name(hashed)}[level]  # fmt: skip
    before = _plant(root, rel, outside)
    backend = FilesBackend(root)
    found = {"events": [], "records": [("default", "log")]}.get(level, [(hashed, "log")])
    assert backend.legacy_sequences() == found  # the linked logs are passed by
    backend.drop_legacy_events()
    assert backend.legacy_sequences() is None
    backend.close()
    assert not os.path.lexists(root / ".events")  # the link went, not what it points at
    assert _snapshot(outside) == before


# --- a store directory that is itself a link ------------------------------------------------


def test_a_linked_store_directory_is_resolved_once(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "kv").symlink_to(real)
    url = _url(tmp_path / "kv")
    with satchel.open(url, scope="s") as store:
        assert store.url == url
        store.set_many({"a": 1, "b": 2})
        _write_big(store)
        store.series("temp").add(0, 1.0)
        store.events("log").apply({"a": 1})
        store.scope("gone").set("x", 1)
        store.scope("gone").clear()
    with satchel.open(url, scope="s") as store:
        assert store.get_many(["a", "b"]) == {"a": 1, "b": 2}
        assert store.open_blob("big").read() == BIG
        assert store.scopes() == ["s"]
        store.delete("big")
        assert list(store.series("temp").range()) == [(0, 1.0)]
        assert store.events("log").current() == {"a": 1}
    assert (real / "s" / "a").is_file() and (tmp_path / "kv").is_symlink()
    assert not (real / ".blobs").exists()
