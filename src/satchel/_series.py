"""Time series: integer timestamps mapped to values, one engine entry per point.

An engine may keep series natively (`SeriesEngine`); on one that does not, `RecordSeries`
keeps them as records in the scope's series scope (``kind_scope(scope, "s")``): for
series `name`, the head ``name_key(name)`` (msgpack of [name]: the series holds points)
and point t under ``<head>/<t + 2**63 as 16 hex digits>`` (hex order is t order), its
value the point's bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from time import time
from typing import TYPE_CHECKING, Any

import msgpack

from ._backends.base import Backend, Delete, Expect, Put, SeriesEngine
from ._errors import CorruptData, InvalidInput, InvalidInputType, SatchelError
from ._keys import check_key, head_keys, kind_scope, name_key

if TYPE_CHECKING:
    from ._core import Core

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
PAGE = 1000  # points per round trip when iterating


def check_time(t: object, what: str = "timestamp") -> int:
    """`t` if it is an int in the signed 64-bit range; raises InvalidInput(Type) otherwise."""
    if type(t) is not int:
        raise InvalidInputType(f"a {what} must be an int, not {type(t).__name__}")
    if not INT64_MIN <= t <= INT64_MAX:
        raise InvalidInput(f"a {what} must fit in 64 bits, not {t}")
    return t


def _bound(t: object, what: str) -> int | None:
    return None if t is None else check_time(t, what)


KIND = "s"
_OFFSET = 2**63


def _point_key(head: str, t: int) -> str:
    return f"{head}/{t + _OFFSET:016x}"


class RecordSeries(SeriesEngine):
    """`SeriesEngine` over the records of `backend` (see the module docstring). Ranges
    are index scans; `reverse`, `series_count` and a removal read every point they pass."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def _points(
        self, scope: str, name: str, start: int | None, stop: int | None, values: bool
    ) -> Iterator[tuple[int, bytes]]:
        """The points with start <= t < stop, by t, PAGE records per scan."""
        head = name_key(name)
        prefix = head + "/"
        after = None if start is None or start == INT64_MIN else _point_key(head, start - 1)
        now = time()
        while page := self._backend.scan(scope, prefix, after, PAGE, now, values=values):
            for record in page:
                try:
                    t = int(record.key[len(prefix) :], 16) - _OFFSET
                except ValueError:
                    damaged = f"series {name!r} holds a point under {record.key!r}"
                    raise CorruptData(damaged) from None
                if stop is not None and t >= stop:
                    return
                yield t, record.value
            if len(page) < PAGE:
                return
            after = page[-1].key

    def series_put(self, scope: str, name: str, points: Sequence[tuple[int, bytes]]) -> None:
        head = name_key(name)
        changes = [Put(_point_key(head, t), value) for t, value in points]
        # The head is rewritten too: a removal that empties the series drops the head
        # only if nobody wrote since (its version), so a series with points keeps it.
        changes.append(Put(head, msgpack.packb([name])))
        self._backend.apply(kind_scope(scope, KIND), changes, time())

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
        points = self._points(kind_scope(scope, KIND), name, start, stop, values)
        if reverse:
            return list(deque(points, maxlen=limit))[::-1]
        return list(islice(points, limit))

    def series_remove(self, scope: str, name: str, start: int | None, stop: int | None) -> int:
        scope, head = kind_scope(scope, KIND), name_key(name)
        backend, removed = self._backend, 0
        marker = backend.get(scope, head, time())
        while doomed := [Delete(_point_key(head, t)) for t, _ in
                         islice(self._points(scope, name, start, stop, False), PAGE)]:  # fmt: skip
            removed += backend.apply(scope, doomed, time()) or 0
        if marker is not None and next(self._points(scope, name, None, None, False), None) is None:
            expect = Expect(head, marker.version, marker.created_at)
            backend.apply(scope, (Delete(head),), time(), (expect,))  # unless written since
        return removed

    def series_count(self, scope: str, name: str) -> int:
        return sum(1 for _ in self._points(kind_scope(scope, KIND), name, None, None, False))

    def series_names(self, scope: str) -> list[str]:
        scope = kind_scope(scope, KIND)
        found = self._backend.get_many(scope, head_keys(self._backend, scope), time())
        names = []
        for record in found.values():
            try:
                fields = msgpack.unpackb(record.value)
            except (ValueError, TypeError, msgpack.UnpackException):
                fields = None
            if not (isinstance(fields, list) and len(fields) == 1 and type(fields[0]) is str):
                raise CorruptData(f"the head of a series is damaged: {record.key!r}")
            names.append(fields[0])
        return sorted(names)

    def series_reseal(
        self, scope: str, name: str, points: Sequence[tuple[int, bytes, bytes]]
    ) -> int:
        scope, head = kind_scope(scope, KIND), name_key(name)
        keys = {_point_key(head, t): (old, new) for t, old, new in points}
        found = self._backend.get_many(scope, list(keys), time())
        replaced = 0
        for key, record in found.items():  # one at a time: each only if still `old`
            old, new = keys[key]
            if record.value == old:
                expect = Expect(key, record.version, record.created_at)
                done = self._backend.apply(scope, (Put(key, new),), time(), (expect,))
                replaced += done is not None
        return replaced


def series_of(backend: Backend) -> SeriesEngine:
    """Where the series of `backend` are kept: natively, or over its records."""
    return backend.native_series() or RecordSeries(backend)


