"""``redis://``, ``rediss://`` and ``redis+cluster://``: records in Redis hashes, via redis-py.

Key layout: every record is one Redis hash named ``{prefix}{len(scope)}:{scope}:{key}``,
e.g. ``satchel:7:default:user:1``. `prefix` is an option (default ``satchel:``) and the
length counts the scope's UTF-8 bytes, so a name decodes one way only: ``a:b`` in scope
``x`` (``satchel:1:x:a:b``) never meets ``b`` in scope ``x:a`` (``satchel:3:x:a:b``).
The hash holds ``value``, ``created_at``, ``updated_at``, ``expires_at`` (absent: never)
and ``version``; times are Unix seconds written as Python's ``repr(float)``, which Lua
reads back as the same double. Keys may hold any Unicode, ``{``/``}`` and newlines too.

Expiry: a record with a TTL also gets ``PEXPIREAT``, so Redis drops it by itself, but the
client's clock decides: every read and script treats ``expires_at <= now`` (the `now`
the Store passes) as absent. So `purge_expired` has nothing to do.

Atomicity: every write is `apply`, one Lua script (``EVALSHA``, one round trip) that
first checks every condition against the live records (returning nil, having written
nothing, if one fails), then makes the changes: a put keeps ``created_at`` and bumps
``version``, a delete or touch acts on a live record only; `get_value` is one ``HMGET``.
put, put_many, delete_many, compare_and_set, touch and `pop` (read, decode, then delete
if the record is unchanged: a value that cannot be decoded is never deleted) are `apply`
calls; `modify` is the base class's get + compare-and-set loop. On plain Redis a batch is
one script call: fully atomic. On a cluster a script can only touch one hash slot: a batch
without conditions is one script call per slot, pipelined, so atomic per slot only; a
batch with conditions must have all its keys (changes and conditions) in one slot, else
`apply` raises BackendError and writes nothing. A prefix with a hash tag,
``prefix={app}:``, puts every key in one slot, which makes every batch atomic again at the
price of scale-out. Event sequences (see _events.py) are records in the scope
``kind_scope(scope, "e")`` whose keys start with a hash tag, ``{<32 hex>}/...``, so all
the records of one sequence share a slot and an append (a batch with a condition) works
on a cluster. Redis takes the first ``{`` of the whole name, though: a scope (or prefix)
whose first ``{`` is directly followed by ``}``, like ``a{}``, makes Redis hash the whole
name, which spreads a sequence over slots, so its appends fail with BackendError (other
braces in a scope are harmless: the tag then reaches into the sequence's own, or puts the
scope in one slot). Nothing is retried after a lost connection, so a write is never
applied twice; the caller gets BackendUnavailable.

Scans: ``SCAN`` (on every primary of a cluster) with ``MATCH`` on the escaped name
prefix, sorted client-side since SCAN has no order. The sorted keys of the last few scans
are kept briefly, so an iteration costs one SCAN, not one per page. SCAN walks the whole
database; keys written during an iteration may be missed.

Large values are ordinary records (see _blobs.py). Releases before 0.2 kept a blob's
chunks in its record's hash instead: chunk ``n`` of blob ``id`` in the field ``#id:n``,
the committed blob's id and chunk count in ``blob`` and ``chunks``, the mark ``staging``
on a hash holding chunks still being written (with no ``version`` if only those), and
``{prefix}~staged``, a sorted set of staged blobs. `legacy_blobs` finds that old storage
(once: a SCAN of every record plus one script per slot and page of names), and
`drop_legacy_blobs` strips those fields and keys, then sets ``{prefix}~layout`` to ``2``
(BLOBS_MIGRATED) if it is unset, so every later open costs one ``GET``. Record writes
never look at those fields: a delete is ``DEL``, which takes an old blob with it, and
`satchel.open` migrates before the first write.

Time series: one sorted set per series, ``{prefix}~s:{len(scope)}:{scope}:{name}``, every
member ``t8 + value`` with score 0, where t8 is t + 2**63 as 8 big-endian bytes: byte
order is t order over the whole int64 range (scores, doubles, would be exact only to
2**53). Ranges are ``ZRANGEBYLEX`` (O(log n + k)); `series_put` is one script (remove the
point at each t, add the new one), one round trip for any number of points; so is
`series_reseal` (a point is replaced only if its member, t8 + old value, is there).

Releases before 0.2 kept each event sequence in one hash,
``{prefix}~e:{len(scope)}:{scope}:{name}``: event ``seq`` in the field ``"<seq>"`` holding
``"<timestamp> <data>"``, plus ``seq`` (the last seq), ``head`` and ``base`` (``"<seq>
<timestamp> <state>"``) and ``bseq`` (the base's seq: the events up to it were dropped).
`legacy_sequences` (a SCAN of ``~e:`` names), `legacy_states` and `legacy_events` read
those; `drop_legacy_events` deletes them and raises the mark ``2`` to LAYOUT (``3``), so
an open of a migrated store costs one ``GET`` here too (no mark stays no mark: large values
may still be kept the old way). The mark ``2`` alone does not spare the SCAN: code that
wrote it still kept sequences that way.

Since each series is a single key, no hash tag is needed, and braces in scopes or names
cannot split one over slots.

The ``~`` after the prefix keeps these names out of the record scans: a record name has
digits there (the scope's length), which `scopes` requires and which `scan`, `count` and
`clear` match.

Redis is not durable by default: configure AOF (``appendonly yes``) to survive restarts.
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

from .._errors import (
    BackendError,
    BackendUnavailable,
    CorruptData,
    InvalidInput,
    SatchelError,
)
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
)
from .urls import password as password_of
from .urls import redact

DEFAULT_PREFIX = "satchel:"
DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds, unless socket_[connect_]timeout says otherwise
DEFAULT_SOCKET_TIMEOUT = 60.0  # seconds to wait for an answer: a hung server fails the call
SCAN_COUNT = 1000  # the SCAN COUNT hint, and how many records one read script gets
SCAN_CACHE_SIZE = 4  # sorted key lists kept for iterations in progress
SCAN_CACHE_SECONDS = 60.0
T_OFFSET = 1 << 63  # series timestamps are stored as t + T_OFFSET, unsigned
T_MAX = T_OFFSET - 1
# The values of {prefix}~layout, which spare an open the SCANs for what releases before
# 0.2 kept outside the records: BLOBS_MIGRATED once no large value is kept that way (in
# its record's hash), LAYOUT once no event sequence is either (in a ``~e:`` hash).
BLOBS_MIGRATED = b"2"
LAYOUT = b"3"

# live_version(name, now): the version of the live record at `name` (or nil), and its
# stored expires_at (false if absent), live or not.
# holds(name, version, condition): whether the live record at `name` (its version from
# live_version) meets `condition`: '0' no live record, 'N' live at version N, 'N@T' and
# also created at T.
# write(...): store a value if `condition` holds ('' always, else as holds()); returns 0
# (not written), 1 (new record) or 2 (overwrote).
# delete(name, now) / touch(name, now, expires_at, expire_ms): 1 if `name` had a live
# record (deleted / its expiry set), else 0.
LUA_COMMON = (
    f"\nlocal TOLERANCE = {CREATED_AT_TOLERANCE!r}"
    + """
