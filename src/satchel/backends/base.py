"""The interface every engine implements: a few batch-first primitives, bytes in and out.

An engine knows nothing of codecs, key rules or patterns; the Store validates every
argument before it reaches an engine. What an engine must honour:

- a record whose ``expires_at`` is set and ``<= now`` is absent for every primitive
  (never returned, never counted, free for ``if_absent``, replaced as if new);
- writes keep ``created_at`` and add one to ``version`` when they overwrite a live
  record; a new record (or one replacing an expired record) starts at version 1;
- each primitive is atomic; ``scan`` returns live records in key order (code point
  order, which is the byte order of UTF-8).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Record:
    """One stored value and its metadata (times are Unix seconds)."""

    key: str
    value: bytes
    created_at: float
    updated_at: float
    expires_at: float | None
    version: int


# How close two created_at must be to name the same life of a key (KeyInfo carries them
# as datetimes, which keep microseconds).
CREATED_AT_TOLERANCE = 1e-6

# Given the live record (or None), return the new value and expiry to store.
Modifier = Callable[[Record | None], tuple[bytes, float | None]]


class Backend(ABC):
    """A storage engine. `engine` describes it for messages (no password in it)."""

    engine: str

    @abstractmethod
    def get_many(self, scope: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        """Live records for those of `keys` that have one."""

    def get(self, scope: str, key: str, now: float) -> Record | None:
        """The live record for `key`, or None. Engines may override for speed."""
        return self.get_many(scope, (key,), now).get(key)

    def get_value(self, scope: str, key: str, now: float) -> bytes | None:
        """The live value of `key`, or None: the hot path of ``Store.get``."""
        record = self.get(scope, key, now)
        return None if record is None else record.value

    @abstractmethod
    def put(
        self,
        scope: str,
        key: str,
        value: bytes,
        expires_at: float | None,
        now: float,
        if_absent: bool,
    ) -> bool:
        """Write one value; True if the key had no live record (with `if_absent`: if written)."""

    @abstractmethod
    def put_many(
        self,
        scope: str,
        items: Sequence[tuple[str, bytes]],
        expires_at: float | None,
        now: float,
        if_absent: bool,
    ) -> int:
        """Write all `items` in one transaction (keys are distinct); return how many written."""

    @abstractmethod
    def delete_many(self, scope: str, keys: Sequence[str], now: float) -> int:
        """Delete `keys`; return how many had a live record."""

    @abstractmethod
    def pop(
        self, scope: str, key: str, now: float, decode: Callable[[bytes], Any]
    ) -> tuple[Any] | None:
        """Delete `key` and return ``(decode(value),)``, or None if it had no live record.

        Atomic; if `decode` raises, nothing is deleted and the exception propagates.
        """

    @abstractmethod
    def compare_and_set(
        self,
        scope: str,
        key: str,
        expected_version: int | None,
        value: bytes,
        expires_at: float | None,
        now: float,
        *,
        expected_created_at: float | None = None,
    ) -> bool:
        """Write if the live version is `expected_version` (None: no live record).

        With `expected_created_at`, the live record must also have been created then
        (within CREATED_AT_TOLERANCE): versions restart at 1 when a key is deleted and
        created again, so the version alone could match a record the caller never saw.
        """

    def modify(self, scope: str, key: str, fn: Modifier, now: float) -> None:
        """Read the live record, call `fn`, write what it returns, all atomically.

        An exception from `fn` leaves the record as it was and propagates. This default
        retries an optimistic read + `compare_and_set`; engines with transactions or
        locks may do better.
        """
        while True:
            record = self.get(scope, key, now)
            value, expires_at = fn(record)
            version = None if record is None else record.version
            created = None if record is None else record.created_at
            if self.compare_and_set(
                scope, key, version, value, expires_at, now, expected_created_at=created
            ):
                return

    @abstractmethod
    def touch(self, scope: str, key: str, expires_at: float | None, now: float) -> bool:
        """Set the expiry of a live record (value, version, updated_at unchanged)."""

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
