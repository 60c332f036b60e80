"""``sqlite:///path``: the embedded default, on the standard library's `sqlite3`.

One table keyed by (scope, key) for records, WAL journal, ``synchronous=NORMAL``
(``durability="full"`` for FULL), a busy timeout so writers from many processes wait
their turn instead of failing, and one statement per single operation. Read-modify-write
operations take the write lock up front (``BEGIN IMMEDIATE``), so they never fail half-way
with a lock upgrade error. Safe to share between threads, and after ``fork()`` a child opens its
own connection.

Time series are rows of ``satchel_points`` keyed by (scope, series, t). Large values and
event sequences are records like any other (see _blobs.py, _events.py); files of schema
2 kept events in ``satchel_events`` and ``satchel_event_states``, which `legacy_sequences`
and friends read until `drop_legacy_events`. Files of schema 2 kept them in
``satchel_blobs`` / ``satchel_chunks``, kept up to date by triggers on ``satchel_kv``:
opening such a file drops the triggers and marks it schema 3, and `legacy_blobs`,
`legacy_chunk` and `drop_legacy_blobs` let `satchel.open` move the blobs into records.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any

from .._errors import (
    BackendError,
    BackendUnavailable,
    CorruptData,
    IncompatibleDatabase,
    InvalidInput,
)
from . import sqlite_wal
from .base import (
    CREATED_AT_TOLERANCE,
    Backend,
    Change,
    Delete,
    EventState,
    Expect,
    LegacyBlob,
    Put,
    Record,
    SeriesEngine,
    holds,
    scan_range,
)
from .sqlite_wal import first_opener, lost_commits, release

log = logging.getLogger("satchel")

# 2: large values (in tables of their own), time series and event sequences; 3: large
# values are records. A release that reads up to 2 refuses a file of 3, whose large
# values it could not read.
SCHEMA_VERSION = 3

CREATE_META = "CREATE TABLE satchel_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
CREATE_KV = """
CREATE TABLE satchel_kv (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL,
    version INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID"""
CREATE_EXPIRY_INDEX = (
    "CREATE INDEX satchel_kv_expiry ON satchel_kv (expires_at) WHERE expires_at IS NOT NULL"
)
# Time series (version 2): added to a version 1 file on open.
CREATE_V2 = (
    """CREATE TABLE IF NOT EXISTS satchel_points (
        scope TEXT NOT NULL, series TEXT NOT NULL, t INTEGER NOT NULL, value BLOB NOT NULL,
        PRIMARY KEY (scope, series, t)) WITHOUT ROWID""",
)
# Version 3: record writes no longer free the large values of version 2 (its tables stay
# until drop_legacy_blobs, after satchel.open has copied them into records).
DROP_V2_TRIGGERS = (
    "DROP TRIGGER IF EXISTS satchel_kv_deleted",
    "DROP TRIGGER IF EXISTS satchel_kv_replaced",
)
SET_SCHEMA_VERSION = "UPDATE satchel_meta SET value = ? WHERE name = 'schema_version'"
INSERT_META = "INSERT INTO satchel_meta (name, value) VALUES (?, ?)"
READ_SCHEMA_VERSION = "SELECT value FROM satchel_meta WHERE name = 'schema_version'"
LIST_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table'"

LIVE = "(expires_at IS NULL OR expires_at > ?)"
COLUMNS = "value, created_at, updated_at, expires_at, version"
GET = f"SELECT {COLUMNS} FROM satchel_kv WHERE scope = ? AND key = ? AND {LIVE}"
GET_VALUE = f"SELECT value FROM satchel_kv WHERE scope = ? AND key = ? AND {LIVE}"
# The two ways a row is written over an existing one: an upsert (a row that expired counts
# as absent: overwriting it starts a new record, version 1 and a new created_at) ...
UPSERT_SET = """
    value = excluded.value,
    updated_at = excluded.updated_at,
    expires_at = excluded.expires_at,
    created_at = CASE WHEN satchel_kv.expires_at <= excluded.updated_at
                      THEN excluded.created_at ELSE satchel_kv.created_at END,
    version = CASE WHEN satchel_kv.expires_at <= excluded.updated_at
                   THEN 1 ELSE satchel_kv.version + 1 END"""
# ... and if absent, which replaces an expired row only (a live one is left alone).
IF_ABSENT_SET = """
    value = excluded.value,
    created_at = excluded.created_at,
    updated_at = excluded.updated_at,
    expires_at = excluded.expires_at,
    version = 1
WHERE satchel_kv.expires_at <= excluded.updated_at"""
INSERT_KV = (
    "INSERT INTO satchel_kv (scope, key, value, created_at, updated_at, expires_at, version)"
)
ON_CONFLICT = "ON CONFLICT (scope, key) DO UPDATE SET"
# ?1 scope, ?2 key, ?3 value, ?4 now, ?5 expires_at.
ONE_ROW = "VALUES (?1, ?2, ?3, ?4, ?4, ?5, 1)"
UPSERT = f"{INSERT_KV} {ONE_ROW} {ON_CONFLICT}{UPSERT_SET}"
PUT = UPSERT + "\nRETURNING version"
PUT_IF_ABSENT = f"{INSERT_KV} {ONE_ROW} {ON_CONFLICT}{IF_ABSENT_SET}"
# ?1 value, ?2 now, ?3 expires_at, ?4 scope, ?5 key, ?6 version, ?7 created_at or NULL
SET_IF_VERSION = f"""
UPDATE satchel_kv SET value = ?1, updated_at = ?2, expires_at = ?3, version = version + 1
WHERE scope = ?4 AND key = ?5 AND version = ?6 AND (expires_at IS NULL OR expires_at > ?2)
    AND (?7 IS NULL OR abs(created_at - ?7) <= {CREATED_AT_TOLERANCE})"""
DELETE = f"DELETE FROM satchel_kv WHERE scope = ? AND key = ? AND {LIVE}"
# ?1 scope, ?2 key, ?3 now, ?4 version, ?5 created_at or NULL
DELETE_IF_VERSION = f"""
DELETE FROM satchel_kv
WHERE scope = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3) AND version = ?4
    AND (?5 IS NULL OR abs(created_at - ?5) <= {CREATED_AT_TOLERANCE})"""
TOUCH = f"UPDATE satchel_kv SET expires_at = ? WHERE scope = ? AND key = ? AND {LIVE}"
COUNT = f"SELECT count(*) FROM satchel_kv WHERE scope = ? AND {LIVE}"
SCOPES = f"SELECT DISTINCT scope FROM satchel_kv WHERE {LIVE} ORDER BY scope"
CLEAR = "DELETE FROM satchel_kv WHERE scope = ?"
PURGE = """
DELETE FROM satchel_kv WHERE (scope, key) IN (
    SELECT scope, key FROM satchel_kv WHERE expires_at <= ? LIMIT ?)"""

# Large values of version 2: a committed blob has its owner's scope and key (a staged
# one NULL), its chunks are rows (blob_id, n).
HAS_LEGACY_BLOBS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'satchel_blobs'"
LEGACY_BLOBS = """
SELECT b.scope, b.key, b.blob_id,
    (SELECT count(*) FROM satchel_chunks AS c WHERE c.blob_id = b.blob_id)
