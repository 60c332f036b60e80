"""Dify's plugin storage (``self.session.storage``) on satchel: bytes per workspace and plugin.

    >>> from satchel.compat.dify import PluginStorage
    >>> storage = PluginStorage("tenant-1", "langgenius/demo", "sqlite:///plugins.db")
    >>> storage.set("user_name", "John Doe".encode("utf-8"))
    >>> storage.get("user_name")
    b'John Doe'

Each (tenant, plugin) pair has a scope of its own, ``dify:<len(tenant)>:<tenant>:<plugin>``
(the length keeps every pair apart, whatever characters the ids hold), and a size quota:
the bytes of its values (keys and metadata not counted, as in Dify) may add up to
`quota`, 100 MiB by default. A write that would go over raises `QuotaExceeded` and stores
nothing; overwriting a value counts the difference of the sizes. Keys are at most 256
UTF-8 bytes, as in Dify; values must be bytes (anything else is a TypeError).

How the quota holds with many writers (threads, processes, machines on one database):
the bytes in use are counted in one record of the scope itself (`USAGE_KEY`, longer than
any plugin key can be, so no plugin key can touch it). That record is never deleted, so
``compare_and_set`` on it cannot mistake a new record for an old one (data keys can:
a deleted and re-created key starts again at version 1, so "measure the old size, then
write if the version is unchanged" could replace a value it never measured). Every
`set` and `delete` of a plugin therefore runs under a lease taken in that record with
an atomic update: it measures the old value, checks the quota, writes, and stores the
new count as it gives the lease back. Writers of one plugin take turns; readers never
wait. The count is exact, and no two writers can together pass the quota.

The caveats: a writer that dies holding the lease makes the plugin's other writers wait
until the lease runs out (`lease`, 30 s by default); the next writer then recounts the
scope from its values, so nothing it did is lost from the count. A writer that stalls
longer than its lease (a frozen VM) can land one write after another writer took over:
until it notices (when it gives the lease back, and then it recounts) the plugin can be
over its quota by that one value. Leases compare wall clocks: machines sharing a
database need clocks within a few seconds of each other. Only writes through
PluginStorage are counted; writing the scope with the plain Store API bypasses the quota
(`recount` catches up). The quota is a setting of each PluginStorage, not stored: give
every process of a deployment the same one.

Differences from Dify: Dify writes the value before it checks the quota, and two of its
writers can pass the quota together; here the check comes first, under the lease.
Deleting a missing key is not an error. Keys with ``..``, ``//`` or ``\\`` are ordinary
keys (Dify refuses them as path traversal; satchel keys are never paths).
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .. import _errors as errors
from .._errors import CorruptData, InvalidInput, InvalidInputType, SatchelError, UnsupportedValue
from .._keys import check_key
from .._store import Store
from .._store import open as open_store

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_QUOTA",
    "MAX_KEY_BYTES",
    "USAGE_KEY",
    "PluginStorage",
    "QuotaExceeded",
    "scope_name",
]

DEFAULT_QUOTA = 100 * 1024 * 1024  # bytes; Dify's default PERSISTENCE_STORAGE_MAX_SIZE
DEFAULT_LEASE = 30.0  # seconds a writer may hold a plugin's lease
MAX_KEY_BYTES = 256  # Dify refuses longer keys
# Where a scope counts its bytes: 262 bytes, so no plugin key (at most 256) can be it.
USAGE_KEY = "~satchel.compat.dify:usage" + "~" * 236
_WAIT_MIN, _WAIT_MAX = 0.001, 0.05  # seconds between looks at a lease someone else holds


class QuotaExceeded(errors.QuotaExceeded):
    """A write would take a plugin's storage past its quota; nothing was written.

    `quota`, `used` (bytes counted before the write) and `needed` (the bytes the write
    adds) say by how much.
    """

    def __init__(
        self,
        message: str,
        *,
        quota: int,
        used: int,
        needed: int,
        key: str | None = None,
        scope: str | None = None,
        engine: str | None = None,
    ) -> None:
        super().__init__(message, key=key, scope=scope, engine=engine)
        self.quota = quota
        self.used = used
        self.needed = needed


# -- the usage record: "<used>" when free, "<used> <holder> <lease end>" while held ----------


@dataclass(slots=True)
class _Usage:
    used: int
    holder: str | None = None
    until: float = 0.0

    def dumps(self) -> bytes:
        """As stored: ASCII text in bytes, which every codec that keeps bytes keeps."""
        if self.holder is None:
            return str(self.used).encode("ascii")
        return f"{self.used} {self.holder} {self.until!r}".encode("ascii")

    @classmethod
    def loads(cls, data: Any) -> _Usage:
        try:
            if not isinstance(data, bytes):
                raise TypeError
            used, *held = data.decode("ascii").split(" ")
            if not held:
                return cls(int(used))
            holder, until = held
            return cls(int(used), holder, float(until))
        except (TypeError, ValueError):
            raise CorruptData(
                f"the plugin storage usage record holds {data!r}", key=USAGE_KEY
            ) from None


class _Busy(Exception):
    """Another writer holds the lease (internal: never leaves this module)."""


class _LostLease(Exception):
    """Our lease ran out and another writer took it over (internal)."""


@dataclass(slots=True)
class _Hold:
    """A lease this process holds: `used` is the count it will store when it gives it back."""

    token: str
    used: int
    taken_over: bool  # the previous holder never gave the lease back


def scope_name(tenant_id: str, plugin_id: str) -> str:
    """The satchel scope holding the storage of plugin `plugin_id` in workspace `tenant_id`."""
    for what, value in (("tenant_id", tenant_id), ("plugin_id", plugin_id)):
        if not isinstance(value, str):
            raise InvalidInputType(f"{what} must be a str, not {type(value).__name__}")
    return f"dify:{len(tenant_id)}:{tenant_id}:{plugin_id}"


class PluginStorage:
    """The storage of one plugin in one workspace: `set`, `get`, `delete`, `exist`.

    Opens `url` (default: ``satchel.open()``) for itself, with `options`; or shares an
    open `store` opened with the default "typed" or the "raw" codec, which both keep
    bytes as they are (`close` then leaves it open). `quota` is the most bytes of values
    the plugin may keep; `lease` the seconds one write may take before other writers may
    assume its writer died. Raises InvalidInput if the ids make a scope name over 255
    UTF-8 bytes.
    """

    def __init__(
        self,
        tenant_id: str,
        plugin_id: str,
        url: str | os.PathLike[str] | None = None,
        *,
        store: Store | None = None,
        quota: int = DEFAULT_QUOTA,
        lease: float = DEFAULT_LEASE,
        **options: Any,
    ) -> None:
        if type(quota) is not int:
            raise InvalidInputType(f"quota must be an int (bytes), not {type(quota).__name__}")
        if quota < 0:
            raise InvalidInput(f"quota must be at least 0 bytes, not {quota}")
        if type(lease) is not int and type(lease) is not float:
            raise InvalidInputType(f"lease must be seconds (int or float), not {lease!r}")
        if not 0 < lease < 1e6:
            raise InvalidInput(f"lease must be more than 0 seconds, not {lease!r}")
        if store is not None and (url is not None or options):
            raise TypeError("give either a url (and options) or an open store, not both")
        scope = scope_name(tenant_id, plugin_id)
        self.tenant_id = tenant_id
        self.plugin_id = plugin_id
        self.quota = quota
        self.lease = float(lease)
        self._owned = store is None
        base = open_store(url, codec="raw", **options) if store is None else store
        try:
            self._store = base.scope(scope)
        except BaseException:
            if self._owned:
                base.close()
            raise

    # -- the Dify storage methods -----------------------------------------------------------

    def set(self, key: str, val: bytes) -> None:
        """Store `val` under `key`.

        Raises QuotaExceeded if the plugin's values would pass the quota (nothing is
        written), UnsupportedValue (a TypeError) if `val` is not bytes, InvalidInput for
        an empty key or one over 256 UTF-8 bytes.
        """
        key = self._check(key)
        if not isinstance(val, bytes):
            raise self._about(
                UnsupportedValue(
                    f"plugin storage keeps bytes, not {type(val).__name__}; encode it first"
                ),
                key,
            )
        data = bytes(val)
        store = self._store
        with self._held() as hold:
            try:
                old = store.info(key).size
            except KeyError:
                old = 0
            used = hold.used - old + len(data)
            if len(data) > old and used > self.quota:
                raise self._about(
                    QuotaExceeded(
                        f"plugin storage quota exceeded: {len(data) - old} more bytes would "
                        f"make {used} of {self.quota} bytes",
                        quota=self.quota,
                        used=hold.used,
                        needed=len(data) - old,
                    ),
                    key,
                )
            store.set(key, data)
            hold.used = used

    def get(self, key: str) -> bytes | None:
        """The bytes stored under `key`, or None if there are none."""
        value: bytes | None = self._store.get(self._check(key), None)
        return value

    def delete(self, key: str) -> None:
        """Delete `key` and give its bytes back to the quota; a missing key is no error."""
        key = self._check(key)
        with self._held() as hold:
            value = self._store.pop(key, None)
            if isinstance(value, bytes):
                hold.used = max(hold.used - len(value), 0)

    def exist(self, key: str) -> bool:
        """True if `key` holds a value."""
        return self._store.exists(self._check(key))

    # -- quota --------------------------------------------------------------------------------

    @property
    def usage(self) -> int:
        """The bytes of values this plugin keeps, as last counted."""
        return _Usage.loads(self._store.get(USAGE_KEY, b"0")).used

    def recount(self) -> int:
        """Count the plugin's bytes again from its values (under the lease) and return it.

        Needed only after the scope was written around PluginStorage; a writer that took
        over from one that died recounts by itself.
        """
        with self._held(recount=True) as hold:
            return hold.used

    def _stored_bytes(self) -> int:
        return sum(
            len(value)
            for key, value in self._store.items()
            if key != USAGE_KEY and isinstance(value, bytes)
        )

    @contextmanager
    def _held(self, recount: bool = False) -> Iterator[_Hold]:
        """Hold the plugin's lease; store `hold.used` as the count when giving it back.

        A QuotaExceeded, InvalidInput or UnsupportedValue inside changed nothing; after
        any other error the write may or may not have happened, so the count is redone
        (if even that fails, the lease is left to run out and the next writer recounts).
        """
        hold = self._acquire()
        try:
            if recount or hold.taken_over:
                hold.used = self._stored_bytes()
            yield hold
        except (QuotaExceeded, InvalidInput, UnsupportedValue):
            self._release(hold)
            raise
        except BaseException:
            hold.used = self._stored_bytes()
            self._release(hold)
            raise
        self._release(hold)

    def _acquire(self) -> _Hold:
        token = uuid.uuid4().hex
        hold = _Hold(token, 0, False)

        def take(data: Any) -> bytes:
            usage = _Usage.loads(data)
            now = time.time()
            if usage.holder is not None and usage.until > now:
                raise _Busy
            hold.used, hold.taken_over = usage.used, usage.holder is not None
            return _Usage(usage.used, token, now + self.lease).dumps()

        wait = _WAIT_MIN
        while True:
            try:
                self._store.update(USAGE_KEY, take, default=b"0")
                return hold
            except _Busy:
                time.sleep(wait * random.uniform(0.5, 1.5))
                wait = min(wait * 2, _WAIT_MAX)

    def _release(self, hold: _Hold) -> None:
        def give_back(data: Any) -> bytes:
            if _Usage.loads(data).holder != hold.token:
                raise _LostLease
            return _Usage(hold.used).dumps()

        try:
            self._store.update(USAGE_KEY, give_back, default=b"0")
        except _LostLease:
            # We outlived our lease and another writer took over; it may have counted
            # before our write landed. Count again, in turn.
            self.recount()

    # -- helpers -------------------------------------------------------------------------------

    def _about(self, exc: SatchelError, key: str | None) -> SatchelError:
        """`exc` naming `key`, this plugin's scope and the engine."""
        if exc.key is None:
            exc.key = key
        exc.scope = exc.scope or self._store.scope_name
        exc.engine = exc.engine or self._store.url
        return exc

    def _check(self, key: str) -> str:
        """`key` if it is a satchel key of at most 256 UTF-8 bytes, else InvalidInput."""
        try:
            key = check_key(key)
            size = len(key.encode("utf-8"))
        except SatchelError as exc:
            self._about(exc, None)
            raise
        if size > MAX_KEY_BYTES:
            raise self._about(
                InvalidInput(
                    f"key is {size} UTF-8 bytes long; Dify plugin storage allows {MAX_KEY_BYTES}"
                ),
                key,
            )
        return key

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the store this PluginStorage opened; a store given as ``store=`` stays open."""
        if self._owned:
            self._store.close()

    def __enter__(self) -> PluginStorage:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<satchel.compat.dify.PluginStorage {self._store.url} "
            f"tenant={self.tenant_id!r} plugin={self.plugin_id!r} quota={self.quota}>"
        )
