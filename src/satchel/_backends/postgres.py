"""``postgresql://``: PostgreSQL through psycopg 3 and a psycopg_pool connection pool.

Records live in one table (``satchel_kv`` by default, in schema ``public``; both
configurable with the ``table=`` and ``schema=`` options, so several applications can
share a database), created on first use, its schema version recorded in
``satchel_meta``. Keys are ``text COLLATE "C"``: byte order of UTF-8, so sorting matches
Python's and a prefix glob is a range scan of the primary key. Single operations are one
autocommitted statement; batches are one statement over arrays (``unnest``/``= ANY``), so
a batch of 10,000 keys is one round trip. A conditional ``apply`` batch (other than a
compare-and-set of one key, one statement) is one transaction of two round trips: it
locks the expected keys' rows, a placeholder row standing in for an absent key, so a
concurrent insert of it waits. ``incr`` serialises on a transaction-scoped
advisory lock, so a missing counter cannot be created twice.

Beside it, ``satchel_kv_series (scope, series, t, value)`` (named after the table) holds
time series points, one primary key range per series.

Large values and event sequences are records (see _blobs.py, _events.py). Releases
before 0.2 (schema version 2) kept them in tables of their own, named after the kv table,
which new tables never get. Opening such a table sets schema version 3 (so an older
satchel no longer writes them) and leaves them alone until `satchel.open` has copied
them into records:

- events in ``satchel_kv_events (scope, name, seq, ts, data)``, their head and base
  states in ``satchel_kv_states (scope, name, which, seq, ts, data)``: read by
  `legacy_sequences`, `legacy_states` and `legacy_events`, dropped by
  `drop_legacy_events`.
- large values: chunks in ``satchel_kv_chunks (blob_id, n, data)`` and
  ``satchel_kv_blobs (blob_id, scope, key, staged_at)``, a committed blob named by the
  kv column ``blob`` and freed by triggers on the kv table. `legacy_blobs` reads them,
  the triggers keep freeing an old blob whose record is overwritten or deleted
  meanwhile, and `drop_legacy_blobs` removes them all (tables, triggers, function,
  column) in one transaction.

A connection that breaks is dropped by the pool and replaced. A read that fails with a
broken connection is retried once on a fresh one; a write is never retried, since it
may or may not have been applied: it raises BackendUnavailable saying so.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar, cast

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from .._errors import (
    BackendError,
    BackendUnavailable,
    IncompatibleDatabase,
    InvalidInput,
)
from . import watchdog
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
    Touch,
    holds,
    scan_range,
)
from .urls import password, redact

# 1: records only. 2: adds the kv column ``blob`` and the tables of blobs, time series
# and event sequences. 3: large values and event sequences are records; the blob tables,
# column and triggers and the event tables are gone (a version 1 or 2 database gains the
# series table on open; a version 2 one keeps its blob storage until `drop_legacy_blobs`
# and its event tables until `drop_legacy_events`). Events did not need a version of
# their own: version 3 is newer than any release, and releases refuse it, so none can
# write the event tables once they are dropped.
SCHEMA_VERSION = 3
T = TypeVar("T")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

# {t} is the schema-qualified kv table, {meta} the meta table, {idx} the expiry index
# name; the other names are those of _derived() tables.
CREATE = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {meta} (name text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {t} (
    scope text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value bytea NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    expires_at double precision,
    version bigint NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS {idx} ON {t} (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS {series} (
    scope text COLLATE "C" NOT NULL,
    series text COLLATE "C" NOT NULL,
    t bigint NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (scope, series, t)
);
INSERT INTO {meta} (name, value) VALUES ({version_name}, {version})
ON CONFLICT (name) DO UPDATE SET value = excluded.value;
"""
# Suffixes of the tables and objects named after the kv table.
DERIVED = {"series": "_series"}
# Those of the blob storage of schema version 2 (the triggers' names are not qualified).
LEGACY = {
    "blobs": "_blobs", "chunks": "_chunks", "free_blob": "_free_blob",
    "on_delete": "_free_blob_on_delete", "on_update": "_free_blob_on_update",
}  # fmt: skip
# Those of the event sequences of releases before 0.2.
LEGACY_EVENT_TABLES = {"events": "_events", "states": "_states"}
# The version, and whether the blob storage and the event tables of old are still there.
READ_VERSION = """
SELECT value, to_regclass({legacy}) IS NOT NULL, to_regclass({legacy_events}) IS NOT NULL
FROM {meta} WHERE name = {version_name}"""
LIVE = "(expires_at IS NULL OR expires_at > %(now)s)"
COLUMNS = "key, value, created_at, updated_at, expires_at, version"
GET = f"SELECT {COLUMNS} FROM {{t}} WHERE scope = %(scope)s AND key = %(key)s AND {LIVE}"
GET_VALUE = f"SELECT value FROM {{t}} WHERE scope = %(scope)s AND key = %(key)s AND {LIVE}"
GET_MANY = f"SELECT {COLUMNS} FROM {{t}} WHERE scope = %(scope)s AND key = ANY(%(keys)s) AND {LIVE}"
# An expired row counts as absent: overwriting it starts a new record.
_ON_CONFLICT = """
ON CONFLICT (scope, key) DO UPDATE SET
    value = excluded.value,
    updated_at = excluded.updated_at,
    expires_at = excluded.expires_at,
    created_at = CASE WHEN r.expires_at <= excluded.updated_at
                      THEN excluded.created_at ELSE r.created_at END,
    version = CASE WHEN r.expires_at <= excluded.updated_at THEN 1 ELSE r.version + 1 END"""
