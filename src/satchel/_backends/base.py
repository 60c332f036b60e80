"""The interface every engine implements: a few batch-first primitives, bytes in and out.

An engine knows nothing of codecs, key rules or patterns; the Store validates every
argument before it reaches an engine. What an engine must honour:

- a record whose ``expires_at`` is set and ``<= now`` is absent for every primitive
  (never returned, never counted, free for ``if_absent``, replaced as if new);
- writes keep ``created_at`` and add one to ``version`` when they overwrite a live
  record; a new record (or one replacing an expired record) starts at version 1;
- each primitive is atomic; ``scan`` returns live records in key order (code point
  order, which is the byte order of UTF-8).

Large values and event sequences are records too (see _blobs.py, _events.py), and so
are time series, unless the engine keeps them natively (`SeriesEngine`, optional).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .._errors import BackendError

_MAX_CODE_POINT = 0x10FFFF


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with `prefix`.

    None when there is none (the prefix is empty or all U+10FFFF). Engines use it for
    an index range scan: `prefix <= key < bound`.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be stored; skip past them
            code = 0xE000
        if code <= _MAX_CODE_POINT:
            return "".join(chars) + chr(code)
    return None


def scan_range(prefix: str, after: str | None) -> tuple[str, bool, str | None]:
    """The key range an ordered engine scans for keys that start with `prefix` and sort
    after `after`: ``(low, low_inclusive, high)``, `high` exclusive (None: unbounded)."""
    inclusive = after is None or after < prefix
    return (prefix if inclusive else str(after)), inclusive, prefix_upper_bound(prefix)


@dataclass(slots=True)
class Record:
    """One stored value and its metadata (times are Unix seconds)."""

    key: str
    value: bytes
    created_at: float
    updated_at: float
    expires_at: float | None
    version: int


@dataclass(slots=True)
class Put:
    """Write `value` under `key`, expiring at `expires_at` (None: never).

    Overwriting a live record keeps its ``created_at`` and adds one to its version; a
    new record (or one replacing an expired record) starts at version 1. With
    `if_absent`, a key that has a live record is left alone (skipped, not a failure).
    """

    key: str
    value: bytes
    expires_at: float | None = None
    if_absent: bool = False


@dataclass(slots=True)
class Delete:
    """Delete the record of `key` (nothing if it has no live record)."""

    key: str


@dataclass(slots=True)
class Touch:
    """Set the expiry of the live record of `key` (value, version, updated_at unchanged)."""

    key: str
    expires_at: float | None


@dataclass(slots=True)
class Expect:
    """A condition of `Backend.apply`: the live record of `key` has `version` (None: the
    key has no live record) and, unless `created_at` is None, was created then (within
    CREATED_AT_TOLERANCE: versions restart at 1 when a key is deleted and created
    again, so the version alone could match a record the caller never saw)."""

    key: str
    version: int | None
    created_at: float | None = None


Change = Put | Delete | Touch


# How close two created_at must be to name the same life of a key (KeyInfo carries them
# as datetimes, which keep microseconds).
CREATED_AT_TOLERANCE = 1e-6

def holds(record: Record | None, condition: Expect) -> bool:
    """Whether `record`, the live record of ``condition.key`` (or None), meets `condition`."""
    if record is None or condition.version is None:
        return record is None and condition.version is None
    return record.version == condition.version and (
        condition.created_at is None
        or abs(record.created_at - condition.created_at) <= CREATED_AT_TOLERANCE
    )


# An old event sequence state: (seq of the last event it includes, its timestamp ms, bytes).
EventState = tuple[int, int, bytes]


class LegacyBlob(NamedTuple):
    """A large value as releases before 0.2 kept it: in the engine's own storage, outside
    the records (see `Backend.legacy_blobs`)."""

    scope: str
    key: str
    blob_id: str
    chunks: int


class Backend(ABC):
    """A storage engine. `engine` describes it for messages (no password in it)."""

    engine: str

    @abstractmethod
    def get_many(self, scope: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        """Live records for those of `keys` that have one."""

    @abstractmethod
    def apply(
        self, scope: str, changes: Sequence[Change], now: float, expect: Sequence[Expect] = ()
    ) -> int | None:
        """Make `changes` in one atomic step, if every condition in `expect` holds.

        Conditions are checked against the records as they are before the step. If one
        fails, nothing is written and the result is None. Otherwise the result counts the
        changes that found their key without a live record (a Put that created a record:
        with ``if_absent``, exactly the Puts written) plus those that found one (a Delete
        that deleted, a Touch that touched). A key appears at most once in `changes`
        (it may also appear in `expect`); `changes` may be empty (a pure check). An
        engine that spreads keys over partitions (Redis Cluster) makes a batch with
        conditions atomic only within one; it refuses one that spans several
        (BackendError, nothing written).
        """

    def get(self, scope: str, key: str, now: float) -> Record | None:
        """The live record for `key`, or None. Engines may override for speed."""
        return self.get_many(scope, (key,), now).get(key)

    def get_value(self, scope: str, key: str, now: float) -> bytes | None:
        """The live value of `key`, or None: the hot path of ``Store.get``."""
        record = self.get(scope, key, now)
        return None if record is None else record.value

    @abstractmethod
    def scan(
        self,
        scope: str,
        prefix: str,
        after: str | None,
        limit: int,
        now: float,
        values: bool = True,
    ) -> list[Record]:
        """Up to `limit` live records whose key starts with `prefix` and sorts after
        `after` (None: from the start), in key order. With ``values=False`` the
        records' `value` may be empty."""

    @abstractmethod
    def count(self, scope: str, now: float) -> int:
        """How many live records `scope` holds."""

    @abstractmethod
    def scopes(self, now: float) -> list[str]:
        """Sorted names of scopes holding at least one live record."""

    @abstractmethod
    def clear(self, scope: str) -> None:
        """Delete every record of `scope`."""

    @abstractmethod
    def purge_expired(self, now: float, limit: int) -> int:
        """Physically remove up to `limit` expired records; return how many."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and files. Idempotent."""

    # -- large values kept by releases before 0.2 ----------------------------------------
    # They kept a blob's chunks in engine storage of their own; now chunks are records
    # (see _blobs.py). `satchel.open` calls `legacy_blobs` on every open (so it must be
    # cheap when there is nothing old), copies each blob's chunks into records, then
    # calls `drop_legacy_blobs`. Several processes may do it at once.

    def legacy_blobs(self, now: float) -> list[LegacyBlob] | None:
        """The committed large values kept the old way whose record is live, or None if
        the store has no old storage of large values at all."""
        return None

    def legacy_chunk(self, blob: LegacyBlob, index: int) -> bytes | None:
        """Chunk `index` of `blob` as stored (sealed or not), or None if it is gone (or
        the engine never kept chunks another way)."""
        return None

    def drop_legacy_blobs(self) -> None:
        """Remove the old storage of large values (and whatever kept it up to date)."""
        raise self._unsupported("large values kept the old way")

    # Event sequences as releases before 0.2 kept them: outside the records, as a log of
    # events numbered 1, 2, 3, ... (seq), each (seq, timestamp ms, bytes), and two states
    # (seq, timestamp ms, bytes): "head", after the last event, and "base", after every
    # event up to its seq, whose events were dropped. `_events.migrate` copies them into
    # records; an engine that never kept them keeps these defaults.

    def legacy_sequences(self) -> list[tuple[str, str]] | None:
        """(scope, name) of every event sequence kept the old way; None if the engine
        holds no such storage (never had it, or dropped it)."""
        return None

    def legacy_states(self, scope: str, name: str) -> tuple[EventState | None, EventState | None]:
        """The head and base states of an old sequence (None: none)."""
        return None, None

    def legacy_events(
        self, scope: str, name: str, after_seq: int, limit: int
    ) -> list[tuple[int, int, bytes]]:
        """Up to `limit` events of an old sequence with seq > `after_seq`, by seq."""
        return []

    def drop_legacy_events(self) -> None:  # noqa: B027 (nothing to drop by default)
        """Drop the old storage of event sequences (after they were copied)."""

    def native_series(self) -> SeriesEngine | None:
        """The engine's own time series (see `SeriesEngine`), or None: they are records."""
        return self if isinstance(self, SeriesEngine) else None

    def _unsupported(self, what: str) -> BackendError:
        return BackendError(f"this engine does not support {what}", engine=self.engine)


