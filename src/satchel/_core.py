"""The private core of a Store: one scope of one opened store, with its codec and sealer.

`Store`, the kinds built on it (blobs, series, events) and `exchange` use a Core; none
of them reaches into another's private attributes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from time import time
from typing import Any

from ._backends.base import Backend, Change, Expect, Record
from ._blobs import collect, read_manifest, read_whole
from ._codecs import HEADER_SIZE, Codec, is_blob, is_sealed
from ._crypto import Sealer, unseal
from ._errors import (
    InvalidInput,
    KeyNotFound,
    SatchelError,
    StoreClosed,
    UnsupportedValue,
    ValueChanged,
)
from ._keys import Pattern, check_key, compile_pattern

PAGE_SIZE = 500  # records fetched per round trip when iterating
PURGE_EVERY = 60.0  # seconds between sweeps of expired records (they are invisible anyway)
PURGE_LIMIT = 1000
COLLECT_EVERY = 600.0  # seconds between looks for large values' chunks nobody holds


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What `Store.info` tells about a key. Times are tz-aware UTC datetimes.

    `size` is the length in bytes of the stored payload (for a bytes value, its length);
    `checksum` is the hex BLAKE2b-128 digest of that payload; `version` starts at 1 and
    grows by one with every write.
    """

    key: str
    scope: str
    size: int
    created_at: dt.datetime
    updated_at: dt.datetime
    expires_at: dt.datetime | None
    version: int
    checksum: str


