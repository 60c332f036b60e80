"""``sqlite:///path``: the embedded default, on the standard library's `sqlite3`.

One table keyed by (scope, key), WAL journal, ``synchronous=NORMAL`` (``durability="full"``
for FULL), a busy timeout so writers from many processes wait their turn instead of
failing, and one statement per single operation. Read-modify-write operations take
the write lock up front (``BEGIN IMMEDIATE``), so they never fail half-way with a lock
upgrade error. Safe to share between threads, and after ``fork()`` a child opens its
own connection.
"""

from __future__ import annotations

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

from ..errors import BackendError, BackendUnavailable, IncompatibleDatabase, InvalidInput
from ..keys import scan_range
from .base import CREATED_AT_TOLERANCE, Backend, Modifier, Record

SCHEMA_VERSION = 1

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
INSERT_META = "INSERT INTO satchel_meta (name, value) VALUES (?, ?)"
READ_SCHEMA_VERSION = "SELECT value FROM satchel_meta WHERE name = 'schema_version'"
LIST_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table'"

LIVE = "(expires_at IS NULL OR expires_at > ?)"
COLUMNS = "value, created_at, updated_at, expires_at, version"
GET = f"SELECT {COLUMNS} FROM satchel_kv WHERE scope = ? AND key = ? AND {LIVE}"
GET_VALUE = f"SELECT value FROM satchel_kv WHERE scope = ? AND key = ? AND {LIVE}"
# ?1 scope, ?2 key, ?3 value, ?4 now, ?5 expires_at. A row that expired counts as absent:
# overwriting it starts a new record (version 1, new created_at).
UPSERT = """
INSERT INTO satchel_kv (scope, key, value, created_at, updated_at, expires_at, version)
VALUES (?1, ?2, ?3, ?4, ?4, ?5, 1)
ON CONFLICT (scope, key) DO UPDATE SET
    value = excluded.value,
    updated_at = excluded.updated_at,
    expires_at = excluded.expires_at,
    created_at = CASE WHEN satchel_kv.expires_at <= excluded.updated_at
                      THEN excluded.created_at ELSE satchel_kv.created_at END,
    version = CASE WHEN satchel_kv.expires_at <= excluded.updated_at
                   THEN 1 ELSE satchel_kv.version + 1 END"""
PUT = UPSERT + "\nRETURNING version"
PUT_IF_ABSENT = """
INSERT INTO satchel_kv (scope, key, value, created_at, updated_at, expires_at, version)
VALUES (?1, ?2, ?3, ?4, ?4, ?5, 1)
ON CONFLICT (scope, key) DO UPDATE SET
    value = excluded.value,
    created_at = excluded.created_at,
    updated_at = excluded.updated_at,
    expires_at = excluded.expires_at,
    version = 1
WHERE satchel_kv.expires_at <= excluded.updated_at"""
# ?1 value, ?2 now, ?3 expires_at, ?4 scope, ?5 key, ?6 version, ?7 created_at or NULL
SET_IF_VERSION = f"""
UPDATE satchel_kv SET value = ?1, updated_at = ?2, expires_at = ?3, version = version + 1
WHERE scope = ?4 AND key = ?5 AND version = ?6 AND (expires_at IS NULL OR expires_at > ?2)
    AND (?7 IS NULL OR abs(created_at - ?7) <= {CREATED_AT_TOLERANCE})"""
DELETE = f"DELETE FROM satchel_kv WHERE scope = ? AND key = ? AND {LIVE}"
POP = f"DELETE FROM satchel_kv WHERE scope = ? AND key = ? AND {LIVE} RETURNING value"
TOUCH = f"UPDATE satchel_kv SET expires_at = ? WHERE scope = ? AND key = ? AND {LIVE}"
COUNT = f"SELECT count(*) FROM satchel_kv WHERE scope = ? AND {LIVE}"
SCOPES = f"SELECT DISTINCT scope FROM satchel_kv WHERE {LIVE} ORDER BY scope"
CLEAR = "DELETE FROM satchel_kv WHERE scope = ?"
PURGE = """
DELETE FROM satchel_kv WHERE (scope, key) IN (
    SELECT scope, key FROM satchel_kv WHERE expires_at <= ? LIMIT ?)"""


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


