"""``postgresql://``: PostgreSQL through psycopg 3 and a psycopg_pool connection pool.

One table (``satchel_kv`` by default, in schema ``public``; both configurable with the
``table=`` and ``schema=`` options, so several applications can share a database),
created on first use, its schema version recorded in ``satchel_meta``. Keys are
``text COLLATE "C"``: byte order of UTF-8, so sorting matches Python's and a prefix
glob is a range scan of the primary key. Single operations are one autocommitted
statement; batches are one statement over arrays (``unnest``/``= ANY``), so a batch of
10,000 keys is one round trip. ``incr`` serialises on a transaction-scoped advisory
lock, so a missing counter cannot be created twice.

A connection that breaks is dropped by the pool and replaced. A read that fails with a
broken connection is retried once on a fresh one; a write is never retried, since it
may or may not have been applied: it raises BackendUnavailable saying so.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from ..engines import password, redact
from ..errors import BackendError, BackendUnavailable, IncompatibleDatabase, InvalidInput
from ..keys import scan_range
from .base import CREATED_AT_TOLERANCE, Backend, Modifier, Record

SCHEMA_VERSION = 1
T = TypeVar("T")

# {t} is the schema-qualified table, {meta} the meta table, {idx} the expiry index name.
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
INSERT INTO {meta} (name, value) VALUES ({version_name}, {version}) ON CONFLICT DO NOTHING;
"""
READ_VERSION = "SELECT value FROM {meta} WHERE name = {version_name}"
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
_INSERT_MANY = """
INSERT INTO {t} AS r (scope, key, value, created_at, updated_at, expires_at, version)
SELECT %(scope)s, k, v, %(now)s, %(now)s, %(expires_at)s, 1
FROM unnest(%(keys)s::text[], %(values)s::bytea[]) AS u(k, v) ORDER BY k"""
PUT_MANY = _INSERT_MANY + _ON_CONFLICT
PUT_MANY_IF_ABSENT = _INSERT_MANY + _ON_CONFLICT_IF_EXPIRED
SET_IF_VERSION = f"""
UPDATE {{t}} SET value = %(value)s, updated_at = %(now)s, expires_at = %(expires_at)s,
    version = version + 1
WHERE scope = %(scope)s AND key = %(key)s AND version = %(version)s AND {LIVE}
    AND (%(created)s::float8 IS NULL
         OR abs(created_at - %(created)s::float8) <= {CREATED_AT_TOLERANCE})"""
DELETE = f"DELETE FROM {{t}} WHERE scope = %(scope)s AND key = %(key)s AND {LIVE}"
DELETE_MANY = f"DELETE FROM {{t}} WHERE scope = %(scope)s AND key = ANY(%(keys)s) AND {LIVE}"
POP = f"DELETE FROM {{t}} WHERE scope = %(scope)s AND key = %(key)s AND {LIVE} RETURNING value"
LOCK_KEY = "SELECT pg_advisory_xact_lock(hashtextextended(%(scope)s || chr(1) || %(key)s, 0))"
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

# satchel options; anything else in the URL query goes to libpq (sslmode, ...).
_OPTIONS = ("schema", "table", "pool_min", "pool_max", "timeout", "connect_timeout")

_OPEN: weakref.WeakSet[PostgresBackend] = weakref.WeakSet()
_ABANDONED: list[ConnectionPool] = []  # a parent's pools: closing them in a child would
# end the parent's sessions, so children only drop them


def _after_fork() -> None:
    for backend in list(_OPEN):
        backend._after_fork()


os.register_at_fork(after_in_child=_after_fork)


def _record(row: Any) -> Record:
    return Record(row[0], row[1], row[2], row[3], row[4], row[5])


def open_postgres(url: str, options: dict[str, Any]) -> Backend:
    """Open the PostgreSQL engine for `url` (no query) with `options`."""
    satchel_options = {name: options.pop(name) for name in _OPTIONS if name in options}
    return PostgresBackend(url, libpq=options, **satchel_options)