FROM satchel_blobs AS b JOIN satchel_kv AS k ON k.scope = b.scope AND k.key = b.key
WHERE b.scope IS NOT NULL AND (k.expires_at IS NULL OR k.expires_at > ?)
ORDER BY b.scope, b.key"""
LEGACY_CHUNK = "SELECT data FROM satchel_chunks WHERE blob_id = ? AND n = ?"
DROP_LEGACY_BLOBS = (
    *DROP_V2_TRIGGERS,
    "DROP TABLE IF EXISTS satchel_chunks",
    "DROP TABLE IF EXISTS satchel_blobs",  # with its index and its trigger
)

PUT_POINT = """
INSERT INTO satchel_points (scope, series, t, value) VALUES (?, ?, ?, ?)
ON CONFLICT (scope, series, t) DO UPDATE SET value = excluded.value"""
IN_SERIES = "FROM satchel_points WHERE scope = ? AND series = ? AND t >= ?"
COUNT_POINTS = "SELECT count(*) FROM satchel_points WHERE scope = ? AND series = ?"
# The distinct names by skipping from one to the next on the index: O(names * log n).
SERIES_NAMES = """
WITH RECURSIVE names(name) AS (
    SELECT min(series) FROM satchel_points WHERE scope = ?1
    UNION ALL
    SELECT (SELECT min(series) FROM satchel_points WHERE scope = ?1 AND series > name)
    FROM names WHERE name IS NOT NULL)
