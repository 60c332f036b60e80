"""The Store: every rule a user sees (keys, patterns, expiry, codecs, errors) lives here."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from time import time
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from . import blobs
from .backends.base import Backend, Record
from .backends.readonly import ReadOnlyBackend
from .codecs import HEADER_SIZE, Codec, UserCodec, get_codec
from .crypto import SALT_SIZE, KeyMaterial, Keyring, Sealer, is_current, needs_salt, unseal
from .engines import connect
from .errors import (
    CorruptData,
    InvalidInput,
    InvalidInputType,
    KeyNotFound,
    ReadOnlyError,
    SatchelError,
    StoreClosed,
    UnsupportedValue,
    ValueChanged,
)
from .events import Events
from .keys import RESERVED_SCOPE, Pattern, check_key, check_scope, compile_pattern
from .series import Series

_MISSING: Any = object()
PAGE_SIZE = 500  # records fetched per round trip when iterating
PURGE_EVERY = 60.0  # seconds between sweeps of expired records (they are invisible anyway)
PURGE_LIMIT = 1000
SALT_KEY = "encryption-salt"  # in RESERVED_SCOPE
MAX_TTL = 1e10  # seconds (about 317 years): keeps every engine's timestamps in range

P = ParamSpec("P")
R = TypeVar("R")


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


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


def _ttl_seconds(ttl: object) -> float:
    if type(ttl) is int or type(ttl) is float:
        try:
            seconds = float(ttl)
        except OverflowError:  # an int beyond any float
            raise InvalidInput(f"ttl must be at most {MAX_TTL:g} seconds") from None
    elif isinstance(ttl, dt.timedelta):
        seconds = ttl.total_seconds()
    else:
        raise InvalidInputType(f"ttl must be seconds (int or float) or a timedelta, not {ttl!r}")
    if not 0 < seconds <= MAX_TTL:  # also rejects nan
        raise InvalidInput(f"ttl must be more than 0 and at most {MAX_TTL:g} seconds, not {ttl!r}")
    return seconds


def _expiry(ttl: object, now: float) -> float | None:
    return None if ttl is None else now + _ttl_seconds(ttl)


class _Shared:
    """What every scope view of one opened store shares."""

    __slots__ = ("backend", "codec", "engine", "next_purge", "sealer")

    def __init__(self, backend: Backend, codec: Codec, sealer: Sealer | None) -> None:
        self.backend = backend
        self.codec = codec
        self.sealer = sealer
        self.engine = backend.engine
        self.next_purge = 0.0


class _Closed:
    """Stands in for the backend once the store is closed: every call raises StoreClosed."""

    def __init__(self, engine: str) -> None:
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        raise StoreClosed("the store is closed", engine=self.engine)

    def close(self) -> None:
        pass


def _about_key(
    method: Callable[Concatenate[Store, str, P], R],
) -> Callable[Concatenate[Store, str, P], R]:
    """Make every SatchelError from `method` name its key, scope and engine."""

    def wrapper(self: Store, key: str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, key, *args, **kwargs)
        except SatchelError as exc:
            self._tag(exc, key)
            raise

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    wrapper.__qualname__ = method.__qualname__
    return wrapper


class Store:
    """A key-value store in one scope. Open one with `satchel.open`.

    Values keep their Python type; keys are non-empty str of at most 1024 UTF-8 bytes.
    Every error derives from `satchel.SatchelError`.

    >>> store = satchel.open("memory://")
    >>> store.set("greeting", ("hello", 42))
    True
    >>> store.get("greeting")
    ('hello', 42)
    """

    __slots__ = ("_decode", "_encode", "_keyring", "_scope", "_sealer", "_shared")

    def __init__(self, shared: _Shared, scope: str) -> None:
        self._shared = shared
        self._scope = scope
        self._encode = shared.codec.encode
        self._decode = shared.codec.decode
        self._sealer = shared.sealer
        self._keyring = None if shared.sealer is None else shared.sealer.keyring

    # -- helpers -----------------------------------------------------------------------

    def _tag(self, exc: SatchelError, key: str | None = None) -> SatchelError:
        if exc.key is None and isinstance(key, str):
            exc.key = key
        if exc.scope is None:
            exc.scope = self._scope
        if exc.engine is None:
            exc.engine = self._shared.engine
        return exc

    def _dump(self, value: Any, key: str) -> bytes:
        """`value` as the bytes to store under `key`: encoded, then sealed if configured."""
        data = self._encode(value)
        return data if self._sealer is None else self._sealer.seal(data, self._scope, key)

    def _seal(self, record: bytes, key: str) -> bytes:
        """An encoded `record` for `key`, sealed if configured."""
        return record if self._sealer is None else self._sealer.seal(record, self._scope, key)

    def _plain(self, data: bytes, key: str) -> bytes:
        """The record `data` stored under `key`, unsealed if it is sealed (with a key,
        every record must be: `unseal` refuses one that is not)."""
        if len(data) > 2 and (data[2] or self._keyring is not None):
            return unseal(data, self._keyring, self._scope, key)
        return data

    def _load(self, data: bytes, key: str) -> Any:
        """The value stored as `data` under `key`: unsealed if need be, then decoded."""
        if len(data) > 2:  # shorter is no record: the codec says so
            if data[2] or self._keyring is not None:  # `_plain` inlined: the hot path of get
                data = unseal(data, self._keyring, self._scope, key)
            if data[1] == 66:  # b"B": a large value, whose bytes are in chunks
                return self._large(data, key)
        return self._decode(data)

    def _large(self, data: bytes, key: str) -> Any:
        """The bytes of the large value whose unsealed manifest is `data`; read again if
        it is replaced meanwhile, so a reader gets one whole value, old or new."""
        while True:
            try:
                return blobs.read_whole(self, key, blobs.read_manifest(data))
            except ValueChanged:
                fresh = self._shared.backend.get_value(self._scope, key, time())
                if fresh is None:
                    raise KeyNotFound("key not found (deleted while it was read)") from None
                fresh = self._plain(fresh, key)
                if not blobs.is_manifest(fresh):
                    return self._decode(fresh)
                data = fresh

    def _load_small(self, data: bytes, key: str) -> Any:
        """`_load` for use inside an engine's transaction: refuses a large value, whose
        chunks cannot be read there."""
        data = self._plain(data, key)
        if blobs.is_manifest(data):
            raise UnsupportedValue("the key holds a large bytes value (blob)")
        return self._decode(data)

    def _value(self, record: Record) -> Any:
        try:
            return self._load(record.value, record.key)
        except SatchelError as exc:
            self._tag(exc, record.key)
            raise

    def _after_write(self, now: float) -> None:
        shared = self._shared
        if now >= shared.next_purge:
            shared.next_purge = now + PURGE_EVERY
            # Housekeeping only: expired records are invisible either way, and the write
            # that triggered it has succeeded (a damaged record met on the way is not its
            # error).
            with contextlib.suppress(SatchelError):
                shared.backend.purge_expired(now, PURGE_LIMIT)

    def _records(self, pattern: object, values: bool) -> Iterator[Record]:
        compiled = compile_pattern(pattern)  # validated now, not at the first next()
        return self._scan(compiled, values)

    def _scan(self, pattern: Pattern, values: bool) -> Iterator[Record]:
        if pattern.exact:
            try:
                key = check_key(pattern.prefix)
            except InvalidInput:
                return  # no stored key can match
            record = self._shared.backend.get(self._scope, key, time())
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
            page = self._shared.backend.scan(
                self._scope, pattern.prefix, after, PAGE_SIZE, time(), values
            )
            for record in page:
                if pattern.regex is None or pattern.regex.fullmatch(record.key):
                    yield record
            if len(page) < PAGE_SIZE:
                return
            after = page[-1].key

    def _encode_many(self, items: Iterable[tuple[Any, Any]]) -> list[tuple[str, bytes]]:
        encode = self._encode if self._sealer is None else None
        encoded: dict[str, bytes] = {}  # a later pair for the same key wins, as in dict()
        for key, value in items:
            try:
                valid = check_key(key)
                encoded[valid] = encode(value) if encode else self._dump(value, valid)
            except SatchelError as exc:
                self._tag(exc, key)
                raise
        return list(encoded.items())

    # -- reading -----------------------------------------------------------------------

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """Return the value of `key`, or `default` if given and the key has no live value.

        Raises KeyNotFound (a KeyError) when missing and no default is given.
        """
        try:
            key = check_key(key)
            data = self._shared.backend.get_value(self._scope, key, time())
            if data is None:
                if default is _MISSING:
                    raise KeyNotFound("key not found")
                return default
            return self._load(data, key)
        except SatchelError as exc:
            self._tag(exc, key)
            raise

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: value}`` for the keys that have a live value, in request order."""
        try:
            wanted = [check_key(key) for key in keys]
            found = self._shared.backend.get_many(self._scope, wanted, time())
        except SatchelError as exc:
            self._tag(exc)
            raise
        return {key: self._value(found[key]) for key in wanted if key in found}

    @_about_key
    def exists(self, key: str) -> bool:
        """True if `key` has a live value."""
        return self._shared.backend.get(self._scope, check_key(key), time()) is not None

    def keys(self, pattern: str = "*") -> Iterator[str]:
        """Lazily yield the keys matching the glob `pattern`, sorted.

        ``*`` matches any run of characters, ``?`` one, ``[abc]``/``[a-z]``/``[!abc]`` a set;
        a backslash escapes the next character. Without a wildcard the pattern is one key.
        """
        return (record.key for record in self._records(pattern, values=False))

    def items(self, pattern: str = "*") -> Iterator[tuple[str, Any]]:
        """Lazily yield ``(key, value)`` for the keys matching `pattern`, sorted by key."""
        return ((record.key, self._value(record)) for record in self._records(pattern, True))

    def values(self, pattern: str = "*") -> Iterator[Any]:
        """Lazily yield the values of the keys matching `pattern`, sorted by key."""
        return (self._value(record) for record in self._records(pattern, True))

    @_about_key
    def info(self, key: str) -> KeyInfo:
        """Return the metadata of `key` as a KeyInfo. Raises KeyNotFound when missing."""
        key = check_key(key)
        record = self._shared.backend.get(self._scope, key, time())
        if record is None:
            raise KeyNotFound("key not found")
        return self._info(record)[0]

    def _info(self, record: Record) -> tuple[KeyInfo, bytes]:
        """The KeyInfo of `record`, and its unsealed bytes (to decode without unsealing
        twice)."""
        data = self._plain(record.value, record.key)  # describe the value, not its ciphertext
        if blobs.is_manifest(data):
            manifest = blobs.read_manifest(data)
            size, checksum = manifest.size, manifest.checksum
        else:
            payload = memoryview(data)[HEADER_SIZE:]
            size, checksum = len(payload), hashlib.blake2b(payload, digest_size=16).hexdigest()
        info = KeyInfo(
            key=record.key,
            scope=self._scope,
            size=size,
            created_at=_utc(record.created_at),
            updated_at=_utc(record.updated_at),
            expires_at=None if record.expires_at is None else _utc(record.expires_at),
            version=record.version,
            checksum=checksum,
        )
        return info, data

    @_about_key
    def ttl(self, key: str) -> float | None:
        """Seconds until `key` expires, or None if it never does. Raises KeyNotFound."""
        now = time()
        record = self._shared.backend.get(self._scope, check_key(key), now)
        if record is None:
            raise KeyNotFound("key not found")
        return None if record.expires_at is None else max(record.expires_at - now, 0.0)

    def __len__(self) -> int:
        return self._shared.backend.count(self._scope, time())

    # -- writing -----------------------------------------------------------------------

    def set(
        self, key: str, value: Any, ttl: float | dt.timedelta | None = None, if_absent: bool = False
    ) -> bool:
        """Store `value` under `key`; return True if the key had no live value before.

        `ttl` (seconds or a timedelta) makes the value expire; with ``if_absent=True``
        nothing is written when the key has a live value (and False is returned).
        Raises UnsupportedValue (a TypeError) if the codec cannot store `value`.
        """
        try:
            key = check_key(key)
            data = self._encode(value)
            if self._sealer is not None:
                data = self._sealer.seal(data, self._scope, key)
            now = time()
            new = self._shared.backend.put(
                self._scope, key, data, _expiry(ttl, now), now, if_absent
            )
        except SatchelError as exc:
            self._tag(exc, key)
            raise
        if now >= self._shared.next_purge:
            self._after_write(now)
        return new

    def set_many(
        self,
        items: Mapping[str, Any] | Iterable[tuple[str, Any]],
        ttl: float | dt.timedelta | None = None,
        if_absent: bool = False,
    ) -> int:
        """Store many values in one atomic batch; return how many were written.

        Every key and value is checked first: one bad item raises and nothing is stored.
        """
        pairs = items.items() if isinstance(items, Mapping) else items
        try:
            encoded = self._encode_many(pairs)
            now = time()
            expires_at = _expiry(ttl, now)
            written = (
                self._shared.backend.put_many(self._scope, encoded, expires_at, now, if_absent)
                if encoded
                else 0
            )
        except SatchelError as exc:
            self._tag(exc)
            raise
        self._after_write(now)
        return written

    @_about_key
    def delete(self, key: str) -> bool:
        """Delete `key`; return False if it had no live value."""
        return self._shared.backend.delete_many(self._scope, (check_key(key),), time()) == 1

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete `keys` in one batch; return how many had a live value."""
        try:
            wanted = list(dict.fromkeys(check_key(key) for key in keys))
            return self._shared.backend.delete_many(self._scope, wanted, time()) if wanted else 0
        except SatchelError as exc:
            self._tag(exc)
            raise

    def delete_matching(self, pattern: str) -> int:
        """Delete every key matching the glob `pattern`; return how many."""
        try:
            deleted = 0
            batch: list[str] = []
            for record in self._records(pattern, values=False):
                batch.append(record.key)
                if len(batch) == PAGE_SIZE:
                    deleted += self._shared.backend.delete_many(self._scope, batch, time())
                    batch = []
            if batch:
                deleted += self._shared.backend.delete_many(self._scope, batch, time())
            return deleted
        except SatchelError as exc:
            self._tag(exc)
            raise

    def clear(self) -> None:
        """Delete every key of this scope (other scopes are untouched)."""
        try:
            self._shared.backend.clear(self._scope)
        except SatchelError as exc:
            self._tag(exc)
            raise

    @_about_key
    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """Delete `key` and return its value, atomically; `default` (if given) when missing."""
        key = check_key(key)
        backend = self._shared.backend
        read: tuple[bytes, Any] | None = None  # a large value read before the pop

        def decode(data: bytes) -> Any:
            if read is not None and data == read[0]:  # the manifest names one blob
                return read[1]
            return self._load_small(data, key)

        while True:
            try:
                found = backend.pop(self._scope, key, time(), decode)
                break
            except UnsupportedValue:
                # A large value: read its chunks first (not inside the engine's
                # transaction), then pop only if it is still that value.
                record = backend.get(self._scope, key, time())
                if record is None:
                    found = None
                    break
                read = (record.value, self._load(record.value, key))
        if found is None:
            if default is _MISSING:
                raise KeyNotFound("key not found")
            return default
        return found[0]

    @_about_key
    def incr(self, key: str, delta: int = 1) -> int:
        """Add `delta` to the int under `key` atomically and return the result.

        A missing key counts as 0. The expiry is kept. Raises UnsupportedValue if the
        stored value is not an int.
        """
        if type(delta) is not int:
            raise InvalidInputType(f"delta must be an int, not {type(delta).__name__}")
        key = check_key(key)
        result = 0

        def add(record: Record | None) -> tuple[bytes, float | None]:
            nonlocal result
            if record is None:
                result = delta
                return self._dump(result, key), None
            current = self._load_small(record.value, key)
            if type(current) is not int:
                raise UnsupportedValue(f"cannot increment a {type(current).__name__} value")
            result = current + delta
            return self._dump(result, key), record.expires_at

        now = time()
        self._shared.backend.modify(self._scope, key, add, now)
        self._after_write(now)
        return result

    @_about_key
    def compare_and_set(
        self,
        key: str,
        expected_version: int | KeyInfo | None,
        value: Any,
        ttl: float | dt.timedelta | None = None,
    ) -> bool:
        """Write `value` only if the key is as expected; True if written.

        `expected_version` is the `KeyInfo` you read with `info` (safest: it also names
        the life of the key, since versions restart at 1 when a key is deleted and set
        again), a bare version number, or None for "only if the key has no live value".
        """
        key = check_key(key)
        created_at = None
        if isinstance(expected_version, KeyInfo):
            if (expected_version.key, expected_version.scope) != (key, self._scope):
                raise InvalidInput("the KeyInfo given describes another key or scope")
            created_at = expected_version.created_at.timestamp()
            expected_version = expected_version.version
        if expected_version is not None:
            if type(expected_version) is not int:
                raise InvalidInputType(
                    f"expected_version must be an int or None, not {expected_version!r}"
                )
            if expected_version < 1:
                raise InvalidInput(f"versions start at 1; {expected_version} never matches")
        data = self._dump(value, key)
        now = time()
        return self._shared.backend.compare_and_set(
            self._scope, key, expected_version, data, _expiry(ttl, now), now,
            expected_created_at=created_at,
        )  # fmt: skip

    @_about_key
    def update(self, key: str, fn: Callable[[Any], Any], default: Any = _MISSING) -> Any:
        """Replace the value with ``fn(value)`` atomically and return the new value.

        `fn` may run more than once if another writer gets in between. A missing key
        raises KeyNotFound, unless `default` is given (then ``fn(default)`` is stored).
        The expiry is kept.
        """
        key = check_key(key)
        backend = self._shared.backend
        while True:
            record = backend.get(self._scope, key, time())
            if record is None:
                if default is _MISSING:
                    raise KeyNotFound("key not found")
                version, created, expires_at, new = None, None, None, fn(default)
            else:
                version, created, expires_at = record.version, record.created_at, record.expires_at
                new = fn(self._load(record.value, key))
            data = self._dump(new, key)
            if backend.compare_and_set(
                self._scope, key, version, data, expires_at, time(), expected_created_at=created
            ):
                return new

    # -- large values ------------------------------------------------------------------

    @_about_key
    def open_blob(
        self, key: str, mode: str = "rb", *, ttl: float | dt.timedelta | None = None
    ) -> io.BufferedReader | blobs.BlobWriter:
        """Open the bytes value of `key` as a binary file, for values of any size.

        ``"wb"`` returns a writable file; what is written becomes the value on ``close()``
        (atomically: readers see the old value or the new, never a part), with `ttl` if
        given. An exception inside ``with`` (or ``discard()``) keeps the old value.
        ``"rb"`` returns a readable, seekable file, holding one chunk in memory at a time.
        Raises KeyNotFound for a missing key, UnsupportedValue if the value is not bytes,
        InvalidInput for another mode.

        >>> with store.open_blob("report.csv", "wb") as f:
        ...     f.write(b"a,b\n1,2\n")
        >>> store.open_blob("report.csv").read()
        b'a,b\n1,2\n'
        """
        key = check_key(key)
        if mode == "rb":
            return blobs.open_reader(self, key)
        if mode == "wb":
            return blobs.BlobWriter(self, key, None if ttl is None else _ttl_seconds(ttl))
        raise InvalidInput(f'mode must be "rb" or "wb", not {mode!r}')

    def stream_lines(self, key: str, encoding: str | None = None) -> Iterator[Any]:
        """Lazily yield the lines of the bytes value of `key` (bytes, or str if `encoding`
        is given), line endings kept. Raises like ``open_blob(key, "rb")``, at once."""
        try:
            reader = blobs.open_reader(self, check_key(key))
        except SatchelError as exc:
            raise self._tag(exc, key) from exc.__cause__
        decode = None if encoding is None else (lambda line: line.decode(encoding))
        return blobs.lines(reader, decode)

    # -- time series and event sequences -------------------------------------------------

    def series(self, name: str) -> Series:
        """The time series `name` of this scope (empty until written). See `Series`."""
        try:
            return Series(self, name)
        except SatchelError as exc:
            raise self._tag(exc, name) from None

    def events(self, name: str) -> Events:
        """The event sequence `name` of this scope (empty until written). See `Events`."""
        try:
            return Events(self, name)
        except SatchelError as exc:
            raise self._tag(exc, name) from None

    def _names(self, names: Callable[[str], list[str]], pattern: str) -> list[str]:
        try:
            compiled = compile_pattern(pattern)
            return [name for name in names(self._scope) if compiled.matches(name)]
        except SatchelError as exc:
            raise self._tag(exc) from exc.__cause__

    def series_names(self, pattern: str = "*") -> list[str]:
        """Sorted names of this scope's non-empty time series matching the glob `pattern`."""
        return self._names(self._shared.backend.series_names, pattern)

    def event_names(self, pattern: str = "*") -> list[str]:
        """Sorted names of this scope's event sequences matching the glob `pattern`."""
        return self._names(self._shared.backend.events_names, pattern)

    @_about_key
    def touch(self, key: str, ttl: float | dt.timedelta | None) -> bool:
        """Set how long `key` lives from now (None: forever); False if it has no live value."""
        key = check_key(key)
        now = time()
        return self._shared.backend.touch(self._scope, key, _expiry(ttl, now), now)

    # -- scopes and lifetime -------------------------------------------------------------

    @property
    def scope_name(self) -> str:
        """The scope this Store reads and writes."""
        return self._scope

    @property
    def url(self) -> str:
        """The engine this store uses (any password replaced)."""
        return self._shared.engine

    def scope(self, name: str) -> Store:
        """Return a Store for scope `name` sharing this one's connection and codec."""
        return Store(self._shared, check_scope(name))

    def scopes(self) -> list[str]:
        """Sorted names of the scopes holding at least one live value."""
        return [s for s in self._shared.backend.scopes(time()) if s != RESERVED_SCOPE]

    def rotate_encryption(self, *, progress: Callable[[int, int], None] | None = None) -> int:
        """Re-encrypt everything of this scope (values, large values, time series points,
        event sequences) with the first key of `encryption_key`.

        What is already on that key is skipped, so an interrupted rotation resumes where
        it stopped; what is not encrypted gets encrypted if the store was opened with
        ``allow_plaintext=True`` (else it raises DecryptionError). Anything rewritten
        concurrently is left to its writer. `progress(checked, rewritten)` is called after
        each page. Returns how many entries were rewritten. Raises InvalidInput without an
        encryption key.
        """
        keyring, sealer = self._keyring, self._sealer
        if keyring is None or sealer is None:
            raise self._tag(InvalidInput("rotate_encryption needs an encryption_key"))
        backend, checked, rewritten = self._shared.backend, 0, 0

        def seal_again(plain: bytes, name: str) -> bytes:
            return sealer.seal(self._encode(self._decode(plain)), self._scope, name)

        def reseal(data: bytes, name: str) -> bytes | None:
            if is_current(data, keyring):
                return None
            return seal_again(unseal(data, keyring, self._scope, name), name)

        for record in self._scan(compile_pattern("*"), values=True):
            checked += 1
            if not is_current(record.value, keyring):
                try:
                    plain = unseal(record.value, keyring, self._scope, record.key)
                    if blobs.is_manifest(plain):
                        rewritten += self._rotate_blob(record)
                        continue
                    data = seal_again(plain, record.key)
                except SatchelError as exc:
                    raise self._tag(exc, record.key) from exc.__cause__
                rewritten += backend.compare_and_set(
                    self._scope, record.key, record.version, data, record.expires_at, time(),
                    expected_created_at=record.created_at,
                )  # fmt: skip
            if progress is not None and checked % PAGE_SIZE == 0:
                progress(checked, rewritten)
        kinds: list[Series | Events] = [Series(self, n) for n in backend.series_names(self._scope)]
        kinds += [Events(self, n) for n in backend.events_names(self._scope)]
        for kind in kinds:
            seen, done = kind._reseal(reseal)
            checked, rewritten = checked + seen, rewritten + done
            if progress is not None:
                progress(checked, rewritten)
        if progress is not None:
            progress(checked, rewritten)
        return rewritten

    def _rotate_blob(self, record: Record) -> bool:
        """Rewrite a large value under the current key, unless it changed meanwhile."""
        key, expires_at = record.key, record.expires_at
        ttl = None if expires_at is None else expires_at - time()
        if ttl is not None and ttl <= 0:
            return False  # expired meanwhile
        try:  # committed only if still that version: a newer value is left to its writer
            with blobs.open_reader(self, key) as source, blobs.BlobWriter(
                self, key, ttl, expected_version=record.version
            ) as target:
                while chunk := source.read(blobs.CHUNK_SIZE):
                    target.write(chunk)
        except (ValueChanged, KeyNotFound):
            return False  # replaced or deleted meanwhile
        return True

    def close(self) -> None:
        """Close the connection (for every scope view of it). Idempotent."""
        shared = self._shared
        backend = shared.backend
        shared.backend = cast(Backend, _Closed(shared.engine))
        backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<satchel.Store {self._shared.engine} scope={self._scope!r}>"

    # -- the dict protocol -----------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        if not self.delete(key):
            raise self._tag(KeyNotFound("key not found"), key)

    def __contains__(self, key: object) -> bool:
        try:
            return self.exists(check_key(key))
        except InvalidInput:
            return False

    def __iter__(self) -> Iterator[str]:
        return self.keys()


