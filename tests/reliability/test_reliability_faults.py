"""Reliability: faults from outside the library (issue 11, "Faults").

- Redis and PostgreSQL restarted in the middle of a run: each test starts its OWN server
  on a spare loopback port (never the shared ones on 6379/5432), stops it (Redis:
  SIGTERM or SIGKILL, with AOF and ``appendfsync always``; PostgreSQL: ``pg_ctl stop``
  fast or immediate), restarts it on the same port, and stops it at the end (by PID;
  its temp dir removed). While the service is down every operation fails with
  BackendUnavailable within a bounded time, naming the engine and never the password;
  the SAME Store works again once it is back; no acknowledged write is lost; a write
  that failed was reported (raised), never silently dropped or silently applied twice.
- A hung server (SIGSTOP): Redis operations time out (socket_timeout) and a late reply
  is never taken for the answer to a later command; PostgreSQL operations fail after
  op_timeout (a watchdog shuts the socket down).
- Disk full: a 2 MiB tmpfs (when this process may mount one; else skipped) and, run
  everywhere, a file size limit (RLIMIT_FSIZE in a forked child: EFBIG), for the
  sqlite and files engines: a clear BackendError naming the path, batches and
  overwrites refused as a whole, earlier data intact and readable, and the same Store
  writes again once there is room.
- Damaged SQLite files (beyond the half-truncation in tests/test_sqlite_engine.py):
  truncation at page boundaries, a garbage, zeroed or retyped b-tree page in the middle
  are reported as a SatchelError, twice in a row, the file left byte for byte as it
  was; so is a damaged WAL, whose later commits SQLite's recovery would silently drop
  (see satchel/backends/sqlite_wal.py).

``pytest --long`` runs more rounds; ``pytest -s`` prints one "FAULTS" line per scenario
(rounds, writes acknowledged, lost, failed-and-reported, error types).
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from glob import glob
from pathlib import Path
from typing import Any

import pytest

import satchel
import support_redis
from conftest import require_service
from satchel._backends import sqlite_wal

PASSWORD = "s3cret-Pw-7f1"  # must never appear in an error message
DOWN_BOUND = 10.0  # seconds: the longest one operation may take while the service is down


def _check_unavailable(exc: BaseException, engine_fragment: str) -> None:
    assert isinstance(exc, satchel.BackendUnavailable), repr(exc)
    assert isinstance(exc, satchel.SatchelError)
    text = f"{exc} {exc!r} {exc.args!r}"
    assert PASSWORD not in text
    assert exc.engine is not None and engine_fragment in exc.engine
    assert engine_fragment in str(exc)


def _timed_failure(op: Callable[[], object], engine_fragment: str) -> BaseException:
    """Run `op`, which must fail with BackendUnavailable within DOWN_BOUND seconds."""
    start = time.monotonic()
    with pytest.raises(satchel.SatchelError) as info:
        op()
    elapsed = time.monotonic() - start
    assert elapsed < DOWN_BOUND, f"{op} took {elapsed:.1f}s to fail"
    _check_unavailable(info.value, engine_fragment)
    return info.value


def _eventually(op: Callable[[], Any], seconds: float = 30.0) -> Any:
    """`op()`, retried on BackendUnavailable until it works (the service is starting)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return op()
        except satchel.BackendUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class _Ledger:
    """What a writer was told: acknowledged writes (must survive), failed ones (were
    reported; may or may not have been applied when the failure came mid-command)."""

    def __init__(self) -> None:
        self.acked: dict[str, Any] = {}
        self.failed: dict[str, Any] = {}
        self.errors: list[BaseException] = []

    def write(self, store: satchel.Store, key: str, value: int) -> bool:
        try:
            store.set(key, value)
        except satchel.SatchelError as exc:
            self.failed[key] = value
            self.errors.append(exc)
            return False
        self.acked[key] = value
        return True

    def summary(self, label: str, rounds: int) -> None:
        """One line for the issue's table (shown with ``pytest -s``)."""
        kinds = sorted({type(exc).__name__ for exc in self.errors})
        print(
            f"\nFAULTS {label}: rounds={rounds} acknowledged={len(self.acked)} lost=0 "
            f"failed-and-reported={len(self.failed)} errors={','.join(kinds) or '-'}"
        )

    def verify(self, store: satchel.Store) -> None:
        found = store.get_many(list(self.acked) + list(self.failed))
        lost = {k: v for k, v in self.acked.items() if found.get(k) != v}
        assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {list(lost.items())[:5]}"
        for key, value in self.failed.items():  # if applied after all, then exactly
            assert found.get(key, value) == value


# --- Redis ------------------------------------------------------------------------------------


