"""Files engine: on-disk layout, hostile names, processes, crashes, errors, URLs.

Every test works on real directories in ``tmp_path``. Multi-process tests run their
workers through `_run_in_processes`, bounded by a deadline, so a deadlock fails instead
of hanging. Workers live at module level so the "spawn" start method can import them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import queue
import random
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import satchel
from satchel._backends import files
from satchel._backends.base import LegacyBlob, Put
from satchel._backends.files import FilesBackend, escape_name, unescape_name
from satchel._blobs import CHUNK_SIZE, Manifest
from satchel._codecs import HEADER_SIZE, get_codec
from satchel._keys import kind_scope

PROCESS_DEADLINE = 60.0  # seconds for one multi-process run


def _url(path: Path) -> str:
    return f"file://{path}"


def _walk(root: Path) -> Iterator[Path]:
    for directory, dirs, names in os.walk(root):
        for name in dirs + names:
            yield Path(directory, name)


# --- layout ----------------------------------------------------------------------------


def test_layout_and_readable_values(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    with satchel.open(_url(root)) as store:
        store.set("greeting", "héllo\nwörld")
        store.set("blob", b"\x00\xff\n")
        store.scope("users").set("User:42", {"name": "Ada"})
    assert sorted(p.name for p in root.iterdir()) == [
        ".lock", ".satchel", ".tmp", "default", "users"
    ]  # fmt: skip
    marker = json.loads((root / ".satchel").read_text())
    assert marker["application"] == "satchel" and marker["format"] == files.FORMAT == 3
    assert list((root / ".tmp").iterdir()) == []
    data = (root / "default" / "greeting").read_bytes()
    assert data[1:2] == b"s"  # the str codec: the text follows the header as it is
    assert data[HEADER_SIZE:].startswith("héllo\nwörld\n".encode())
    assert data.endswith(b"\n") and data.count(b"\n") == 3
    meta = json.loads(data.splitlines()[-1])
    assert meta["key"] == "greeting" and meta["version"] == 1 and meta["expires_at"] is None
    assert meta["created_at"] == meta["updated_at"]
    assert (root / "default" / "blob").read_bytes()[HEADER_SIZE:].startswith(b"\x00\xff\n\n")
    assert (root / "users" / "%55ser%3a42").is_file()  # uppercase and ":" escaped


def test_overwrite_updates_the_metadata_line(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    with satchel.open(_url(root)) as store:
        store.set("k", "one")
        first = json.loads((root / "default" / "k").read_bytes().splitlines()[-1])
        store.set("k", "two", ttl=100)
        store.touch("k", 200)
    data = (root / "default" / "k").read_bytes()
    meta = json.loads(data.splitlines()[-1])
    assert data[HEADER_SIZE:].startswith(b"two\n")
    assert meta["version"] == 2 and meta["created_at"] == first["created_at"]
    assert meta["expires_at"] > meta["updated_at"] + 150


# --- hostile names ---------------------------------------------------------------------

HOSTILE = [
    "../x", "/etc/passwd", "..", ".", "...", "a/../../b", "../../../../tmp/evil", "./.",
    "\x01\x1f\x7f", "\t\r\n", " ", "a ", "a.", ".hidden", "~", "a~b", "%", "%2e", "%2E",
    "%41", "A", "a", "Key", "KEY", "key", "ß", "SS", "ss", "é", "e\u0301", "İ", "i̇",
    "con", "CON", "nul.txt", "com1", "lpt9.x", "a:b", 'a<>:"|?*\\b', "\\..\\x", "C:\\x",
    "x" * 200, "x" * 201, "%" * 66, "%" * 67, "x" * 1024, "x" * 1023 + "y", "é" * 512,
    "é" * 511 + "e", "💥" * 256, "a/" * 512, escape_name("x" * 1024), "a%3ab", "a%2fb",
]  # fmt: skip


def _inside(root: Path) -> None:
    real = os.path.realpath(root)
    for path in _walk(root):
        assert not path.is_symlink(), path
        assert os.path.realpath(path).startswith(real + os.sep), path
        assert len(path.name.encode()) <= 255, path


def test_hostile_keys_stay_inside_and_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    with satchel.open(_url(root)) as store:
        for scope in ("default", "../up", "A", "a", "x" * 255):
            s = store.scope(scope)
            assert s.set_many({key: f"value of {key}" for key in HOSTILE}) == len(HOSTILE)
            for key in HOSTILE:
                s.set(key, key)
                assert s.get(key) == key
            assert list(s.keys()) == sorted(HOSTILE)
            assert len(s) == len(HOSTILE)
            assert s.delete("../x") and s.get("..") == ".."
        assert store.scopes() == sorted(["default", "../up", "A", "a", "x" * 255])
    assert sorted(os.listdir(tmp_path)) == ["kv"]
    _inside(root)
    for scope_dir in root.iterdir():
        if not scope_dir.name.startswith("."):
            names = [p.name for p in scope_dir.iterdir() if p.name != ".scope"]
            assert len(names) == len(HOSTILE) - 1  # one file per key: no two share one
            assert all(n.isascii() and n == n.lower() for n in names)


def test_keys_differing_only_by_case_are_separate_files(tmp_path: Path) -> None:
    with satchel.open(_url(tmp_path / "kv")) as store:
        store.set_many({"Key": 1, "KEY": 2, "key": 3, "kEy": 4})
        assert store.get_many(["Key", "KEY", "key", "kEy"]) == {
            "Key": 1, "KEY": 2, "key": 3, "kEy": 4
        }  # fmt: skip
    names = os.listdir(tmp_path / "kv" / "default")
    assert len({name.casefold() for name in names}) == 4


def test_scope_and_key_separators_never_meet(tmp_path: Path) -> None:
    with satchel.open(_url(tmp_path / "kv"), scope="a:b") as store:
        store.set("c", 1)
        store.scope("a").set("b:c", 2)
        store.scope("a/b").set("c", 3)
        assert store.get("c") == 1
        assert store.scope("a").get("b:c") == 2
        assert store.scope("a/b").get("c") == 3
        store.clear()
        assert store.scopes() == ["a", "a/b"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(st.characters(exclude_categories=["Cs"]), min_size=1), unique=True))
def test_escaped_names_are_safe_and_distinct(names: list[str]) -> None:
    names = [n for n in names if "\x00" not in n and len(n.encode()) <= 1024]
    escaped = [escape_name(n) for n in names]
    assert len({e.casefold() for e in escaped}) == len(names)
    for name, text in zip(names, escaped, strict=True):
        assert text.isascii() and text == text.lower() and 0 < len(text) <= 200
        assert "/" not in text and "\\" not in text and text not in (".", "..")
        assert not text.startswith(".") and not text.endswith((".", " "))
        assert unescape_name(text) == (None if "~" in text else name)


# --- processes and threads ---------------------------------------------------------------


def _child_main(
    results: Any, index: int, target: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    try:
        results.put((index, True, target(*args)))
    except BaseException:
        results.put((index, False, traceback.format_exc()))


def _run_in_processes(
    jobs: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], method: str = "spawn"
) -> list[Any]:
    """Run each ``target(*args)`` of `jobs` in its own process; return the results in order.

    Fails if a worker raises, dies, or is still running after PROCESS_DEADLINE.
    """
    ctx = multiprocessing.get_context(method)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_child_main, args=(results, i, target, args), daemon=True)
        for i, (target, args) in enumerate(jobs)
    ]
    for proc in procs:
        proc.start()
    end = time.monotonic() + PROCESS_DEADLINE
    got: dict[int, tuple[bool, Any]] = {}
    try:
        while len(got) < len(procs) and time.monotonic() < end:
            try:
                index, ok, payload = results.get(timeout=0.5)
            except queue.Empty:
                if all(p.exitcode is not None for p in procs) and results.empty():
                    break
                continue
            got[index] = (ok, payload)
    finally:
        for proc in procs:
            proc.join(timeout=max(0.1, end - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    failures = [payload for ok, payload in got.values() if not ok]
    assert not failures, "worker raised:\n" + "\n".join(failures)
    assert len(got) == len(procs), f"only {len(got)} of {len(procs)} workers reported"
    return [got[i][1] for i in range(len(procs))]


def _incr_worker(url: str, count: int) -> int:
    with satchel.open(url) as store:
        last = 0
        for _ in range(count):
            value = store.incr("counter")
            assert value > last
            last = value
        return last


def test_incr_from_4_processes_loses_nothing(tmp_path: Path) -> None:
    url = _url(tmp_path / "kv")
    satchel.open(url).close()
    lasts = _run_in_processes([(_incr_worker, (url, 200))] * 4)
    with satchel.open(url) as store:
        assert store.get("counter") == 800
        assert store.info("counter").version == 800
    assert max(lasts) == 800


BATCH_KEYS = [f"k{i:02d}" for i in range(20)]


def _batch_writer(url: str, rounds: int) -> int:
    with satchel.open(url) as store:
        deadline = time.monotonic() + 20
        while not store.exists("reader-ready") and time.monotonic() < deadline:
            time.sleep(0.005)
        for r in range(1, rounds + 1):
            if r % 5 == 0:
                assert store.delete_many(BATCH_KEYS) == len(BATCH_KEYS)
            else:
                store.set_many(dict.fromkeys(BATCH_KEYS, r))
        store.set("writer-done", True)
        return rounds


def _batch_reader(url: str) -> int:
    with satchel.open(url) as store:
        store.set("reader-ready", True)
        seen: set[object] = set()
        while not store.exists("writer-done"):
            got = store.get_many(BATCH_KEYS)
            assert not got or sorted(got) == BATCH_KEYS, f"half a batch: {sorted(got)}"
            assert len(set(got.values())) <= 1, f"two batches mixed: {got}"
            listed = dict(store.items("k*"))
            assert not listed or len(listed) == len(BATCH_KEYS), f"half a batch: {listed}"
            assert len(set(listed.values())) <= 1, f"two batches mixed: {listed}"
            seen.update(got.values() or [None])
        return len(seen)


def test_readers_in_another_process_never_see_half_a_batch(tmp_path: Path) -> None:
    url = _url(tmp_path / "kv")
    satchel.open(url).close()
    rounds, seen = _run_in_processes([(_batch_writer, (url, 150)), (_batch_reader, (url,))])
    assert rounds == 150
    assert seen > 3  # the reader really ran while batches were written


def test_threads_share_one_store(tmp_path: Path) -> None:
    import threading

    with satchel.open(_url(tmp_path / "kv")) as store:
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(50):
                    store.incr("n")
                    store.set_many({f"t{n}:{i}": i, f"t{n}:last": i})
                    assert store.get(f"t{n}:last") == i
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors and store.get("n") == 300
        assert len(store) == 1 + 6 * 51


def test_store_keeps_working_across_fork(tmp_path: Path) -> None:
    with satchel.open(_url(tmp_path / "kv")) as store:
        store.set("parent", 1)
        pid = os.fork()
        if pid == 0:  # the child: use the inherited store, then leave without cleanup
            code = 1
            try:
                assert store.get("parent") == 1
                store.incr("forks")
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.incr("forks") == 2


def test_another_process_sees_writes_made_after_it_listed(tmp_path: Path) -> None:
    url = _url(tmp_path / "kv")
    with satchel.open(url) as first, satchel.open(url) as second:
        first.set_many({"a": 1, "b": 2})
        assert list(second.keys()) == ["a", "b"]  # second lists (and keeps) the scope
        first.set("c", 3)
        assert list(second.keys()) == ["a", "b", "c"]
        first.delete("a")
        assert list(second.keys()) == ["b", "c"] and len(second) == 2


def test_paging_through_keys_lists_the_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with satchel.open(_url(tmp_path / "kv")) as store:
        store.set_many({f"k{i:04d}": i for i in range(1200)})  # three pages of keys()
        listed: list[str] = []
        real_listdir = os.listdir

        def listdir(path: Any = ".") -> list[str]:
            listed.append(str(path))
            return real_listdir(path)

        monkeypatch.setattr(os, "listdir", listdir)
        assert sum(1 for _ in store.keys("k*")) == 1200
        assert len(store) == 1200
        assert len(listed) <= 1  # none if the expiry sweep after set_many listed it
        store.set("k9999", 0)  # a write makes the next listing fresh
        assert list(store.keys("k999*")) == ["k9999"]
        assert listed[-1] == str(tmp_path / "kv" / "default")


# --- crashes -------------------------------------------------------------------------------

CRASH_WRITER = """
import sys, satchel
store = satchel.open(sys.argv[1])
keys = [f"k{i:03d}" for i in range(int(sys.argv[2]))]
r = store.get("k000", 0)
while True:
    r += 1
    store.set_many(dict.fromkeys(keys, r))
    if r % 4 == 0:
        store.delete_many(keys[::2])
    print(r, flush=True)