_ON_CONFLICT_IF_EXPIRED = """
ON CONFLICT (scope, key) DO UPDATE SET
    value = excluded.value,
    created_at = excluded.created_at,
    updated_at = excluded.updated_at,
    expires_at = excluded.expires_at,
    version = 1
WHERE r.expires_at <= excluded.updated_at"""
_INSERT_ONE = """
INSERT INTO {t} AS r (scope, key, value, created_at, updated_at, expires_at, version)
VALUES (%(scope)s, %(key)s, %(value)s, %(now)s, %(now)s, %(expires_at)s, 1)"""
PUT = _INSERT_ONE + _ON_CONFLICT + "\nRETURNING version"
PUT_IF_ABSENT = _INSERT_ONE + _ON_CONFLICT_IF_EXPIRED + "\nRETURNING version"
SET_IF_VERSION = f"""
UPDATE {{t}} SET value = %(value)s, updated_at = %(now)s,
    expires_at = %(expires_at)s, version = version + 1
WHERE scope = %(scope)s AND key = %(key)s AND version = %(version)s AND {LIVE}
    AND (%(created)s::float8 IS NULL
         OR abs(created_at - %(created)s::float8) <= {CREATED_AT_TOLERANCE})"""
# -- apply: one statement of data-modifying CTEs per batch shape (see _apply_statement) --
# Each part is included only when the batch has changes of its kind; keys are distinct
# among changes, so no two parts touch the same row. Puts differ in expiry, so it is an
# array too; if_absent Puts are their own part (ON CONFLICT cannot tell them apart).
APPLY_PUT = (
    """
p AS (INSERT INTO {t} AS r (scope, key, value, created_at, updated_at, expires_at, version)
SELECT %(scope)s, k, v, %(now)s, %(now)s, e, 1
FROM unnest(%(pkeys)s::text[], %(pvalues)s::bytea[], %(pexp)s::float8[]) AS u(k, v, e)
ORDER BY k"""
    + _ON_CONFLICT
    + """
RETURNING version)"""
)
APPLY_ADD = (
    APPLY_PUT.replace("p AS", "a AS", 1).replace("%(p", "%(a")
    .replace(_ON_CONFLICT, _ON_CONFLICT_IF_EXPIRED)
)  # fmt: skip
APPLY_DELETE = f"""
d AS (DELETE FROM {{t}} WHERE scope = %(scope)s AND key = ANY(%(dkeys)s) AND {LIVE}
RETURNING 1)"""
APPLY_TOUCH = f"""
h AS (UPDATE {{t}} r SET expires_at = u.e
FROM unnest(%(hkeys)s::text[], %(hexp)s::float8[]) AS u(k, e)
WHERE r.scope = %(scope)s AND r.key = u.k AND {LIVE.replace("expires_at", "r.expires_at")}
RETURNING 1)"""
# Frees the placeholders APPLY_LOCK made for expected keys the batch did not write.
APPLY_UNHOLD = """
x AS (DELETE FROM {t} WHERE scope = %(scope)s AND key = ANY(%(xkeys)s)
    AND expires_at = '-Infinity' AND version = 0)"""
# What each part adds to the result: created records, deleted and touched ones.
APPLY_COUNTS = {
    "p": "(SELECT count(*) FROM p WHERE version = 1)",
    "a": "(SELECT count(*) FROM a)",
    "d": "(SELECT count(*) FROM d)",
    "h": "(SELECT count(*) FROM h)",
}
# Locks the rows of the expected keys for the rest of the transaction. A key without a
# row gets a placeholder (expired since -Infinity, so absent to every reader): its
# uncommitted row makes a concurrent insert of that key wait, which no lock on nothing
# could (PostgreSQL has no gap locks). The last column tells placeholders apart. A key
# in neither part was inserted by another session meanwhile (ph waited for it, but it
# is newer than this statement's snapshot): the caller starts again.
APPLY_LOCK = f"""
WITH ph AS (
    INSERT INTO {{t}} (scope, key, value, created_at, updated_at, expires_at, version)
    SELECT %(scope)s, k, ''::bytea, %(now)s, %(now)s, '-Infinity', 0
    FROM unnest(%(ekeys)s::text[]) AS u(k) ORDER BY k
    ON CONFLICT (scope, key) DO NOTHING
    RETURNING key
), held AS (
    SELECT {COLUMNS} FROM {{t}} WHERE scope = %(scope)s AND key = ANY(%(ekeys)s)
    ORDER BY key FOR UPDATE
)
SELECT {COLUMNS}, false FROM held
UNION ALL SELECT key, NULL, NULL, NULL, NULL, NULL, true FROM ph"""
# A pure check: one snapshot is enough, nothing is written.
APPLY_CHECK = (
    f"SELECT {COLUMNS} FROM {{t}} WHERE scope = %(scope)s AND key = ANY(%(ekeys)s) AND {LIVE}"
)
DELETE = f"DELETE FROM {{t}} WHERE scope = %(scope)s AND key = %(key)s AND {LIVE}"
DELETE_MANY = f"DELETE FROM {{t}} WHERE scope = %(scope)s AND key = ANY(%(keys)s) AND {LIVE}"
TOUCH = f"""
UPDATE {{t}} SET expires_at = %(expires_at)s
WHERE scope = %(scope)s AND key = %(key)s AND {LIVE}"""
COUNT = f"SELECT count(*) FROM {{t}} WHERE scope = %(scope)s AND {LIVE}"
SCOPES = f"SELECT DISTINCT scope FROM {{t}} WHERE {LIVE} ORDER BY scope"
CLEAR = "DELETE FROM {t} WHERE scope = %(scope)s"
PURGE = """
DELETE FROM {t} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {t} WHERE expires_at <= %(now)s LIMIT %(limit)s))"""
_SCAN = (
    f"SELECT {{columns}} FROM {{{{t}}}} WHERE scope = %(scope)s AND key {{op}} %(low)s"
    f"{{upper}} AND {LIVE} ORDER BY key LIMIT %(limit)s"
)
SCAN = {
    (values, inclusive, bounded): _SCAN.format(
        columns=COLUMNS if values else COLUMNS.replace("value", "''::bytea"),
        op=">=" if inclusive else ">",
        upper=" AND key < %(high)s" if bounded else "",
    )
    for values in (True, False)
    for inclusive in (True, False)
    for bounded in (True, False)
}


