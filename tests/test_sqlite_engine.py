"""SQLite engine: processes, fork, threads, persistence, files, URLs, WAL, indexes, purge.

Every test works on real files in ``tmp_path``. Multi-process tests run their workers
through `_run_in_processes`, which bounds them with a deadline: a deadlock fails the
test instead of hanging the suite. Worker functions live at module level so that the
"spawn" start method can import them.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import random
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgpack
import pytest

import satchel
from satchel._backends import sqlite as sqlite_backend
from satchel._blobs import CHUNK_SIZE, chunk_key, head_key
from satchel._codecs import get_codec
from satchel._keys import kind_scope

PROCESS_DEADLINE = 60.0  # seconds for a whole multi-process run
CHILD_DEADLINE = 10.0  # seconds for one forked child


# --- running workers in processes, bounded ------------------------------------------------


def _child_main(
    results: Any, index: int, target: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    try:
        results.put((index, True, target(*args)))
    except BaseException:
        results.put((index, False, traceback.format_exc()))


def _run_in_processes(
    method: str,
    target: Callable[..., Any],
    args_list: Sequence[tuple[Any, ...]],
    deadline: float = PROCESS_DEADLINE,
) -> list[Any]:
    """Run ``target(*args)`` in one process per args; return the results in order.

    Fails if any worker raises, exits non-zero, or has not finished by the deadline.
    """
    ctx = multiprocessing.get_context(method)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_child_main, args=(results, i, target, args), daemon=True)
        for i, args in enumerate(args_list)
    ]
    for proc in procs:
        proc.start()
    end = time.monotonic() + deadline
    got: dict[int, tuple[bool, Any]] = {}
    try:
        while len(got) < len(procs) and time.monotonic() < end:
            try:
                index, ok, payload = results.get(timeout=0.5)
            except queue.Empty:
                if all(p.exitcode is not None for p in procs) and results.empty():
                    break  # everyone is gone; some died without reporting
                continue
            got[index] = (ok, payload)
    finally:
        for proc in procs:
            proc.join(timeout=max(0.1, end - time.monotonic()))
        hung = [proc for proc in procs if proc.is_alive()]
        for proc in hung:
            proc.kill()
            proc.join(5)
        results.close()
    assert not hung, f"{len(hung)} of {len(procs)} workers still running after {deadline}s"
    failures = [payload for ok, payload in got.values() if not ok]
    assert not failures, "worker raised:\n" + "\n".join(failures)
    assert len(got) == len(procs), f"only {len(got)} of {len(procs)} workers reported"
    assert [proc.exitcode for proc in procs] == [0] * len(procs)
    return [got[i][1] for i in range(len(procs))]


def _incr_worker(url: str, count: int) -> int:
    store = satchel.open(url)
    try:
        last = 0
        for _ in range(count):
            value = store.incr("counter")
            assert value > last  # every increment sees a strictly larger counter
            last = value
        return last
    finally:
        store.close()


def _cas_worker(url: str, count: int) -> int:
    store = satchel.open(url)
    try:
        done = retries = 0
        while done < count:
            version = store.info("cas").version  # read the version first, then the value
            value = store.get("cas")
            if store.compare_and_set("cas", version, value + 1):
                done += 1
            else:
                retries += 1
        return retries
    finally:
        store.close()


def _mixed_worker(url: str, worker: int, ops: int) -> int:
    rng = random.Random(worker)
    store = satchel.open(url)
    keys = [f"k{i}" for i in range(12)]
    increments = 0
    try:
        for i in range(ops):
            key = rng.choice(keys)
            op = rng.randrange(8)
            if op == 0:
                store.set(key, (worker, i, b"x" * rng.randrange(64)))
            elif op == 1:
                value = store.get(key, None)
                assert value is None or (type(value) is tuple and len(value) == 3), value
            elif op == 2:
                store.set_many({k: (worker, i, b"") for k in rng.sample(keys, 3)})
            elif op == 3:
                found = store.get_many(rng.sample(keys, 4))
                assert all(type(v) is tuple for v in found.values()), found
            elif op == 4:
                store.delete(key)
            elif op == 5:
                listed = list(store.keys("k*"))
                assert listed == sorted(listed)
                assert set(listed) <= set(keys)
            elif op == 6:
                try:
                    version: int | None = store.info(key).version
                except satchel.KeyNotFound:
                    version = None
                store.compare_and_set(key, version, (worker, i, b"cas"))  # may lose: fine
            else:
                store.incr("mixed:counter")
                increments += 1
        return increments
    finally:
        store.close()


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


# --- many processes -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_incr_from_8_processes_loses_nothing(tmp_path: Path, method: str) -> None:
    url = _url(tmp_path / "counter.db")
    parent = satchel.open(url)  # the parent keeps a connection open while children write
    try:
        parent.set("unrelated", "x")
        lasts = _run_in_processes(method, _incr_worker, [(url, 500)] * 8)
        assert parent.get("counter") == 4000
        assert max(lasts) == 4000
        assert parent.info("counter").version == 4000
    finally:
        parent.close()
    with satchel.open(url) as fresh:
        assert fresh.get("counter") == 4000


def test_incr_from_8_spawned_processes_on_a_new_file(tmp_path: Path) -> None:
    """The children race to create the schema; none of them may fail."""
    url = _url(tmp_path / "fresh.db")
    lasts = _run_in_processes("spawn", _incr_worker, [(url, 50)] * 8)
    assert max(lasts) == 400
    with satchel.open(url) as store:
        assert store.get("counter") == 400


def test_open_waits_for_a_writer_that_is_creating_the_file(tmp_path: Path) -> None:
    """Another connection holds the write lock on a new, still empty database file (as
    a second process does while it sets the file up). open() must wait for it, up to
    its timeout, not fail at once."""
    path = tmp_path / "creating.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    releaser = threading.Timer(0.3, other.execute, args=("ROLLBACK",))
    releaser.start()
    try:
        started = time.monotonic()
        with satchel.open(path, timeout=5) as store:
            store.set("k", 1)
            assert store.get("k") == 1
        assert time.monotonic() - started >= 0.25
    finally:
        releaser.join(5)
        other.close()


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_compare_and_set_loop_from_8_processes(tmp_path: Path, method: str) -> None:
    url = _url(tmp_path / "cas.db")
    with satchel.open(url) as store:
        store.set("cas", 0)
    _run_in_processes(method, _cas_worker, [(url, 200)] * 8)
    with satchel.open(url) as store:
        assert store.get("cas") == 1600
        assert store.info("cas").version == 1601


def test_mixed_workload_from_8_processes(tmp_path: Path) -> None:
    url = _url(tmp_path / "mixed.db")
    with satchel.open(url) as store:
        store.set("seed", 1)
    increments = _run_in_processes("fork", _mixed_worker, [(url, w, 300) for w in range(8)])
    with satchel.open(url) as store:
        assert store.get("mixed:counter") == sum(increments)
        for key, value in store.items("k*"):
            assert type(value) is tuple and len(value) == 3, (key, value)


# --- fork -------------------------------------------------------------------------------------


def _wait_child(pid: int, deadline: float = CHILD_DEADLINE) -> int | None:
    """Exit code of child `pid`, or None if it had to be killed after `deadline`."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def _fork_and_use(store: satchel.Store, marker: str, deadline: float = CHILD_DEADLINE) -> None:
    """Fork; the child writes and reads through the SAME `store` object, then reports."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            assert store.get("parent") == "before fork"
            store.set(marker, os.getpid())
            assert store.get(marker) == os.getpid()
            assert store.incr("forks") >= 1
            assert marker in set(store.keys("child*"))
            code = 0
        except BaseException:
            os.write(write_end, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write_end)
    exit_code = _wait_child(pid, deadline)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read().decode()
    assert exit_code is not None, f"child using the inherited store hung for {deadline}s"
    assert exit_code == 0, f"child failed:\n{report}"


def test_store_object_keeps_working_across_fork(tmp_path: Path) -> None:
    store = satchel.open(_url(tmp_path / "fork.db"))
    try:
        store.set("parent", "before fork")
        assert store.get("parent") == "before fork"
        for n in range(3):
            _fork_and_use(store, f"child{n}")
            # the parent keeps working on its own connection, and sees the child's writes
            assert store.get(f"child{n}") > 0
            store.set(f"parent{n}", n)
            assert store.get(f"parent{n}") == n
        assert store.get("forks") == 3
        assert list(store.keys("child*")) == ["child0", "child1", "child2"]
    finally:
        store.close()


class _BlockingCodec:
    """A codec that parks the thread named "blocked" inside dumps() until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def dumps(self, value: Any) -> bytes:
        if threading.current_thread().name == "blocked":
            self.entered.set()
            self.release.wait(10)
        return repr(value).encode()

    def loads(self, data: bytes) -> Any:
        import ast

        return ast.literal_eval(data.decode())