def open(
    url: str | os.PathLike[str] | None = None,
    *,
    scope: str = "default",
    codec: str | UserCodec = "typed",
    encryption_key: KeyMaterial | Sequence[KeyMaterial] | None = None,
    compress: str | None = None,
    compress_min_size: int = 1024,
    readonly: bool = False,
    allow_plaintext: bool = False,
    **options: Any,
) -> Store:
    """Open a store and return it.

    `url` picks the engine: ``sqlite:///app.db`` (or a plain path), ``memory://``. Without
    one, ``$SATCHEL_URL`` is used, else a SQLite file in the user data directory.
    `codec` is "typed" (keeps Python types), "json", "raw" (bytes only), "pickle" (unsafe
    with untrusted data: opt in only if you trust every writer) or an object with
    ``dumps``/``loads``. Engine options (``durability="full"``, ``timeout=``) may also be
    given in the URL query.

    With `encryption_key`, every stored record must be encrypted: one that is not (planted
    by whoever can write the engine's bytes) raises DecryptionError. ``allow_plaintext=True``
    reads such records as they are, for a migration: open with it, call
    `Store.rotate_encryption`, then open without it.

    Raises InvalidInput for a bad URL, scope or option; BackendError if the engine fails.

    >>> with satchel.open("sqlite:///app.db", scope="users") as store:
    ...     store["alice"] = {"age": 30}
    """
    chosen_codec = get_codec(codec)
    scope = check_scope(scope)
    if type(compress_min_size) is not int or compress_min_size < 0:
        raise InvalidInput(f"compress_min_size must be an int >= 0, not {compress_min_size!r}")
    if readonly:
        options["readonly"] = True  # engines that can open read-only (SQLite) do so
    backend = connect(url, dict(options))
    try:
        if readonly:
            backend = ReadOnlyBackend(backend)
        keyring = None
        if encryption_key is not None:
            salt = _salt(backend) if needs_salt(encryption_key) else None
            keyring = Keyring(encryption_key, salt, allow_plaintext)
        sealer = None
        if keyring is not None or compress is not None:
            sealer = Sealer(keyring, compress, compress_min_size)
    except BaseException:
        backend.close()
        raise
    return Store(_Shared(backend, chosen_codec, sealer), scope)


