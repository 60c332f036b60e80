"""``redis://``, ``rediss://`` and ``redis+cluster://``: records in Redis hashes, via redis-py.

Key layout. Every record is one Redis hash named

    {prefix}{len(scope)}:{scope}:{key}        e.g.  satchel:7:default:user:1

where `prefix` is the ``prefix`` option (default ``satchel:``) and ``len(scope)`` is the
scope's length in UTF-8 bytes, so a name decodes one way only: ``a:b`` in scope ``x``
(``satchel:1:x:a:b``) never meets ``b`` in scope ``x:a`` (``satchel:3:x:a:b``). The hash
holds the fields ``value``, ``created_at``, ``updated_at``, ``expires_at`` (absent when
the record never expires) and ``version``; times are Unix seconds as written by Python's
``repr(float)``, so Lua and Python read back the same doubles. Names and values are
bytes; keys may hold any Unicode, including newlines and ``{``/``}``.

Expiry. A record with a TTL also gets ``PEXPIREAT`` so Redis drops it by itself, but the
contract is defined by the client's clock: every read and every script treats
``expires_at <= now`` (the `now` the Store passes) as absent. `purge_expired` has nothing
to do.

Atomicity. Every single operation is one round trip: reads are one ``HMGET``, writes one
Lua script (``EVALSHA``; loaded once with ``register_script``) that keeps ``created_at``
and bumps ``version``. `pop` reads, decodes, then deletes only if the version did not
change (two round trips, so a value that fails to decode is never deleted). On plain
Redis a batch is one script call (``set_many``/``delete_many``) or one ``MULTI``/``EXEC``
(``get_many``): fully atomic. On a cluster a batch runs as one script call per hash slot,
pipelined per node: atomic within a slot only. (A prefix with a hash tag, such as
``prefix={app}:``, puts all keys in one slot, which makes batches atomic again at the
price of scale-out.) Failed commands are not retried, so a write is never applied twice.

Scans. ``SCAN`` (on every primary of a cluster) with ``MATCH`` on the escaped name
prefix finds the keys; they are sorted client-side, since SCAN has no order. The
sorted list of the last few scans is kept briefly, so that iterating page by page
costs one SCAN per iteration, not one per page. SCAN walks the whole database, so
``keys()`` costs time in proportion to it; keys written during an iteration may be missed.

Redis keeps data in memory and is not durable by default: configure AOF
(``appendonly yes``, ``appendfsync everysec``) if the data must survive a restart.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeAlias, cast
from urllib.parse import unquote, urlsplit

import redis
import redis.exceptions as rx
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.crc import key_slot
from redis.retry import Retry

from ..engines import password as password_of
from ..engines import redact
from ..errors import BackendError, BackendUnavailable, CorruptData, InvalidInput, SatchelError
from .base import Backend, Record

DEFAULT_PREFIX = "satchel:"
DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds; socket_timeout (if given) overrides it
SCAN_COUNT = 1000  # SCAN COUNT hint and the chunk size of pipelined reads
SCAN_CACHE_SIZE = 4  # sorted key lists kept for iterations in progress
SCAN_CACHE_SECONDS = 60.0

FIELDS = (b"value", b"created_at", b"updated_at", b"expires_at", b"version")
META = FIELDS[1:]
LIVENESS = (b"version", b"expires_at")

# Shared by every script: `live_version(name, now)` is the version of the live record at
# `name` or nil; `write(...)` stores a value if `condition` holds ('' always, '0' only
# when no live record, 'N' only at version N) and returns 0 (not written), 1 (written,
# no live record before) or 2 (overwrote a live record, keeping created_at).
LUA_COMMON = """
local function live_version(name, now)
  local found = redis.call('HMGET', name, 'version', 'expires_at')
  if not found[1] then return nil end
  local version = tonumber(found[1])
  if not version then error({err = 'ERR not a satchel record: ' .. name}) end
  if found[2] and tonumber(found[2]) <= tonumber(now) then return nil end
  return version
end
local function set_expiry(name, expires_at, expire_ms)
  if expires_at == '' then
    redis.call('HDEL', name, 'expires_at')
    redis.call('PERSIST', name)
  else
    redis.call('HSET', name, 'expires_at', expires_at)
    redis.call('PEXPIREAT', name, expire_ms)
  end