def utc(timestamp: float) -> dt.datetime:
    """A Unix time as a tz-aware UTC datetime."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


class Shared:
    """What every scope view of one opened store shares."""

    __slots__ = (
        "backend", "codec", "collected_to", "engine", "next_collect", "next_purge", "sealer"
    )  # fmt: skip

    def __init__(self, backend: Backend, codec: Codec, sealer: Sealer | None) -> None:
        self.backend = backend
        self.codec = codec
        self.sealer = sealer
        self.engine = backend.engine
        self.next_purge = 0.0
        # Chunks nobody holds are looked for less often than expired records (it lists
        # every scope), and at a random moment, so short-lived processes rarely pay.
        self.next_collect = time() + COLLECT_EVERY * random.random()
        self.collected_to: tuple[str, str] | None = None  # where `collect` goes on

    def close(self) -> None:
        """Close the engine; every later call raises StoreClosed. Idempotent."""
        backend, self.backend = self.backend, Closed(self.engine)  # type: ignore[assignment]
        backend.close()


class Closed:
    """Stands in for the backend once the store is closed: every call raises StoreClosed."""

    def __init__(self, engine: str) -> None:
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        raise StoreClosed("the store is closed", engine=self.engine)

    def close(self) -> None:
        pass


class Core:
    """One scope of an opened store: the engine, the codec and the sealer, and what turns
    values into records and back."""

    __slots__ = ("decode", "encode", "keyring", "scope", "sealer", "shared")

    def __init__(self, shared: Shared, scope: str) -> None:
        self.shared = shared
        self.scope = scope
        self.encode = shared.codec.encode
        self.decode = shared.codec.decode
        self.sealer = shared.sealer
        self.keyring = None if shared.sealer is None else shared.sealer.keyring

    @property
    def backend(self) -> Backend:
        return self.shared.backend

    @property
    def codec(self) -> Codec:
        return self.shared.codec

    def at(self, scope: str) -> Core:
        """The same store, in another (valid) scope."""
        return Core(self.shared, scope)

    def get(self, key: str, now: float) -> Record | None:
        """The live record of `key` in this scope, or None."""
        return self.shared.backend.get(self.scope, key, now)

    def apply(
        self, changes: Sequence[Change], now: float, expect: Sequence[Expect] = ()
    ) -> int | None:
        """`Backend.apply` in this scope."""
        return self.shared.backend.apply(self.scope, changes, now, expect)

    def tag(self, exc: SatchelError, key: str | None = None) -> SatchelError:
        """`exc`, naming `key`, this scope and the engine unless it names them already."""
        if exc.key is None and isinstance(key, str):
            exc.key = key
        if exc.scope is None:
            exc.scope = self.scope
        if exc.engine is None:
            exc.engine = self.shared.engine
        return exc

    def dump(self, value: Any, key: str) -> bytes:
        """`value` as the bytes to store under `key`: encoded, then sealed if configured."""
        data = self.encode(value)
        return data if self.sealer is None else self.sealer.seal(data, self.scope, key)

    def seal(self, record: bytes, key: str) -> bytes:
        """An encoded `record` for `key`, sealed if configured."""
        return record if self.sealer is None else self.sealer.seal(record, self.scope, key)

    def plain(self, data: bytes, key: str) -> bytes:
        """The record `data` stored under `key`, unsealed if it is sealed (with a key,
        every record must be: `unseal` refuses one that is not)."""
        if is_sealed(data) or (self.keyring is not None and len(data) > 2):
            return unseal(data, self.keyring, self.scope, key)
        return data

    def load(self, data: bytes, key: str) -> Any:
        """The value stored as `data` under `key`: unsealed if need be, then decoded."""
        if len(data) > 2:  # shorter is no record: the codec says so
            if data[2] or self.keyring is not None:  # `plain` inlined: the hot path of get
                data = unseal(data, self.keyring, self.scope, key)
            if is_blob(data):
                return self.large(data, key)
        return self.decode(data)

    def large(self, data: bytes, key: str) -> Any:
        """The bytes of the large value whose unsealed manifest is `data`; read again if
        it is replaced meanwhile, so a reader gets one whole value, old or new."""
        while True:
            try:
                return read_whole(self, key, read_manifest(data))
            except ValueChanged:
                fresh = self.shared.backend.get_value(self.scope, key, time())
                if fresh is None:
                    raise KeyNotFound("key not found (deleted while it was read)") from None
                fresh = self.plain(fresh, key)
                if not is_blob(fresh):
                    return self.decode(fresh)
                data = fresh

    def load_small(self, data: bytes, key: str) -> Any:
        """`load` for a value that is never a large one (a counter, a point, an event):
        refuses a large value instead of reading its chunks."""
        data = self.plain(data, key)
        if is_blob(data):
            raise UnsupportedValue("the key holds a large bytes value (blob)")
        return self.decode(data)

    def value(self, record: Record) -> Any:
        """The value of `record`; errors name its key."""
        try:
            return self.load(record.value, record.key)
        except SatchelError as exc:
            self.tag(exc, record.key)
            raise

    def after_write(self, now: float) -> None:
        """Purge expired records now and then (every PURGE_EVERY seconds per store), and
        free the chunks of replaced large values (every COLLECT_EVERY, see _blobs)."""
        shared = self.shared
        if now >= shared.next_purge:
            shared.next_purge = now + PURGE_EVERY
            # Housekeeping only: expired records are invisible either way, and the write
            # that triggered it has succeeded (a damaged record met on the way is not its
            # error).
            with contextlib.suppress(SatchelError):
                shared.backend.purge_expired(now, PURGE_LIMIT)
        if now >= shared.next_collect:
            shared.next_collect = now + COLLECT_EVERY
            with contextlib.suppress(SatchelError):
                shared.collected_to = collect(shared.backend, now, PURGE_LIMIT, shared.collected_to)

    def records(self, pattern: object, values: bool) -> Iterator[Record]:
        """The live records whose key matches the glob `pattern`, in key order, lazily."""
        compiled = compile_pattern(pattern)  # validated now, not at the first next()
        return self.scan(compiled, values)

    def scan(self, pattern: Pattern, values: bool) -> Iterator[Record]:
        """`records` for a compiled pattern."""
        if pattern.exact:
            try:
                key = check_key(pattern.prefix)
            except InvalidInput:
                return  # no stored key can match
            record = self.shared.backend.get(self.scope, key, time())
            if record is not None:
                yield record
            return
        if "\x00" in pattern.prefix:
            return  # no stored key holds a NUL (and PostgreSQL could not even compare it)
        if not pattern.prefix.isascii():
            try:
                pattern.prefix.encode()
            except UnicodeEncodeError:
                return  # a lone surrogate: no stored key can start with it
        after = None
        while True:
            page = self.shared.backend.scan(
                self.scope, pattern.prefix, after, PAGE_SIZE, time(), values
            )
            for record in page:
                if pattern.regex is None or pattern.regex.fullmatch(record.key):
                    yield record
            if len(page) < PAGE_SIZE:
                return
            after = page[-1].key

    def encode_many(self, items: Iterable[tuple[Any, Any]]) -> list[tuple[str, bytes]]:
        """Valid keys and their records; a later pair for the same key wins, as in dict()."""
        encode = self.encode if self.sealer is None else None
        encoded: dict[str, bytes] = {}
        for key, value in items:
            try:
                valid = check_key(key)
                encoded[valid] = encode(value) if encode else self.dump(value, valid)
            except SatchelError as exc:
                self.tag(exc, key)
                raise
        return list(encoded.items())

    def info(self, record: Record) -> tuple[KeyInfo, bytes]:
        """The KeyInfo of `record`, and its unsealed bytes (to decode without unsealing
        twice)."""
        data = self.plain(record.value, record.key)  # describe the value, not its ciphertext
        if is_blob(data):
            manifest = read_manifest(data)
            size, checksum = manifest.size, manifest.checksum
        else:
            payload = memoryview(data)[HEADER_SIZE:]
            size, checksum = len(payload), hashlib.blake2b(payload, digest_size=16).hexdigest()
        info = KeyInfo(
            key=record.key,
            scope=self.scope,
            size=size,
            created_at=utc(record.created_at),
            updated_at=utc(record.updated_at),
            expires_at=None if record.expires_at is None else utc(record.expires_at),
            version=record.version,
            checksum=checksum,
        )
        return info, data