def _salt(backend: Backend) -> bytes:
    """The store's salt for passphrases (with their scrypt cost, see Keyring.read_salt),
    created by the first store that needs one. Raises CorruptData if what is stored
    is not one: a salt planted (say, empty) before first use would weaken every key."""
    raw = get_codec("raw")
    data = backend.get_value(RESERVED_SCOPE, SALT_KEY, time())
    if data is None:
        fresh = raw.encode(Keyring.salt_record(os.urandom(SALT_SIZE)))
        with contextlib.suppress(ReadOnlyError):  # then the read below reports it
            backend.put(RESERVED_SCOPE, SALT_KEY, fresh, None, time(), True)
        data = backend.get_value(RESERVED_SCOPE, SALT_KEY, time())
    if data is None:
        raise InvalidInput(
            "a read-only store without a salt cannot derive a key from a passphrase",
            engine=backend.engine,
        )
    try:
        salt = raw.decode(data)
        if type(salt) is not bytes or raw.encode(salt) != data:
            raise CorruptData(f"a {type(salt).__name__} record, not raw bytes")
        Keyring.read_salt(salt)
    except CorruptData as exc:
        raise CorruptData(
            f"the passphrase salt is damaged or was planted: {exc.message}",
            key=SALT_KEY, scope=RESERVED_SCOPE, engine=backend.engine,
        ) from None  # fmt: skip
    return salt