class PostgresBackend(Backend):
    """A satchel store in one PostgreSQL table."""

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
    ) -> None:
        try:
            self._pool_min, self._pool_max = int(pool_min), int(pool_max)
            self._timeout, self._connect_timeout = float(timeout), float(connect_timeout)
        except ValueError as exc:
            raise InvalidInput(f"bad pool or timeout option: {exc}") from None
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
        )
        self._read_version = sql.SQL(READ_VERSION).format(
            meta=sql.Identifier(schema, "satchel_meta"),
            version_name=sql.Literal(f"{table}.schema_version"),
        )
        self._where = f"table {schema}.{table}"
        self._open_pool()
        _OPEN.add(self)

    @staticmethod
    def _statements(schema: str, table: str) -> dict[str, str]:
        qualified = sql.Identifier(schema, table).as_string(None)
        names = {
            "GET": GET, "GET_VALUE": GET_VALUE, "GET_MANY": GET_MANY, "PUT": PUT,
            "PUT_IF_ABSENT": PUT_IF_ABSENT, "PUT_MANY": PUT_MANY,
            "PUT_MANY_IF_ABSENT": PUT_MANY_IF_ABSENT, "SET_IF_VERSION": SET_IF_VERSION,
            "DELETE": DELETE, "DELETE_MANY": DELETE_MANY, "POP": POP, "TOUCH": TOUCH,
            "COUNT": COUNT, "SCOPES": SCOPES, "CLEAR": CLEAR, "PURGE": PURGE,
        }  # fmt: skip
        statements = {name: text.replace("{t}", qualified) for name, text in names.items()}
        for shape, text in SCAN.items():
            statements[f"SCAN{shape}"] = text.replace("{t}", qualified)
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
                    self._check_schema(conn)
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
        if found is None:
            with conn.transaction():
                # Serialise concurrent first opens: CREATE ... IF NOT EXISTS can still race.
                conn.execute("SELECT pg_advisory_xact_lock(4242424242)")
                conn.execute(self._create)
            found = conn.execute(self._read_version).fetchone()
        version = int(found[0]) if found and str(found[0]).isdigit() else -1
        if version > SCHEMA_VERSION:
            raise IncompatibleDatabase(
                f"{self._where} has satchel schema {version}, written by a newer satchel",
                engine=self.engine,
            )
        if version < 1:
            raise IncompatibleDatabase(
                f"{self._where} has no valid satchel schema version", engine=self.engine
            )

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
            raise BackendUnavailable(
                f"PostgreSQL connection failed: {message}", engine=self.engine
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
                # Waiting for the pool already took `timeout`: no second wait.
                if attempts <= 0 or isinstance(exc.__cause__, PoolTimeout):
                    raise
                # After a server restart every idle pooled connection is dead too:
                # drop them, so the retry gets a fresh one.
                if self._pool is not None:
                    with suppress(Exception):
                        self._pool.check()

    def _on_connection(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        pool = self._pool or self._open_pool()
        # Fast path: one connection kept checked out for whoever finds it free; the
        # pool's check-out costs more than a local round trip. Busy: use the pool.
        if not self._sticky_lock.acquire(blocking=False):
            with pool.connection() as pooled:
                return fn(pooled)
        try:
            sticky = self._sticky
            if sticky is None or sticky.closed:  # a broken connection reports closed
                self._sticky = None
                if sticky is not None:
                    pool.putconn(sticky)  # the pool discards it
                sticky = self._sticky = pool.getconn()
            return fn(sticky)
        finally:
            self._sticky_lock.release()

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

    def put(
        self,
        scope: str,
        key: str,
        value: bytes,
        expires_at: float | None,
        now: float,
        if_absent: bool,
    ) -> bool:
        params = {"scope": scope, "key": key, "value": value, "now": now,
                  "expires_at": expires_at}  # fmt: skip
        row = self._one("PUT_IF_ABSENT" if if_absent else "PUT", params)
        return row is not None and row[0] == 1

    def put_many(
        self,
        scope: str,
        items: Sequence[tuple[str, bytes]],
        expires_at: float | None,
        now: float,
        if_absent: bool,
    ) -> int:
        params = {"scope": scope, "keys": [k for k, _ in items], "values": [v for _, v in items],
                  "now": now, "expires_at": expires_at}  # fmt: skip
        return self._count("PUT_MANY_IF_ABSENT" if if_absent else "PUT_MANY", params)

    def delete_many(self, scope: str, keys: Sequence[str], now: float) -> int:
        if len(keys) == 1:  # the plain statement is a third cheaper than "= ANY"
            return self._count("DELETE", {"scope": scope, "key": keys[0], "now": now})
        return self._count("DELETE_MANY", {"scope": scope, "keys": sorted(keys), "now": now})

    def pop(
        self, scope: str, key: str, now: float, decode: Callable[[bytes], Any]
    ) -> tuple[Any] | None:
        statement = self._sql["POP"]
        params = {"scope": scope, "key": key, "now": now}

        def pop_in(conn: psycopg.Connection[Any]) -> tuple[Any] | None:
            with conn.transaction():  # a decode error rolls the delete back
                row = conn.execute(statement, params).fetchone()
                return None if row is None else (decode(row[0]),)

        return self._run(pop_in)

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
        params = {"scope": scope, "key": key, "value": value, "now": now,
                  "expires_at": expires_at, "version": expected_version,
                  "created": expected_created_at}  # fmt: skip
        if expected_version is None:
            return self._one("PUT_IF_ABSENT", params) is not None
        return self._count("SET_IF_VERSION", params) == 1

    def modify(self, scope: str, key: str, fn: Modifier, now: float) -> None:
        get, put = self._sql["GET"], self._sql["PUT"]
        params: dict[str, Any] = {"scope": scope, "key": key, "now": now}

        def modify_in(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                conn.execute(LOCK_KEY, params)
                row = conn.execute(get, params).fetchone()
                value, expires_at = fn(None if row is None else _record(row))
                conn.execute(put, {**params, "value": value, "expires_at": expires_at})

        self._run(modify_in)

    def touch(self, scope: str, key: str, expires_at: float | None, now: float) -> bool:
        params = {"scope": scope, "key": key, "now": now, "expires_at": expires_at}
        return self._count("TOUCH", params) == 1

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