class _PrivateRedis:
    """One redis-server of our own (support_redis.LocalServers), durable (AOF, fsync always),
    with a password; `bounce` stops it (SIGTERM, wait) and starts it again on the same port
    and dir."""

    def __init__(self) -> None:
        args = ["--appendonly", "yes", "--appendfsync", "always", "--requirepass", PASSWORD]
        self.servers = support_redis.LocalServers(1, args=args)
        try:
            (self.port,) = self.servers.start()
        except RuntimeError as exc:
            require_service("redis-server", str(exc))
        self.url = f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def stop_server(self, how: signal.Signals = signal.SIGTERM) -> None:
        proc = self.servers.procs[0]
        proc.send_signal(how)
        proc.wait(timeout=20)

    def pause(self, how: signal.Signals) -> None:
        """SIGSTOP (the server hangs: connections accepted, no replies) or SIGCONT."""
        self.servers.procs[0].send_signal(how)

    def start_server(self) -> None:
        old = self.servers.procs[0]
        assert old.poll() is not None
        self.servers.procs[0] = subprocess.Popen(
            old.args, cwd=self.servers.dir, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while not support_redis._replies(self.port):
            assert self.servers.procs[0].poll() is None, "redis-server did not restart"
            assert time.monotonic() < deadline, "redis-server did not come back in time"
            time.sleep(0.02)

    def close(self) -> None:
        self.servers.stop()


@pytest.fixture
def private_redis() -> Iterator[_PrivateRedis]:
    server = _PrivateRedis()
    try:
        yield server
    finally:
        server.close()


def _redis_store(server: _PrivateRedis) -> satchel.Store:
    return satchel.open(server.url, socket_timeout=2, socket_connect_timeout=2)


def test_redis_restart_fails_clearly_then_same_store_recovers(
    private_redis: _PrivateRedis, long_run: bool
) -> None:
    """Stop and restart between operations: every failure is BackendUnavailable within
    the bound, names the engine and not the password; no acknowledged write is lost; a
    write refused while down was not applied; the same Store works after each restart."""
    fragment = f"127.0.0.1:{private_redis.port}"
    ledger = _Ledger()
    n = 0
    with _redis_store(private_redis) as store:
        assert PASSWORD not in str(store)
        rounds = 5 if long_run else 2
        for round_ in range(rounds):
            for _ in range(200):
                assert ledger.write(store, f"k{n:06d}", n)
                n += 1
            store.set_many({f"batch{round_}-{i}": i for i in range(100)})
            ledger.acked.update({f"batch{round_}-{i}": i for i in range(100)})
            private_redis.stop_server()
            ledger.errors.append(_timed_failure(lambda: store.get("k000000"), fragment))
            ledger.errors.append(
                _timed_failure(lambda: store.get_many(["k000000", "k000001"]), fragment)
            )
            ledger.errors.append(_timed_failure(lambda: list(store.keys()), fragment))
            ledger.errors.append(_timed_failure(lambda: store.incr("counter"), fragment))
            ledger.errors.append(
                _timed_failure(lambda: store.set_many({"down-a": 1, "down-b": 2}), fragment)
            )
            down_key = f"down{round_}"
            error = _timed_failure(functools.partial(store.set, down_key, -1), fragment)
            ledger.errors.append(error)
            ledger.failed[down_key] = -1  # reported; must not have been applied
            assert "connect" in str(error).lower()  # refused before anything was sent
            private_redis.start_server()
            # the same Store object, no reopen: reads and writes (scripts reloaded) work
            assert _eventually(lambda: store.get("k000000")) == 0
            assert store.get(down_key, None) is None  # the failed write was not applied
            assert store.get("down-a", None) is None
            assert store.incr("counter") == round_ + 1
            ledger.acked["counter"] = round_ + 1
            for _ in range(50):
                assert ledger.write(store, f"k{n:06d}", n)
                n += 1
            ledger.verify(store)
            assert len(store) == len(ledger.acked)
    with _redis_store(private_redis) as again:
        ledger.verify(again)
        ledger.summary("redis restart between operations (SIGTERM)", rounds)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_redis_restart_under_a_running_writer(
    private_redis: _PrivateRedis, long_run: bool, how: signal.Signals
) -> None:
    """A writer keeps writing while the server is stopped (SIGTERM, or SIGKILL: a crash;
    AOF with fsync always keeps every acknowledged write) and started under it: every
    acknowledged write survives, every failure is a BackendUnavailable, and the writer
    resumes on the same Store."""
    fragment = f"127.0.0.1:{private_redis.port}"
    ledger = _Ledger()
    stop = threading.Event()
    resumed = threading.Event()
    slow: list[float] = []

    def writer(store: satchel.Store) -> None:
        n = 0
        while not stop.is_set():
            start = time.monotonic()
            ok = ledger.write(store, f"w{n:07d}", n)
            if not ok:
                slow.append(time.monotonic() - start)
                time.sleep(0.01)
            elif ledger.failed:
                resumed.set()
            n += 1

    rounds = 4 if long_run else 2
    with _redis_store(private_redis) as store:
        thread = threading.Thread(target=writer, args=(store,), daemon=True)
        thread.start()
        try:
            for _ in range(rounds):
                time.sleep(random.uniform(0.2, 0.5))
                private_redis.stop_server(how)
                time.sleep(0.5)
                private_redis.start_server()
                resumed.clear()
                assert resumed.wait(20), "the writer did not resume after the restart"
            time.sleep(0.2)
        finally:
            stop.set()
            thread.join(30)
        assert not thread.is_alive()
        assert ledger.failed, "no write failed: the server was never seen down"
        for exc in ledger.errors:
            _check_unavailable(exc, fragment)
        assert max(slow) < DOWN_BOUND
        assert len(ledger.acked) > 100
        ledger.verify(store)
    with _redis_store(private_redis) as again:
        ledger.verify(again)
        ledger.summary(f"redis restart under a writer ({how.name})", rounds)


def test_redis_hung_server_times_out_and_a_late_reply_is_never_misread(
    private_redis: _PrivateRedis,
) -> None:
    """A server that hangs (SIGSTOP: the kernel still accepts, nobody replies) makes
    operations fail within socket_timeout, a write saying it may or may not have been
    applied; once it resumes, the reply that came too late is not taken for the answer
    to a later command, and the same Store works."""
    fragment = f"127.0.0.1:{private_redis.port}"
    with _redis_store(private_redis) as store:
        store.set_many({"a": "A", "b": "B"})
        private_redis.pause(signal.SIGSTOP)
        try:
            error = _timed_failure(lambda: store.set("hung", "H"), fragment)
            assert "may or may not" in str(error)
            _timed_failure(lambda: store.get("a"), fragment)
        finally:
            private_redis.pause(signal.SIGCONT)
        for _ in range(20):  # each on a connection that might hold a stale reply
            assert store.get("b") == "B"
            assert store.get("a") == "A"
        assert store.get("hung", None) in (None, "H")  # it may have been applied late
        store.set("c", "C")
        assert store.get_many(["a", "b", "c"]) == {"a": "A", "b": "B", "c": "C"}


# --- PostgreSQL ------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class _PrivatePostgres:
    """A throwaway PostgreSQL cluster (initdb, pg_ctl) on a free loopback port, run as
    the `postgres` OS user, trust auth, in a temp dir removed by `close`."""

    def __init__(self) -> None:
        bin_dir = _pg_bin()
        if bin_dir is None:
            require_service("PostgreSQL binaries", "no /usr/lib/postgresql/*/bin/initdb")
        self.bin = bin_dir
        self.root = tempfile.mkdtemp(prefix="satchel-pg-")
        self.data = os.path.join(self.root, "data")
        self.sockets = os.path.join(self.root, "sock")
        self.port = support_redis.free_port()
        self.started = False
        try:
            self._as_user = self._runner()
            os.mkdir(self.sockets)
            self._own(self.root)
            self._own(self.sockets)
            self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
        except (OSError, subprocess.SubprocessError, KeyError) as exc:
            self.close()
            require_service("a private PostgreSQL cluster", f"cannot create one: {exc}")
        self.url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def _runner(self) -> list[str]:
        if os.geteuid() != 0:  # initdb runs as ourselves then
            return []
        pwd.getpwnam("postgres")  # KeyError: no such user
        runuser = shutil.which("runuser")
        return [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-c"]

    def _own(self, path: str) -> None:
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(path, user.pw_uid, user.pw_gid)

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin / tool), *args]
        if self._as_user and self._as_user[0] == "su":
            command = [*self._as_user, " ".join(map(repr, command))]
        else:
            command = [*self._as_user, *command]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout, cwd="/")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.sockets}"
        log = os.path.join(self.root, "log")
        self._run("pg_ctl", "start", "-w", "-t", "30", "-D", self.data, "-l", log, "-o", options)
        self.started = True

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "-w", "-t", "30", "-m", mode, "-D", self.data)
        self.started = False

    def close(self) -> None:
        if self.started:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[_PrivatePostgres]:
    server = _PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()