# -- blob storage of schema version 2 (see LEGACY): read once, then dropped ----------
# A committed blob (staged_at NULL) whose record is live and names it; its chunk count is
# its last chunk + 1, so a chunk missing in between is found missing, not skipped.
LEGACY_BLOBS = f"""
SELECT b.scope, b.key, b.blob_id, coalesce(c.last + 1, 0)
FROM {{blobs}} b
JOIN {{t}} r ON r.scope = b.scope AND r.key = b.key AND r.blob = b.blob_id
LEFT JOIN LATERAL (SELECT max(n) AS last FROM {{chunks}} WHERE blob_id = b.blob_id) c ON true
WHERE b.staged_at IS NULL AND {LIVE.replace("expires_at", "r.expires_at")}
ORDER BY b.scope, b.key"""
LEGACY_CHUNK = "SELECT data FROM {chunks} WHERE blob_id = %(blob)s AND n = %(n)s"
# Under the lock of schema changes; the triggers go with the tables they write to.
LEGACY_DROP = """
SELECT pg_advisory_xact_lock(4242424242);
DROP TRIGGER IF EXISTS {on_delete} ON {t};
DROP TRIGGER IF EXISTS {on_update} ON {t};
DROP FUNCTION IF EXISTS {free_blob}();
DROP TABLE IF EXISTS {chunks}, {blobs};
ALTER TABLE {t} DROP COLUMN IF EXISTS blob;
"""
# What a legacy statement raises once another process dropped the storage meanwhile.
_DROPPED = (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn)

# -- event sequences of releases before 0.2 (see LEGACY_EVENT_TABLES): read once, dropped
# Every sequence with events has a head, so the states table names them all.
LEGACY_SEQUENCES = "SELECT DISTINCT scope, name FROM {states} ORDER BY scope, name"
LEGACY_STATES = (
    "SELECT which, seq, ts, data FROM {states} WHERE scope = %(scope)s AND name = %(name)s"
)
LEGACY_EVENTS = """
SELECT seq, ts, data FROM {events} WHERE scope = %(scope)s AND name = %(name)s AND seq > %(after)s
ORDER BY seq LIMIT %(limit)s"""
# Under the lock of schema changes, as LEGACY_DROP.
LEGACY_EVENTS_DROP = """
SELECT pg_advisory_xact_lock(4242424242);
DROP TABLE IF EXISTS {events}, {states};
"""

# -- time series -----------------------------------------------------------------------
SERIES_PUT = """
INSERT INTO {series} AS p (scope, series, t, value)
SELECT %(scope)s, %(name)s, t, v FROM unnest(%(ts)s::bigint[], %(values)s::bytea[]) AS u(t, v)
ORDER BY t
ON CONFLICT (scope, series, t) DO UPDATE SET value = excluded.value"""
_SERIES_RANGE = """
SELECT t, {value} FROM {{series}}
WHERE scope = %(scope)s AND series = %(name)s AND t >= %(low)s AND t <= %(high)s
ORDER BY t {order} LIMIT %(limit)s"""
SERIES_RANGE = {
    (reverse, values): _SERIES_RANGE.format(
        value="value" if values else "''::bytea", order="DESC" if reverse else "ASC"
    )
    for reverse in (True, False)
    for values in (True, False)
}
SERIES_REMOVE = """
DELETE FROM {series}
WHERE scope = %(scope)s AND series = %(name)s AND t >= %(low)s AND t <= %(high)s"""
SERIES_COUNT = "SELECT count(*) FROM {series} WHERE scope = %(scope)s AND series = %(name)s"
# A skip scan: one index probe per name instead of reading every point.
SERIES_NAMES = """
WITH RECURSIVE names(name) AS (
    (SELECT series FROM {series} WHERE scope = %(scope)s ORDER BY series LIMIT 1)
    UNION ALL
    SELECT (SELECT series FROM {series} WHERE scope = %(scope)s AND series > names.name
            ORDER BY series LIMIT 1)
    FROM names WHERE names.name IS NOT NULL
)
SELECT name FROM names WHERE name IS NOT NULL"""
# Rows locked in t order (as SERIES_PUT writes them), so racing writers cannot deadlock.
SERIES_RESEAL = """
WITH hit AS (
    SELECT p.t, u.new FROM {series} p
    JOIN unnest(%(ts)s::bigint[], %(old)s::bytea[], %(new)s::bytea[]) AS u(t, old, new)
        ON p.t = u.t AND p.value = u.old
    WHERE p.scope = %(scope)s AND p.series = %(name)s
    ORDER BY p.t FOR UPDATE OF p
)
UPDATE {series} p SET value = hit.new FROM hit
WHERE p.scope = %(scope)s AND p.series = %(name)s AND p.t = hit.t"""

# satchel options; anything else in the URL query goes to libpq (sslmode, ...).
_OPTIONS = ("schema", "table", "pool_min", "pool_max", "timeout", "connect_timeout", "op_timeout")

_OPEN: weakref.WeakSet[PostgresBackend] = weakref.WeakSet()
_ABANDONED: list[ConnectionPool] = []  # a parent's pools: closing them in a child would
# end the parent's sessions, so children only drop them


def _after_fork() -> None:
    for backend in list(_OPEN):
        backend._after_fork()


os.register_at_fork(after_in_child=_after_fork)


def _version(row: Any) -> int:
    """The schema version in a meta row, or -1."""
    return int(row[0]) if row and str(row[0]).isdigit() else -1


def _derived(table: str, suffix: str) -> str:
    """The name of an object of `table`: `table` + `suffix`, shortened with a hash to fit
    PostgreSQL's 63 bytes (which would otherwise cut it, and two names could collide)."""
    name = table + suffix
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    head = table.encode()[: 63 - len(suffix) - 9].decode(errors="ignore")
    return f"{head}_{digest}{suffix}"