"""


def test_a_batch_killed_at_a_random_moment_is_all_or_nothing(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    keys = 150
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    caught = {"after commit": 0, "while staging": 0, "between batches": 0}
    for _ in range(6):
        writer = subprocess.Popen(
            [sys.executable, "-c", CRASH_WRITER, _url(root), str(keys)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert writer.stdout is not None and writer.stdout.readline()  # one batch done
            time.sleep(rng.uniform(0, 0.25))
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(10)
        if (root / ".journal").exists():
            caught["after commit"] += 1
        elif os.listdir(root / ".tmp"):
            caught["while staging"] += 1
        else:
            caught["between batches"] += 1
        with satchel.open(_url(root)) as store:  # recovers what the writer left
            got = dict(store.items())
            assert len(set(got.values())) == 1, f"mixed batches (seed {seed}): {got}"
            assert len(got) in (keys, keys // 2), f"half a batch (seed {seed}): {len(got)}"
        assert not (root / ".journal").exists()
        assert os.listdir(root / ".tmp") == []
    # Batches take most of the writer's time, so some kills land inside one.
    assert caught["between batches"] < 6, caught


class _Crash(BaseException):
    """Stands in for the process dying at that point."""


def test_a_batch_that_died_after_its_commit_point_is_rolled_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _url(tmp_path / "kv")
    with satchel.open(url) as store:
        store.set_many({f"k{i}": "old" for i in range(10)})

    def half_then_die(steps: Sequence[files.Step]) -> None:
        for tmp, path in steps[: len(steps) // 2]:
            os.replace(str(tmp), path)
        raise _Crash

    monkeypatch.setattr(FilesBackend, "_apply", staticmethod(half_then_die))
    crashed = satchel.open(url)
    with pytest.raises(_Crash):
        crashed.set_many({f"k{i}": "new" for i in range(10)})
    monkeypatch.undo()
    assert (tmp_path / "kv" / ".journal").exists()
    keys = [f"k{i}" for i in range(10)]
    assert crashed.get_many(keys) == dict.fromkeys(keys, "new")  # a reader rolls it forward
    assert not (tmp_path / "kv" / ".journal").exists()
    assert crashed.info("k9").version == 2
    crashed.close()


def test_a_batch_that_died_before_its_commit_point_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _url(tmp_path / "kv")
    satchel.open(url).close()

    def die(self: FilesBackend, steps: Sequence[files.Step]) -> None:
        raise _Crash

    monkeypatch.setattr(FilesBackend, "_commit", die)
    crashed = satchel.open(url)
    with pytest.raises(_Crash):
        crashed.set_many({"a": 1, "b": 2})
    monkeypatch.undo()
    assert len(os.listdir(tmp_path / "kv" / ".tmp")) == 2  # the staged files
    with satchel.open(url) as store:
        assert len(store) == 0
    assert os.listdir(tmp_path / "kv" / ".tmp") == []  # deleted by the open
    crashed.close()


@pytest.mark.parametrize(
    "plan", [b"not json", b'[["../../x", "default/a"]]', b'[[null, "../outside"]]']
)
def test_a_damaged_journal_is_corrupt_data_and_touches_nothing(tmp_path: Path, plan: bytes) -> None:
    root = tmp_path / "kv"
    satchel.open(_url(root)).close()
    (root / ".journal").write_bytes(plan)
    (tmp_path / "outside").write_text("keep")
    with pytest.raises(satchel.CorruptData, match="journal"):
        satchel.open(_url(root))
    assert (tmp_path / "outside").read_text() == "keep"


# --- errors -------------------------------------------------------------------------------


def test_disk_full_is_a_backend_error_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with satchel.open(_url(tmp_path / "kv")) as store:
        store.set("k", "old")
        real_stage = FilesBackend._stage

        def full(self: FilesBackend, *chunks: bytes, sync: bool = True) -> str:
            path = real_stage(self, *chunks, sync=sync)
            os.unlink(path)
            raise OSError(errno.ENOSPC, "No space left on device", path)

        monkeypatch.setattr(FilesBackend, "_stage", full)
        with pytest.raises(satchel.BackendError, match="no space left") as info:
            store.set("k", "new")
        assert str(tmp_path / "kv" / ".tmp") in str(info.value) and "'k'" in str(info.value)
        monkeypatch.undo()
        assert store.get("k") == "old"
    assert os.listdir(tmp_path / "kv" / ".tmp") == []


def test_a_foreign_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(satchel.IncompatibleDatabase, match="not a satchel store"):
        satchel.open(_url(tmp_path / "photos"))
    assert os.listdir(tmp_path / "photos") == ["cat.jpg"]


def test_an_empty_existing_directory_becomes_a_store(tmp_path: Path) -> None:
    (tmp_path / "kv").mkdir()
    with satchel.open(_url(tmp_path / "kv")) as store:
        store.set("a", 1)
    assert (tmp_path / "kv" / ".satchel").is_file()


def test_missing_parent_is_backend_unavailable(tmp_path: Path) -> None:
    with pytest.raises(satchel.BackendUnavailable, match="no directory"):
        satchel.open(_url(tmp_path / "missing" / "kv"))
    assert not (tmp_path / "missing").exists()


def test_a_file_in_place_of_the_directory_is_incompatible(tmp_path: Path) -> None:
    (tmp_path / "kv").write_text("a file")
    with pytest.raises(satchel.IncompatibleDatabase):
        satchel.open(_url(tmp_path / "kv"))


def test_a_newer_format_is_incompatible(tmp_path: Path) -> None:
    satchel.open(_url(tmp_path / "kv")).close()
    (tmp_path / "kv" / ".satchel").write_text('{"application": "satchel", "format": 99}')
    with pytest.raises(satchel.IncompatibleDatabase, match="format 99"):
        satchel.open(_url(tmp_path / "kv"))


def test_a_damaged_record_is_corrupt_data_naming_its_file(tmp_path: Path) -> None:
    with satchel.open(_url(tmp_path / "kv")) as store:
        store.set_many({"good": 1, "bad": 2, "copy": 3})
        bad = tmp_path / "kv" / "default" / "bad"
        bad.write_bytes(b"no metadata here")
        with pytest.raises(satchel.CorruptData, match=str(bad)):
            store.get("bad")
        (tmp_path / "kv" / "default" / "copy").write_bytes(
            (tmp_path / "kv" / "default" / "good").read_bytes()
        )
        with pytest.raises(satchel.CorruptData, match="another key"):
            store.get("copy")  # a record is only ever returned for the key it holds
        assert store.get("good") == 1


def test_the_directory_removed_under_an_open_store(tmp_path: Path) -> None:
    import shutil

    store = satchel.open(_url(tmp_path / "kv"))
    store.set("a", 1)
    shutil.rmtree(tmp_path / "kv")
    with pytest.raises(satchel.BackendUnavailable, match="gone"):
        store.set("a", 2)
    store.close()


def test_expired_records_are_purged_physically(tmp_path: Path) -> None:
    backend = FilesBackend(tmp_path / "kv")
    now = time.time()
    backend.apply("s", [Put(f"k{i}", b"\x01b\x00", now + 10) for i in range(5)], now)
    backend.apply("s", [Put("kept", b"\x01b\x00")], now)
    assert backend.purge_expired(now, 100) == 0
    assert backend.purge_expired(now + 20, 3) == 3
    assert backend.purge_expired(now + 20, 100) == 2
    assert os.listdir(tmp_path / "kv" / "s") == ["kept"]
    backend.close()


def test_clear_removes_the_scope_directory(tmp_path: Path) -> None:
    with satchel.open(_url(tmp_path / "kv"), scope="gone") as store:
        store.set_many({"a": 1, "b": 2})
        store.scope("stays").set("c", 3)
        store.clear()
    assert sorted(os.listdir(tmp_path / "kv")) == [".lock", ".satchel", ".tmp", "stays"]
    assert os.listdir(tmp_path / "kv" / ".tmp") == []


# --- URLs and options -------------------------------------------------------------------------


def test_relative_url_resolves_against_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with satchel.open("file://data/kv") as store:
        store.set("a", 1)
        assert store.url == f"file://{tmp_path}/data/kv"
    assert (tmp_path / "data" / "kv" / "default" / "a").is_file()


def test_absolute_url_and_durability_option(tmp_path: Path) -> None:
    with satchel.open(f"file://{tmp_path}/kv?durability=full") as store:
        store.set_many({"a": 1, "b": 2})
        store.delete("a")
        assert store.url == f"file://{tmp_path}/kv"
    with satchel.open(f"file://{tmp_path}/kv", durability="normal") as store:
        assert dict(store.items()) == {"b": 2}


@pytest.mark.parametrize(
    "url", ["file://", "file:///x?durability=sometimes", "file:///x?timeout=3"]
)
def test_bad_file_urls_are_invalid_input(url: str) -> None:
    with pytest.raises(satchel.InvalidInput):
        satchel.open(url)


# --- large values of format 1, event logs of formats 1 and 2, series ----------------------


def _legacy_store(
    root: Path, blobs: dict[str, bytes], scope: str = "default", expired: Sequence[str] = ()
) -> dict[str, str]:
    """Make `root` a store as releases before 0.2 left it (format 1): each of `blobs` a
    large value whose record names its chunk files under ``.blobs``. Return key: blob id."""
    FilesBackend(root).close()
    (root / ".satchel").write_text('{"application": "satchel", "engine": "files", "format": 1}')
    now, ids = time.time(), {}
    for n, (key, data) in enumerate(blobs.items()):
        blob_id = f"{n:032x}"
        chunks = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
        checksum = hashlib.blake2b(data, digest_size=16).hexdigest()
        manifest = Manifest(blob_id, len(data), CHUNK_SIZE, len(chunks), checksum, False)
        meta = {"key": key, "created_at": now, "updated_at": now,
                "expires_at": now - 1 if key in expired else None, "version": 1,
                "blob": blob_id, "chunks": len(chunks)}  # fmt: skip
        (root / escape_name(scope)).mkdir(exist_ok=True)
        record = manifest.pack() + b"\n" + json.dumps(meta).encode() + b"\n"
        (root / escape_name(scope) / escape_name(key)).write_bytes(record)
        blob_dir = root / ".blobs" / escape_name(scope) / escape_name(key) / blob_id
        blob_dir.mkdir(parents=True)
        for i, chunk in enumerate(chunks):
            (blob_dir / str(i)).write_bytes(chunk)
        ids[key] = blob_id
    return ids


def test_large_values_of_format_1_become_records_at_open(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    big, other = os.urandom(2 * CHUNK_SIZE + 5), os.urandom(CHUNK_SIZE + 1)
    values = {"big": big, "Other:Key": other, "gone": big, "replaced": big}
    ids = _legacy_store(root, values, expired=["gone"])
    staged = root / ".blobs" / "default" / "big" / "staged"  # a writer died before commit
    staged.mkdir()
    (staged / ".staged").write_text("0")
    (staged / "0").write_bytes(b"never committed")
    orphan = root / ".blobs" / "default" / "deleted" / "orphan"  # no record names it
    orphan.mkdir(parents=True)
    (orphan / "0").write_bytes(b"left by a crash")
    backend = FilesBackend(root)
    now = time.time()
    # A write on a record of the old layout needs nothing of it: its blob is no one's now.
    assert backend.apply("default", [Put("replaced", b"\x01b\x00")], now) == 0
    blobs = {blob.key: blob for blob in backend.legacy_blobs(now) or []}
    assert blobs == {
        "big": LegacyBlob("default", "big", ids["big"], 3),
        "Other:Key": LegacyBlob("default", "Other:Key", ids["Other:Key"], 2),
    }
    assert backend.legacy_chunk(blobs["big"], 2) == big[2 * CHUNK_SIZE :]
    assert backend.legacy_chunk(blobs["big"], 3) is None
    backend.close()

    with satchel.open(_url(root)) as store:
        assert store.get("big") == big
        with store.open_blob("Other:Key") as f:
            assert f.read() == other
        assert "gone" not in store and store.get("replaced") == b""
        assert sorted(store.keys()) == ["Other:Key", "big", "replaced"]
    assert not (root / ".blobs").exists() and os.listdir(root / ".tmp") == []
    assert json.loads((root / ".satchel").read_text())["format"] == 3  # no event log either
    backend = FilesBackend(root)
    assert backend.legacy_blobs(now) is None  # from the marker alone
    chunks = backend.scan(kind_scope("default", "b"), "c/", None, 100, now, values=False)
    assert sorted(r.key for r in chunks) == sorted(
        [f"c/{ids['big']}/{i:08d}" for i in range(3)]
        + [f"c/{ids['Other:Key']}/{i:08d}" for i in range(2)]
    )
    backend.close()
    with satchel.open(_url(root)) as store:  # again: nothing left to move
        assert store.get("big") == big


def test_a_format_1_store_without_old_data_is_marked_format_3(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    _legacy_store(root, {})
    with satchel.open(_url(root)) as store:
        store.set("k", 1)
    assert json.loads((root / ".satchel").read_text())["format"] == 3
    (root / ".satchel").write_text('{"application": "satchel", "engine": "files", "format": 0}')
    with pytest.raises(satchel.IncompatibleDatabase, match="format 0"):
        FilesBackend(root)


def _entries(*entries: tuple[bytes, int, int, bytes]) -> bytes:
    """The payload of a batch of an old event log: entries (kind, seq, ms, data)."""
    return b"".join(b"%s %d %d %d\n%s\n" % (k, seq, ms, len(data), data)
                    for k, seq, ms, data in entries)  # fmt: skip


def _old_event_log(
    root: Path, scope: str, name: str, *payloads: bytes, file: str | None = None
) -> Path:
    """Write an event log as formats 1 and 2 kept sequence `name` of `scope`: the first
    line, then a batch per payload. Return its path."""
    folder = root / ".events" / escape_name(scope)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (file or escape_name(name))
    label = json.dumps(name, ensure_ascii=False).encode()
    path.write_bytes(b"satchel-events 0123456789abcdef %s\n" % label
                     + b"".join(map(files._batch, payloads)))  # fmt: skip
    return path


def _format(root: Path, version: int) -> None:
    marker = {"application": "satchel", "engine": "files", "format": version}
    (root / ".satchel").write_text(json.dumps(marker))


@pytest.mark.parametrize("version", [1, 2])
def test_event_logs_of_formats_1_and_2_become_records_at_open(tmp_path: Path, version: int) -> None:
    root = tmp_path / "kv"
    long_scope = "x" * 255  # a hashed folder name: known by the label of its records
    FilesBackend(root).close()
    with satchel.open(_url(root), scope=long_scope) as store:
        store.set("k", 1)
    _format(root, version)
    typed = get_codec("typed")
    rows = [(n, 1000 + n, typed.encode([f"i{n}", "set", n])) for n in range(1, 7)]
    state = {n: typed.encode({f"i{i}": i for i in range(1, n + 1)}) for n in range(1, 7)}
    # "log": as a compaction at 2 rewrote it, then one append, then an append torn by a crash
    _old_event_log(
        root, "default", "log",
        _entries((b"b", 2, 1002, state[2]), *((b"e", *row) for row in rows[2:5]),
                 (b"h", 5, 1005, state[5])),
        _entries((b"e", *rows[5]), (b"h", 6, 1006, state[6])),
    )  # fmt: skip
    with open(root / ".events" / "default" / "log", "ab") as f:
        f.write(files._batch(_entries((b"e", 7, 1007, b"torn"), (b"h", 7, 1007, b"x")))[:-2])
    for n in (1, 2):  # "other" of scope "s": two appends, no base
        _old_event_log(root, "s", "other", *(_entries((b"e", *rows[i]), (b"h", i + 1,
                       1001 + i, state[i + 1])) for i in range(n)))  # fmt: skip
    _old_event_log(root, long_scope, "n", _entries((b"e", *rows[0]), (b"h", 1, 1001, state[1])))
    # Passed by: a log under another file name, foreign files, names no key can be, a FIFO.
    _old_event_log(root, "default", "named", file="other-name")
    (root / ".events" / "default" / "readme").write_bytes(b"x" * 100_000)
    for file, label in (("surrogate", b'"\\ud800"'), ("deep", b"[" * 5000)):
        (root / ".events" / "default" / file).write_bytes(b"satchel-events 0 %s\n" % label)
    os.mkfifo(root / ".events" / "default" / "fifo")

    backend = FilesBackend(root)
    assert backend.legacy_sequences() == [("default", "log"), ("s", "other"), (long_scope, "n")]
    assert backend.legacy_states("default", "log") == (
        (6, 1006, state[6]), (2, 1002, state[2])
    )  # fmt: skip
    assert backend.legacy_events("default", "log", 0, 10) == rows[2:]
    assert backend.legacy_events("default", "log", 3, 2) == rows[3:5]
    assert backend.legacy_states("s", "other") == ((2, 1002, state[2]), None)
    assert backend.legacy_states("default", "nope") == (None, None)
    assert backend.legacy_events("default", "nope", 0, 10) == []
    backend.close()

    with satchel.open(_url(root)) as store:
        log = store.events("log")
        assert len(log) == 6 and log.current() == {f"i{n}": n for n in range(1, 7)}
        assert [e.seq for e in log.history()] == [3, 4, 5, 6]
        assert log.at(1003) == {"i1": 1, "i2": 2, "i3": 3}
        with pytest.raises(satchel.InvalidInput):
            log.at(1001)  # compacted away
        assert store.scope("s").events("other").current() == {"i1": 1, "i2": 2}
        assert store.scope(long_scope).events("n").current() == {"i1": 1}
        assert log.apply({"i7": 7})["i7"] == 7 and [e.seq for e in log.history()][-1] == 7
        backend = store._shared.backend
        assert backend.legacy_sequences() is None  # from the marker alone
        backend.drop_legacy_events()  # idempotent
        assert backend.legacy_events("default", "log", 0, 10) == []  # gone: nothing to read
    assert not (root / ".events").exists() and os.listdir(root / ".tmp") == []
    assert json.loads((root / ".satchel").read_text())["format"] == 3


@pytest.mark.parametrize(
    "payload",
    [
        b"e 1 1 99\nx\n",  # longer than its batch
        b"e 1 1 -1\nx\n",
        _entries((b"e", 2, 1, b"x")),  # not the first event
        _entries((b"b", 5, 1, b"s"), (b"b", 2, 1, b"s")),  # a base behind the events
        _entries((b"e", 1, 1, b"x"), (b"h", 2, 1, b"s")),  # a head after the last event
        _entries((b"e", 1, 10**20, b"x")),  # a time msgpack cannot hold
        _entries((b"q", 1, 1, b"x")),
        b"e 1 1\nx\n",
    ],
)
def test_a_damaged_old_event_log_is_corrupt_data_and_stays(tmp_path: Path, payload: bytes) -> None:
    root = tmp_path / "kv"
    FilesBackend(root).close()
    _format(root, 2)
    log = _old_event_log(root, "default", "log", payload)
    backend = FilesBackend(root)
    assert backend.legacy_sequences() == [("default", "log")]
    with pytest.raises(satchel.CorruptData, match=re.escape(f"{log} is damaged")):
        backend.legacy_states("default", "log")
    backend.close()
    with satchel.open(_url(root)) as store:  # opens; the log is kept for a person to see
        assert store.event_names() == []
    assert log.is_file() and json.loads((root / ".satchel").read_text())["format"] == 2


HOSTILE_NAMES = ["../x", "..", ".", "/etc/passwd", "a/../../b", ".hidden", "x" * 1024,
                 "é" * 512, "\n", "con", "A", "a", "~"]  # fmt: skip


def test_hostile_names_stay_inside(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    backend = FilesBackend(root)
    now = time.time()
    for scope in ("../up", "x" * 255, ".blobs"):
        for i, name in enumerate(HOSTILE_NAMES):
            assert backend.apply(scope, [Put(name, name.encode())], now) == 1
            backend.series_put(scope, name, [(i, name.encode())])
        for i, name in enumerate(HOSTILE_NAMES):
            assert backend.get_value(scope, name, now) == name.encode()
            assert backend.series_range(scope, name, None, None, 10) == [(i, name.encode())]
        assert backend.series_names(scope) == sorted(HOSTILE_NAMES)
        assert backend.count(scope, now) == len(HOSTILE_NAMES)
    assert backend.scopes(now) == sorted(["../up", "x" * 255, ".blobs"])
    assert sorted(os.listdir(tmp_path)) == ["kv"]
    _inside(root)
    backend.close()


def test_series_log_is_appended_not_rewritten(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    backend = FilesBackend(root)
    backend.series_put("s", "temp", [(-5, b"cold"), (2**63 - 1, b"end")])
    log = root / ".series" / "s" / "temp"
    text = log.read_bytes()
    assert re.fullmatch(  # readable by a person
        rb'satchel-series [0-9a-f]{16} "temp"\n@0{14}28 [0-9a-f]{8}\n'
        rb"p -5 4\ncold\np 9223372036854775807 3\nend\n",
        text,
    )
    backend.series_put("s", "temp", [(i, b"x" * 10) for i in range(100_000)])
    inode, size = log.stat().st_ino, log.stat().st_size
    backend.series_put("s", "temp", [(i, b"y") for i in range(100_000, 110_000)])
    assert log.stat().st_ino == inode  # the same file, grown by the new batch only
    assert log.stat().st_size - size < 10_000 * 20
    other = FilesBackend(root)  # another process's index reads the new batches only
    assert other.series_count("s", "temp") == 110_002
    backend.series_put("s", "temp", [(7, b"seven")])
    backend.series_remove("s", "temp", 10, 20)
    assert other.series_range("s", "temp", 5, 12, 10) == [
        (5, b"x" * 10), (6, b"x" * 10), (7, b"seven"), (8, b"x" * 10), (9, b"x" * 10)
    ]  # fmt: skip
    assert other.series_count("s", "temp") == 110_002 - 10
    other.close()
    backend.close()


def test_series_log_is_rewritten_when_half_dead(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    backend = FilesBackend(root)
    log = root / ".series" / "s" / "temp"
    for round_ in range(6):
        backend.series_put("s", "temp", [(i, bytes([round_]) * 100) for i in range(5000)])
    assert log.stat().st_size < 2 * 5000 * 112 + files.REWRITE_MIN
    assert backend.series_range("s", "temp", 4999, None, 5) == [(4999, b"\x05" * 100)]
    backend.series_remove("s", "temp", None, None)
    assert not log.exists() and backend.series_names("s") == []
    backend.close()


def test_a_torn_batch_is_ignored_then_cut_off(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    backend = FilesBackend(root)
    backend.series_put("s", "temp", [(1, b"one")])
    log = root / ".series" / "s" / "temp"
    whole = log.stat().st_size
    with open(log, "ab") as f:  # a crash in the middle of an append
        f.write(files._batch(b"p 2 3\ntwo\n")[:-3])
    reader = FilesBackend(root)
    assert reader.series_range("s", "temp", None, None, 10) == [(1, b"one")]
    reader.close()
    assert log.stat().st_size > whole
    backend.series_put("s", "temp", [(3, b"three")])
    assert backend.series_range("s", "temp", None, None, 10) == [(1, b"one"), (3, b"three")]
    with open(log, "ab") as f:  # a batch that claims more than the file holds
        f.write(b"@%016x %08x\n" % (2**63, 0))
    assert backend.series_count("s", "temp") == 2
    log.write_bytes(b"garbage\n")
    with pytest.raises(satchel.CorruptData, match="temp is damaged"):
        backend.series_count("s", "temp")
    backend.close()


def test_everything_with_full_durability_through_the_store(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    with satchel.open(f"{_url(root)}?durability=full") as store:
        data = os.urandom(3 << 20)
        with store.open_blob("big", "wb") as f:
            f.write(data)
        assert store.get("big") == data
        series = store.series("temp")
        series.extend({t: t * 1.5 for t in range(-10, 10)})
        assert series.remove(0, 5) == 5 and list(series.range(5, 7)) == [(5, 7.5), (6, 9.0)]
        events = store.events("cart")
        events.apply({"apples": 2})
        events.apply({"pears": 1})
        events.compact()
        assert events.current() == {"apples": 2, "pears": 1}
        store.delete("big")
    assert not (root / ".blobs").exists() and os.listdir(root / ".tmp") == []
    assert os.listdir(root / ".series" / "default") == ["temp"]
    assert not (root / ".events").exists()  # event sequences are records


def test_series_logs_match_series_over_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from satchel._backends.memory import MemoryBackend
    from satchel._series import RecordSeries

    monkeypatch.setattr(files, "REWRITE_MIN", 300)  # rewrites happen often
    monkeypatch.setattr(files, "PART", 300)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    writer, reader = FilesBackend(tmp_path / "kv"), FilesBackend(tmp_path / "kv")
    records = MemoryBackend(f"files-model-{seed}")
    model = RecordSeries(records)
    for step in range(600):
        t = rng.randrange(-50, 50)
        points = [(t + i, os.urandom(rng.randrange(30))) for i in range(rng.randrange(1, 8))]
        ops: list[tuple[str, tuple[Any, ...]]] = [("series_put", ("s", "a", points))] * 4 + [
            ("series_remove", ("s", "a", t, t + rng.randrange(-5, 20))),
            ("series_remove", ("s", "a", rng.choice([None, t]), rng.choice([None, t + 9]))),
        ]
        name, args = rng.choice(ops)
        expected = getattr(model, name)(*args)
        assert getattr(writer, name)(*args) == expected, (seed, step, name)
        backend = rng.choice([writer, reader])
        for t0 in (None, t):
            assert backend.series_range("s", "a", t0, None, 30, reverse=True) == (
                model.series_range("s", "a", t0, None, 30, reverse=True)
            ), (seed, step)
        assert backend.series_count("s", "a") == model.series_count("s", "a"), seed
        assert backend.series_names("s") == model.series_names("s"), seed
    records.close()
    writer.close()
    reader.close()


def test_a_log_is_only_read_for_the_name_it_holds(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    backend = FilesBackend(root)
    backend.series_put("s", "a", [(1, b"x")])
    os.rename(root / ".series" / "s" / "a", root / ".series" / "s" / "b")
    with pytest.raises(satchel.CorruptData, match="holds another log, 'a'"):
        backend.series_count("s", "b")
    assert backend.series_names("s") == []
    backend.close()


def test_a_write_succeeds_though_the_purge_it_triggers_meets_a_damaged_record(tmp_path):
    store = satchel.open(f"file://{tmp_path / 'kv'}")
    long_key = "k" * 300  # a hashed file name: the key is read from the file
    store.set(long_key, 1, ttl=100)
    (record,) = [p for p in (tmp_path / "kv" / "default").iterdir() if p.name.startswith("k")]
    record.write_bytes(b"garbage")
    store._shared.next_purge = 0  # this set runs the periodic purge
    assert store.set("x", 2) is True
    assert store.get("x") == 2
    with pytest.raises(satchel.CorruptData):
        store.get(long_key)
    store.close()


@pytest.mark.parametrize(
    "entry", [b"p 1 -8\n", b"p 1 -1\nx\n", b"p 1 99\nx\n", b"p 99999999999999999999 1\nx\n"]
)
def test_a_damaged_point_entry_is_corrupt_data_not_a_hang(tmp_path: Path, entry: bytes) -> None:
    root = tmp_path / "kv"
    backend = FilesBackend(root)
    backend.series_put("s", "temp", [(1, b"one")])
    with open(root / ".series" / "s" / "temp", "ab") as f:  # a whole batch, CRC and all
        f.write(files._batch(entry))
    reader = FilesBackend(root)
    with pytest.raises(satchel.CorruptData):
        reader.series_count("s", "temp")
    reader.close()
    backend.close()