def test_fork_while_another_thread_is_inside_a_write(tmp_path: Path) -> None:
    """fork() while a thread is in the middle of incr (inside its write transaction).

    The child must still be able to use the inherited store. The other thread is let
    go 0.3 s after the fork starts, so an engine that waits for in-flight operations
    before forking passes quickly; one that forks mid-transaction leaves the child with
    a connection state it can never get the write lock from.
    """
    codec = _BlockingCodec()
    store = satchel.open(_url(tmp_path / "forkbusy.db"), codec=codec)
    try:
        store.set("parent", "before fork")
        worker = threading.Thread(target=store.incr, args=("busy",), name="blocked")
        worker.start()
        assert codec.entered.wait(5), "the worker thread never reached the codec"
        releaser = threading.Timer(0.3, codec.release.set)
        releaser.start()
        try:
            _fork_and_use(store, "child_busy", deadline=5.0)
        finally:
            codec.release.set()
            releaser.cancel()
            worker.join(10)
        assert store.get("busy") == 1
        assert store.get("child_busy") > 0
    finally:
        codec.release.set()
        store.close()


# --- threads ----------------------------------------------------------------------------------


def test_eight_threads_share_one_store(tmp_path: Path) -> None:
    store = satchel.open(_url(tmp_path / "threads.db"))
    errors: list[str] = []
    start = threading.Barrier(8)

    def work(n: int) -> None:
        try:
            start.wait(5)
            for i in range(150):
                store.incr("shared")
                store.incr(f"own:{n}", 2)
                store.set(f"t{n}:{i}", (n, i))
                assert store.get(f"t{n}:{i}") == (n, i)
                assert store.get("shared") >= 1
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PROCESS_DEADLINE)
    try:
        assert not any(thread.is_alive() for thread in threads), "threads hung"
        assert not errors, "\n".join(errors)
        assert store.get("shared") == 8 * 150
        assert all(store.get(f"own:{n}") == 300 for n in range(8))
        assert len(store) == 1 + 8 + 8 * 150
        assert len(list(store.keys("t3:*"))) == 150
    finally:
        store.close()


