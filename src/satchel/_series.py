"""Time series: integer timestamps mapped to values, one engine entry per point."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ._errors import InvalidInput, InvalidInputType, SatchelError
from ._keys import check_key

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
                core.backend.series_put(core.scope, self._name, list(encoded.items()))
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
            page = core.backend.series_range(
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
                    backend = core.backend
                    rewritten += backend.series_reseal(core.scope, self._name, changes)
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
        found = core.backend.series_range(
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
            return core.backend.series_remove(core.scope, self._name, low, high)
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def __len__(self) -> int:
        core = self._core
        try:
            return core.backend.series_count(core.scope, self._name)
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def __repr__(self) -> str:
        return f"<satchel.Series {self._name!r} scope={self._core.scope!r}>"