end
local function write(name, value, now, expires_at, expire_ms, condition)
  local version = live_version(name, now)
  if condition ~= '' and tonumber(condition) ~= (version or 0) then return 0 end
  if version then
    redis.call('HSET', name, 'value', value, 'updated_at', now,
               'version', string.format('%d', version + 1))
  else
    redis.call('HSET', name, 'value', value, 'created_at', now, 'updated_at', now,
               'version', '1')
  end
  set_expiry(name, expires_at, expire_ms)
  if version then return 2 end
  return 1
end
"""
# KEYS[1]; ARGV: value, now, expires_at, expire_ms, condition
WRITE = LUA_COMMON + "return write(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])"
# KEYS: names; ARGV: now, expires_at, expire_ms, condition, then one value per name
WRITE_MANY = (
    LUA_COMMON
    + """
local written = 0
for i, name in ipairs(KEYS) do
  if write(name, ARGV[4 + i], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) > 0 then
    written = written + 1
  end
end
return written"""
)
# KEYS: names; ARGV: now. Deletes them all (expired ones too); returns how many were live.
DELETE_MANY = (
    LUA_COMMON
    + """
local deleted = 0
for _, name in ipairs(KEYS) do
  if live_version(name, ARGV[1]) then deleted = deleted + 1 end
  redis.call('DEL', name)
end
return deleted"""
)
# KEYS[1]; ARGV: now, version. Deletes the record only if it is live at that version.
DELETE_IF_VERSION = (
    LUA_COMMON
    + """
if live_version(KEYS[1], ARGV[1]) ~= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
return 1"""
)
# KEYS[1]; ARGV: now, expires_at, expire_ms. Sets the expiry of a live record.
TOUCH = (
    LUA_COMMON
    + """
if not live_version(KEYS[1], ARGV[1]) then return 0 end
set_expiry(KEYS[1], ARGV[2], ARGV[3])
return 1"""
)

Client: TypeAlias = "redis.Redis | RedisCluster"
_UNAVAILABLE = (rx.ConnectionError, rx.TimeoutError, rx.ClusterDownError, rx.MasterDownError)
_NO_RETRY = Retry(NoBackoff(), 0)  # a lost reply must not make us apply a write twice


def _translate(exc: BaseException, engine: str, secret: str | None) -> SatchelError:
    """The satchel error for redis-py's `exc`, its text stripped of `secret`."""
    text = str(exc)
    if secret:
        text = text.replace(secret, "***")
    if isinstance(exc, rx.AuthenticationError):
        return BackendError(f"Redis refused the credentials: {text}", engine=engine)
    if isinstance(exc, _UNAVAILABLE):
        return BackendUnavailable(f"cannot reach Redis: {text}", engine=engine)
    if isinstance(exc, rx.RedisClusterException) and "cannot be connected" in text:
        return BackendUnavailable(f"cannot reach the Redis Cluster: {text}", engine=engine)
    if "WRONGTYPE" in text or "not a satchel record" in text:
        return CorruptData(
            f"a Redis key under this store's prefix is not a satchel record: {text}",
            engine=engine,
        )
    return BackendError(f"Redis failed: {text}", engine=engine)


class _Errors:
    """The one place redis-py exceptions become satchel errors (never with a password)."""

    __slots__ = ("engine", "secret")

    def __init__(self, engine: str, secret: str | None) -> None:
        self.engine = engine
        self.secret = secret

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, rx.RedisError | rx.RedisClusterException):
            raise _translate(exc, self.engine, self.secret) from exc


def _expire_args(expires_at: float | None) -> tuple[float | str, int | str]:
    if expires_at is None:
        return "", ""
    return expires_at, math.ceil(expires_at * 1000)


def _escape(pattern: bytes) -> bytes:
    """`pattern` as a literal for Redis MATCH (glob specials backslash-escaped)."""
    for special in (b"\\", b"*", b"?", b"[", b"]"):
        pattern = pattern.replace(special, b"\\" + special)
    return pattern


def _is_live(row: Sequence[bytes | None], now: float) -> bool:
    """`row` = (version, expires_at) of one name: does it hold a live record?"""
    return row[0] is not None and (row[1] is None or float(row[1]) > now)