# --- persistence ----------------------------------------------------------------------------

# A value with types that JSON or a naive encoding would lose; repr() pins each type.
_PERSISTED = (
    "{'big': 2**100, 'neg_zero': -0.0, 'inf': float('inf'), 'true': True, 'none': None,"
    " 'tuple': (1, 'a', b'\\x00\\xff'), 'list': [1.5, 'x'], 'set': {1, 2, 3},"
    " 'frozen': frozenset({7}), 'when': dt.datetime(2024, 1, 2, 3, 4, 5, 6,"
    " tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))), 'naive': dt.datetime(2020, 2, 29),"
    " 'day': dt.date(1999, 12, 31), 'clock': dt.time(23, 59, 59, 999999),"
    " 'span': dt.timedelta(days=-1, seconds=5), 'money': decimal.Decimal('1.10'),"
    " 'id': uuid.UUID(int=7), (1, 2): 'tuple key', 3: 'int key'}"
)
_PRELUDE = "import sys, datetime as dt, decimal, uuid, satchel\n"


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PRELUDE + code, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_value_written_by_one_process_is_read_by_another(tmp_path: Path) -> None:
    url = _url(tmp_path / "persist.db")
    write = _python(
        "with satchel.open(sys.argv[1]) as s:\n"
        "    s.set('value', eval(sys.argv[2]))\n"
        "    s.set('text', 'h\\u00e9llo')\n"
        "    s.set('blob', b'\\x00\\x01')\n",
        url,
        _PERSISTED,
    )
    assert write.returncode == 0, write.stderr
    read = _python(
        "with satchel.open(sys.argv[1]) as s:\n"
        "    got, want = s.get('value'), eval(sys.argv[2])\n"
        "    assert repr(got) == repr(want), (got, want)\n"
        "    assert type(s.get('text')) is str and s.get('text') == 'h\\u00e9llo'\n"
        "    assert type(s.get('blob')) is bytes and s.get('blob') == b'\\x00\\x01'\n"
        "print('ok')\n",
        url,
        _PERSISTED,
    )
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == "ok"


def test_close_and_reopen_in_process(tmp_path: Path) -> None:
    import datetime as dt
    import decimal
    import uuid

    expected = eval(_PERSISTED, {"dt": dt, "decimal": decimal, "uuid": uuid})
    path = tmp_path / "reopen.db"
    with satchel.open(path) as store:
        store.set("value", expected)
        store.set("twice", 1)
        store.set("twice", 2)
        store.set("expiring", "x", ttl=3600)
        store.scope("other").set("k", "v")
    with satchel.open(str(path)) as store:
        assert repr(store.get("value")) == repr(expected)
        assert store.info("twice").version == 2
        remaining = store.ttl("expiring")
        assert remaining is not None and 3500 < remaining <= 3600
        assert store.scopes() == ["default", "other"]
        assert store.scope("other").get("k") == "v"