class SeriesEngine(ABC):
    """Time series kept natively, an optional capability of an engine (a sorted set on
    Redis, an indexed table on SQL); an engine without it gets `_series.RecordSeries`,
    the same over its records. Series `name` of `scope` maps timestamps t (signed 64-bit
    ints) to value bytes, one entry per point, ordered by t. Points never expire."""

    @abstractmethod
    def series_put(self, scope: str, name: str, points: Sequence[tuple[int, bytes]]) -> None:
        """Write `points` (distinct t) in one transaction, replacing any at the same t."""

    @abstractmethod
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
        """Up to `limit` points with ``start <= t < stop`` (None: unbounded) in t order
        (descending with `reverse`). With ``values=False`` the values may be empty."""

    @abstractmethod
    def series_remove(self, scope: str, name: str, start: int | None, stop: int | None) -> int:
        """Delete the points with ``start <= t < stop``; return how many."""

    @abstractmethod
    def series_count(self, scope: str, name: str) -> int:
        """How many points series `name` holds."""

    @abstractmethod
    def series_names(self, scope: str) -> list[str]:
        """Sorted names of the series of `scope` holding at least one point."""

    @abstractmethod
    def series_reseal(
        self, scope: str, name: str, points: Sequence[tuple[int, bytes, bytes]]
    ) -> int:
        """For each (t, old, new) (distinct t): set point t's value to `new` if it is still
        `old` (a point rewritten or removed meanwhile is left alone), in one transaction.
        Return how many were replaced."""