def _pg_store(server: _PrivatePostgres) -> satchel.Store:
    return satchel.open(server.url, connect_timeout=2, timeout=1, pool_max=4)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_fails_clearly_then_same_store_recovers(
    private_postgres: _PrivatePostgres, long_run: bool, mode: str
) -> None:
    """Stop (`pg_ctl stop -m fast`, or `immediate`: a crash) and restart between
    operations: BackendUnavailable within the bound, naming the engine and not the
    password; afterwards the same Store reads again at once (a read on a broken
    connection is retried); a write on a broken connection is reported, not retried."""
    fragment = f"127.0.0.1:{private_postgres.port}"
    ledger = _Ledger()
    n = 0
    with _pg_store(private_postgres) as store:
        assert PASSWORD not in str(store)
        rounds = 3 if long_run else 1
        for round_ in range(rounds):
            for _ in range(100):
                assert ledger.write(store, f"k{n:06d}", n)
                n += 1
            store.set_many({f"batch{round_}-{i}": i for i in range(100)})
            ledger.acked.update({f"batch{round_}-{i}": i for i in range(100)})
            private_postgres.stop(mode)
            ledger.errors.append(_timed_failure(lambda: store.get("k000000"), fragment))
            ledger.errors.append(_timed_failure(lambda: store.incr("counter"), fragment))
            ledger.errors.append(_timed_failure(lambda: store.set_many({"down-a": 1}), fragment))
            down_key = f"down{round_}"
            ledger.errors.append(
                _timed_failure(functools.partial(store.set, down_key, -1), fragment)
            )
            ledger.failed[down_key] = -1  # reported; must not have been applied
            private_postgres.start()
            # the same Store, no reopen
            assert _eventually(lambda: store.get("k000000"), 60) == 0
            assert store.get(down_key, None) is None  # refused while down: not applied
            assert store.get("down-a", None) is None
            assert store.incr("counter") == round_ + 1
            ledger.acked["counter"] = round_ + 1
            for _ in range(50):
                assert ledger.write(store, f"k{n:06d}", n)
                n += 1
            ledger.verify(store)
            assert len(store) == len(ledger.acked)
    with _pg_store(private_postgres) as again:
        ledger.verify(again)
        ledger.summary(f"postgres restart between operations ({mode})", rounds)


