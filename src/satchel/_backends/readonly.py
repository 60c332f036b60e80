"""A wrapper that lets reads through to an engine and refuses every write."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NoReturn

from .._errors import ReadOnlyError
from .base import Backend, Change, Expect, LegacyBlob, Record, SeriesEngine


class ReadOnlyBackend(Backend):
    """`backend` for reading; every write primitive raises ReadOnlyError."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.engine = backend.engine

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise ReadOnlyError("the store was opened read-only", engine=self.engine)

    def get_many(self, scope: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        return self._backend.get_many(scope, keys, now)

    def get(self, scope: str, key: str, now: float) -> Record | None:
        return self._backend.get(scope, key, now)

    def get_value(self, scope: str, key: str, now: float) -> bytes | None:
        return self._backend.get_value(scope, key, now)

    def scan(self, scope: str, prefix: str, after: str | None, limit: int, now: float,
             values: bool = True) -> list[Record]:  # fmt: skip
        return self._backend.scan(scope, prefix, after, limit, now, values)

    def count(self, scope: str, now: float) -> int:
        return self._backend.count(scope, now)

    def scopes(self, now: float) -> list[str]:
        return self._backend.scopes(now)

    def close(self) -> None:
        self._backend.close()

    def purge_expired(self, now: float, limit: int) -> int:
        return 0  # housekeeping is a write; expired records stay invisible anyway

    def apply(self, scope: str, changes: Sequence[Change], now: float,
              expect: Sequence[Expect] = ()) -> int | None:  # fmt: skip
        self._refuse()

    def clear(self, scope: str) -> None:
        self._refuse()

    def legacy_blobs(self, now: float) -> list[LegacyBlob] | None:
        return self._backend.legacy_blobs(now)

    def legacy_chunk(self, blob: LegacyBlob, index: int) -> bytes | None:
        return self._backend.legacy_chunk(blob, index)

    def native_series(self) -> SeriesEngine | None:
        inner = self._backend.native_series()
        return None if inner is None else ReadOnlySeries(inner, self._refuse)

    drop_legacy_blobs = drop_legacy_events = _refuse


class ReadOnlySeries(SeriesEngine):
    """The native series of a read-only store: reads through, writes refused."""

    def __init__(self, series: SeriesEngine, refuse: Callable[..., NoReturn]) -> None:
        self._series = series
        self._refuse = refuse

    def series_put(self, scope: str, name: str, points: Sequence[tuple[int, bytes]]) -> None:
        self._refuse()

    def series_remove(self, scope: str, name: str, start: int | None, stop: int | None) -> int:
        self._refuse()

    def series_reseal(
        self, scope: str, name: str, points: Sequence[tuple[int, bytes, bytes]]
    ) -> int:
        self._refuse()

    def series_range(self, scope: str, name: str, start: int | None, stop: int | None,
                     limit: int, *, reverse: bool = False,
                     values: bool = True) -> list[tuple[int, bytes]]:  # fmt: skip
        return self._series.series_range(scope, name, start, stop, limit, reverse=reverse,
                                         values=values)  # fmt: skip

    def series_count(self, scope: str, name: str) -> int:
        return self._series.series_count(scope, name)

    def series_names(self, scope: str) -> list[str]:
        return self._series.series_names(scope)