local function live_version(name, now)
  local found = redis.call('HMGET', name, 'version', 'expires_at')
  if not found[1] then return nil, found[2] end
  local version = tonumber(found[1])
  if not version then error({err = 'ERR not a satchel record: ' .. name}) end
  if found[2] and tonumber(found[2]) <= tonumber(now) then return nil, found[2] end
  return version, found[2]
end
local function holds(name, version, condition)
  local want, created = string.match(condition, '^(%d+)@?(.*)$')
  if tonumber(want) ~= (version or 0) then return false end
  if version and created ~= '' then
    local have = tonumber(redis.call('HGET', name, 'created_at'))
    if not have or math.abs(have - tonumber(created)) > TOLERANCE then return false end
  end
  return true
end
local function set_expiry(name, expires_at, expire_ms, old_expires_at)
  if expires_at ~= '' then
    redis.call('HSET', name, 'expires_at', expires_at)
    redis.call('PEXPIREAT', name, expire_ms)
  elseif old_expires_at then
    redis.call('HDEL', name, 'expires_at')
    redis.call('PERSIST', name)
  end
end
local function write(name, value, now, expires_at, expire_ms, condition)
  local version, old_expires_at = live_version(name, now)
  if condition ~= '' and not holds(name, version, condition) then return 0 end
  if version then
    redis.call('HSET', name, 'value', value, 'updated_at', now,
               'version', string.format('%d', version + 1))
  else
    redis.call('HSET', name, 'value', value, 'created_at', now, 'updated_at', now,
               'version', '1')
  end
  set_expiry(name, expires_at, expire_ms, old_expires_at)
  return version and 2 or 1
end
local function delete(name, now)
  -- expired records go too: nothing of them may outlive a delete
  local version = live_version(name, now)
  redis.call('DEL', name)
  return version and 1 or 0
end
local function touch(name, now, expires_at, expire_ms)
  local version, old_expires_at = live_version(name, now)
  if not version then return 0 end
  set_expiry(name, expires_at, expire_ms, old_expires_at)
  return 1
end
"""
)
# Backend.apply. KEYS: the names of the conditions, then those of the changes. ARGV: now,
# the number of conditions, one condition per name (as holds()), then the changes in
# runs of one kind and expiry: op ('P' put, 'A' put if absent, 'D' delete, 'T' touch)
# and how many, as one argument ('P3'), expires_at ('': none), then for puts one value
# per name. So a batch of N puts with one expiry passes N + 4 arguments, a single put 5,
# as many as the scripts apply replaced (every argument costs the client time). Returns
# the count of Backend.apply, or nil if a condition fails (then nothing is written: they
# are all checked first).
APPLY = f"""{LUA_COMMON}
local now, conditions = ARGV[1], tonumber(ARGV[2])
for i = 1, conditions do
  local version = live_version(KEYS[i], now)
  if not holds(KEYS[i], version, ARGV[2 + i]) then return false end
