"""What the server does for a tenant: Backend primitives on its prefixed scopes, with quotas.

No storage rule lives here: keys and scopes are checked by ``satchel._keys``, records
are made by the client's Store, and the engine keeps them. This layer adds only the
tenant's prefix, its rights and its quota, and uses the server's clock.

Large values are records too: a client's Store writes their chunks in the blob scope of
its scope (``kind_scope(scope, "b")``), which maps to the blob scope of the tenant's
server-side scope (tenants.full_scope), so chunks are charged and recounted like any
record (as bytes: a large value is one key, its manifest). The server frees the chunks
of values nobody holds (``_blobs.collect``) as it purges expired records, so they go
even if the tenant's clients never come back (their Stores collect too).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._backends.base import Backend, Change, Delete, Expect, Put, Record, Touch
from .._blobs import collect
from .._blobs import migrate as migrate_blobs
from .._core import COLLECT_EVERY
from .._errors import InvalidInput, QuotaExceeded, ReadOnlyError, SatchelError
from .._events import migrate as migrate_events
from .._keys import check_key, split_kind
from .ledger import LEDGER_SCOPE, Ledger
from .models import MAX_TIME, ChangeIn, DeleteChange, ExpectIn, PutChange, RecordOut
from .tenants import Accounts, Config, Tenant, Usage, full_scope, own_scopes

PURGE_EVERY = 60.0
PURGE_LIMIT = 1000  # expired records, and large values nobody holds, freed per purge
SCAN_BYTES = 8 * 1024 * 1024  # a scan page stops growing past this many value bytes


def b64decode(text: str) -> bytes:
    """Bytes from base64 `text`; InvalidInput if it is not base64."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("value is not valid base64") from None


def record_out(record: Record, values: bool) -> RecordOut:
    value = base64.b64encode(record.value).decode() if values else None
    return RecordOut(
        key=record.key,
        value=value,
        created_at=record.created_at,
        updated_at=record.updated_at,
        expires_at=record.expires_at,
        version=record.version,
    )


# An entry whose scope, name and data pass this many bytes may spill: SQLite keeps the
# rows of its WITHOUT ROWID tables (records, points, events) whole in a 4 KiB page up to
# about 1000 bytes, and past that puts the rest in an overflow page of its own (a row of
# 1-4.5 KB takes 4.6 KB).
SPILL_AT = 900


@dataclass(frozen=True)
class Costs:
    """What a quota charges for an entry beyond its scope, name and data bytes, measured
    per engine by tests/test_server_quotas.py, which checks that a tenant is charged at
    least half of the storage its writes take (SQLite file, PostgreSQL relations, Redis
    MEMORY USAGE, blocks on disk, Python objects), for many small entries of every kind,
    long names and ~1 KB values included."""

    entry: int  # each record (a chunk of a large value too), series point, event, state
    container: int  # each record, series and sequence
    spilled: int = 0  # the least an entry over SPILL_AT bytes costs

    def size_of(self, scope: str, name: str, data: bytes | int, containers: int = 0) -> int:
        """What an entry costs: `data` (or that many bytes) under `name` in `scope`, in
        `containers` containers of its own. Every charge and recount comes from here."""
        size = len(scope.encode()) + len(name.encode())
        size += data if isinstance(data, int) else len(data)
        if size > SPILL_AT:
            size = max(size, self.spilled)
        return size + self.entry + containers * self.container


# By the scheme of the engine's URL; one set for every engine would charge SQLite's
# 40-byte records as the files engine's 4 KiB ones. A container is what an engine makes
# for a record, series or sequence beside its rows: a key of its own (Redis), a file or
# folder (files engine: a 4 KiB block, and an inode). Storage measured per small
# record / point / event, in bytes: SQLite 39 / 18 / 21 (a row of 1-4.5 KB: 4.6 KB);
# PostgreSQL 98 / 98 / 107; Redis 184 / 116 / 11, a series or sequence 120-136; files
# 4096 a record, 41 a point or event, 4096 a series or sequence (8192 a record in a
# scope of its own); memory 167 / 68 / 82, a scope 450, a series 550. A chunk of a large
# value is a record (in the blob scope of its scope).
COSTS = {
    "sqlite": Costs(entry=0, container=48, spilled=2400),  # a row has ~5 bytes of its own
    "postgresql": Costs(entry=64, container=32),  # tuple header, item pointer, index entry
    "redis": Costs(entry=64, container=64),
    "file": Costs(entry=16, container=4608),
    "memory": Costs(entry=96, container=160),  # Python objects
}
COSTS["rediss"] = COSTS["redis+cluster"] = COSTS["redis"]
UNMEASURED = Costs(entry=96, container=4608, spilled=2400)  # another engine: the worst


