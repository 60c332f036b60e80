"""``memory://``: records in a dict, for tests and caches. Same rules as every engine."""

from __future__ import annotations

import bisect
import threading
import weakref
from collections.abc import Sequence

from .base import (
    Backend,
    Change,
    Delete,
    Expect,
    Put,
    Record,
    Touch,
    holds,
)


class _Scope:
    __slots__ = ("order", "records")

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.order: list[str] = []  # sorted keys, for ordered scans


def _live(record: Record | None, now: float) -> Record | None:
    if record is None or (record.expires_at is not None and record.expires_at <= now):
        return None
    return record


class _Data:
    """The records of one memory store, shared by every open of the same name."""

    def __init__(self) -> None:
        self.scopes: dict[str, _Scope] = {}
        self.lock = threading.RLock()


# Named stores live while at least one open store refers to them.
_NAMED: weakref.WeakValueDictionary[str, _Data] = weakref.WeakValueDictionary()
_NAMED_LOCK = threading.Lock()


class MemoryBackend(Backend):
    """Thread-safe records in this process. ``memory://`` is private to one open;
    ``memory://name`` is shared by every open of that name in the process."""

    def __init__(self, name: str = "") -> None:
        self.engine = f"memory://{name}"
        if name:
            with _NAMED_LOCK:
                data = _NAMED.get(name)
                if data is None:
                    data = _NAMED[name] = _Data()
        else:
            data = _Data()
        self._data = data
        self._scopes = data.scopes
        self._lock = data.lock

    def _scope(self, scope: str) -> _Scope:
        found = self._scopes.get(scope)
        if found is None:
            found = self._scopes[scope] = _Scope()
        return found

    def _write(
        self, s: _Scope, key: str, value: bytes, expires_at: float | None, now: float
    ) -> bool:
        old = _live(s.records.get(key), now)
        if old is None:
            if key not in s.records:
                bisect.insort(s.order, key)
            s.records[key] = Record(key, value, now, now, expires_at, 1)
            return True
        s.records[key] = Record(key, value, old.created_at, now, expires_at, old.version + 1)
        return False

    def _remove(self, s: _Scope, key: str) -> Record | None:
        record = s.records.pop(key, None)
        if record is not None:
            del s.order[bisect.bisect_left(s.order, key)]
        return record

    def get_many(self, scope: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        with self._lock:
            records = self._scope(scope).records
            found = {}
            for key in keys:
                record = _live(records.get(key), now)
                if record is not None:
                    found[key] = record
            return found

    def get(self, scope: str, key: str, now: float) -> Record | None:
        with self._lock:
            return _live(self._scope(scope).records.get(key), now)

    def apply(
        self, scope: str, changes: Sequence[Change], now: float, expect: Sequence[Expect] = ()
    ) -> int | None:
        with self._lock:
            s = self._scope(scope)
            records = s.records
            if not all(holds(_live(records.get(c.key), now), c) for c in expect):
                return None
            hits = 0
            for change in changes:
                key = change.key
                if type(change) is Put:
                    if change.if_absent and _live(records.get(key), now) is not None:
                        continue
                    hits += self._write(s, key, change.value, change.expires_at, now)
                elif type(change) is Delete:
                    hits += _live(self._remove(s, key), now) is not None
                elif type(change) is Touch:
                    record = _live(records.get(key), now)
                    if record is not None:
                        record.expires_at = change.expires_at
                        hits += 1
            return hits

    def scan(
        self,
        scope: str,
        prefix: str,
        after: str | None,
        limit: int,
        now: float,
        values: bool = True,
    ) -> list[Record]:
        with self._lock:
            s = self._scope(scope)
            order = s.order
            i = bisect.bisect_right(order, after) if after is not None else 0
            i = max(i, bisect.bisect_left(order, prefix))
            found: list[Record] = []
            while i < len(order) and len(found) < limit:
                key = order[i]
                if not key.startswith(prefix):
                    break
                record = _live(s.records[key], now)
                if record is not None:
                    found.append(record)
                i += 1
            return found

    def count(self, scope: str, now: float) -> int:
        with self._lock:
            records = self._scope(scope).records.values()
            return sum(_live(r, now) is not None for r in records)

    def scopes(self, now: float) -> list[str]:
        with self._lock:
            return sorted(
                name
                for name, s in self._scopes.items()
                if any(_live(r, now) is not None for r in s.records.values())
            )

    def clear(self, scope: str) -> None:
        with self._lock:
            self._scopes.pop(scope, None)

    def purge_expired(self, now: float, limit: int) -> int:
        with self._lock:
            purged = 0
            for s in self._scopes.values():
                expired = [k for k, r in s.records.items() if _live(r, now) is None]
                for key in expired[: limit - purged]:
                    self._remove(s, key)
                    purged += 1
            return purged

    def close(self) -> None:
        pass  # the records go when the last open store of this name goes