class RedisBackend(Backend):
    """A satchel store in Redis (or a Redis Cluster): one hash per record."""

    def __init__(self, client: Client, errors: _Errors, prefix: str) -> None:
        self.engine = errors.engine
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        self._prefix = prefix.encode()
        self._errors = errors
        self._scans: OrderedDict[tuple[str, str, bytes], tuple[list[bytes], int, float]]
        self._scans = OrderedDict()
        self._scans_lock = threading.Lock()
        self._write = client.register_script(WRITE)
        self._write_many = client.register_script(WRITE_MANY)
        self._delete_many = client.register_script(DELETE_MANY)
        self._delete_if_version = client.register_script(DELETE_IF_VERSION)
        self._touch = client.register_script(TOUCH)

    # -- names and errors ----------------------------------------------------------------

    def _base(self, scope: str) -> bytes:
        encoded = scope.encode()
        return b"%s%d:%s:" % (self._prefix, len(encoded), encoded)

    def _name(self, scope: str, key: str) -> bytes:
        return self._base(scope) + key.encode()

    def _scope_of(self, name: bytes) -> str | None:
        """The scope a Redis key name belongs to, or None if it is not one of ours."""
        length, colon, rest = name[len(self._prefix) :].partition(b":")
        if not colon or not length.isdigit() or rest[int(length) : int(length) + 1] != b":":
            return None
        try:
            return rest[: int(length)].decode()
        except UnicodeDecodeError:
            return None

    def _record(self, key: str, row: Sequence[bytes | None], now: float) -> Record | None:
        """The live Record from an HMGET of FIELDS (or of META: no value), or None."""
        if len(row) == len(META):
            row = (b"", *row)
        value, created, updated, expires, version = row
        if version is None:
            return None
        try:
            expires_at = None if expires is None else float(expires)
            if expires_at is not None and expires_at <= now:
                return None
            if value is None or created is None or updated is None:
                raise ValueError("a field is missing")
            return Record(key, value, float(created), float(updated), expires_at, int(version))
        except ValueError as exc:
            raise self._corrupt(exc, key) from exc

    def _corrupt(self, exc: ValueError, key: str | None = None) -> CorruptData:
        return CorruptData(
            f"a Redis hash under this store's prefix is not a satchel record ({exc})",
            key=key,
            engine=self.engine,
        )

    def _pipeline(self) -> Any:
        # MULTI/EXEC on plain Redis (an atomic read); on a cluster each read stands alone.
        return self._client.pipeline(transaction=not self._cluster)

    def _batch(self, script: Script, names: list[bytes], head: list[Any], tail: list[bytes]) -> int:
        """Run `script` with KEYS `names` and ARGV `head` + `tail` (one item per name, or
        none); return the sum of its results. One call on Redis; on a cluster one call
        per hash slot, pipelined."""
        groups: dict[int, list[int]] = {}
        if self._cluster:
            for i, name in enumerate(names):
                groups.setdefault(key_slot(name), []).append(i)
        if len(groups) <= 1:
            return int(script(keys=names, args=[*head, *tail]))
        pending, total = list(groups.values()), 0
        for _ in range(2):  # the second round reruns what failed with NOSCRIPT
            pipe = self._client.pipeline(transaction=False)
            for group in pending:
                values = [tail[i] for i in group] if tail else []
                pipe.execute_command(
                    "EVALSHA", script.sha, len(group), *[names[i] for i in group], *head, *values
                )
            missing = []
            for group, result in zip(pending, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(result, rx.NoScriptError):
                    missing.append(group)  # the node lost its scripts (restart, SCRIPT FLUSH)
                elif isinstance(result, Exception):
                    raise result
                else:
                    total += int(result)
            if not missing:
                return total
            self._client.script_load(script.script)  # on every primary
            pending = missing
        raise BackendError("Redis keeps losing satchel's Lua scripts", engine=self.engine)

    def _scan_names(self, match: bytes) -> Iterator[bytes]:
        names: Iterator[bytes] = self._client.scan_iter(match=match + b"*", count=SCAN_COUNT)
        return names

    def _live_flags(self, names: Sequence[bytes], now: float) -> list[bool]:
        flags: list[bool] = []
        for start in range(0, len(names), SCAN_COUNT):
            pipe = self._client.pipeline(transaction=False)
            for name in names[start : start + SCAN_COUNT]:
                pipe.hmget(name, LIVENESS)
            try:
                flags += [_is_live(row, now) for row in pipe.execute()]
            except ValueError as exc:
                raise self._corrupt(exc) from exc
        return flags

    # -- primitives ------------------------------------------------------------------------

    def get(self, scope: str, key: str, now: float) -> Record | None:
        with self._errors:
            row = cast(list[bytes | None], self._client.hmget(self._name(scope, key), FIELDS))
        return self._record(key, row, now)

    def get_value(self, scope: str, key: str, now: float) -> bytes | None:
        with self._errors:
            found = self._client.hmget(self._name(scope, key), (b"value", b"expires_at"))
        value, expires = cast(list[bytes | None], found)
        try:
            if value is None or (expires is not None and float(expires) <= now):
                return None
        except ValueError as exc:
            raise self._corrupt(exc, key) from exc
        return bytes(value)

    def get_many(self, scope: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        base = self._base(scope)
        with self._errors:
            pipe = self._pipeline()
            for key in keys:
                pipe.hmget(base + key.encode(), FIELDS)
            rows = pipe.execute()
        found = {}
        for key, row in zip(keys, rows, strict=True):
            record = self._record(key, row, now)
            if record is not None:
                found[key] = record
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
        args = [value, now, *_expire_args(expires_at), "0" if if_absent else ""]
        with self._errors:
            return int(self._write(keys=[self._name(scope, key)], args=args)) == 1

    def put_many(
        self,
        scope: str,
        items: Sequence[tuple[str, bytes]],
        expires_at: float | None,
        now: float,
        if_absent: bool,
    ) -> int:
        base = self._base(scope)
        names = [base + key.encode() for key, _ in items]
        head = [now, *_expire_args(expires_at), "0" if if_absent else ""]
        with self._errors:
            return self._batch(self._write_many, names, head, [value for _, value in items])

    def delete_many(self, scope: str, keys: Sequence[str], now: float) -> int:
        base = self._base(scope)
        with self._errors:
            return self._batch(self._delete_many, [base + k.encode() for k in keys], [now], [])

    def pop(
        self, scope: str, key: str, now: float, decode: Callable[[bytes], Any]
    ) -> tuple[Any] | None:
        name = self._name(scope, key)
        while True:
            record = self.get(scope, key, now)
            if record is None:
                return None
            value = decode(record.value)  # raises before anything is deleted
            with self._errors:
                if self._delete_if_version(keys=[name], args=[now, record.version]):
                    return (value,)
            # another writer got in between: read again

    def compare_and_set(
        self,
        scope: str,
        key: str,
        expected_version: int | None,
        value: bytes,
        expires_at: float | None,
        now: float,
    ) -> bool:
        condition = str(expected_version or 0)
        args = [value, now, *_expire_args(expires_at), condition]
        with self._errors:
            return int(self._write(keys=[self._name(scope, key)], args=args)) > 0

    def touch(self, scope: str, key: str, expires_at: float | None, now: float) -> bool:
        with self._errors:
            args = [now, *_expire_args(expires_at)]
            return bool(self._touch(keys=[self._name(scope, key)], args=args))

    def scan(
        self,
        scope: str,
        prefix: str,
        after: str | None,
        limit: int,
        now: float,
        values: bool = True,
    ) -> list[Record]:
        base = self._base(scope)
        after_bytes = None if after is None else after.encode()
        cached = None if after_bytes is None else self._cached_scan(scope, prefix, after_bytes)
        with self._errors:
            if cached is None:
                names = self._scan_names(_escape(base + prefix.encode()))
                keys = sorted(name[len(base) :] for name in names)
                index = 0 if after_bytes is None else bisect_right(keys, after_bytes)
            else:
                keys, index = cached
            found: list[Record] = []
            fields = FIELDS if values else META
            while len(found) < limit and index < len(keys):
                chunk = keys[index : index + min(limit - len(found), SCAN_COUNT)]
                index += len(chunk)
                pipe = self._client.pipeline(transaction=False)
                for key in chunk:
                    pipe.hmget(base + key, fields)
                for key, row in zip(chunk, pipe.execute(), strict=True):
                    record = self._record(self._decode_key(key), row, now)
                    if record is not None:
                        found.append(record)
        if index < len(keys) and found:
            self._cache_scan((scope, prefix, found[-1].key.encode()), keys, index)
        return found

    def _decode_key(self, key: bytes) -> str:
        try:
            return key.decode()
        except UnicodeDecodeError as exc:
            raise CorruptData(
                f"a Redis key name is not UTF-8: {key!r}", engine=self.engine
            ) from exc

    def _cached_scan(self, scope: str, prefix: str, after: bytes) -> tuple[list[bytes], int] | None:
        with self._scans_lock:
            entry = self._scans.pop((scope, prefix, after), None)
        if entry is None or entry[2] < time.monotonic() - SCAN_CACHE_SECONDS:
            return None
        return entry[0], entry[1]

    def _cache_scan(self, where: tuple[str, str, bytes], keys: list[bytes], index: int) -> None:
        with self._scans_lock:
            self._scans[where] = (keys, index, time.monotonic())
            while len(self._scans) > SCAN_CACHE_SIZE:
                self._scans.popitem(last=False)

    def count(self, scope: str, now: float) -> int:
        with self._errors:
            return sum(self._live_flags(list(self._scan_names(_escape(self._base(scope)))), now))

    def scopes(self, now: float) -> list[str]:
        by_scope: dict[str, list[bytes]] = {}
        with self._errors:
            for name in self._scan_names(_escape(self._prefix)):
                scope = self._scope_of(name)
                if scope is not None:
                    by_scope.setdefault(scope, []).append(name)
            return sorted(
                scope for scope, names in by_scope.items() if any(self._live_flags(names, now))
            )

    def clear(self, scope: str) -> None:
        with self._errors:
            names = list(self._scan_names(_escape(self._base(scope))))
            for start in range(0, len(names), SCAN_COUNT):
                pipe = self._client.pipeline(transaction=False)
                for name in names[start : start + SCAN_COUNT]:
                    pipe.unlink(name)
                pipe.execute()

    def purge_expired(self, now: float, limit: int) -> int:
        return 0  # Redis drops expired records itself (PEXPIREAT)

    def close(self) -> None:
        with self._errors:
            self._client.close()


# -- opening ---------------------------------------------------------------------------------


def _option(options: dict[str, Any], name: str, kind: type[int] | type[float]) -> Any:
    if name not in options:
        return None
    raw = options.pop(name)
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        value = None
    if value is None or isinstance(raw, bool) or not value > 0 or math.isinf(value):
        raise InvalidInput(f"{name} must be a positive {kind.__name__}, not {raw!r}")
    return value


def _cluster_nodes(url: str) -> tuple[list[ClusterNode], str | None, str | None]:
    """Startup nodes, username and password of ``redis+cluster://[user:pw@]h:p,h:p[/0]``."""
    location = url.split("://", 1)[1]
    credentials, _, hosts = location.rpartition("@")
    hosts, _, db = hosts.partition("/")
    if db not in ("", "0"):
        raise InvalidInput("a Redis Cluster has only database 0")
    nodes = []
    for host in filter(None, hosts.split(",")):
        parts = urlsplit(f"//{host}")
        try:
            port = parts.port or 6379
        except ValueError:
            raise InvalidInput(f"bad port in Redis Cluster node {host!r}") from None
        nodes.append(ClusterNode(parts.hostname or "127.0.0.1", port))  # type: ignore[no-untyped-call]
    if not nodes:
        raise InvalidInput("redis+cluster:// needs at least one host:port")
    user, colon, password = credentials.partition(":")
    return nodes, unquote(user) or None, unquote(password) if colon else None


def open_redis(url: str, options: dict[str, Any]) -> RedisBackend:
    """Open `url` (redis://, rediss:// or redis+cluster://) with `options` (prefix,
    max_connections, socket_timeout, socket_connect_timeout).

    Raises InvalidInput for a bad option, BackendUnavailable when Redis cannot be
    reached, BackendError when it refuses (e.g. the credentials).
    """
    options = dict(options)
    prefix = options.pop("prefix", DEFAULT_PREFIX)
    if not isinstance(prefix, str):
        raise InvalidInput(f"prefix must be a str, not {type(prefix).__name__}")
    kwargs: dict[str, Any] = {"decode_responses": False}
    max_connections = _option(options, "max_connections", int)
    if max_connections is not None:
        kwargs["max_connections"] = max_connections
    timeout = _option(options, "socket_timeout", float)
    kwargs["socket_timeout"] = timeout
    connect_timeout = _option(options, "socket_connect_timeout", float)
    kwargs["socket_connect_timeout"] = connect_timeout or timeout or DEFAULT_CONNECT_TIMEOUT
    if options:
        raise InvalidInput(f"unknown option(s) for the redis engine: {', '.join(sorted(options))}")
    engine = redact(url)
    try:
        if url.startswith("redis+cluster://"):
            nodes, username, password = _cluster_nodes(url)
            errors = _Errors(engine, password)
            with errors:
                client: Client = RedisCluster(
                    startup_nodes=nodes,
                    username=username,
                    password=password,
                    retry=_NO_RETRY,
                    **kwargs,
                )
        else:
            errors = _Errors(engine, password_of(url))
            client = redis.Redis.from_url(url, retry=_NO_RETRY, **kwargs)
            try:
                with errors:
                    client.ping()  # report a bad address or password now, not at first use
            except BackendError:
                client.close()
                raise
    except InvalidInput:
        raise
    except ValueError as exc:  # from parsing the URL
        raise InvalidInput(f"bad Redis URL {engine!r}: {exc}") from exc
    return RedisBackend(client, errors, prefix)