def costs_of(backend: Backend) -> Costs:
    """What `backend` charges: by its URL's scheme (its `engine`)."""
    return COSTS.get(backend.engine.partition(":")[0].lower(), UNMEASURED)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def holds_keys(tenant: Tenant, full: str) -> bool:
    """False for a kind scope of the tenant (server-side name `full`): its records, the
    chunks of large values, count as bytes, not as keys (a large value is one key)."""
    return split_kind(full[len(tenant.prefix) :]) is None


def expiry(expires_in: float | None, now: float) -> float | None:
    return None if expires_in is None else now + max(-MAX_TIME, min(MAX_TIME, expires_in))


class Service:
    """The engine a server serves, and its tenants."""

    def __init__(self, backend: Backend, config: Config, config_path: Path | None = None) -> None:
        self.backend = backend
        self.config = config
        self.accounts = Accounts(self._recount)
        # Large values and event sequences a server before 0.2 kept in engine storage
        # become records, in the kind scopes of the tenants' server-side scopes (where
        # their clients look).
        migrate_blobs(backend, time.time())
        migrate_events(backend)
        self.ledger = Ledger(backend)
        self.costs = costs_of(backend)
        self._next_purge = 0.0
        self._collected_to: tuple[str, str] | None = None  # where `collect` goes on
        self._next_collect = 0.0
        self._path = config_path
        self._mtime = self._stat()
        self._next_check = 0.0

    def _stat(self) -> float | None:
        try:
            return None if self._path is None else self._path.stat().st_mtime
        except OSError:
            return None

    def tenant_for(self, token: str) -> Tenant | None:
        """The tenant of `token`; the config file is read again when it changed (so a
        revoked token stops working within a second, without a restart). While it is
        unreadable, ConfigUnreadable (logged once a change)."""
        now = time.monotonic()
        if self._path is not None and now >= self._next_check:
            self._next_check = now + 1.0
            mtime = self._stat()
            if mtime != self._mtime:
                try:
                    self.config = Config.load(self._path)
                    self._mtime = mtime
                except (SatchelError, OSError) as exc:  # it may revoke a token: refuse all
                    self.config, self._mtime = Config.broken(self._path, exc), mtime
        return self.config.tenant_for(token)

    # -- tenants and scopes -----------------------------------------------------------

    @staticmethod
    def now() -> float:
        return time.time()

    @staticmethod
    def key(name: str) -> str:
        """`name` if it is a valid key (or series / sequence name), else InvalidInput."""
        return check_key(name)

    def scope(self, tenant: Tenant, scope: str) -> str:
        """The server-side scope; InvalidInput / PermissionError if not allowed. Every
        endpoint maps scopes here, so this is where the ledger is kept out of reach (an
        admin's prefix may be empty, or any start of the ledger's name)."""
        full = full_scope(tenant, scope)
        if full == LEDGER_SCOPE:
            raise PermissionError(f"scope {scope!r} holds the server's own records")
        return full

    def writable(self, tenant: Tenant, scope: str) -> str:
        full = self.scope(tenant, scope)
        if tenant.readonly:
            raise ReadOnlyError(f"tenant {tenant.name!r} is read-only")
        return full

    def scopes(self, tenant: Tenant, kinds: bool = False) -> list[str]:
        """The tenant's scopes holding a live record; their kind scopes too with `kinds`."""
        names = self.backend.scopes(time.time())
        return own_scopes(tenant, (n for n in names if n != LEDGER_SCOPE), kinds)

    def _recount(self, tenant: Tenant) -> Usage:
        """Every live record under the tenant's prefix (the chunks of its large values in
        its blob scopes included, as bytes: a large value is one key, its manifest), and
        the series and events the ledger notes."""
        now = time.time()
        usage = Usage(counted_at=now)
        for name in self.backend.scopes(now):
            if not name.startswith(tenant.prefix) or name == LEDGER_SCOPE:
                continue
            keys = holds_keys(tenant, name)
            size = 1000 if keys else 16  # a page of chunks of 1 MiB each
            after = None
            while page := self.backend.scan(name, "", after, size, now):
                usage.keys += len(page) if keys else 0
                usage.bytes += sum(self.record_cost(name, r.key, r.value) for r in page)
                after = page[-1].key
        usage.bytes += self.ledger.extra_bytes(tenant.name, self.costs.size_of)
        return usage

    def usage(self, tenant: Tenant) -> Usage:
        with self.accounts.lock(tenant):
            return self.accounts.usage(tenant)

    def record_cost(self, full: str, key: str, value: bytes) -> int:
        """What a record costs: an entry in a container of its own."""
        return self.costs.size_of(full, key, value, 1)

    def record_growth(self, full: str, key: str, value: bytes, old: Record | None) -> int:
        """How many bytes writing `value` over `old` (None: a new key) adds."""
        new = self.record_cost(full, key, value)
        return new if old is None else new - self.record_cost(full, key, old.value)

    def charge(self, tenant: Tenant, add_bytes: int, add_keys: int) -> Usage:
        """Check that the tenant can take the growth (lock held); return its usage."""
        usage = self.accounts.usage(tenant)
        if add_bytes > 0 and usage.bytes + add_bytes > tenant.quota_bytes:
            raise QuotaExceeded(
                f"over quota: tenant {tenant.name!r} holds {usage.bytes} bytes, this write "
                f"adds {add_bytes}, the quota is {tenant.quota_bytes} bytes; nothing was written"
            )
        if add_keys > 0 and usage.keys + add_keys > tenant.quota_keys:
            raise QuotaExceeded(
                f"over quota: tenant {tenant.name!r} holds {usage.keys} keys, the quota is "
                f"{tenant.quota_keys}; nothing was written"
            )
        return usage

    def add(self, tenant: Tenant, size: int) -> None:
        """Charge and count `size` more bytes (QuotaExceeded if they do not fit); takes
        the tenant's lock."""
        if size:
            with self.accounts.lock(tenant):
                self._add(tenant, size)

    def _add(self, tenant: Tenant, size: int) -> None:
        """`add` with the lock held."""
        self.charge(tenant, size, 0).bytes += size

    def credit(self, tenant: Tenant, size: int) -> None:
        """Give back `size` bytes charged for a write that did not happen (or freed room)."""
        if size:
            with self.accounts.lock(tenant):
                self.accounts.usage(tenant).bytes -= size

    def _housekeeping(self, now: float) -> None:
        """Purge expired records and free the chunks of large values nobody holds, now
        and then: what they took leaves the usage at the next recount."""
        if now >= self._next_purge:
            self._next_purge = now + PURGE_EVERY
            with contextlib.suppress(SatchelError):  # expired records are invisible anyway
                self.backend.purge_expired(now, PURGE_LIMIT)
        if now >= self._next_collect:
            self._next_collect = now + COLLECT_EVERY
            with contextlib.suppress(SatchelError):
                self._collected_to = collect(self.backend, now, PURGE_LIMIT, self._collected_to)

    # -- records ----------------------------------------------------------------------

    def get_many(self, tenant: Tenant, scope: str, keys: Sequence[str]) -> dict[str, Record]:
        full = self.scope(tenant, scope)
        checked = list(dict.fromkeys(check_key(k) for k in keys))
        return self.backend.get_many(full, checked, time.time()) if checked else {}

    def apply(
        self,
        tenant: Tenant,
        scope: str,
        changes: Sequence[ChangeIn],
        expect: Sequence[ExpectIn] = (),
    ) -> int | None:
        """`Backend.apply` on the tenant's scope, with its quota; values are base64 and
        expiries seconds from the server's now.

        None if a condition failed: nothing written, nothing charged. QuotaExceeded,
        nothing written, if what the batch adds does not fit. InvalidInput if a key
        appears twice among `changes`.
        """
        full = self.writable(tenant, scope)
        keys = [check_key(c.key) for c in changes]
        if len(set(keys)) != len(keys):
            raise InvalidInput("a batch names the same key twice")
        # Decoded before taking the lock: a 64 MiB batch takes a while.
        values = [b64decode(c.value) if isinstance(c, PutChange) else b"" for c in changes]
        conditions = [Expect(check_key(e.key), e.version, e.created_at) for e in expect]
        # Charged once for the whole batch: every write of records is charged here. `now`
        # is taken under the tenant's lock, so its writes see time move forward.
        with self.accounts.lock(tenant):
            now = time.time()
            made: list[Change] = []
            for change, key, value in zip(changes, keys, values, strict=True):
                if isinstance(change, PutChange):
                    made.append(Put(key, value, expiry(change.expires_in, now), change.if_absent))
                elif isinstance(change, DeleteChange):
                    made.append(Delete(key))
                else:
                    made.append(Touch(key, expiry(change.expires_in, now)))
            if not made and not conditions:
                return 0
            usage, grow, add_keys = self._charge_for(tenant, full, made, now)
            count = self.backend.apply(full, made, now, conditions)
            if count is not None and usage is not None:
                usage.bytes += grow
                usage.keys += add_keys
        self._housekeeping(now)
        return count

    def _charge_for(
        self, tenant: Tenant, full: str, changes: Sequence[Change], now: float
    ) -> tuple[Usage | None, int, int]:
        """Charge the bytes and keys `changes` add, net of what their deletes free (lock
        held): (the tenant's usage, bytes, keys); (None, 0, 0) without a read if they
        only touch (a touch costs nothing)."""
        sized = [c for c in changes if type(c) is not Touch]
        if not sized:
            return None, 0, 0
        old = self.backend.get_many(full, [c.key for c in sized], now)
        grow = add_keys = 0
        for change in sized:
            before = old.get(change.key)
            if type(change) is Put:
                if before is None or not change.if_absent:  # else left alone: no change
                    grow += self.record_growth(full, change.key, change.value, before)
                    add_keys += int(before is None)
            elif before is not None:
                grow -= self.record_cost(full, change.key, before.value)
                add_keys -= 1
        if not holds_keys(tenant, full):  # chunks and heads of large values: bytes only
            add_keys = 0
        return self.charge(tenant, grow, add_keys), grow, add_keys

    def scan(
        self, tenant: Tenant, scope: str, prefix: str, after: str | None, limit: int, values: bool
    ) -> tuple[list[Record], bool]:
        """A page of records; True if the page was cut short by its size (ask again)."""
        full = self.scope(tenant, scope)
        if after is not None:
            after = check_key(after)
        if "\x00" in prefix or not _encodable(prefix):
            return [], False  # no stored key can start with it
        now = time.time()
        page: list[Record] = []
        while len(page) < limit:
            want = min(limit - len(page), 500)
            got = self.backend.scan(full, prefix, after, want, now, values)
            page.extend(got)
            if len(got) < want:
                break
            after = got[-1].key
            if values and sum(len(r.value) for r in page) > SCAN_BYTES:
                return page, True
        return page, False

    def count(self, tenant: Tenant, scope: str) -> int:
        return self.backend.count(self.scope(tenant, scope), time.time())

    def clear(self, tenant: Tenant, scope: str) -> None:
        full = self.writable(tenant, scope)
        with self.accounts.lock(tenant):
            self.backend.clear(full)
            self.accounts.forget(tenant)

    def tenants(self) -> list[tuple[Tenant, Usage]]:
        return [(t, self.usage(t)) for t in self.config.tenants.values()]

    def close(self) -> None:
        self.backend.close()
