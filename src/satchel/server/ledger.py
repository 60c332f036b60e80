"""What a quota recount cannot read off the records, kept in the engine itself (records
in LEDGER_SCOPE, which the service refuses to every tenant: an admin's empty prefix
reaches every other name, the reserved scope included).

Which scopes of a tenant hold time series: a scope that holds only those has no record,
so the engine's ``scopes()`` does not list it. The server notes such a scope the first
time it writes there; a recount sums its points. (Large values and event sequences need
no entry: they are records, which a recount reads.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .._backends.base import Backend, Delete, Put, SeriesEngine
from .._keys import RESERVED_SCOPE
from .._series import INT64_MAX

PAGE = 1000
LEDGER_SCOPE = f"{RESERVED_SCOPE}:server"
POINT_COST = 8  # data bytes of a point's timestamp
# What an entry costs: (scope, name, data bytes, containers) -> bytes; Costs.size_of.
Sizer = Callable[[str, str, int, int], int]


def _prefix(tenant: str) -> str:
    return f"server-ledger:{tenant}:"


# Entries of servers before 0.2 for each large value's chunk bytes: chunks are records
# now, so they are dropped.
_OLD_BLOB_PREFIX = "server-blobs:"


class Ledger:
    """The noted scopes (a cache of what is already written, to note each scope once)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._noted: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._move_old_entries()

    def _move_old_entries(self) -> None:
        """Move the entries that servers before 0.1.1 kept in RESERVED_SCOPE (where an
        admin with an empty prefix could reach them) into LEDGER_SCOPE, and drop the
        entries of large values that servers before 0.2 kept."""
        b = self._backend
        while page := b.scan(RESERVED_SCOPE, "server-ledger:", None, PAGE, time.time()):
            # an entry already in LEDGER_SCOPE is newer: if_absent keeps it
            moved = [Put(r.key, r.value, None, True) for r in page]
            b.apply(LEDGER_SCOPE, moved, time.time())
            b.apply(RESERVED_SCOPE, [Delete(r.key) for r in page], time.time())
        for scope in (RESERVED_SCOPE, LEDGER_SCOPE):
            while page := b.scan(scope, _OLD_BLOB_PREFIX, None, PAGE, time.time(), values=False):
                b.apply(scope, [Delete(r.key) for r in page], time.time())

    def note(self, tenant: str, full_scope: str) -> None:
        """Remember that `full_scope` of `tenant` holds time series."""
        with self._lock:
            if (tenant, full_scope) in self._noted:
                return
        key = _prefix(tenant) + full_scope
        self._backend.apply(LEDGER_SCOPE, (Put(key, b"", None, True),), time.time())
        with self._lock:
            self._noted.add((tenant, full_scope))

    def extra_bytes(self, tenant: str, size_of: Sizer) -> int:
        """What the time series of the tenant's noted scopes cost (0 where the engine keeps
        them as records, which a recount reads)."""
        series = self._backend.native_series()
        if series is None:
            return 0
        total = 0
        prefix, after = _prefix(tenant), None
        while page := self._backend.scan(LEDGER_SCOPE, prefix, after, PAGE, time.time()):
            for record in page:
                total += self._scope_bytes(series, record.key[len(prefix) :], size_of)
            after = page[-1].key
        return total

    @staticmethod
    def _scope_bytes(b: SeriesEngine, scope: str, size_of: Sizer) -> int:
        """Each series as an empty entry in a container of its own (as the server charges
        a new one), and each point as an entry."""
        total = 0
        for name in b.series_names(scope):
            total += size_of(scope, name, 0, 1)
            start: int | None = None
            while points := b.series_range(scope, name, start, None, PAGE):
                total += sum(size_of(scope, name, POINT_COST + len(v), 0) for _, v in points)
                if len(points) < PAGE or points[-1][0] == INT64_MAX:
                    break
                start = points[-1][0] + 1
        return total