SELECT name FROM names WHERE name IS NOT NULL"""
INT64_MIN = -(2**63)

# Event sequences of version 2, until `drop_legacy_events`.
HAS_LEGACY_EVENTS = (
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'satchel_event_states'"
)
LEGACY_SEQUENCES = "SELECT DISTINCT scope, name FROM satchel_event_states ORDER BY scope, name"
LEGACY_STATE = (
    "SELECT seq, ts, data FROM satchel_event_states WHERE scope = ? AND name = ? AND which = ?"
)
LEGACY_EVENTS = """
SELECT seq, ts, data FROM satchel_events WHERE scope = ? AND name = ? AND seq > ?
ORDER BY seq LIMIT ?"""
DROP_LEGACY_EVENTS = (
    "DROP TABLE IF EXISTS satchel_events",
    "DROP TABLE IF EXISTS satchel_event_states",
)
# Compare-and-swap rewrites of stored bytes (series_reseal).
RESEAL_POINT = (
    "UPDATE satchel_points SET value = ? WHERE scope = ? AND series = ? AND t = ? AND value = ?"
)

GET_MANY_CHUNK = 500  # keys per IN (...) query, well below SQLite's parameter limit


@lru_cache(maxsize=8)
def _get_many_sql(count: int) -> str:
    marks = ", ".join("?" * count)
    return f"SELECT key, {COLUMNS} FROM satchel_kv WHERE scope = ? AND {LIVE} AND key IN ({marks})"


def _scan_sql(values: bool, inclusive: bool, bounded: bool) -> str:
    columns = "key, " + (COLUMNS if values else "x'', created_at, updated_at, expires_at, version")
    lower = "key >= ?" if inclusive else "key > ?"
    upper = " AND key < ?" if bounded else ""
    return (
        f"SELECT {columns} FROM satchel_kv WHERE scope = ? AND {lower}{upper} AND {LIVE} "
        "ORDER BY key LIMIT ?"
    )


# In `apply`, many Puts are written by multi-row upserts of up to PUT_ROWS rows, ?1 scope
# and ?2 now shared by all, 3 parameters per row: far below SQLite's limit of 32766. Their
# RETURNING gives one row per record written, which executemany cannot: that is how a
# Put's count (its version being 1; for if_absent, being written) stays exact. 100-500
# rows per statement measured as fast as executemany or faster.
PUT_ROWS = 250


@lru_cache(maxsize=16)
def _put_rows_sql(count: int, if_absent: bool) -> str:
    rows = ", ".join(
        f"(?1, ?{n}, ?{n + 1}, ?2, ?2, ?{n + 2}, 1)" for n in range(3, 3 * count + 3, 3)
    )
    changes = IF_ABSENT_SET if if_absent else UPSERT_SET
    return f"{INSERT_KV} VALUES {rows} {ON_CONFLICT}{changes} RETURNING version"


SCAN = {
    (v, i, b): _scan_sql(v, i, b)
    for v in (True, False)
    for i in (True, False)
    for b in (True, False)
}

# Connections must not cross fork(); children reopen lazily (see _after_fork).
_OPEN_BACKENDS: weakref.WeakSet[SQLiteBackend] = weakref.WeakSet()


_FORK_HELD: list[threading.Lock] = []


def _before_fork() -> None:
    # Let no operation be half-way through when the process forks: a child must not
    # inherit SQLite's in-process lock state for a transaction it will never finish.
    for backend in list(_OPEN_BACKENDS):
        backend._lock.acquire()
        _FORK_HELD.append(backend._lock)


def _after_fork_in_parent() -> None:
    while _FORK_HELD:
        _FORK_HELD.pop().release()


def _after_fork_in_child() -> None:
    _FORK_HELD.clear()
    for backend in list(_OPEN_BACKENDS):
        backend._after_fork()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


class _Guard:
    """The one way into the connection: takes the lock, opens lazily, maps errors."""

    __slots__ = ("_backend",)

    def __init__(self, backend: SQLiteBackend) -> None:
        self._backend = backend

    def __enter__(self) -> sqlite3.Connection:
        backend = self._backend
        backend._lock.acquire()
        try:
            return backend._db or backend._connect()
        except sqlite3.Error as exc:
            backend._lock.release()
            raise backend._translate(exc) from exc
        except BaseException:
            backend._lock.release()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._backend._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise self._backend._translate(exc) from exc


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that holds the write lock from its first statement."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _record(key: str, row: Any) -> Record:
    return Record(key, row[0], row[1], row[2], row[3], row[4])


def _get_many(
    db: sqlite3.Connection, scope: str, keys: Sequence[str], now: float
) -> dict[str, Record]:
    found = {}
    for start in range(0, len(keys), GET_MANY_CHUNK):
        chunk = keys[start : start + GET_MANY_CHUNK]
        for row in db.execute(_get_many_sql(len(chunk)), (scope, now, *chunk)):
            found[row[0]] = Record(*row)
    return found


def _all_hold(db: sqlite3.Connection, scope: str, expect: Sequence[Expect], now: float) -> bool:
    """Whether every condition holds for the live records as they are now."""
    if len(expect) == 1:
        condition = expect[0]
        row = db.execute(GET, (scope, condition.key, now)).fetchone()
        return holds(None if row is None else _record(condition.key, row), condition)
    found = _get_many(db, scope, list({condition.key: None for condition in expect}), now)
    return all(holds(found.get(condition.key), condition) for condition in expect)


def _guarded(
    scope: str, change: Change, condition: Expect, now: float
) -> tuple[str, tuple[object, ...], int] | None:
    """The one statement making `change` if `condition`, on the same key, holds (it then
    changes one row), with the count of the change; None if there is no such statement."""
    if condition.key != change.key:
        return None
    if isinstance(change, Put):
        if condition.version is None:  # written if absent, whatever change.if_absent says
            return PUT_IF_ABSENT, (scope, change.key, change.value, now, change.expires_at), 1
        if not change.if_absent:
            version, created_at = condition.version, condition.created_at
            return SET_IF_VERSION, (change.value, now, change.expires_at, scope, change.key,
                                    version, created_at), 0  # fmt: skip
    elif isinstance(change, Delete) and condition.version is not None:
        deleted = (scope, change.key, now, condition.version, condition.created_at)
        return DELETE_IF_VERSION, deleted, 1
    return None


def _write(db: sqlite3.Connection, scope: str, changes: Sequence[Change], now: float) -> int:
    """Make `changes` (distinct keys, so in any order) inside a transaction; their count."""
    puts: list[Put] = []
    absent: list[Put] = []
    deletes: list[tuple[str, str, float]] = []
    touches: list[tuple[float | None, str, str, float]] = []
    for change in changes:
        if isinstance(change, Put):
            (absent if change.if_absent else puts).append(change)
        elif isinstance(change, Delete):
            deletes.append((scope, change.key, now))
        else:
            touches.append((change.expires_at, scope, change.key, now))
    hits = 0
    for group, if_absent in ((puts, False), (absent, True)):
        for start in range(0, len(group), PUT_ROWS):
            chunk = group[start : start + PUT_ROWS]
            params: list[object] = [scope, now]
            for put in chunk:
                params += (put.key, put.value, put.expires_at)
            rows = db.execute(_put_rows_sql(len(chunk), if_absent), params).fetchall()
            # if_absent returns the rows it wrote, all created; otherwise version 1 is new.
            hits += len(rows) if if_absent else [version for (version,) in rows].count(1)
    if deletes:
        hits += db.executemany(DELETE, deletes).rowcount
    if touches:
        hits += db.executemany(TOUCH, touches).rowcount
    return hits


class SQLiteBackend(Backend, SeriesEngine):
    """A satchel store in one SQLite file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "normal",
        timeout: float = 30.0,
        mode: str = "rw",
    ) -> None:
        if durability not in ("normal", "full"):
            raise InvalidInput(f"durability must be 'normal' or 'full', not {durability!r}")
        if mode not in ("rw", "ro"):
            raise InvalidInput(f"mode must be 'rw' or 'ro' (read-only), not {mode!r}")
        self._readonly = mode == "ro"
        self.path = Path(path).expanduser().absolute()
        self.engine = f"sqlite:///{self.path}"
        self._synchronous = durability.upper()
        self._timeout = float(timeout)
        self._lock = threading.Lock()
        self._guard = _Guard(self)
        self._db: sqlite3.Connection | None = None
        if not self.path.parent.is_dir():
            raise BackendUnavailable(
                f"directory {self.path.parent} does not exist", engine=self.engine
            )
        with self._guard:  # open now, so a bad file is reported by open()
            pass
        _OPEN_BACKENDS.add(self)

    # -- connection ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        with sqlite_wal.OPENING:  # see there: no probe may close a descriptor meanwhile
            return self._open_connection()

    def _open_connection(self) -> sqlite3.Connection:
        # The first to open the file after a crash has SQLite recover the log: check it.
        recovers = not self._readonly and self._wal.exists() and first_opener(self._real)
        target = f"{self.path.as_uri()}?mode=ro" if self._readonly else str(self.path)
        db = sqlite3.connect(
            target,
            timeout=self._timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=64,
            uri=self._readonly,
        )
        try:
            if recovers:
                self._check_wal(db)
            # Refuse a foreign database before changing anything in it (WAL included).
            version = self._schema_version(db)
            if self._readonly:
                if version is None:
                    raise IncompatibleDatabase(
                        f"{self.path} holds no satchel store to open read-only",
                        engine=self.engine,
                    )
                self._db = db
                return db
            self._while_locked(lambda: db.execute("PRAGMA journal_mode = WAL"))
            db.execute(f"PRAGMA synchronous = {self._synchronous}")
            if version is None:
                with _immediate(db):
                    if self._schema_version(db) is None:  # nobody created it meanwhile
                        for statement in (CREATE_META, CREATE_KV, CREATE_EXPIRY_INDEX, *CREATE_V2):
                            db.execute(statement)
                        db.execute(INSERT_META, ("schema_version", str(SCHEMA_VERSION)))
                        db.execute(INSERT_META, ("application", "satchel"))
            elif version < SCHEMA_VERSION:
                with _immediate(db):
                    for statement in (*CREATE_V2, *DROP_V2_TRIGGERS):
                        db.execute(statement)
                    db.execute(SET_SCHEMA_VERSION, (str(SCHEMA_VERSION),))
        except BaseException:
            db.close()
            raise
        self._db = db
        return db

    @property
    def _wal(self) -> Path:
        return Path(f"{self._real}-wal")

    @property
    def _real(self) -> Path:
        """The database file itself: SQLite keeps -wal and -shm beside it, not beside a
        symlink to it."""
        return Path(os.path.realpath(self.path))

    def _check_wal(self, db: sqlite3.Connection) -> None:
        """Raise CorruptData if SQLite's recovery just dropped committed transactions
        (see sqlite_wal.py), leaving the log as it was."""
        db.execute("BEGIN IMMEDIATE")  # SQLite recovers here; nobody writes meanwhile
        try:
            adopted = sqlite_wal.adopted_frames(self._real)
            (page_size,) = db.execute("PRAGMA page_size").fetchone()
            why = None if adopted is None else lost_commits(self._wal, adopted, page_size)
        finally:
            db.execute("ROLLBACK")
        if why is None:
            return
        message = f"{self.path}: the write-ahead log {self._wal.name} is damaged: {why}"
        if sqlite_wal.rebooted_since(self._wal):  # a power loss may have done it, which
            log.warning("%s; the machine restarted since it was written", message)
            return  # the durability SQLite promises allows: not refused, but not silent
        try:  # what SQLite took goes into the database, so the log can be set aside
            _, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            all_copied = frames == copied >= 0
        except sqlite3.Error:
            all_copied = False
        # Close without the checkpoint that would delete the log, and the evidence with it
        # (the next open would then quietly succeed): a read-only connection that holds
        # the file keeps ours from checkpointing, and cannot checkpoint itself.
        try:
            holder = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True)
            holder.execute(LIST_TABLES).fetchall()
        except sqlite3.Error:
            holder = None
        try:
            db.close()
        finally:
            if holder is not None:
                holder.close()
        aside = (
            f"; to open the store without them, move {self._wal} and "
            f"{self._real.name}-shm aside (what came before the damage is in the database)"
            if all_copied
            else ""
        )
        raise CorruptData(
            f"{message}. Nothing was discarded: restore from a backup{aside}",
            engine=self.engine,
        )

    def _while_locked(self, step: Callable[[], object]) -> None:
        """Run `step`, retrying while the file is locked: changing the journal mode
        fails at once instead of waiting for the busy timeout."""
        deadline = time.monotonic() + self._timeout
        pause = 0.001
        while True:
            try:
                step()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _schema_version(self, db: sqlite3.Connection) -> int | None:
        """The satchel schema version of the file; None if it holds no tables yet.

        Raises IncompatibleDatabase for another application's database or a newer schema.
        """
        tables = {name for (name,) in db.execute(LIST_TABLES)}
        if "satchel_meta" not in tables:
            if tables:
                raise IncompatibleDatabase(
                    f"{self.path} is a SQLite database of another application "
                    f"(tables: {', '.join(sorted(tables))}), not a satchel store",
                    engine=self.engine,
                )
            return None
        found = db.execute(READ_SCHEMA_VERSION).fetchone()
        version = int(found[0]) if found and str(found[0]).isdigit() else -1
        if version > SCHEMA_VERSION:
            raise IncompatibleDatabase(
                f"{self.path} has satchel schema {version}, written by a newer satchel "
                f"(this one reads up to {SCHEMA_VERSION})",
                engine=self.engine,
            )
        if version < 1:
            raise IncompatibleDatabase(
                f"{self.path} has no valid satchel schema version", engine=self.engine
            )
        return version

    def _translate(self, exc: sqlite3.Error) -> BackendError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return BackendError(
                f"{self.path} stayed locked by another writer for {self._timeout:g}s",
                engine=self.engine,
            )
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
            return IncompatibleDatabase(f"{self.path} is not a SQLite database", engine=self.engine)
        if "unable to open" in text:
            return BackendUnavailable(f"cannot open {self.path}: {text}", engine=self.engine)
        return BackendError(f"SQLite failed on {self.path}: {text}", engine=self.engine)

    def _after_fork(self) -> None:
        if self._db is not None:
            # Closed, not kept: SQLite's record of the locks this process holds came
            # along, so a new connection beside it would take no real lock (the parent's
            # close would then checkpoint and delete the log under the child). Closing
            # leaves the parent's locks alone (POSIX locks are per process) and cannot
            # checkpoint while the parent has the file open.
            self._db.close()
        self._db = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock, sqlite_wal.OPENING:
            if self._db is not None:
                self._db.close()
                self._db = None
                release(self._real)
        _OPEN_BACKENDS.discard(self)

    # -- primitives ------------------------------------------------------------------

    def get(self, scope: str, key: str, now: float) -> Record | None:
        with self._guard as db:
            row = db.execute(GET, (scope, key, now)).fetchone()
        return None if row is None else _record(key, row)

    def get_value(self, scope: str, key: str, now: float) -> bytes | None:
        with self._guard as db:
            row = db.execute(GET_VALUE, (scope, key, now)).fetchone()
        return None if row is None else row[0]

    def get_many(self, scope: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        with self._guard as db:
            return _get_many(db, scope, keys, now)

    def apply(
        self, scope: str, changes: Sequence[Change], now: float, expect: Sequence[Expect] = ()
    ) -> int | None:
        if len(changes) == 1 and not expect:  # one statement, like put / touch / delete
            change = changes[0]
            with self._guard as db:
                if isinstance(change, Put):
                    params = (scope, change.key, change.value, now, change.expires_at)
                    if change.if_absent:
                        return db.execute(PUT_IF_ABSENT, params).rowcount
                    version: int = db.execute(PUT, params).fetchone()[0]
                    return int(version == 1)
                if isinstance(change, Delete):
                    return db.execute(DELETE, (scope, change.key, now)).rowcount
                return db.execute(TOUCH, (change.expires_at, scope, change.key, now)).rowcount
        if not expect and not changes:
            return 0
        if len(changes) == 1 and len(expect) == 1:
            guarded = _guarded(scope, changes[0], expect[0], now)
            if guarded is not None:  # one statement, like compare_and_set
                sql, bound, count = guarded
                with self._guard as db:
                    return count if db.execute(sql, bound).rowcount == 1 else None
        with self._guard as db, _immediate(db):
            if not _all_hold(db, scope, expect, now):
                return None  # _immediate commits a transaction that wrote nothing
            return _write(db, scope, changes, now)

    def scan(
        self,
        scope: str,
        prefix: str,
        after: str | None,
        limit: int,
        now: float,
        values: bool = True,
    ) -> list[Record]:
        low, inclusive, upper = scan_range(prefix, after)
        params: list[object] = [scope, low]
        if upper is not None:
            params.append(upper)
        params += (now, limit)
        with self._guard as db:
            rows = db.execute(SCAN[values, inclusive, upper is not None], params).fetchall()
        return [Record(*row) for row in rows]

    def count(self, scope: str, now: float) -> int:
        with self._guard as db:
            total: int = db.execute(COUNT, (scope, now)).fetchone()[0]
        return total

    def scopes(self, now: float) -> list[str]:
        with self._guard as db:
            return [scope for (scope,) in db.execute(SCOPES, (now,))]

    def clear(self, scope: str) -> None:
        with self._guard as db:
            db.execute(CLEAR, (scope,))

    def purge_expired(self, now: float, limit: int) -> int:
        with self._guard as db:
            return db.execute(PURGE, (now, limit)).rowcount

    # -- large values kept by version 2 -------------------------------------------------

    def legacy_blobs(self, now: float) -> list[LegacyBlob] | None:
        with self._guard as db:
            if db.execute(HAS_LEGACY_BLOBS).fetchone() is None:
                return None
            try:
                rows = db.execute(LEGACY_BLOBS, (now,)).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return None  # dropped meanwhile by another process
                raise
        return [LegacyBlob(*row) for row in rows]

    def legacy_chunk(self, blob: LegacyBlob, index: int) -> bytes | None:
        with self._guard as db:
            try:
                row = db.execute(LEGACY_CHUNK, (blob.blob_id, index)).fetchone()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return None  # dropped meanwhile by another process
                raise
        return None if row is None else row[0]

    def drop_legacy_blobs(self) -> None:
        with self._guard as db, _immediate(db):
            for statement in DROP_LEGACY_BLOBS:
                db.execute(statement)

    # -- event sequences kept by version 2 ----------------------------------------------

    def _legacy(self, query: str, args: tuple[object, ...]) -> list[Any] | None:
        """The rows of a query on the old event tables; None once they are dropped."""
        with self._guard as db:
            try:
                return db.execute(query, args).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return None  # dropped meanwhile by another process
                raise

    def legacy_sequences(self) -> list[tuple[str, str]] | None:
        with self._guard as db:
            if db.execute(HAS_LEGACY_EVENTS).fetchone() is None:
                return None
        return self._legacy(LEGACY_SEQUENCES, ())

    def legacy_states(self, scope: str, name: str) -> tuple[EventState | None, EventState | None]:
        head, base = (self._legacy(LEGACY_STATE, (scope, name, w)) for w in ("head", "base"))
        return (head[0] if head else None), (base[0] if base else None)

    def legacy_events(
        self, scope: str, name: str, after_seq: int, limit: int
    ) -> list[tuple[int, int, bytes]]:
        return self._legacy(LEGACY_EVENTS, (scope, name, after_seq, limit)) or []

    def drop_legacy_events(self) -> None:
        with self._guard as db, _immediate(db):
            for statement in DROP_LEGACY_EVENTS:
                db.execute(statement)

    # -- time series ---------------------------------------------------------------------

    def series_put(self, scope: str, name: str, points: Sequence[tuple[int, bytes]]) -> None:
        with self._guard as db, _immediate(db):
            db.executemany(PUT_POINT, [(scope, name, t, value) for t, value in points])

    def series_range(
        self,
        scope: str,
        name: str,
        start: int | None,
        stop: int | None,
        limit: int,
        *,
        reverse: bool = False,
        values: bool = True,
    ) -> list[tuple[int, bytes]]:
        columns = "t, value" if values else "t, x''"
        upper = "" if stop is None else " AND t < ?"
        order = "DESC" if reverse else ""
        query = f"SELECT {columns} {IN_SERIES}{upper} ORDER BY t {order} LIMIT ?"
        params: list[object] = [scope, name, INT64_MIN if start is None else start]
        if stop is not None:
            params.append(stop)
        params.append(limit)
        with self._guard as db:
            return db.execute(query, params).fetchall()

    def series_remove(self, scope: str, name: str, start: int | None, stop: int | None) -> int:
        upper = "" if stop is None else " AND t < ?"
        params: list[object] = [scope, name, INT64_MIN if start is None else start]
        if stop is not None:
            params.append(stop)
        with self._guard as db:
            return db.execute(f"DELETE {IN_SERIES}{upper}", params).rowcount

    def series_count(self, scope: str, name: str) -> int:
        with self._guard as db:
            total: int = db.execute(COUNT_POINTS, (scope, name)).fetchone()[0]
        return total

    def series_names(self, scope: str) -> list[str]:
        with self._guard as db:
            return [name for (name,) in db.execute(SERIES_NAMES, (scope,))]

    def series_reseal(
        self, scope: str, name: str, points: Sequence[tuple[int, bytes, bytes]]
    ) -> int:
        rows = [(new, scope, name, t, old) for t, old, new in points]
        with self._guard as db, _immediate(db):
            return db.executemany(RESEAL_POINT, rows).rowcount