end
local count, key, arg = 0, conditions, conditions + 3
while arg <= #ARGV do
  local op, n = string.sub(ARGV[arg], 1, 1), tonumber(string.sub(ARGV[arg], 2))
  local expires_at, expire_ms = ARGV[arg + 1], ''
  if expires_at ~= '' then
    -- the client's math.ceil(expires_at * 1000): the same double product, the same ceil
    expire_ms = string.format('%d', math.ceil(tonumber(expires_at) * 1000))
  end
  arg = arg + 2
  if op == 'D' then
    for i = key + 1, key + n do count = count + delete(KEYS[i], now) end
  elseif op == 'T' then
    for i = key + 1, key + n do count = count + touch(KEYS[i], now, expires_at, expire_ms) end
  else
    local condition = op == 'A' and '0' or ''
    for i = 1, n do
      if write(KEYS[key + i], ARGV[arg + i - 1], now, expires_at, expire_ms,
               condition) == 1 then
        count = count + 1
      end
    end
    arg = arg + n
  end
  key = key + n
end
return count"""
# KEYS: names; ARGV: now, with_values ('1'/'0'). For each name false (no live record) or
# one string 'version created_at updated_at expires_at|- value' (value '' without
# with_values): far cheaper to parse in Python than five fields per record.
GET_MANY = """
local out, now = {}, tonumber(ARGV[1])
for i, name in ipairs(KEYS) do
  local f = redis.call('HMGET', name, 'version', 'created_at', 'updated_at', 'expires_at', 'value')
  if f[1] and not (f[4] and tonumber(f[4]) <= now) then
    local value = ARGV[2] == '1' and f[5] or ''
    out[i] = table.concat({f[1], f[2] or '', f[3] or '', f[4] or '-', value or ''}, ' ')
  else
    out[i] = false
  end
end
return out"""
# KEYS: names under the prefix; ARGV: now. For each name false, or 'chunks blob' if it
# is a live record holding a large value kept the way releases before 0.2 kept them.
LEGACY_FIND = """
local out, now = {}, tonumber(ARGV[1])
for i, name in ipairs(KEYS) do
  out[i] = false
  if redis.call('TYPE', name).ok == 'hash' then
    local f = redis.call('HMGET', name, 'version', 'expires_at', 'blob', 'chunks')
    if f[1] and f[3] and not (f[2] and tonumber(f[2]) <= now) then
      out[i] = (f[4] or '0') .. ' ' .. f[3]
    end
  end