# --- files that are not (our) databases ------------------------------------------------------


def test_random_bytes_file_is_incompatible(tmp_path: Path) -> None:
    path = tmp_path / "random.db"
    content = random.Random(1).randbytes(16384)
    path.write_bytes(content)
    with pytest.raises(satchel.IncompatibleDatabase) as info:
        satchel.open(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == content


def _foreign_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    db.execute("INSERT INTO notes (body) VALUES ('keep me')")
    db.commit()
    db.close()


SATCHEL_TABLES = {"satchel_kv", "satchel_kv_expiry", "satchel_meta", "satchel_points"}


def _tables(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        return sorted(row[0] for row in rows)
    finally:
        db.close()


def test_database_of_another_application_is_incompatible(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    _foreign_database(path)
    with pytest.raises(satchel.IncompatibleDatabase) as info:
        satchel.open(_url(path))
    assert str(path) in str(info.value)
    assert _tables(path) == ["notes"]  # no satchel table, index or meta row was created


def test_database_of_another_application_is_left_unchanged(tmp_path: Path) -> None:
    """Refusing a foreign database must not modify it: same bytes, same journal mode.

    (Switching it to WAL is a persistent change to the other application's file.)
    """
    path = tmp_path / "other.db"
    _foreign_database(path)
    before = path.read_bytes()
    with pytest.raises(satchel.IncompatibleDatabase):
        satchel.open(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]
    db = sqlite3.connect(path)
    try:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        db.close()
    assert mode == "delete"
    assert path.read_bytes() == before


def test_newer_schema_version_is_incompatible(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    with satchel.open(path) as store:
        store.set("k", 1)
    db = sqlite3.connect(path)
    db.execute("UPDATE satchel_meta SET value = '999' WHERE name = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(satchel.IncompatibleDatabase) as info:
        satchel.open(path)
    message = str(info.value)
    assert "newer" in message
    assert str(path) in message


def test_truncated_database_is_an_error_not_an_empty_store(tmp_path: Path) -> None:
    path = tmp_path / "truncated.db"
    rng = random.Random(5)
    with satchel.open(path) as store:
        store.set_many({f"key{i:05d}": rng.randbytes(300) for i in range(2000)})
    assert not Path(f"{path}-wal").exists()  # everything is in the main file
    size = path.stat().st_size
    assert size > 100 * 4096  # spans many pages
    with path.open("r+b") as file:
        file.truncate(size // 2)
    with pytest.raises(satchel.SatchelError) as info:
        store = satchel.open(path)
        try:
            assert len(store) == 2000
            assert len(dict(store.items())) == 2000
        finally:
            store.close()
    assert not isinstance(info.value, sqlite3.Error)
    assert str(path) in str(info.value)


def test_missing_parent_directory_is_a_backend_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "dir" / "x.db"
    with pytest.raises(satchel.BackendError) as info:
        satchel.open(_url(path))
    assert str(path.parent) in str(info.value)
    assert not (tmp_path / "missing").exists()


def test_locked_database_times_out_with_a_backend_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = satchel.open(path, timeout=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        store.set("k", 1)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        started = time.monotonic()
        with pytest.raises(satchel.BackendError) as info:
            store.set("k", 2)
        assert time.monotonic() - started < 5
        assert not isinstance(info.value, sqlite3.Error)
        assert "locked" in str(info.value)
        other.execute("ROLLBACK")
        store.set("k", 3)  # usable again once the other writer is done
        assert store.get("k") == 3
    finally:
        other.close()
        store.close()


# --- URLs, paths and options -----------------------------------------------------------------


def test_relative_sqlite_url_resolves_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with satchel.open("sqlite:///relative.db") as store:
        store.set("k", "v")
        assert str(tmp_path / "relative.db") in store.url
    assert (tmp_path / "relative.db").is_file()
    monkeypatch.chdir(tmp_path.parent)  # a reader elsewhere finds it by absolute path
    with satchel.open(f"sqlite:///{tmp_path}/relative.db") as store:
        assert store.get("k") == "v"


def test_absolute_sqlite_url(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    url = f"sqlite:///{path}"
    assert url.startswith("sqlite:////")
    with satchel.open(url) as store:
        store.set("k", 1)
    assert path.is_file()
    assert set(_tables(path)) >= SATCHEL_TABLES


def test_plain_path_string_and_pathlib_path(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    with satchel.open(str(path)) as store:
        store.set("k", "from str")
    with satchel.open(path) as store:
        assert store.get("k") == "from str"
        store.set("k", "from Path")
    with satchel.open(_url(path)) as store:
        assert store.get("k") == "from Path"


def _synchronous(store: satchel.Store) -> int:
    backend = store._shared.backend
    assert isinstance(backend, sqlite_backend.SQLiteBackend)
    with backend._guard as db:
        value: int = db.execute("PRAGMA synchronous").fetchone()[0]
    return value


def test_durability_option(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    with satchel.open(path) as store:
        assert _synchronous(store) == 1  # NORMAL
    with satchel.open(path, durability="full") as store:
        store.set("k", 1)
        assert store.get("k") == 1
        assert _synchronous(store) == 2  # FULL
    with satchel.open(f"{_url(path)}?durability=full") as store:
        assert store.get("k") == 1
        assert _synchronous(store) == 2
    with satchel.open(f"{_url(path)}?durability=normal&timeout=5") as store:
        assert _synchronous(store) == 1


@pytest.mark.parametrize("value", ["fast", "FULL", "", "off"])
def test_invalid_durability_is_invalid_input(tmp_path: Path, value: str) -> None:
    path = tmp_path / "bad.db"
    with pytest.raises(satchel.InvalidInput):
        satchel.open(path, durability=value)
    with pytest.raises(satchel.InvalidInput):
        satchel.open(f"{_url(path)}?durability={value}")


def test_invalid_timeout_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(satchel.InvalidInput):
        satchel.open(tmp_path / "t.db", timeout="soon")
    with pytest.raises(satchel.InvalidInput):
        satchel.open(f"{_url(tmp_path / 't.db')}?timeout=soon")


def test_unknown_option_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(satchel.InvalidInput) as info:
        satchel.open(tmp_path / "o.db", cache_size=10)
    assert "cache_size" in str(info.value)
    with pytest.raises(satchel.InvalidInput) as info:
        satchel.open(f"{_url(tmp_path / 'o.db')}?cache_size=10")
    assert "cache_size" in str(info.value)
    with pytest.raises(satchel.InvalidInput):
        satchel.open("memory://", durability="full")


@pytest.mark.parametrize(
    "url",
    [
        "foo://user:secret@host/db",
        "FOO://admin:secret@host:5432/db?x=1",
        "foo://:secret@host",
        "nosuch://user:secret@host",
    ],
)
def test_unknown_scheme_is_invalid_input_without_the_password(url: str) -> None:
    with pytest.raises(satchel.InvalidInput) as info:
        satchel.open(url)
    assert "secret" not in str(info.value)
    assert "secret" not in repr(info.value)
    assert all("secret" not in str(arg) for arg in info.value.args)


def test_malformed_url_with_a_password_is_invalid_input() -> None:
    """A URL urllib cannot parse is still a satchel error (and shows no password)."""
    with pytest.raises(satchel.InvalidInput) as info:
        satchel.open("foo://user:secret@[host/db")
    assert "secret" not in str(info.value)


# --- the default location --------------------------------------------------------------------


def test_default_location_is_the_user_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SATCHEL_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    with satchel.open() as store:
        store.set("k", "default")
    expected = tmp_path / "xdg" / "satchel" / "satchel.db"
    assert expected.is_file()
    assert set(_tables(expected)) >= SATCHEL_TABLES
    monkeypatch.setenv("SATCHEL_URL", "")  # empty counts as unset
    with satchel.open() as store:
        assert store.get("k") == "default"


def test_satchel_url_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SATCHEL_URL", "memory://")
    with satchel.open() as store:
        assert store.url == "memory://"
        store.set("k", 1)
    with satchel.open() as store:
        assert "k" not in store  # a fresh in-process store each time
    assert not (tmp_path / "xdg").exists()


def test_satchel_url_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SATCHEL_URL", _url(tmp_path / "env.db"))
    with satchel.open() as store:
        store.set("k", 1)
    assert (tmp_path / "env.db").is_file()


# --- WAL, index range scans, purge -----------------------------------------------------------


def test_journal_mode_is_wal(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    with satchel.open(path) as store:
        store.set("k", 1)
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            db.close()


def _plan(path: Path, sql: str, params: Sequence[object] = ()) -> str:
    db = sqlite3.connect(path)
    try:
        rows = db.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    finally:
        db.close()
    return "\n".join(row[-1] for row in rows)


@pytest.mark.parametrize("spec", sorted(sqlite_backend.SCAN), ids=str)
def test_scan_sql_uses_a_primary_key_range(tmp_path: Path, spec: tuple[bool, bool, bool]) -> None:
    path = tmp_path / "plan.db"
    with satchel.open(path) as store:
        store.set_many({f"user:{i}": i for i in range(50)})
    _, _, bounded = spec
    params: list[object] = ["default", "user:"] + (["user;"] if bounded else []) + [1e9, 500]
    plan = _plan(path, sqlite_backend.SCAN[spec], params)
    expected = "scope=? AND key>? AND key<?" if bounded else "scope=? AND key>?"
    assert f"SEARCH satchel_kv USING PRIMARY KEY ({expected})" in plan, plan
    assert "SCAN" not in plan, plan


def test_keys_with_a_prefix_runs_a_range_scan(tmp_path: Path) -> None:
    path = tmp_path / "trace.db"
    store = satchel.open(path)
    try:
        store.set_many({f"user:{i:03d}": i for i in range(20)})
        store.set_many({f"zzz:{i}": i for i in range(5)})
        backend = store._shared.backend
        assert isinstance(backend, sqlite_backend.SQLiteBackend)
        statements: list[str] = []
        with backend._guard as db:
            db.set_trace_callback(statements.append)
        try:
            found = list(store.keys("user:*"))
        finally:
            with backend._guard as db:
                db.set_trace_callback(None)
    finally:
        store.close()
    assert found == [f"user:{i:03d}" for i in range(20)]
    selects = [sql for sql in statements if sql.lstrip().upper().startswith("SELECT")]
    assert selects, statements
    for sql in selects:
        plan = _plan(path, sql)
        assert "USING PRIMARY KEY (scope=? AND key>? AND key<?)" in plan, (sql, plan)
        assert "SCAN" not in plan, (sql, plan)


def _row_count(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        count: int = db.execute("SELECT count(*) FROM satchel_kv").fetchone()[0]
    finally:
        db.close()
    return count


def test_expired_rows_are_purged_physically(tmp_path: Path) -> None:
    path = tmp_path / "purge.db"
    store = satchel.open(path)
    try:
        store.set("keep", "forever")  # the first write runs (and schedules) a purge
        store.set_many({f"tmp{i}": i for i in range(20)}, ttl=0.05)
        time.sleep(0.1)
        assert list(store.keys()) == ["keep"]  # invisible at once ...
        assert _row_count(path) == 21  # ... but still on disk until a purge
        store._shared.next_purge = 0
        store.set("trigger", 1)  # a write past next_purge sweeps expired rows
        assert _row_count(path) == 2
        store.set_many({f"more{i}": i for i in range(5)}, ttl=0.05)
        time.sleep(0.1)
        assert store._shared.backend.purge_expired(time.time(), 1000) == 5
        assert _row_count(path) == 2
        assert store.get("keep") == "forever"
    finally:
        store.close()


# -- large values are records; files of schema 2 kept them in tables --------------------


def _big(store: satchel.Store, key: str, size: int = 3 * CHUNK_SIZE - 1, **kw: Any) -> bytes:
    data = os.urandom(size)
    with store.open_blob(key, "wb", **kw) as f:
        f.write(data)
    return data


def _schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT value FROM satchel_meta WHERE name = 'schema_version'")
               .fetchone()[0])  # fmt: skip


def test_a_new_file_has_no_tables_or_triggers_for_large_values(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with satchel.open(path) as store:
        data = _big(store, "k")
        with store.open_blob("k") as f:
            assert f.read() == data
    assert _tables(path) == sorted(SATCHEL_TABLES)  # no blob table, index or trigger
    db = sqlite3.connect(path)
    try:
        assert _schema_version(db) == sqlite_backend.SCHEMA_VERSION == 3
        scope = kind_scope("default", "b")
        rows = db.execute("SELECT count(*) FROM satchel_kv WHERE scope = ?", (scope,))
        assert rows.fetchone()[0] == 4  # three chunks and the head
    finally:
        db.close()


# The large values of schema 2, as the release before 0.2 created them.
V2_BLOB_SCHEMA = (
    """CREATE TABLE satchel_blobs (
        blob_id TEXT PRIMARY KEY, scope TEXT, key TEXT, staged_at REAL NOT NULL)""",
    """CREATE UNIQUE INDEX satchel_blobs_owner ON satchel_blobs (scope, key)
        WHERE scope IS NOT NULL""",
    """CREATE TABLE satchel_chunks (
        blob_id TEXT NOT NULL, n INTEGER NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (blob_id, n))""",
    """CREATE TRIGGER satchel_kv_deleted AFTER DELETE ON satchel_kv BEGIN
        DELETE FROM satchel_blobs WHERE scope = old.scope AND key = old.key; END""",
    """CREATE TRIGGER satchel_kv_replaced AFTER UPDATE OF value ON satchel_kv
        BEGIN DELETE FROM satchel_blobs WHERE scope = old.scope AND key = old.key; END""",
    """CREATE TRIGGER satchel_blobs_deleted AFTER DELETE ON satchel_blobs
        BEGIN DELETE FROM satchel_chunks WHERE blob_id = old.blob_id; END""",
)


def _as_schema_2(path: Path, scope: str) -> dict[str, str]:
    """Move every large value of `scope` from records into the tables of schema 2, as
    committed blobs of their keys; return key -> blob id."""
    blob_scope = kind_scope(scope, "b")
    db = sqlite3.connect(path)
    try:
        for statement in V2_BLOB_SCHEMA:
            db.execute(statement)
        owners: dict[str, str] = {}
        heads = db.execute("SELECT key, value FROM satchel_kv WHERE scope = ? AND key LIKE 'h/%'",
                           (blob_scope,)).fetchall()  # fmt: skip
        for head, value in heads:
            blob_id = head[2:]
            owner = msgpack.unpackb(value)[0]
            owners[owner] = blob_id
            db.execute("INSERT INTO satchel_blobs VALUES (?, ?, ?, ?)",
                       (blob_id, scope, owner, time.time()))  # fmt: skip
            chunks = db.execute("SELECT key, value FROM satchel_kv WHERE scope = ? AND key LIKE ?",
                                (blob_scope, f"c/{blob_id}/%")).fetchall()  # fmt: skip
            for key, data in chunks:
                db.execute("INSERT INTO satchel_chunks VALUES (?, ?, ?)",
                           (blob_id, int(key.rsplit("/", 1)[1]), data))  # fmt: skip
        # A staged blob, never committed: no key owns it, so it is not carried over.
        db.execute("INSERT INTO satchel_blobs VALUES ('staged', NULL, NULL, 0)")
        db.execute("INSERT INTO satchel_chunks VALUES ('staged', 0, x'00')")
        db.execute("DELETE FROM satchel_kv WHERE scope = ?", (blob_scope,))
        db.execute("UPDATE satchel_meta SET value = '2' WHERE name = 'schema_version'")
        db.commit()
    finally:
        db.close()
    return owners


def test_large_values_of_a_schema_2_file_move_into_records(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    with satchel.open(path, compress="zlib") as store:  # chunks sealed under their names
        first, second = _big(store, "first"), _big(store, "second", CHUNK_SIZE + 1)
        store.set("small", {"a": 1})
    owners = _as_schema_2(path, "default")
    assert set(owners) == {"first", "second"}

    # Opened without satchel.open: the old storage is there, record writes ignore it.
    backend = sqlite_backend.SQLiteBackend(path)
    try:
        found = backend.legacy_blobs(time.time())
        assert found is not None
        assert sorted(found) == [("default", "first", owners["first"], 3),
                                 ("default", "second", owners["second"], 2)]  # fmt: skip
        assert backend.legacy_chunk(found[0], 2) is not None
        assert backend.legacy_chunk(found[0], 3) is None
        db = sqlite3.connect(path)
        try:
            assert _schema_version(db) == 3
            triggers = db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            assert [name for (name,) in triggers] == ["satchel_blobs_deleted"]
        finally:
            db.close()
    finally:
        backend.close()

    with satchel.open(path, compress="zlib") as store:
        with store.open_blob("first") as f:
            assert f.read() == first
        with store.open_blob("second") as f:
            assert f.read() == second
        assert store.get("small") == {"a": 1}
        backend = store._shared.backend
        assert backend.legacy_blobs(time.time()) is None
        assert backend.legacy_chunk(found[0], 0) is None  # dropped: nothing to read
        backend.drop_legacy_blobs()  # idempotent
    assert not {"satchel_blobs", "satchel_chunks", "satchel_blobs_owner"} & set(_tables(path))
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall() == []
        scope = kind_scope("default", "b")
        heads = db.execute("SELECT key FROM satchel_kv WHERE scope = ? AND key LIKE 'h/%'",
                           (scope,)).fetchall()  # fmt: skip
        assert sorted(heads) == sorted((head_key(b),) for b in owners.values())
        chunk = db.execute("SELECT 1 FROM satchel_kv WHERE scope = ? AND key = ?",
                           (scope, chunk_key(owners["first"], 2))).fetchone()  # fmt: skip
        assert chunk is not None
    finally:
        db.close()
    with satchel.open(path, compress="zlib") as store:  # and again: nothing left to move
        with store.open_blob("first") as f:
            assert f.read() == first
        store.delete("first")
        assert not store.exists("first")


# The event tables of schema 2, as releases before 0.2 made them.
OLD_EVENT_TABLES = (
    """CREATE TABLE satchel_events (scope TEXT NOT NULL, name TEXT NOT NULL,
        seq INTEGER NOT NULL, ts INTEGER NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (scope, name, seq)) WITHOUT ROWID""",
    """CREATE TABLE satchel_event_states (scope TEXT NOT NULL, name TEXT NOT NULL,
        which TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (scope, name, which))""",
)


def test_event_sequences_of_a_schema_2_file_move_into_records(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    with satchel.open(path) as store:
        store.set("k", 1)
    typed = get_codec("typed")
    rows = [(n, 1000 + n, typed.encode([f"i{n}", "set", n])) for n in range(1, 6)]
    db = sqlite3.connect(path)
    try:
        for statement in OLD_EVENT_TABLES:
            db.execute(statement)
        # "log": events 3..5 after a base at 2; "other" in scope "s": two events, no base
        db.executemany("INSERT INTO satchel_events VALUES ('default', 'log', ?, ?, ?)", rows[2:])
        db.executemany("INSERT INTO satchel_events VALUES ('s', 'other', ?, ?, ?)", rows[:2])
        everything = typed.encode({f"i{n}": n for n in range(1, 6)})
        states = [("default", "log", "head", 5, 1005, everything),
                  ("default", "log", "base", 2, 1002, typed.encode({"i1": 1, "i2": 2})),
                  ("s", "other", "head", 2, 1002, typed.encode({"i1": 1, "i2": 2}))]  # fmt: skip
        db.executemany("INSERT INTO satchel_event_states VALUES (?, ?, ?, ?, ?, ?)", states)
        db.commit()
    finally:
        db.close()

    backend = sqlite_backend.SQLiteBackend(path)
    try:
        assert backend.legacy_sequences() == [("default", "log"), ("s", "other")]
        head, base = backend.legacy_states("default", "log")
        assert head is not None and head[:2] == (5, 1005) and base is not None and base[0] == 2
        assert backend.legacy_events("default", "log", 3, 10) == rows[3:]
        assert backend.legacy_states("default", "nope") == (None, None)
    finally:
        backend.close()

    with satchel.open(path) as store:
        log = store.events("log")
        assert len(log) == 5 and log.current() == {f"i{n}": n for n in range(1, 6)}
        assert [e.seq for e in log.history()] == [3, 4, 5]
        assert log.at(1003) == {"i1": 1, "i2": 2, "i3": 3}
        with pytest.raises(satchel.InvalidInput):
            log.at(1001)  # compacted away
        assert store.scope("s").events("other").current() == {"i1": 1, "i2": 2}
        assert log.apply({"i6": 6})["i6"] == 6  # takes events on, after 5
        assert [e.seq for e in log.history()][-1] == 6
        backend = store._shared.backend
        assert backend.legacy_sequences() is None
        backend.drop_legacy_events()  # idempotent
        assert backend.legacy_events("default", "log", 0, 10) == []  # gone: nothing to read
    assert not {"satchel_events", "satchel_event_states"} & set(_tables(path))


def test_version_1_file_gains_the_new_tables(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with satchel.open(f"sqlite:///{path}") as store:
        store.set("kept", {"a": 1})
    db = sqlite3.connect(path)
    db.execute("DROP TABLE satchel_points")
    db.execute("UPDATE satchel_meta SET value = '1' WHERE name = 'schema_version'")
    db.commit()
    db.close()
    with satchel.open(f"sqlite:///{path}") as store:
        assert store.get("kept") == {"a": 1}
        data = _big(store, "k")
        store.series("s").add(1, "x")
        assert store.get("kept") == {"a": 1}
        with store.open_blob("k") as f:
            assert f.read() == data
    db = sqlite3.connect(path)
    try:
        assert _schema_version(db) == sqlite_backend.SCHEMA_VERSION
    finally:
        db.close()


def test_a_child_keeps_writing_after_the_parent_closes(tmp_path):
    """A Store opened before fork(): the child's writes after the parent closed its own
    connection must all land (a child connection that took no real locks would let the
    parent's close checkpoint and delete the log under it)."""
    path = tmp_path / "store.db"
    store = satchel.open(path)
    store.set("parent0", 0)
    ready, parent_closed = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            store.set("child1", 1)
            os.write(ready[1], b"1")
            os.read(parent_closed[0], 1)
            store.set("child2", 2)
            store.set("child3", 3)
            code = 0
        finally:
            os._exit(code)  # without closing: the log must still hold the writes
    os.read(ready[0], 1)
    store.close()
    os.write(parent_closed[1], b"1")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with satchel.open(path) as again:
        assert again.get_many(["parent0", "child1", "child2", "child3"]) == {
            "parent0": 0, "child1": 1, "child2": 2, "child3": 3}  # fmt: skip