def test_postgres_write_on_a_broken_connection_is_reported_not_retried(
    private_postgres: _PrivatePostgres,
) -> None:
    """After a restart the Store's idle connection is dead. A write that lands on it
    fails with BackendUnavailable saying it may or may not have been applied (it is
    never silently re-run), and the next write works."""
    fragment = f"127.0.0.1:{private_postgres.port}"
    with _pg_store(private_postgres) as store:
        store.set("a", 1)
        store.set("b", 1)
        private_postgres.stop("fast")
        private_postgres.start()
        try:
            store.set("b", 2)  # the pooled connection is dead; psycopg only sees it now
            failed = False
        except satchel.SatchelError as exc:
            failed = True
            _check_unavailable(exc, fragment)
            assert "may or may not" in str(exc)
        info = _eventually(lambda: store.info("b"), 30)
        # a write that failed on a connection killed before it was sent did not happen,
        # and was not re-run behind the caller's back
        assert (info.version, store.get("b")) == ((1, 1) if failed else (2, 2))
        store.set("b", 3)
        assert store.info("b").version == info.version + 1


def test_postgres_first_read_after_a_restart_is_retried_on_a_fresh_connection(
    private_postgres: _PrivatePostgres,
) -> None:
    """The module promises: a read that fails with a broken connection is retried once
    on a fresh one. With an idle connection in the pool besides the one in use (pool_min
    2), the first read after a restart must still succeed."""
    store = satchel.open(private_postgres.url, connect_timeout=2, timeout=3, pool_min=2)
    with store:
        store.set("a", 1)
        time.sleep(1.0)  # the pool opens its second connection in the background
        assert store.get("a") == 1
        private_postgres.stop("fast")
        private_postgres.start()
        assert store.get("a") == 1


def test_postgres_restart_under_a_running_writer(
    private_postgres: _PrivatePostgres, long_run: bool
) -> None:
    """A writer keeps writing while the server is stopped (immediate: a crash) and
    started under it: every acknowledged write survives, every failure is a
    BackendUnavailable, the writer resumes on the same Store."""
    fragment = f"127.0.0.1:{private_postgres.port}"
    ledger = _Ledger()
    stop = threading.Event()
    resumed = threading.Event()

    def writer(store: satchel.Store) -> None:
        n = 0
        while not stop.is_set():
            if not ledger.write(store, f"w{n:07d}", n):
                time.sleep(0.01)
            elif ledger.failed:
                resumed.set()
            n += 1

    rounds = 3 if long_run else 1
    with _pg_store(private_postgres) as store:
        thread = threading.Thread(target=writer, args=(store,), daemon=True)
        thread.start()
        try:
            for _ in range(rounds):
                time.sleep(random.uniform(0.2, 0.5))
                private_postgres.stop("immediate")
                time.sleep(0.3)
                private_postgres.start()
                resumed.clear()
                assert resumed.wait(20), "the writer did not resume after the restart"
            time.sleep(0.2)
        finally:
            stop.set()
            thread.join(30)
        assert not thread.is_alive()
        assert ledger.failed
        for exc in ledger.errors:
            _check_unavailable(exc, fragment)
        assert len(ledger.acked) > 50
        ledger.verify(store)
    with _pg_store(private_postgres) as again:
        ledger.verify(again)
        ledger.summary("postgres restart under a writer (immediate)", rounds)