end
return out"""
# KEYS: names under the prefix. From each hash, drop what releases before 0.2 kept a large
# value with: its chunk fields '#id:n', 'blob', 'chunks' and the mark 'staging' (staging
# had lifted the native expiry: it comes back), and the hash if no record is left.
# Returns how many hashes changed.
LEGACY_DROP = """
local changed = 0
for _, name in ipairs(KEYS) do
  if redis.call('TYPE', name).ok == 'hash' then
    local f = redis.call('HMGET', name, 'blob', 'staging')
    if f[1] or f[2] then
      local fields = {'blob', 'chunks', 'staging'}
      for _, field in ipairs(redis.call('HKEYS', name)) do
        if string.sub(field, 1, 1) == '#' then
          fields[#fields + 1] = field
          if #fields == 1000 then
            redis.call('HDEL', name, unpack(fields))
            fields = {}
          end
        end
      end
      if #fields > 0 then redis.call('HDEL', name, unpack(fields)) end
      local left = redis.call('HMGET', name, 'version', 'expires_at')
      if not left[1] then
        redis.call('DEL', name)
      elseif f[2] and left[2] and redis.call('PTTL', name) == -1 then
        redis.call('PEXPIREAT', name, math.ceil(tonumber(left[2]) * 1000))
      end
      changed = changed + 1
    end
  end
end
return changed"""
# KEYS[1]: a series; ARGV: pairs (upper bound of the point's t, member = t8 .. value).
SERIES_PUT = """
for i = 1, #ARGV, 2 do
  redis.call('ZREMRANGEBYLEX', KEYS[1], '[' .. string.sub(ARGV[i + 1], 1, 8), ARGV[i])
  redis.call('ZADD', KEYS[1], 0, ARGV[i + 1])
end
return #ARGV / 2"""
# KEYS[1]: a series; ARGV: triples (t8, old value, new value). Returns how many replaced.
SERIES_RESEAL = """
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('ZREM', KEYS[1], ARGV[i] .. ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[1], 0, ARGV[i] .. ARGV[i + 2])
    n = n + 1
  end
end
return n"""
SCRIPTS = (APPLY, GET_MANY, SERIES_PUT, SERIES_RESEAL)

Client: TypeAlias = "redis.Redis | RedisCluster"
_UNAVAILABLE = (rx.ConnectionError, rx.TimeoutError, rx.ClusterDownError, rx.MasterDownError)
_NO_RETRY = Retry(NoBackoff(), 0)  # a lost reply must not make us apply a write twice


def _translate(exc: BaseException, engine: str, secret: str | None) -> SatchelError:
    """The satchel error for a redis-py exception, its text stripped of `secret`."""
    text = str(exc)
    if secret:
        text = text.replace(secret, "***")
    if isinstance(exc, rx.AuthenticationError) or isinstance(exc.__cause__, rx.AuthenticationError):
        return BackendError(f"Redis refused the credentials: {text}", engine=engine)
    if isinstance(exc, _UNAVAILABLE) or "cannot be connected" in text:
        if "connecting" not in text and "cannot be connected" not in text:  # broke mid-command
            text += "; a write in progress may or may not have been applied"
        return BackendUnavailable(f"cannot reach Redis: {text}", engine=engine)
    if "WRONGTYPE" in text or "not a satchel record" in text:
        return CorruptData(
            f"a key under the store's prefix is not a satchel record: {text}", engine=engine
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


def _condition(version: int | None, created_at: float | None) -> str:
    """A condition as the Lua holds() reads it."""
    if version is None:
        return "0"
    return str(version) if created_at is None else f"{version}@{created_at!r}"


def _runs(changes: Sequence[Change], indexes: Sequence[int]) -> list[Any]:
    """The ARGV tail of APPLY for ``changes[i] for i in indexes``: runs of one op and
    expiry, each op and count (``b"P3"``), expires_at, then the values of its puts."""
    args: list[Any] = []
    op: bytes = b""  # of the current run, with its expiry
    expires: float | None = None
    at = count = 0  # where the op and count of the current run go; its length so far
    for i in indexes:
        change = changes[i]
        if isinstance(change, Put):
            kind, expires_at = b"A" if change.if_absent else b"P", change.expires_at
        elif isinstance(change, Delete):
            kind, expires_at = b"D", None
        else:
            kind, expires_at = b"T", change.expires_at
        if kind != op or expires_at != expires:
            if op:
                args[at] = b"%s%d" % (op, count)
            op, expires, at, count = kind, expires_at, len(args), 0
            args += (b"", b"" if expires_at is None else expires_at)
        count += 1
        if isinstance(change, Put):
            args.append(change.value)
    if op:
        args[at] = b"%s%d" % (op, count)
    return args


def _t8(t: int) -> bytes:
    """`t` (a signed 64-bit int) as 8 bytes whose byte order is the order of t."""
    try:
        return (t + T_OFFSET).to_bytes(8, "big")
    except OverflowError:
        raise InvalidInput(f"a series timestamp must be a signed 64-bit int, not {t}") from None


def _split(tail: bytes) -> tuple[str, bytes] | None:
    """(scope, rest) of ``{len(scope)}:{scope}:{rest}``, or None if `tail` is not that."""
    length, colon, rest = tail.partition(b":")
    if not colon or not length.isdigit() or rest[int(length) : int(length) + 1] != b":":
        return None
    try:
        return rest[: int(length)].decode(), rest[int(length) + 1 :]
    except UnicodeDecodeError:
        return None


def _state(packed: bytes | None) -> EventState | None:
    """An old sequence's state, stored as ``"<seq> <timestamp> <state>"``."""
    if packed is None:
        return None
    seq, stamp, state = packed.split(b" ", 2)
    return int(seq), int(stamp), state


def _escape(literal: bytes) -> bytes:
    """`literal` as a Redis MATCH pattern (glob specials backslash-escaped)."""
    for special in (b"\\", b"*", b"?", b"[", b"]"):
        literal = literal.replace(special, b"\\" + special)
    return literal


class RedisBackend(Backend, SeriesEngine):
    """A satchel store in Redis or a Redis Cluster: one hash per record."""

    def __init__(self, client: Client, errors: _Errors, prefix: str) -> None:
        self.engine = errors.engine
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        self._prefix = prefix.encode()
        self._errors = errors
        self._scans: OrderedDict[tuple[str, str, bytes], tuple[list[bytes], int, float]]
        self._scans = OrderedDict()
        self._scans_lock = threading.Lock()
        self._layout = self._prefix + b"~layout"  # see LAYOUT
        scripts = [client.register_script(text) for text in SCRIPTS]
        self._apply, self._get_many, self._series_put, self._series_reseal = scripts
        # run once per store at most (see legacy_blobs): loaded when first called
        self._legacy_find = client.register_script(LEGACY_FIND)
        self._legacy_drop = client.register_script(LEGACY_DROP)
        if not self._cluster:  # load them now: one round trip that also checks the server
            with errors:
                pipe = client.pipeline(transaction=False)
                for text in SCRIPTS:
                    pipe.script_load(text)
                pipe.execute()

    # -- helpers ---------------------------------------------------------------------------

    def _base(self, scope: str) -> bytes:
        encoded = scope.encode()
        return b"%s%d:%s:" % (self._prefix, len(encoded), encoded)

    def _name(self, scope: str, key: str) -> bytes:
        return self._base(scope) + key.encode()

    def _scope_of(self, name: bytes) -> str | None:
        """The scope of a Redis key name under our prefix, or None if it is not ours."""
        split = _split(name[len(self._prefix) :])
        return None if split is None else split[0]

    def _corrupt(self, exc: ValueError, key: str | None = None) -> CorruptData:
        return CorruptData(
            f"a Redis hash under the store's prefix is not a satchel record ({exc})",
            key=key,
            engine=self.engine,
        )

    def _per_slot(
        self, script: Script, names: list[bytes], args: Callable[[Sequence[int]], list[Any]]
    ) -> list[tuple[Sequence[int], Any]]:
        """Run `script` with KEYS `names` and ARGV ``args(indexes of those names)``: in one
        call on Redis, one call per hash slot (pipelined) on a cluster.
        Return ``(indexes of the names it got, its result)`` per call."""
        groups: dict[int, list[int]] = {}
        if self._cluster:
            for i, name in enumerate(names):
                groups.setdefault(key_slot(name), []).append(i)
        if len(groups) <= 1:
            every = range(len(names))
            return [(every, script(keys=names, args=args(every)))] if names else []
        pending, done = list(groups.values()), list[tuple[Sequence[int], Any]]()
        for _ in range(2):  # the second round reruns what failed with NOSCRIPT
            pipe = self._client.pipeline(transaction=False)
            for group in pending:
                pipe.execute_command(  # EVALSHA by hand: a cluster pipeline blocks .evalsha()
                    "EVALSHA", script.sha, len(group), *[names[i] for i in group], *args(group)
                )
            missing = []
            for group, result in zip(pending, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(result, rx.NoScriptError):
                    missing.append(group)  # the node lost its scripts (restart, SCRIPT FLUSH)
                elif isinstance(result, Exception):
                    raise result
                else:
                    done.append((group, result))
            if not missing:
                return done
            self._client.script_load(script.script)  # on every primary
            pending = missing
        raise BackendError("Redis keeps losing satchel's Lua scripts", engine=self.engine)

    def _fetch(
        self, keys: Sequence[bytes | str], base: bytes, now: float, values: bool
    ) -> list[Record]:
        """The live records of `keys` (str or UTF-8), in their order, in one script call
        (on a cluster one per slot)."""
        names = [base + (key if isinstance(key, bytes) else key.encode()) for key in keys]
        packed: list[bytes | None] = [None] * len(names)
        head = [now, int(values)]
        for indexes, results in self._per_slot(self._get_many, names, lambda _: head):
            for i, result in zip(indexes, results, strict=True):
                packed[i] = result
        found = []
        for key, row in zip(keys, packed, strict=True):
            if row is not None:
                try:
                    key = key if isinstance(key, str) else key.decode()
                    version, created, updated, expires, value = row.split(b" ", 4)
                    expires_at = None if expires == b"-" else float(expires)
                    found.append(
                        Record(key, value, float(created), float(updated), expires_at, int(version))
                    )
                except ValueError as exc:  # UnicodeDecodeError is one too
                    raise self._corrupt(exc, key if isinstance(key, str) else None) from exc
        return found

    def _scan_names(self, literal: bytes) -> Iterator[bytes]:
        """Every Redis key name that starts with `literal`, in no order."""
        names: Iterator[bytes] = self._client.scan_iter(
            match=_escape(literal) + b"*", count=SCAN_COUNT
        )
        return names

    def _live(self, names: Sequence[bytes], now: float) -> int:
        """How many of `names` hold a live record."""
        return sum(
            len(self._fetch(names[start : start + SCAN_COUNT], b"", now, False))
            for start in range(0, len(names), SCAN_COUNT)
        )

    # -- primitives ------------------------------------------------------------------------

    def get(self, scope: str, key: str, now: float) -> Record | None:
        with self._errors:
            found = self._fetch([key], self._base(scope), now, True)
        return found[0] if found else None

    def get_value(self, scope: str, key: str, now: float) -> bytes | None:
        with self._errors:
            found = self._client.hmget(self._name(scope, key), (b"value", b"expires_at"))
        value, expires = cast(list[bytes | None], found)
        try:
            if value is None or (expires is not None and float(expires) <= now):
                return None
        except ValueError as exc:
            raise self._corrupt(exc, key) from exc
        return value

    def get_many(self, scope: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        with self._errors:
            return {
                record.key: record for record in self._fetch(keys, self._base(scope), now, True)
            }

    def apply(
        self, scope: str, changes: Sequence[Change], now: float, expect: Sequence[Expect] = ()
    ) -> int | None:
        """See Backend.apply. One script call; on a cluster, one per hash slot without
        conditions (atomic per slot), and BackendError, writing nothing, for a batch with
        conditions whose keys span slots."""
        base = self._base(scope)
        names = [base + change.key.encode() for change in changes]
        if self._cluster and not expect and len(names) > 1:
            # one script per hash slot, pipelined: atomic per slot (see Atomicity above)
            with self._errors:
                results = self._per_slot(
                    self._apply, names, lambda group: [now, 0, *_runs(changes, group)]
                )
            return sum(int(result) for _, result in results)
        conditions: list[str] = []
        if expect:
            if any(c.version is not None and c.version < 1 for c in expect):
                return None  # versions start at 1: no record ever has this one
            conditions = [_condition(c.version, c.created_at) for c in expect]
            names = [*(base + c.key.encode() for c in expect), *names]
        if not names:
            return 0
        if self._cluster and expect and len({key_slot(name) for name in names}) > 1:
            raise BackendError(
                "a batch with conditions must keep all its keys in one hash slot of the "
                "Redis Cluster to be atomic; open the store with a hash-tag prefix "
                "(prefix={app}:) to put every key in one slot",
                scope=scope,
                engine=self.engine,
            )
        args = [now, len(conditions), *conditions, *_runs(changes, range(len(changes)))]
        with self._errors:
            result = self._apply(keys=names, args=args)
        return None if result is None else int(result)

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
        start = None if after is None else after.encode()
        cached = None if start is None else self._cached_scan(scope, prefix, start)
        found: list[Record] = []
        with self._errors:
            if cached is None:
                keys = sorted(
                    name[len(base) :] for name in self._scan_names(base + prefix.encode())
                )
                index = 0 if start is None else bisect_right(keys, start)
            else:
                keys, index = cached
            while len(found) < limit and index < len(keys):
                chunk = keys[index : index + min(limit - len(found), SCAN_COUNT)]
                index += len(chunk)
                found += self._fetch(chunk, base, now, values)
        if index < len(keys) and found:
            self._cache_scan((scope, prefix, found[-1].key.encode()), keys, index)
        return found

    def _cached_scan(self, scope: str, prefix: str, after: bytes) -> tuple[list[bytes], int] | None:
        """The sorted keys and the position after `after` of an iteration in progress."""
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
            return self._live(list(self._scan_names(self._base(scope))), now)

    def scopes(self, now: float) -> list[str]:
        by_scope: dict[str, list[bytes]] = {}
        with self._errors:
            for name in self._scan_names(self._prefix):
                scope = self._scope_of(name)
                if scope is not None:
                    by_scope.setdefault(scope, []).append(name)
            return sorted(scope for scope, names in by_scope.items() if self._live(names, now))

    def _unlink(self, names: list[bytes]) -> None:
        for start in range(0, len(names), SCAN_COUNT):
            pipe = self._client.pipeline(transaction=False)
            for name in names[start : start + SCAN_COUNT]:
                pipe.unlink(name)
            pipe.execute()

    def clear(self, scope: str) -> None:
        with self._errors:
            self._unlink(list(self._scan_names(self._base(scope))))

    def purge_expired(self, now: float, limit: int) -> int:
        return 0  # Redis drops expired records itself (PEXPIREAT)

    def close(self) -> None:
        with self._errors:
            self._client.close()

    # -- large values kept by releases before 0.2 ------------------------------------------

    def _record_names(self) -> list[bytes]:
        """The names of every record hash under the prefix (and of foreign keys that look
        like one), sorted."""
        return sorted(n for n in self._scan_names(self._prefix) if self._scope_of(n) is not None)

    def legacy_blobs(self, now: float) -> list[LegacyBlob] | None:
        with self._errors:
            if self._client.get(self._layout) is not None:  # BLOBS_MIGRATED or LAYOUT
                return None
            names = self._record_names()
            found: list[tuple[bytes, bytes]] = []
            for start in range(0, len(names), SCAN_COUNT):
                page = names[start : start + SCAN_COUNT]
                for indexes, results in self._per_slot(self._legacy_find, page, lambda _: [now]):
                    found += [(page[i], r) for i, r in zip(indexes, results, strict=True) if r]
        blobs = []
        for name, packed in found:
            scope = self._scope_of(name)
            assert scope is not None  # _record_names kept only such names
            try:
                chunks, blob_id = packed.split(b" ", 1)
                key = name[len(self._base(scope)) :].decode()
                blobs.append(LegacyBlob(scope, key, blob_id.decode(), int(chunks)))
            except ValueError as exc:  # UnicodeDecodeError is one too
                raise self._corrupt(exc) from exc
        return blobs

    def legacy_chunk(self, blob: LegacyBlob, index: int) -> bytes | None:
        field = f"#{blob.blob_id}:{index}".encode()
        with self._errors:
            data = self._client.hget(self._name(blob.scope, blob.key), field)
        return cast(bytes | None, data)

    def drop_legacy_blobs(self) -> None:
        with self._errors:
            names = self._record_names()
            for start in range(0, len(names), SCAN_COUNT):
                self._per_slot(self._legacy_drop, names[start : start + SCAN_COUNT], lambda _: [])
            self._client.delete(self._prefix + b"~staged")
            self._client.set(self._layout, BLOBS_MIGRATED, nx=True)  # never lowers LAYOUT

    # -- event sequences kept by releases before 0.2 ---------------------------------------

    def _sequence(self, scope: str, name: str) -> bytes:
        return self._aux(b"~e:", scope) + name.encode()

    def legacy_sequences(self) -> list[tuple[str, str]] | None:
        base = self._prefix + b"~e:"
        with self._errors:
            if self._client.get(self._layout) == LAYOUT:
                return None
            names = list(self._scan_names(base))
        found = set()
        for scope, rest in filter(None, (_split(name[len(base) :]) for name in names)):
            try:
                found.add((scope, rest.decode()))
            except UnicodeDecodeError:
                continue  # not a name old releases wrote
        return sorted(found)

    def legacy_states(self, scope: str, name: str) -> tuple[EventState | None, EventState | None]:
        with self._errors:
            found = self._client.hmget(self._sequence(scope, name), (b"head", b"base"))
        head, base = cast(list[bytes | None], found)
        try:
            return _state(head), _state(base)
        except ValueError as exc:
            raise self._corrupt(exc) from exc

    def legacy_events(
        self, scope: str, name: str, after_seq: int, limit: int
    ) -> list[tuple[int, int, bytes]]:
        """Up to min(`limit`, SCAN_COUNT) events: one HMGET."""
        first = after_seq + 1
        fields = [b"%d" % seq for seq in range(first, first + min(limit, SCAN_COUNT))]
        with self._errors:
            found = self._client.hmget(self._sequence(scope, name), [b"bseq", *fields])
        bseq, *packed = cast(list[bytes | None], found)
        events = []
        try:
            if bseq is not None and int(bseq) > after_seq:  # those were compacted away
                return self.legacy_events(scope, name, int(bseq), limit)
            for seq, event in enumerate(packed, first):
                if event is None:  # past the last event (or the sequence was dropped)
                    break
                stamp, data = event.split(b" ", 1)
                events.append((seq, int(stamp), data))
        except ValueError as exc:
            raise self._corrupt(exc) from exc
        return events

    def drop_legacy_events(self) -> None:
        with self._errors:
            self._unlink(list(self._scan_names(self._prefix + b"~e:")))
            # over BLOBS_MIGRATED only: without it, large values may still be kept the old way
            self._client.set(self._layout, LAYOUT, xx=True)

    # -- time series -----------------------------------------------------------------------

    def _aux(self, kind: bytes, scope: str) -> bytes:
        """The name prefix of the series (`kind` ``~s:``) or old sequences (``~e:``) of
        `scope`: under the store's prefix, but never matched by the record scans."""
        encoded = scope.encode()
        return b"%s%s%d:%s:" % (self._prefix, kind, len(encoded), encoded)

    def series_names(self, scope: str) -> list[str]:
        base = self._aux(b"~s:", scope)
        with self._errors:
            names = {name[len(base) :] for name in self._scan_names(base)}
        try:
            return sorted(name.decode() for name in names)
        except UnicodeDecodeError as exc:
            raise self._corrupt(exc) from exc

    def _bounds(self, start: int | None, stop: int | None) -> tuple[bytes, bytes]:
        """ZRANGEBYLEX bounds for ``start <= t < stop``."""
        return (b"-" if start is None else b"[" + _t8(start)), (
            b"+" if stop is None else b"(" + _t8(stop)
        )

    def series_put(self, scope: str, name: str, points: Sequence[tuple[int, bytes]]) -> None:
        if not points:
            return
        args: list[bytes] = []
        for t, value in points:
            args += (b"+" if t == T_MAX else b"(" + _t8(t + 1), _t8(t) + value)
        with self._errors:
            self._series_put(keys=[self._aux(b"~s:", scope) + name.encode()], args=args)

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
        if limit <= 0:
            return []
        limit = min(limit, 1 << 62)
        lo, hi = self._bounds(start, stop)
        series = self._aux(b"~s:", scope) + name.encode()
        with self._errors:
            if reverse:
                found = self._client.zrevrangebylex(series, hi, lo, start=0, num=limit)
            else:
                found = self._client.zrangebylex(series, lo, hi, start=0, num=limit)
        members = cast(list[bytes], found)
        return [
            (int.from_bytes(m[:8], "big") - T_OFFSET, m[8:] if values else b"") for m in members
        ]

    def series_remove(self, scope: str, name: str, start: int | None, stop: int | None) -> int:
        series = self._aux(b"~s:", scope) + name.encode()
        with self._errors:
            return int(self._client.zremrangebylex(series, *self._bounds(start, stop)))

    def series_count(self, scope: str, name: str) -> int:
        with self._errors:
            return int(self._client.zcard(self._aux(b"~s:", scope) + name.encode()))

    def series_reseal(
        self, scope: str, name: str, points: Sequence[tuple[int, bytes, bytes]]
    ) -> int:
        if not points:
            return 0
        args = [part for t, old, new in points for part in (_t8(t), old, new)]
        with self._errors:
            return int(self._series_reseal(keys=[self._aux(b"~s:", scope) + name.encode()],
                                           args=args))  # fmt: skip


# -- opening ---------------------------------------------------------------------------------


def _option(options: dict[str, Any], name: str, kind: type[int] | type[float]) -> Any:
    """Pop option `name`: a positive number of `kind`, or None when not given."""
    if name not in options:
        return None
    raw = options.pop(name)
    try:
        value = None if isinstance(raw, bool) else kind(raw)
    except (TypeError, ValueError):
        value = None
    if value is None or not 0 < value < math.inf:
        raise InvalidInput(f"{name} must be a positive {kind.__name__}, not {raw!r}")
    return value


def _cluster_nodes(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """Startup nodes, username and password of ``redis+cluster://[user:pw@]h:p,h:p[/0]``."""
    credentials, _, location = url.split("://", 1)[1].rpartition("@")
    hosts, _, db = location.partition("/")
    if db not in ("", "0"):
        raise InvalidInput("a Redis Cluster has only database 0")
    nodes = []
    for host in filter(None, hosts.split(",")):
        parts = urlsplit(f"//{host}")
        try:
            nodes.append((parts.hostname or "127.0.0.1", parts.port or 6379))
        except ValueError:
            raise InvalidInput(f"bad port in Redis Cluster node {host!r}") from None
    if not nodes:
        raise InvalidInput("redis+cluster:// needs at least one host:port")
    user, colon, password = credentials.partition(":")
    return nodes, unquote(user) or None, unquote(password) if colon else None


def open_redis(url: str, options: dict[str, Any]) -> RedisBackend:
    """Open `url` (redis://, rediss:// or redis+cluster://) with `options`: ``prefix``,
    ``max_connections`` (per server), ``socket_timeout``, ``socket_connect_timeout``.

    Raises InvalidInput for a bad URL or option, BackendUnavailable when Redis cannot be
    reached, BackendError when it refuses (e.g. the credentials).
    """
    options = dict(options)
    prefix = options.pop("prefix", DEFAULT_PREFIX)
    if not isinstance(prefix, str):
        raise InvalidInput(f"prefix must be a str, not {type(prefix).__name__}")
    kwargs: dict[str, Any] = {"decode_responses": False, "retry": _NO_RETRY}
    if (max_connections := _option(options, "max_connections", int)) is not None:
        # a full pool makes a caller wait for a free connection (up to 20 s), not fail
        kwargs["max_connections"] = max_connections
        kwargs["connection_pool_class"] = redis.BlockingConnectionPool
    timeout = _option(options, "socket_timeout", float)
    connect_timeout = _option(options, "socket_connect_timeout", float)
    kwargs["socket_connect_timeout"] = connect_timeout or timeout or DEFAULT_CONNECT_TIMEOUT
    kwargs["socket_timeout"] = DEFAULT_SOCKET_TIMEOUT if timeout is None else timeout
    if options:
        raise InvalidInput(f"unknown option(s) for the redis engine: {', '.join(sorted(options))}")
    engine = redact(url)
    if url.startswith("redis+cluster://"):
        nodes, username, password = _cluster_nodes(url)
        errors = _Errors(engine, password)
        (host, port), *more = nodes
        # The first node goes in as url=: only then do node pools get connection_pool_class.
        first = f"redis://[{host}]:{port}" if ":" in host else f"redis://{host}:{port}"
        others = [ClusterNode(h, p) for h, p in more]  # type: ignore[no-untyped-call]
        with errors:  # connects, to discover the cluster
            cluster = RedisCluster(
                url=first, startup_nodes=others, username=username, password=password, **kwargs
            )
        return RedisBackend(cluster, errors, prefix)
    errors = _Errors(engine, password_of(url))
    db = url.split("://", 1)[1].rpartition("@")[2].partition("/")[2]
    if db not in ("", "/") and not db.isdigit():  # redis-py would quietly use database 0
        raise InvalidInput(f"the path of a Redis URL is a database number, not {db!r}")
    try:
        pool_class = kwargs.pop("connection_pool_class", redis.ConnectionPool)
        client = redis.Redis(connection_pool=pool_class.from_url(url, **kwargs))
    except ValueError:  # redis-py's message may quote a piece of a password
        raise InvalidInput(
            f"bad Redis URL {engine!r} (percent-encode special characters in a password)"
        ) from None
    try:
        return RedisBackend(client, errors, prefix)  # loads the scripts: reports a bad server
    except BackendError:
        client.close()
        raise
