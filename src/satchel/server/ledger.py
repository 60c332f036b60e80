"""Which scopes of a tenant hold time series or event sequences, so a recount finds them.

A scope that holds only series or events has no record, so the engine's ``scopes()``
does not list it. The server notes such scopes in the engine itself (records in the
reserved scope, which no tenant can name) the first time it writes there, and a quota
recount sums the points and events of the scopes noted for the tenant.
"""

from __future__ import annotations

import contextlib
import threading
import time

from ..backends.base import Backend
from ..errors import SatchelError
from ..keys import RESERVED_SCOPE
from ..series import INT64_MAX

PAGE = 1000
POINT_COST, EVENT_COST = 8, 16  # bytes counted for a point's timestamp, an event's seq + time


def _prefix(tenant: str) -> str:
    return f"server-ledger:{tenant}:"


class Ledger:
    """The noted scopes (a cache of what is already written, to note each scope once)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._noted: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def note(self, tenant: str, full_scope: str) -> None:
        """Remember that `full_scope` of `tenant` holds series or events."""
        with self._lock:
            if (tenant, full_scope) in self._noted:
                return
        key = _prefix(tenant) + full_scope
        self._backend.put(RESERVED_SCOPE, key, b"", None, time.time(), True)
        with self._lock:
            self._noted.add((tenant, full_scope))

    def extra_bytes(self, tenant: str) -> int:
        """What the series and events of the tenant's noted scopes cost."""
        total = 0
        prefix, after = _prefix(tenant), None
        while page := self._backend.scan(RESERVED_SCOPE, prefix, after, PAGE, time.time()):
            for record in page:
                with contextlib.suppress(SatchelError):  # an engine without series/events
                    total += self._scope_bytes(record.key[len(prefix) :])
            after = page[-1].key
        return total

    def _scope_bytes(self, scope: str) -> int:
        b = self._backend
        total = 0
        for name in b.series_names(scope):
            start: int | None = None
            while points := b.series_range(scope, name, start, None, PAGE):
                total += sum(POINT_COST + len(v) for _, v in points)
                if len(points) < PAGE or points[-1][0] == INT64_MAX:
                    break
                start = points[-1][0] + 1
        for name in b.events_names(scope):
            seq = 0
            while events := b.events_read(scope, name, seq, PAGE):
                total += sum(EVENT_COST + len(data) for _, _, data in events)
                seq = events[-1][0]
                if len(events) < PAGE:
                    break
            for which in ("head", "base"):
                state = b.events_state(scope, name, which)
                total += 0 if state is None else EVENT_COST + len(state[2])
        return total