def _bounds(start: int | None, stop: int | None) -> tuple[int, int] | None:
    """``start <= t < stop`` as inclusive int64 bounds, or None if no t fits."""
    low = INT64_MIN if start is None else max(start, INT64_MIN)
    high = INT64_MAX if stop is None else min(stop - 1, INT64_MAX)
    return (low, high) if low <= high else None


class _Raced(Exception):
    """A conditional batch lost a race with another writer and wrote nothing: retry."""


class _Failed(Exception):
    """A condition of a batch failed: its transaction is rolled back."""


# How often apply starts a batch again after losing a race (each time, another writer
# got through, so a long run of losses is unlikely).
APPLY_ATTEMPTS = 10


class _TimedOut(psycopg.OperationalError):
    """An operation overran op_timeout: a retry would take as long (not retried)."""

    def __init__(self, op_timeout: float, fired: str) -> None:
        if fired == "shut":
            super().__init__(
                f"no answer from the server within op_timeout={op_timeout:g}s; connection dropped"
            )
        else:
            super().__init__(f"canceled after op_timeout={op_timeout:g}s")


def _is_cas(change: Change, condition: Expect) -> bool:
    """Whether a batch of `change` if `condition` is what one compare_and_set does."""
    # An if_absent Put expecting a live version never writes: not a compare-and-set.
    return (
        isinstance(change, Put)
        and change.key == condition.key
        and (condition.version is None or not change.if_absent)
    )


def _record(row: Any) -> Record:
    return Record(row[0], row[1], row[2], row[3], row[4], row[5])


def open_postgres(url: str, options: dict[str, Any]) -> Backend:
    """Open the PostgreSQL engine for `url` (no query) with `options`."""
    satchel_options = {name: options.pop(name) for name in _OPTIONS if name in options}
    return PostgresBackend(url, libpq=options, **satchel_options)