def _cluster_pids(server: _PrivatePostgres) -> list[int]:
    """The postmaster of our private cluster and its children."""
    postmaster = int(Path(server.data, "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for stat in glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == postmaster:
                pids.append(int(stat.split("/")[2]))
    return pids


def test_postgres_hung_server_fails_within_op_timeout(
    private_postgres: _PrivatePostgres,
) -> None:
    """A server that hangs (every process of the cluster SIGSTOPped) makes a read and a
    write fail with BackendUnavailable within op_timeout (plus the watchdog's tick), as
    Redis does with socket_timeout; the write says it may or may not have landed; once
    the server resumes, the same Store works and the write is there or reported."""
    store = satchel.open(private_postgres.url, connect_timeout=2, timeout=1, op_timeout=2)
    outcome: dict[str, object] = {}
    took: dict[str, float] = {}

    def attempt(name: str, op: Callable[[], object]) -> None:
        start = time.monotonic()
        outcome[name] = _outcome(op)
        took[name] = time.monotonic() - start

    with store:
        store.set("a", 1)
        pids = _cluster_pids(private_postgres)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            threads = [
                threading.Thread(target=attempt, args=("get", lambda: store.get("a"))),
                threading.Thread(target=attempt, args=("set", lambda: store.set("b", 2))),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(DOWN_BOUND)
            finished = not any(thread.is_alive() for thread in threads)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        for thread in threads:
            thread.join(30)
        assert finished, f"an operation blocked for more than {DOWN_BOUND}s on a hung server"
        for name in ("get", "set"):
            _check_unavailable(outcome[name], f"127.0.0.1:{private_postgres.port}")
            assert "op_timeout" in str(outcome[name])
            assert 2 <= took[name] < 4, took
        assert "may or may not have been applied" in str(outcome["set"])
        assert _eventually(lambda: store.get("a")) == 1
        assert store.get("b") in (None, 2)  # reported as unknown: either is honest
        store.set("c", 3)
        assert store.get_many(["a", "c"]) == {"a": 1, "c": 3}


def _outcome(op: Callable[[], object]) -> object:
    try:
        return op()
    except Exception as exc:
        return exc


# --- disk full -------------------------------------------------------------------------------

LIMIT = 512 * 1024  # bytes per file, for the RLIMIT_FSIZE simulation


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 2 MiB tmpfs of our own (unmounted and removed afterwards)."""
    mount = shutil.which("mount")
    root = Path(tempfile.mkdtemp(prefix="satchel-full-"))
    done = None
    if mount is not None:
        done = subprocess.run(
            [mount, "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(root)],
            capture_output=True,
            timeout=30,
        )
    if done is None or done.returncode != 0:
        root.rmdir()
        reason = done.stderr.decode(errors="replace").strip() if done else "no mount"
        pytest.skip(f"cannot mount a small tmpfs here (the rlimit variant still runs): {reason}")
    try:
        yield root
    finally:
        subprocess.run(["umount", str(root)], check=True, capture_output=True, timeout=30)
        root.rmdir()


def _fill(store: satchel.Store, ledger: _Ledger, rng: random.Random, size: int) -> BaseException:
    """Write values of `size` bytes until the disk is full; return the error."""
    for n in range(1000):
        key, value = f"fill{len(ledger.acked)}-{n:04d}", rng.randbytes(size)
        try:
            store.set(key, value)
        except satchel.SatchelError as exc:
            return exc
        ledger.acked[key] = value
    raise AssertionError("the disk never filled up")


def _disk_full_rounds(
    url: str,
    where: str,
    rounds: int,
    make_room: Callable[[int], None],
    fill_size: int,
    label: str,
) -> None:
    """Fill the disk `rounds` times; after each: a clear BackendError naming `where`, a
    batch and an overwrite refused as a whole, everything acknowledged readable, and the
    same Store writes again after `make_room(round)`."""
    rng = random.Random(11)
    ledger = _Ledger()
    with satchel.open(url) as store:
        early = {f"early{i:03d}": rng.randbytes(200) for i in range(200)}
        store.set_many(early)
        ledger.acked.update(early)
        store.set("overwritten", b"old value")
        ledger.acked["overwritten"] = b"old value"
        for round_ in range(rounds):
            error = _fill(store, ledger, rng, fill_size)
            ledger.errors.append(error)
            assert isinstance(error, satchel.BackendError), repr(error)
            assert where in str(error), str(error)
            batch = {f"batch{round_}-{i}": rng.randbytes(1024) for i in range(7)}
            batch[f"batch{round_}-huge"] = rng.randbytes(max(fill_size, 1024 * 1024))
            with pytest.raises(satchel.BackendError):
                store.set_many(batch)
            with pytest.raises(satchel.BackendError):
                store.set("overwritten", rng.randbytes(max(fill_size, 1024 * 1024)))
            assert store.get_many(list(batch)) == {}  # all or nothing
            ledger.verify(store)  # readable while full; "overwritten" keeps its old value
            make_room(round_)
            store.set(f"after{round_}", b"fits again")  # the same Store writes again
            ledger.acked[f"after{round_}"] = b"fits again"
            ledger.verify(store)
    with satchel.open(url) as again:
        ledger.verify(again)
        ledger.summary(label, rounds)
        assert len(again) == len(ledger.acked)


def _urls(root: Path, engine: str) -> tuple[str, str]:
    if engine == "sqlite":
        return f"sqlite:///{root}/full.db", str(root / "full.db")
    return f"file://{root}/kv", str(root / "kv")


@pytest.mark.parametrize("engine", ["sqlite", "files"])
def test_disk_full_on_a_small_tmpfs(small_disk: Path, engine: str, long_run: bool) -> None:
    rounds = 4 if long_run else 2
    for n in range(rounds):  # freed one per round: deleting from a full SQLite file fails
        (small_disk / f"ballast{n}").write_bytes(bytes(256 * 1024))

    def make_room(round_: int) -> None:
        (small_disk / f"ballast{round_}").unlink()

    url, where = _urls(small_disk, engine)
    _disk_full_rounds(url, where, rounds, make_room, 32 * 1024, f"{engine} full tmpfs")


def _in_child_with_file_size_limit(scenario: Callable[[], None]) -> None:
    """Run `scenario` in a forked child whose files cannot grow past LIMIT (RLIMIT_FSIZE,
    SIGXFSZ ignored: a write past it fails with EFBIG); fail if it fails."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, hard))
            scenario()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the scenario failed in the child (see stderr)"


@pytest.mark.parametrize("engine", ["sqlite", "files"])
def test_disk_full_simulated_with_a_file_size_limit(
    tmp_path: Path, engine: str, long_run: bool
) -> None:
    """Where no small file system can be mounted, a file size limit makes writes fail
    (EFBIG) the same way; run everywhere, as a second kind of write failure."""
    rounds = 3 if long_run else 1

    def make_room(round_: int) -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT * (round_ + 2) * 4, hard))

    url, where = _urls(tmp_path, engine)
    # one file holds the whole SQLite store; the files engine fills only with big values
    fill_size = 32 * 1024 if engine == "sqlite" else LIMIT * 16  # over every limit set
    _in_child_with_file_size_limit(
        lambda: _disk_full_rounds(
            url, where, rounds, make_room, fill_size, f"{engine} RLIMIT_FSIZE"
        )
    )


# --- damaged SQLite files ----------------------------------------------------------------------

PAGE = 4096


def _sqlite_store(path: Path, count: int = 2000) -> dict[str, bytes]:
    rng = random.Random(7)
    data = {f"key{i:05d}": rng.randbytes(300) for i in range(count)}
    with satchel.open(path) as store:
        store.set_many(data)
    assert not Path(f"{path}-wal").exists()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA page_size").fetchone()[0] == PAGE
    finally:
        db.close()
    return data


def _read_all(path: Path, data: dict[str, bytes]) -> None:
    """Open and read everything: must raise, since the file is damaged."""
    with satchel.open(path) as store:
        assert len(store) == len(data)
        assert dict(store.items()) == data
        assert store.get_many(list(data)) == data


def _assert_reported(path: Path, data: dict[str, bytes]) -> None:
    for _ in range(2):  # and a second open does not find it "repaired" either
        with pytest.raises(satchel.SatchelError) as info:
            _read_all(path, data)
        assert not isinstance(info.value, sqlite3.Error)
        assert str(path) in str(info.value)
        assert isinstance(info.value, satchel.BackendError | satchel.CorruptData)


def _btree_pages(path: Path) -> list[int]:
    """1-based numbers of b-tree pages (leaf or interior), page 1 aside."""
    raw = path.read_bytes()
    return [
        number
        for number in range(2, len(raw) // PAGE + 1)
        if raw[(number - 1) * PAGE] in (0x02, 0x05, 0x0A, 0x0D)
    ]


@pytest.mark.parametrize("cut", ["1-page", "2-pages", "quarter", "last-page", "mid-header"])
def test_sqlite_truncated_at_various_points_is_reported(tmp_path: Path, cut: str) -> None:
    path = tmp_path / "store.db"
    data = _sqlite_store(path)
    size = path.stat().st_size
    pages = size // PAGE
    new_size = {
        "1-page": PAGE,
        "2-pages": 2 * PAGE,
        "quarter": pages // 4 * PAGE,
        "last-page": size - PAGE,
        "mid-header": 50,
    }[cut]
    with path.open("r+b") as file:
        file.truncate(new_size)
    before = path.read_bytes()
    _assert_reported(path, data)
    assert path.read_bytes() == before  # nothing was rewritten, nothing thrown away


@pytest.mark.parametrize("damage", ["garbage-page", "zeroed-page", "flipped-header-byte"])
def test_sqlite_damaged_page_in_the_middle_is_reported(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "store.db"
    data = _sqlite_store(path)
    pages = _btree_pages(path)
    assert len(pages) > 50
    number = pages[len(pages) // 2]
    offset = (number - 1) * PAGE
    with path.open("r+b") as file:
        file.seek(offset)
        page = bytearray(file.read(PAGE))
        if damage == "garbage-page":
            page[:] = random.Random(3).randbytes(PAGE)
        elif damage == "zeroed-page":
            page[:] = bytes(PAGE)
        else:
            page[0] ^= 0xFF  # the b-tree page type: no longer a valid page
        file.seek(offset)
        file.write(page)
    before = path.read_bytes()
    _assert_reported(path, data)
    assert path.read_bytes() == before


def _killed_writer(path: Path, durability: str, count: int = 50) -> Path:
    """A child writes k00.. and dies by SIGKILL, its commits still in the WAL."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            store = satchel.open(path, durability=durability)
            for i in range(count):
                store.set(f"k{i:02d}", i)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 100 * 1024  # the commits are all in the WAL
    return wal


def _flip(file: Path, offset: int) -> None:
    with file.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


WAL_FRAME = 24 + PAGE


@pytest.mark.parametrize("durability", ["normal", "full"])
@pytest.mark.parametrize(
    "where",
    ["page-data", "frame-checksum", "first-frame", "frame-salt", "log-header",
     "zeroed-log-header", "zeroed-first-block"],
)  # fmt: skip
def test_sqlite_damaged_wal_is_reported_not_silently_rolled_back(
    tmp_path: Path, durability: str, where: str
) -> None:
    """One byte of the WAL flipped after a writer died with its commits in it. SQLite's
    recovery would stop at that frame and quietly drop every later commit; opening must
    report it instead, every time, changing nothing; the way out the error names works
    and keeps exactly the commits before the damage."""
    path = tmp_path / "store.db"
    wal = _killed_writer(path, durability)
    frames = (wal.stat().st_size - 32) // WAL_FRAME
    middle = 32 + frames // 2 * WAL_FRAME
    if where.startswith("zeroed"):  # a block that never reached the disk
        with wal.open("r+b") as handle:
            handle.write(bytes(32 if where == "zeroed-log-header" else 4096))
    else:
        _flip(wal, {
            "page-data": middle + 24 + 100,
            "frame-checksum": middle + 17,
            "first-frame": 32 + 24 + 5,
            "frame-salt": middle + 9,
            "log-header": 25,  # the header's own checksum
        }[where])  # fmt: skip
    before = wal.read_bytes()
    # The log alone proves the loss, walked from its start too.
    assert sqlite_wal.lost_commits(wal, 0, PAGE) is not None
    for _ in range(2):
        with pytest.raises(satchel.CorruptData) as caught:
            satchel.open(path, durability=durability)
        message = str(caught.value)
        assert str(path) in message and "store.db-wal" in message, message
        assert "damaged" in message
    assert wal.read_bytes() == before  # the evidence is kept, byte for byte
    assert f"move {wal} and store.db-shm aside" in message  # the documented way out
    wal.rename(tmp_path / "aside-wal")
    Path(f"{path}-shm").rename(tmp_path / "aside-shm")
    with satchel.open(path) as store:
        found = store.get_many([f"k{i:02d}" for i in range(50)])
    assert found == {f"k{i:02d}": i for i in range(len(found))}  # a prefix, whole
    assert len(found) < 50


LOCKED_PROBE = """
import sqlite3, sys
try:
    sqlite3.connect(sys.argv[1], timeout=0.2, isolation_level=None).execute("BEGIN IMMEDIATE")
    print("got the write lock")
except sqlite3.OperationalError as exc:
    print("locked" if "locked" in str(exc) else exc)
"""


def test_opening_leaves_this_process_own_sqlite_locks_alone(tmp_path: Path) -> None:
    """This process holds the write lock through its own sqlite3 connection and opens the
    same file with satchel (after a crash left a WAL, so the check runs its probe): another
    process must still find the file locked. (Closing any descriptor of a locked file
    drops all of this process's POSIX locks on it: the probe must not open one.)"""
    path = tmp_path / "store.db"
    _killed_writer(path, "normal")
    own = sqlite3.connect(path, isolation_level=None)
    own.execute("BEGIN IMMEDIATE")
    own.execute("INSERT INTO satchel_meta VALUES ('mine', '1')")
    try:
        with satchel.open(path, timeout=0.1) as store:
            assert store.get("k00") == 0
            other = subprocess.run(  # a fresh process: SQLite state must not be forked
                [sys.executable, "-c", LOCKED_PROBE, str(path)],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert other.stdout.strip() == "locked", other
    finally:
        own.execute("COMMIT")
        own.close()


def test_the_wal_probe_keeps_no_descriptor_once_the_store_is_closed(tmp_path: Path) -> None:
    """The probe may keep a descriptor of the -shm while a lock is held on it (closing
    it would drop those locks), never after: else the file system stays busy."""
    path = tmp_path / "store.db"
    _killed_writer(path, "normal")

    def ours() -> list[str]:
        return [
            target for fd in os.listdir("/proc/self/fd")
            if (target := os.path.realpath(f"/proc/self/fd/{fd}")).startswith(str(tmp_path))
        ]  # fmt: skip

    first = satchel.open(path)
    second = satchel.open(path)  # probes while `first` holds the file
    assert f"{path}-shm" in sqlite_wal._PROBES  # kept: `first` holds a lock on it
    second.close()
    first.close()
    assert ours() == []


def _chaos_writer(path: Path, n: int, seed: int) -> None:
    """Writes until killed: single values and batches, of 1 to 3 pages."""
    rng = random.Random(seed)
    store = satchel.open(path, durability=rng.choice(["normal", "full"]))
    i = 0
    while True:
        i += 1
        if i % 7 == 0:
            store.set_many({f"w{n}-b{j}": "y" * rng.randint(10, 9000) for j in range(30)})
        else:
            store.set(f"w{n}-{i % 500}", "x" * rng.randint(10, 5000))


def test_sqlite_wal_check_stays_quiet_when_writers_die_together_or_one_by_one(
    tmp_path: Path, long_run: bool
) -> None:
    """Four processes write one file and are SIGKILLed, one by one (the others keep the
    WAL index alive, so commits can be left unpublished and overwritten) or all at once;
    every open after that must succeed: a damaged-WAL report here would be a false one."""
    path = tmp_path / "chaos.db"
    satchel.open(path).close()
    rng = random.Random(11)
    rounds = 60 if long_run else 8
    for round_ in range(rounds):
        pids = []
        for n in range(4):
            pid = os.fork()
            if pid == 0:  # the child: never returns into pytest
                try:
                    _chaos_writer(path, n, round_ * 10 + n)
                finally:
                    os._exit(1)
            pids.append(pid)
        together = round_ % 2 == 1
        time.sleep(rng.uniform(0.05, 0.4))
        for pid in pids:
            if not together:
                time.sleep(rng.uniform(0.01, 0.2))
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            os.waitpid(pid, 0)
        with satchel.open(path) as store:  # never CorruptData
            assert store.get("w0-1") is None or store.get("w0-1").startswith("x")
    print(f"\nFAULTS sqlite WAL check, 4 writers killed: rounds={rounds} false reports=0")


def _commit_frames(wal: Path) -> list[int]:
    """1-based numbers of the commit frames in `wal`."""
    raw = wal.read_bytes()
    frames = (len(raw) - 32) // WAL_FRAME
    return [n for n in range(1, frames + 1)
            if raw[32 + (n - 1) * WAL_FRAME + 4: 32 + (n - 1) * WAL_FRAME + 8] != bytes(4)]


def test_sqlite_wal_torn_inside_its_last_transaction_opens_without_it(tmp_path: Path) -> None:
    """A power cut in the middle of the last commit can leave a hole among that
    commit's own frames (the disk wrote them out of order): that commit never returned,
    so SQLite dropping it is right, and the store opens, with every commit before it."""
    path = tmp_path / "store.db"
    wal = _killed_writer(path, "full")
    before_last = _commit_frames(wal)[-2]
    _flip(wal, 32 + before_last * WAL_FRAME + 24 + 100)  # the last transaction's 1st frame
    with satchel.open(path) as store:
        found = store.get_many([f"k{i:02d}" for i in range(50)])
    assert found == {f"k{i:02d}": i for i in range(49)}


def test_sqlite_damaged_wal_after_a_restart_is_logged_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """If the machine booted after the log was written, a power loss may have reordered
    writes that were never synced (allowed with durability "normal"): the damage is
    logged, naming the file, and the store opens as SQLite recovered it."""
    path = tmp_path / "store.db"
    wal = _killed_writer(path, "normal")
    _flip(wal, 32 + (wal.stat().st_size - 32) // WAL_FRAME // 2 * WAL_FRAME + 124)
    monkeypatch.setattr(sqlite_wal, "rebooted_since", lambda file: file == wal)
    with caplog.at_level("WARNING", "satchel"), satchel.open(path) as store:
        found = store.get_many([f"k{i:02d}" for i in range(50)])
    assert 0 < len(found) < 50 and "store.db-wal is damaged" in caplog.text
    assert str(path) in caplog.text and "restarted" in caplog.text


def test_sqlite_damaged_wal_is_reported_through_a_symlink(tmp_path: Path) -> None:
    """SQLite keeps -wal and -shm beside the real file, not beside a link to it."""
    real = tmp_path / "data" / "store.db"
    real.parent.mkdir()
    wal = _killed_writer(real, "normal")
    _flip(wal, 32 + (wal.stat().st_size - 32) // WAL_FRAME // 2 * WAL_FRAME + 124)
    link = tmp_path / "link.db"
    link.symlink_to(real)
    with pytest.raises(satchel.CorruptData, match="damaged"):
        satchel.open(link)


def test_sqlite_wal_of_a_killed_writer_opens_with_every_commit(tmp_path: Path) -> None:
    """The check does not cry wolf: an undamaged WAL left by a killed writer, and one
    whose last transaction was cut off mid-write, open with every commit."""
    path = tmp_path / "store.db"
    wal = _killed_writer(path, "normal")
    with satchel.open(path) as store:
        assert store.get_many([f"k{i:02d}" for i in range(50)]) == {
            f"k{i:02d}": i for i in range(50)}  # fmt: skip
    path2 = tmp_path / "cut.db"
    wal = _killed_writer(path2, "normal")
    frames = (wal.stat().st_size - 32) // WAL_FRAME
    with wal.open("r+b") as handle:  # the last frame half-written
        handle.truncate(32 + (frames - 1) * WAL_FRAME + WAL_FRAME // 2)
    with satchel.open(path2) as store:
        found = store.get_many([f"k{i:02d}" for i in range(50)])
    assert found == {f"k{i:02d}": i for i in range(len(found))} and len(found) >= 49