class Series:
    """A time series: int timestamps (their unit is yours) to values, in time order.

    Get one with ``store.series(name)``. Values are encoded like ``store.set`` values
    (same codec, same encryption). Ranges are half-open: ``start <= t < stop``.

    >>> ts = store.series("temperature")
    >>> ts.extend([(1, 20.5), (2, 21.0)])
    >>> list(ts.range(start=2))
    [(2, 21.0)]
    """

    __slots__ = ("_core", "_name")

    def __init__(self, core: Core, name: str) -> None:
        self._core = core
        self._name = check_key(name)

    @property
    def name(self) -> str:
        """The series' name."""
        return self._name

    def _seal_name(self, t: int) -> str:
        return f"{self._name}\x00t{t}"  # no key holds a NUL: never a record's name

    def _guard(self, exc: SatchelError) -> SatchelError:
        return self._core.tag(exc, self._name)

    def add(self, t: int, value: Any) -> None:
        """Store `value` at time `t`, replacing any value there."""
        self.extend(((t, value),))

    def extend(self, points: Iterable[tuple[int, Any]] | Mapping[int, Any]) -> int:
        """Store every ``(t, value)`` of `points` in one batch (a later one wins at the same
        t); return how many were given. Everything is checked first: one bad point raises
        and nothing is stored."""
        core = self._core
        pairs = points.items() if isinstance(points, Mapping) else points
        try:
            encoded: dict[int, bytes] = {}
            for point in pairs:
                t, value = point
                t = check_time(t)
                encoded[t] = core.seal(core.encode(value), self._seal_name(t))
            if encoded:
                series_of(core.backend).series_put(core.scope, self._name, list(encoded.items()))
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__
        except (TypeError, ValueError) as exc:  # not a pair
            raise self._guard(InvalidInput(f"points must be (t, value) pairs: {exc}")) from exc
        return len(encoded)

    def _decode(self, t: int, data: bytes) -> Any:
        try:
            return self._core.load_small(data, self._seal_name(t))
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def _pages(
        self, start: int | None, stop: int | None, values: bool
    ) -> Iterator[list[tuple[int, bytes]]]:
        core = self._core
        while True:
            page = series_of(core.backend).series_range(
                core.scope, self._name, start, stop, PAGE, values=values
            )
            if page:
                yield page
            if len(page) < PAGE or page[-1][0] == INT64_MAX:
                return
            start = page[-1][0] + 1

    def _reseal(self, reseal: Callable[[bytes, str], bytes | None]) -> tuple[int, int]:
        """Rewrite each point as ``reseal(data, seal name)`` gives it (None: left as it is),
        unless it changed meanwhile; return (points checked, points rewritten)."""
        core = self._core
        checked = rewritten = 0
        try:
            for page in self._pages(None, None, True):
                checked += len(page)
                changes = [(t, data, new) for t, data in page
                           if (new := reseal(data, self._seal_name(t))) is not None]  # fmt: skip
                if changes:
                    series = series_of(core.backend)
                    rewritten += series.series_reseal(core.scope, self._name, changes)
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__
        return checked, rewritten

    def range(self, start: int | None = None, stop: int | None = None) -> Iterator[tuple[int, Any]]:
        """Lazily yield ``(t, value)`` for ``start <= t < stop`` (None: unbounded), by t."""
        low, high = _bound(start, "start"), _bound(stop, "stop")
        return (
            (t, self._decode(t, data))
            for page in self._pages(low, high, True)
            for t, data in page
        )

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        return self.range()

    def _edge(self, reverse: bool) -> tuple[int, Any] | None:
        core = self._core
        found = series_of(core.backend).series_range(
            core.scope, self._name, None, None, 1, reverse=reverse
        )
        return None if not found else (found[0][0], self._decode(*found[0]))

    def first(self) -> tuple[int, Any] | None:
        """The earliest ``(t, value)``, or None when the series is empty."""
        return self._edge(False)

    def last(self) -> tuple[int, Any] | None:
        """The latest ``(t, value)``, or None when the series is empty."""
        return self._edge(True)

    def missing(self, start: int, stop: int, step: int) -> list[int]:
        """The timestamps ``start, start+step, ... < stop`` that hold no point."""
        start, stop, step = check_time(start, "start"), check_time(stop, "stop"), check_time(
            step, "step")  # fmt: skip
        if step <= 0:
            raise self._guard(InvalidInput(f"step must be positive, not {step}"))
        present = {
            t
            for page in self._pages(start, stop, False)
            for t, _ in page
            if (t - start) % step == 0
        }
        return [t for t in range(start, stop, step) if t not in present]

    def is_complete(self, start: int, stop: int, step: int) -> bool:
        """True if every timestamp ``start, start+step, ... < stop`` holds a point."""
        return not self.missing(start, stop, step)

    def remove(self, start: int | None = None, stop: int | None = None) -> int:
        """Delete the points with ``start <= t < stop`` (None: unbounded); return how many."""
        core = self._core
        try:
            low, high = _bound(start, "start"), _bound(stop, "stop")
            return series_of(core.backend).series_remove(core.scope, self._name, low, high)
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def __len__(self) -> int:
        core = self._core
        try:
            return series_of(core.backend).series_count(core.scope, self._name)
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def __repr__(self) -> str:
        return f"<satchel.Series {self._name!r} scope={self._core.scope!r}>"