class PostgresBackend(Backend, SeriesEngine):
    """A satchel store in one PostgreSQL table (and the tables named after it)."""

    def __init__(
        self,
        url: str,
        *,
        libpq: dict[str, Any] | None = None,
        schema: str = "public",
        table: str = "satchel_kv",
        pool_min: int | str = 1,
        pool_max: int | str = 10,
        timeout: float | str = 30.0,
        connect_timeout: float | str = 10.0,
        op_timeout: float | str = 60.0,
    ) -> None:
        try:
            self._pool_min, self._pool_max = int(pool_min), int(pool_max)
            self._timeout, self._connect_timeout = float(timeout), float(connect_timeout)
            self._op_timeout = float(op_timeout)
        except ValueError as exc:
            raise InvalidInput(f"bad pool or timeout option: {exc}") from None
        if not 0 <= self._op_timeout < math.inf:
            raise InvalidInput(f"op_timeout must be >= 0 (0: no limit), not {op_timeout}")
        if not 0 <= self._pool_min <= self._pool_max or self._pool_max < 1:
            raise InvalidInput(f"need 0 <= pool_min <= pool_max and pool_max >= 1 ({url})")
        for name, value in (("schema", schema), ("table", table)):
            if not value or len(value) > 63 or "\x00" in value:
                raise InvalidInput(f"{name} must be a PostgreSQL identifier, not {value!r}")
        self.engine = redact(url).replace("postgres://", "postgresql://", 1)
        self._password = password(url)
        self._conninfo = url
        self._libpq = {
            "connect_timeout": int(self._connect_timeout),
            "application_name": "satchel",
            **(libpq or {}),
        }
        self._sql = self._statements(schema, table)
        self._apply_sql: dict[str, str] = {}  # apply's statement per batch shape
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self._sticky: psycopg.Connection[Any] | None = None
        self._sticky_lock = threading.Lock()
        self._create = sql.SQL(CREATE).format(
            schema=sql.Identifier(schema),
            meta=sql.Identifier(schema, "satchel_meta"),
            t=sql.Identifier(schema, table),
            idx=sql.Identifier(f"{table}_expiry"),
            version_name=sql.Literal(f"{table}.schema_version"),
            version=sql.Literal(str(SCHEMA_VERSION)),
            **{
                name: sql.Identifier(schema, _derived(table, suffix))
                for name, suffix in DERIVED.items()
            },
        )  # fmt: skip
        legacy = {name: _derived(table, suffix) for name, suffix in LEGACY.items()}
        self._drop_legacy = sql.SQL(LEGACY_DROP).format(
            t=sql.Identifier(schema, table),
            **{
                name: sql.Identifier(value) if name.startswith("on_")
                else sql.Identifier(schema, value)
                for name, value in legacy.items()
            },
        )  # fmt: skip
        self._meta = sql.Identifier(schema, "satchel_meta").as_string(None)
        old_states = _derived(table, LEGACY_EVENT_TABLES["states"])
        self._read_version = sql.SQL(READ_VERSION).format(
            legacy=sql.Literal(sql.Identifier(schema, legacy["blobs"]).as_string(None)),
            legacy_events=sql.Literal(sql.Identifier(schema, old_states).as_string(None)),
            meta=sql.Identifier(schema, "satchel_meta"),
            version_name=sql.Literal(f"{table}.schema_version"),
        )
        # Whether the old blob storage and event tables were there at the last open.
        self._legacy_blobs = self._legacy_events = False
        self._where = f"table {schema}.{table}"
        self._open_pool()
        _OPEN.add(self)

    @staticmethod
    def _statements(schema: str, table: str) -> dict[str, str]:
        qualified = sql.Identifier(schema, table).as_string(None)
        tables = {
            f"{{{name}}}": sql.Identifier(schema, _derived(table, suffix)).as_string(None)
            for name, suffix in (*DERIVED.items(), *LEGACY_EVENT_TABLES.items(),
                                 ("blobs", LEGACY["blobs"]), ("chunks", LEGACY["chunks"]))
        }  # fmt: skip
        names = {
            "GET": GET, "GET_VALUE": GET_VALUE, "GET_MANY": GET_MANY, "PUT": PUT,
            "PUT_IF_ABSENT": PUT_IF_ABSENT,
            "SET_IF_VERSION": SET_IF_VERSION,
            "DELETE": DELETE, "DELETE_MANY": DELETE_MANY, "TOUCH": TOUCH,
            "COUNT": COUNT, "SCOPES": SCOPES, "CLEAR": CLEAR, "PURGE": PURGE,
            "LEGACY_BLOBS": LEGACY_BLOBS, "LEGACY_CHUNK": LEGACY_CHUNK,
            "SERIES_PUT": SERIES_PUT, "SERIES_REMOVE": SERIES_REMOVE,
            "SERIES_COUNT": SERIES_COUNT, "SERIES_NAMES": SERIES_NAMES,
            "LEGACY_SEQUENCES": LEGACY_SEQUENCES, "LEGACY_STATES": LEGACY_STATES,
            "LEGACY_EVENTS": LEGACY_EVENTS, "LEGACY_EVENTS_DROP": LEGACY_EVENTS_DROP,
            "SERIES_RESEAL": SERIES_RESEAL,
            "APPLY_LOCK": APPLY_LOCK, "APPLY_CHECK": APPLY_CHECK, "APPLY_PUT": APPLY_PUT,
            "APPLY_ADD": APPLY_ADD, "APPLY_DELETE": APPLY_DELETE, "APPLY_TOUCH": APPLY_TOUCH,
            "APPLY_UNHOLD": APPLY_UNHOLD,
        }  # fmt: skip
        for shape, text in SCAN.items():
            names[f"SCAN{shape}"] = text
        for order, text in SERIES_RANGE.items():
            names[f"SERIES_RANGE{order}"] = text
        statements = {}
        for name, text in names.items():
            text = text.replace("{t}", qualified)
            for placeholder, table_name in tables.items():
                text = text.replace(placeholder, table_name)
            statements[name] = text
        return statements

    # -- connections -------------------------------------------------------------------

    def _open_pool(self) -> ConnectionPool:
        with self._lock:
            if self._pool is not None:
                return self._pool
            kwargs = {"autocommit": True, **self._libpq}
            # One direct connection first: a bad option or an unreachable server is
            # reported now with its real cause (a pool would only retry until timeout).
            with self._errors():
                conninfo = make_conninfo(self._conninfo, **self._libpq)
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    self._limited(conn, self._check_schema)
            pool = ConnectionPool(
                self._conninfo,
                kwargs=kwargs,
                min_size=self._pool_min,
                max_size=self._pool_max,
                timeout=self._timeout,
                open=False,
                name="satchel",
            )
            pool.open(wait=False)
            self._pool = pool
            return pool

    def _check_schema(self, conn: psycopg.Connection[Any]) -> None:
        found = None
        with suppress(psycopg.errors.UndefinedTable):
            found = conn.execute(self._read_version).fetchone()
        if found is None or 1 <= _version(found) < SCHEMA_VERSION:
            with conn.transaction():
                # Serialise concurrent opens: CREATE ... IF NOT EXISTS can still race, and
                # another satchel may have created or upgraded the tables meanwhile.
                conn.execute("SELECT pg_advisory_xact_lock(4242424242)")
                meta = conn.execute("SELECT to_regclass(%s)", (self._meta,)).fetchone()
                current = None
                if meta is not None and meta[0] is not None:
                    current = conn.execute(self._read_version).fetchone()
                if current is None or 1 <= _version(current) < SCHEMA_VERSION:
                    conn.execute(self._create)  # creates what is missing, sets the version
            found = conn.execute(self._read_version).fetchone()
        version = _version(found)
        if version > SCHEMA_VERSION:
            raise IncompatibleDatabase(
                f"{self._where} has satchel schema {version}, written by a newer satchel",
                engine=self.engine,
            )
        if version < 1:
            raise IncompatibleDatabase(
                f"{self._where} has no valid satchel schema version", engine=self.engine
            )
        # Only a table an older satchel wrote has them, and none creates them in a version
        # 3 table: once dropped they never come back, and legacy_blobs and
        # legacy_sequences, run at every satchel.open, need no query of their own.
        self._legacy_blobs = bool(found and found[1])
        self._legacy_events = bool(found and found[2])

    @contextmanager
    def _errors(self, may_have_written: bool = False) -> Iterator[None]:
        """The one place driver errors become satchel errors."""
        try:
            yield
        except PoolTimeout as exc:
            raise BackendUnavailable(
                f"no PostgreSQL connection within {self._timeout:g}s", engine=self.engine
            ) from exc
        except psycopg.OperationalError as exc:
            message = self._scrub(exc)
            if may_have_written:
                message += "; the write may or may not have been applied"
            cut = not isinstance(exc, (_TimedOut, psycopg.errors.QueryCanceled))
            raise BackendUnavailable(
                f"PostgreSQL{' connection failed' if cut else ''}: {message}", engine=self.engine
            ) from exc
        except psycopg.ProgrammingError as exc:
            if "invalid connection option" in str(exc) or "dsn" in str(exc).lower():
                raise InvalidInput(
                    f"bad PostgreSQL option: {self._scrub(exc)}", engine=self.engine
                ) from exc
            raise BackendError(
                f"PostgreSQL failed: {self._scrub(exc)}", engine=self.engine
            ) from exc
        except psycopg.Error as exc:
            raise BackendError(
                f"PostgreSQL failed: {self._scrub(exc)}", engine=self.engine
            ) from exc

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc).strip().replace("\n", " ")
        return text.replace(self._password, "***") if self._password else text

    def _run(self, fn: Callable[[psycopg.Connection[Any]], T], *, read: bool = False) -> T:
        """Run `fn` on a connection. Reads are retried once on a broken one."""
        attempts = 2 if read else 1
        while True:
            attempts -= 1
            try:
                with self._errors(may_have_written=not read):
                    return self._on_connection(fn)
            except BackendUnavailable as exc:
                # Waiting for the pool already took `timeout`, and a server that did not
                # answer within op_timeout is hung: no second wait.
                if attempts <= 0 or isinstance(exc.__cause__, (PoolTimeout, _TimedOut)):
                    raise
                # After a server restart every idle pooled connection is dead too:
                # drop them, so the retry gets a fresh one. (Not check(): it would talk
                # to each, with no time limit, on a server that may hang.)
                if self._pool is not None:
                    with suppress(Exception):
                        self._pool.drain()

    def _on_connection(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        pool = self._pool or self._open_pool()
        # Fast path: one connection kept checked out for whoever finds it free; the
        # pool's check-out costs more than a local round trip. Busy: use the pool.
        if not self._sticky_lock.acquire(blocking=False):
            with pool.connection() as pooled:
                return self._limited(pooled, fn)
        try:
            sticky = self._sticky
            if sticky is None or sticky.closed:  # a broken connection reports closed
                self._sticky = None
                if sticky is not None:
                    pool.putconn(sticky)  # the pool discards it
                sticky = self._sticky = pool.getconn()
            return self._limited(sticky, fn)
        finally:
            self._sticky_lock.release()

    def _limited(
        self, conn: psycopg.Connection[Any], fn: Callable[[psycopg.Connection[Any]], T]
    ) -> T:
        """`fn(conn)` within op_timeout (see watchdog.py): past it, the statement is
        canceled, or, if the server does not answer, the connection is dropped."""
        if not self._op_timeout:
            return fn(conn)
        token = watchdog.start(conn.fileno(), self._op_timeout, conn.cancel_safe)
        try:
            result = fn(conn)
        except BaseException as exc:
            fired = watchdog.stop(token)
            if fired is not None:  # shut, or a late cancel could hit the next statement
                conn.close()
            if fired is not None and isinstance(exc, psycopg.OperationalError):
                raise _TimedOut(self._op_timeout, fired) from exc
            raise
        if watchdog.stop(token) is not None:  # the answer came just in time; the socket
            conn.close()  # may be shut, or a cancel on its way to the next statement
        return result

    def _one(self, name: str, params: dict[str, Any], *, read: bool = False) -> Any:
        """The first row of one statement, or None."""
        statement = self._sql[name]
        return self._run(lambda conn: conn.execute(statement, params).fetchone(), read=read)

    def _count(self, name: str, params: dict[str, Any]) -> int:
        statement = self._sql[name]
        return self._run(lambda conn: conn.execute(statement, params).rowcount)

    def _after_fork(self) -> None:
        if self._pool is not None:
            _ABANDONED.append(self._pool)
        self._pool = self._sticky = None
        self._lock = threading.Lock()
        self._sticky_lock = threading.Lock()

    def close(self) -> None:
        with self._lock, self._sticky_lock:
            pool, self._pool = self._pool, None
            sticky, self._sticky = self._sticky, None
        if pool is not None:
            if sticky is not None:
                pool.putconn(sticky)
            pool.close()
        _OPEN.discard(self)

    # -- primitives --------------------------------------------------------------------

    def get(self, scope: str, key: str, now: float) -> Record | None:
        row = self._one("GET", {"scope": scope, "key": key, "now": now}, read=True)
        return None if row is None else _record(row)

    def get_value(self, scope: str, key: str, now: float) -> bytes | None:
        row = self._one("GET_VALUE", {"scope": scope, "key": key, "now": now}, read=True)
        return None if row is None else row[0]  # bytea arrives as bytes

    def get_many(self, scope: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        statement = self._sql["GET_MANY"]
        params = {"scope": scope, "keys": list(keys), "now": now}
        rows = self._run(lambda conn: conn.execute(statement, params).fetchall(), read=True)
        return {row[0]: _record(row) for row in rows}

    def apply(
        self, scope: str, changes: Sequence[Change], now: float, expect: Sequence[Expect] = ()
    ) -> int | None:
        """Make `changes` atomically if `expect` holds (see Backend.apply).

        Unconditional: one statement, whatever the batch holds. One Put, Delete or Touch
        costs what put / delete_many / touch do; a Put conditional on its own key, what
        compare_and_set does. Other conditional batches take two round trips: lock and
        read the expected keys (then check them here), then write and commit.
        """
        if not expect:
            if len(changes) == 1:
                return self._apply_one(scope, changes[0], now)
            if not changes:
                return 0
            if all(type(c) is Delete for c in changes):  # a plain DELETE counts faster
                keys = sorted(c.key for c in changes)
                return self._count("DELETE_MANY", {"scope": scope, "keys": keys, "now": now})
        elif len(expect) == 1 and len(changes) == 1 and _is_cas(changes[0], expect[0]):
            return self._apply_cas(scope, cast(Put, changes[0]), now, expect[0])
        elif not changes:
            statement = self._sql["APPLY_CHECK"]
            params = {"scope": scope, "now": now, "ekeys": sorted({c.key for c in expect})}
            rows = self._run(lambda conn: conn.execute(statement, params).fetchall(), read=True)
            live = {row[0]: _record(row) for row in rows}
            return 0 if all(holds(live.get(c.key), c) for c in expect) else None
        return self._run(lambda conn: self._apply_in(conn, scope, changes, now, expect))

    def _apply_one(self, scope: str, change: Change, now: float) -> int:
        """One unconditional change: the statement put, delete_many or touch runs."""
        params: dict[str, Any] = {"scope": scope, "key": change.key, "now": now}
        if isinstance(change, Put):
            params.update(value=change.value, expires_at=change.expires_at)
            row = self._one("PUT_IF_ABSENT" if change.if_absent else "PUT", params)
            return int(row is not None and row[0] == 1)
        if isinstance(change, Delete):
            return self._count("DELETE", params)
        params["expires_at"] = change.expires_at
        return self._count("TOUCH", params)

    def _apply_cas(self, scope: str, change: Put, now: float, condition: Expect) -> int | None:
        """A Put conditional on its own key (see _is_cas): compare_and_set's statement."""
        params = {"scope": scope, "key": change.key, "value": change.value, "now": now,
                  "expires_at": change.expires_at, "version": condition.version,
                  "created": condition.created_at}  # fmt: skip
        if condition.version is None:  # the insert is the check: it writes only if absent
            return None if self._one("PUT_IF_ABSENT", params) is None else 1
        return 0 if self._count("SET_IF_VERSION", params) == 1 else None

    def _apply_in(
        self,
        conn: psycopg.Connection[Any],
        scope: str,
        changes: Sequence[Change],
        now: float,
        expect: Sequence[Expect],
    ) -> int | None:
        """Run a batch on `conn`, starting again (it wrote nothing) when it lost a race:
        a deadlock with another batch, or an expected key inserted while being locked."""
        for attempt in range(APPLY_ATTEMPTS):
            try:
                if not expect:
                    statement, params = self._apply_write(scope, changes, now, set())
                    row = conn.execute(statement, params).fetchone()
                    return int(row[0]) if row else 0
                return self._apply_checked(conn, scope, changes, now, expect)
            except _Failed:
                return None
            except (_Raced, psycopg.errors.DeadlockDetected):
                if attempt == APPLY_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _apply_checked(
        self,
        conn: psycopg.Connection[Any],
        scope: str,
        changes: Sequence[Change],
        now: float,
        expect: Sequence[Expect],
    ) -> int | None:
        """A conditional batch in one transaction, in two round trips: BEGIN and the lock,
        then the write and COMMIT (sent together: once locked, no condition can fail).
        BEGIN and COMMIT are sent by hand: conn.transaction() waits for each."""
        expected = sorted({c.key for c in expect})
        lock_params = {"scope": scope, "now": now, "ekeys": expected}
        cursor: psycopg.Cursor[Any] | None = None

        def run(statement: str, params: dict[str, Any] | None = None) -> psycopg.Cursor[Any]:
            # Never prepared: psycopg counts a statement as prepared once queued, so one
            # queued behind an error (a deadlock) would be missing from then on.
            return conn.execute(statement, params, prepare=False)

        try:
            with conn.pipeline():
                run("BEGIN")
                rows = run(self._sql["APPLY_LOCK"], lock_params).fetchall()
                held = {row[0]: row for row in rows}
                found = {
                    key: None if row[6] or (row[4] is not None and row[4] <= now) else _record(row)
                    for key, row in held.items()
                }
                unhold = {key for key, row in held.items() if row[6]}
                raced = len(held) != len(expected)
                if raced or not all(holds(found[c.key], c) for c in expect):
                    # Nothing is written but the placeholders: free them and COMMIT,
                    # not ROLLBACK, after which psycopg forgets its prepared statements.
                    statement, params = self._apply_write(scope, (), now, unhold)
                    if statement:
                        run(statement, params)
                    run("COMMIT")  # sent with the pipeline's closing sync
                    raise _Raced if raced else _Failed
                # A Delete or Touch of a key held absent does nothing; placeholders the
                # batch does not overwrite are freed.
                absent = {key for key in held if found[key] is None}
                changes = [c for c in changes if isinstance(c, Put) or c.key not in absent]
                unhold.difference_update(c.key for c in changes if isinstance(c, Put))
                statement, params = self._apply_write(scope, changes, now, unhold)
                cursor = run(statement, params) if statement else None
                run("COMMIT")
        except BaseException:
            if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
            raise
        row = None if cursor is None else cursor.fetchone()
        return int(row[0]) if row else 0

    def _apply_write(
        self, scope: str, changes: Sequence[Change], now: float, unhold: set[str]
    ) -> tuple[str, dict[str, Any]]:
        """The statement (cached per batch shape) and parameters that make `changes`
        and free the placeholders of `unhold`; its one row is the count."""
        puts: list[Put] = []
        adds: list[Put] = []
        deletes: list[str] = []
        touches: list[Touch] = []
        for change in changes:
            if isinstance(change, Put):
                (adds if change.if_absent else puts).append(change)
            elif isinstance(change, Delete):
                deletes.append(change.key)
            else:
                touches.append(change)
        params: dict[str, Any] = {"scope": scope, "now": now}
        parts = []
        for name, batch in (("p", puts), ("a", adds)):
            if batch:
                parts.append(name)
                params[f"{name}keys"] = [c.key for c in batch]
                params[f"{name}values"] = [c.value for c in batch]
                params[f"{name}exp"] = [c.expires_at for c in batch]
        if deletes:
            parts.append("d")
            params["dkeys"] = sorted(deletes)
        if touches:
            parts.append("h")
            params["hkeys"] = [c.key for c in touches]
            params["hexp"] = [c.expires_at for c in touches]
        if unhold:
            parts.append("x")
            params["xkeys"] = sorted(unhold)
        if not parts:
            return "", params
        shape = "".join(parts)
        statement = self._apply_sql.get(shape)
        if statement is None:
            statement = self._apply_sql[shape] = self._apply_statement(parts)
        return statement, params

    def _apply_statement(self, parts: list[str]) -> str:
        names = {"p": "APPLY_PUT", "a": "APPLY_ADD", "d": "APPLY_DELETE", "h": "APPLY_TOUCH",
                 "x": "APPLY_UNHOLD"}  # fmt: skip
        counts = [APPLY_COUNTS[part] for part in parts if part in APPLY_COUNTS]
        ctes = ",".join(self._sql[names[part]] for part in parts)
        return f"WITH{ctes}\nSELECT {' + '.join(counts) or '0'}"

    def scan(
        self,
        scope: str,
        prefix: str,
        after: str | None,
        limit: int,
        now: float,
        values: bool = True,
    ) -> list[Record]:
        low, inclusive, high = scan_range(prefix, after)
        statement = self._sql[f"SCAN{(values, inclusive, high is not None)}"]
        params = {"scope": scope, "low": low, "high": high, "now": now, "limit": limit}
        rows = self._run(lambda conn: conn.execute(statement, params).fetchall(), read=True)
        return [_record(row) for row in rows]

    def count(self, scope: str, now: float) -> int:
        row = self._one("COUNT", {"scope": scope, "now": now}, read=True)
        return int(row[0])

    def scopes(self, now: float) -> list[str]:
        statement = self._sql["SCOPES"]
        rows = self._run(lambda conn: conn.execute(statement, {"now": now}).fetchall(), read=True)
        return [row[0] for row in rows]

    def clear(self, scope: str) -> None:
        self._count("CLEAR", {"scope": scope})

    def purge_expired(self, now: float, limit: int) -> int:
        return self._count("PURGE", {"now": now, "limit": limit})

    # -- large values kept by releases before 0.2 --------------------------------------

    def legacy_blobs(self, now: float) -> list[LegacyBlob] | None:
        if not self._legacy_blobs:  # as found by the last open's schema check: no query
            return None
        statement = self._sql["LEGACY_BLOBS"]

        def find_in(conn: psycopg.Connection[Any]) -> list[LegacyBlob] | None:
            try:
                rows = conn.execute(statement, {"now": now}).fetchall()
            except _DROPPED:  # dropped by another process meanwhile
                return None
            return [LegacyBlob(row[0], row[1], row[2], int(row[3])) for row in rows]

        found = self._run(find_in, read=True)
        self._legacy_blobs = found is not None
        return found

    def legacy_chunk(self, blob: LegacyBlob, index: int) -> bytes | None:
        if not INT32_MIN <= index <= INT32_MAX:
            return None
        statement = self._sql["LEGACY_CHUNK"]
        params = {"blob": blob.blob_id, "n": index}

        def read_in(conn: psycopg.Connection[Any]) -> bytes | None:
            try:
                # Binary results: text would send a chunk hex-encoded, twice its size.
                row = conn.execute(statement, params, binary=True).fetchone()
            except _DROPPED:
                return None
            return None if row is None else bytes(row[0])

        return self._run(read_in, read=True)

    def drop_legacy_blobs(self) -> None:
        statement = self._drop_legacy

        def drop_in(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                conn.execute(statement)

        self._run(drop_in)
        self._legacy_blobs = False

    # -- event sequences kept by releases before 0.2 -----------------------------------

    def _legacy_rows(self, name: str, params: dict[str, Any]) -> list[Any] | None:
        """The rows of a query on the old event tables; None once they are dropped."""
        statement = self._sql[name]

        def read_in(conn: psycopg.Connection[Any]) -> list[Any] | None:
            try:
                # Binary results: text would send the data hex-encoded, twice its size.
                return conn.execute(statement, params, binary=True).fetchall()
            except _DROPPED:  # dropped by another process meanwhile
                return None

        return self._run(read_in, read=True)

    def legacy_sequences(self) -> list[tuple[str, str]] | None:
        if not self._legacy_events:  # as found by the last open's schema check: no query
            return None
        rows = self._legacy_rows("LEGACY_SEQUENCES", {})
        self._legacy_events = rows is not None
        return None if rows is None else [(row[0], row[1]) for row in rows]

    def legacy_states(self, scope: str, name: str) -> tuple[EventState | None, EventState | None]:
        rows = self._legacy_rows("LEGACY_STATES", {"scope": scope, "name": name}) or []
        states = {row[0]: (row[1], row[2], bytes(row[3])) for row in rows}
        return states.get("head"), states.get("base")

    def legacy_events(
        self, scope: str, name: str, after_seq: int, limit: int
    ) -> list[tuple[int, int, bytes]]:
        if limit <= 0 or after_seq >= INT64_MAX:
            return []
        params = {"scope": scope, "name": name, "after": max(after_seq, INT64_MIN),
                  "limit": min(limit, INT64_MAX)}  # fmt: skip
        rows = self._legacy_rows("LEGACY_EVENTS", params) or []
        return [(row[0], row[1], bytes(row[2])) for row in rows]

    def drop_legacy_events(self) -> None:
        statement = self._sql["LEGACY_EVENTS_DROP"]

        def drop_in(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                conn.execute(statement)

        self._run(drop_in)
        self._legacy_events = False

    # -- time series -------------------------------------------------------------------

    def series_put(self, scope: str, name: str, points: Sequence[tuple[int, bytes]]) -> None:
        if points:
            params = {"scope": scope, "name": name, "ts": [t for t, _ in points],
                      "values": [v for _, v in points]}  # fmt: skip
            self._count("SERIES_PUT", params)

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
        bounds = _bounds(start, stop)
        if bounds is None or limit <= 0:
            return []
        statement = self._sql[f"SERIES_RANGE{(reverse, values)}"]
        params = {"scope": scope, "name": name, "low": bounds[0], "high": bounds[1],
                  "limit": min(limit, INT64_MAX)}  # fmt: skip
        rows = self._run(lambda conn: conn.execute(statement, params).fetchall(), read=True)
        return [(row[0], row[1]) for row in rows]

    def series_remove(self, scope: str, name: str, start: int | None, stop: int | None) -> int:
        bounds = _bounds(start, stop)
        if bounds is None:
            return 0
        params = {"scope": scope, "name": name, "low": bounds[0], "high": bounds[1]}
        return self._count("SERIES_REMOVE", params)

    def series_count(self, scope: str, name: str) -> int:
        row = self._one("SERIES_COUNT", {"scope": scope, "name": name}, read=True)
        return int(row[0])

    def series_names(self, scope: str) -> list[str]:
        statement = self._sql["SERIES_NAMES"]
        rows = self._run(lambda conn: conn.execute(statement, {"scope": scope}).fetchall(),
                         read=True)  # fmt: skip
        return [row[0] for row in rows]

    def series_reseal(
        self, scope: str, name: str, points: Sequence[tuple[int, bytes, bytes]]
    ) -> int:
        if not points:
            return 0
        params = {"scope": scope, "name": name, "ts": [p[0] for p in points],
                  "old": [p[1] for p in points], "new": [p[2] for p in points]}  # fmt: skip
        return self._count("SERIES_RESEAL", params)