SCAN = {
    (v, i, b): _scan_sql(v, i, b)
    for v in (True, False)
    for i in (True, False)
    for b in (True, False)
}

# Connections must not cross fork(); children reopen lazily (see _after_fork).
_OPEN_BACKENDS: weakref.WeakSet[SQLiteBackend] = weakref.WeakSet()
_ABANDONED: list[sqlite3.Connection] = []  # a parent's connections, never closed in a child


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


class SQLiteBackend(Backend):
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
                        for statement in (CREATE_META, CREATE_KV, CREATE_EXPIRY_INDEX):
                            db.execute(statement)
                        db.execute(INSERT_META, ("schema_version", str(SCHEMA_VERSION)))
                        db.execute(INSERT_META, ("application", "satchel"))
        except BaseException:
            db.close()
            raise
        self._db = db
        return db

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
            _ABANDONED.append(self._db)  # closing it here could disturb the parent's locks
        self._db = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
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
        found = {}
        with self._guard as db:
            for start in range(0, len(keys), GET_MANY_CHUNK):
                chunk = keys[start : start + GET_MANY_CHUNK]
                for row in db.execute(_get_many_sql(len(chunk)), (scope, now, *chunk)):
                    found[row[0]] = Record(*row)
        return found

    def put(
        self,
        scope: str,
        key: str,
        value: bytes,
        expires_at: float | None,
        now: float,
        if_absent: bool,
    ) -> bool:
        with self._guard as db:
            if if_absent:
                return db.execute(PUT_IF_ABSENT, (scope, key, value, now, expires_at)).rowcount == 1
            version: int = db.execute(PUT, (scope, key, value, now, expires_at)).fetchone()[0]
        return version == 1

    def put_many(
        self,
        scope: str,
        items: Sequence[tuple[str, bytes]],
        expires_at: float | None,
        now: float,
        if_absent: bool,
    ) -> int:
        rows = [(scope, key, value, now, expires_at) for key, value in items]
        with self._guard as db, _immediate(db):
            return db.executemany(PUT_IF_ABSENT if if_absent else UPSERT, rows).rowcount

    def delete_many(self, scope: str, keys: Sequence[str], now: float) -> int:
        with self._guard as db:
            if len(keys) == 1:
                return db.execute(DELETE, (scope, keys[0], now)).rowcount
            with _immediate(db):
                return db.executemany(DELETE, [(scope, key, now) for key in keys]).rowcount

    def pop(
        self, scope: str, key: str, now: float, decode: Callable[[bytes], Any]
    ) -> tuple[Any] | None:
        with self._guard as db, _immediate(db):
            row = db.execute(POP, (scope, key, now)).fetchone()
            return None if row is None else (decode(row[0]),)

    def compare_and_set(
        self,
        scope: str,
        key: str,
        expected_version: int | None,
        value: bytes,
        expires_at: float | None,
        now: float,
        *,
        expected_created_at: float | None = None,
    ) -> bool:
        with self._guard as db:
            if expected_version is None:
                cursor = db.execute(PUT_IF_ABSENT, (scope, key, value, now, expires_at))
            else:
                cursor = db.execute(
                    SET_IF_VERSION,
                    (value, now, expires_at, scope, key, expected_version, expected_created_at),
                )
            return cursor.rowcount == 1

    def modify(self, scope: str, key: str, fn: Modifier, now: float) -> None:
        with self._guard as db, _immediate(db):
            row = db.execute(GET, (scope, key, now)).fetchone()
            value, expires_at = fn(None if row is None else _record(key, row))
            db.execute(UPSERT, (scope, key, value, now, expires_at))

    def touch(self, scope: str, key: str, expires_at: float | None, now: float) -> bool:
        with self._guard as db:
            return db.execute(TOUCH, (expires_at, scope, key, now)).rowcount == 1

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
