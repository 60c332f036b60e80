"""The Store: every rule a user sees (keys, patterns, expiry, codecs, errors) lives here."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from time import time
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from ._backends.base import Backend, Delete, Expect, Put, Record, Touch
from ._backends.readonly import ReadOnlyBackend
from ._blobs import CHUNK_SIZE, BlobWriter, lines, open_reader
from ._blobs import migrate as migrate_blobs
from ._codecs import UserCodec, get_codec, is_blob
from ._core import PAGE_SIZE, Core, KeyInfo, Shared
from ._crypto import SALT_SIZE, KeyMaterial, Keyring, Sealer, is_current, needs_salt, unseal
from ._engines import connect
from ._errors import (
    CorruptData,
    InvalidInput,
    InvalidInputType,
    KeyNotFound,
    ReadOnlyError,
    SatchelError,
    UnsupportedValue,
    ValueChanged,
)
from ._events import Events
from ._events import migrate as migrate_events
from ._events import names as event_names
from ._keys import RESERVED_SCOPE, check_key, check_scope, compile_pattern, kind_scope, split_kind
from ._series import Series, series_of

_MISSING: Any = object()
SALT_KEY = "encryption-salt"  # in RESERVED_SCOPE
MAX_TTL = 1e10  # seconds (about 317 years): keeps every engine's timestamps in range

P = ParamSpec("P")
R = TypeVar("R")


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


def _about_key(
    method: Callable[Concatenate[Store, str, P], R],
) -> Callable[Concatenate[Store, str, P], R]:
    """Make every SatchelError from `method` name its key, scope and engine."""

    def wrapper(self: Store, key: str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, key, *args, **kwargs)
        except SatchelError as exc:
            self._core.tag(exc, key)
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

    __slots__ = ("_core",)

    def __init__(self, core: Core) -> None:
        self._core = core

    # Tests and debugging sessions reach the engine through these; satchel's own modules
    # use the core (`core_of`).
    @property
    def _shared(self) -> Shared:
        return self._core.shared

    @property
    def _scope(self) -> str:
        return self._core.scope

    # -- reading -----------------------------------------------------------------------

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """Return the value of `key`, or `default` if given and the key has no live value.

        Raises KeyNotFound (a KeyError) when missing and no default is given.
        """
        core = self._core
        try:
            key = check_key(key)
            data = core.shared.backend.get_value(core.scope, key, time())
            if data is None:
                if default is _MISSING:
                    raise KeyNotFound("key not found")
                return default
            return core.load(data, key)
        except SatchelError as exc:
            core.tag(exc, key)
            raise

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: value}`` for the keys that have a live value, in request order."""
        core = self._core
        try:
            wanted = [check_key(key) for key in keys]
            found = core.backend.get_many(core.scope, wanted, time())
        except SatchelError as exc:
            core.tag(exc)
            raise
        return {key: core.value(found[key]) for key in wanted if key in found}

    @_about_key
    def exists(self, key: str) -> bool:
        """True if `key` has a live value."""
        return self._core.get(check_key(key), time()) is not None

    def keys(self, pattern: str = "*") -> Iterator[str]:
        """Lazily yield the keys matching the glob `pattern`, sorted.

        ``*`` matches any run of characters, ``?`` one, ``[abc]``/``[a-z]``/``[!abc]`` a set;
        a backslash escapes the next character. Without a wildcard the pattern is one key.
        """
        return (record.key for record in self._core.records(pattern, values=False))

    def items(self, pattern: str = "*") -> Iterator[tuple[str, Any]]:
        """Lazily yield ``(key, value)`` for the keys matching `pattern`, sorted by key."""
        core = self._core
        return ((record.key, core.value(record)) for record in core.records(pattern, True))

    def values(self, pattern: str = "*") -> Iterator[Any]:
        """Lazily yield the values of the keys matching `pattern`, sorted by key."""
        core = self._core
        return (core.value(record) for record in core.records(pattern, True))

    @_about_key
    def info(self, key: str) -> KeyInfo:
        """Return the metadata of `key` as a KeyInfo. Raises KeyNotFound when missing."""
        record = self._core.get(check_key(key), time())
        if record is None:
            raise KeyNotFound("key not found")
        return self._core.info(record)[0]

    @_about_key
    def ttl(self, key: str) -> float | None:
        """Seconds until `key` expires, or None if it never does. Raises KeyNotFound."""
        now = time()
        record = self._core.get(check_key(key), now)
        if record is None:
            raise KeyNotFound("key not found")
        return None if record.expires_at is None else max(record.expires_at - now, 0.0)

    def __len__(self) -> int:
        return self._core.backend.count(self._core.scope, time())

    # -- writing -----------------------------------------------------------------------

    def set(
        self, key: str, value: Any, ttl: float | dt.timedelta | None = None, if_absent: bool = False
    ) -> bool:
        """Store `value` under `key`; return True if the key had no live value before.

        `ttl` (seconds or a timedelta) makes the value expire; with ``if_absent=True``
        nothing is written when the key has a live value (and False is returned).
        Raises UnsupportedValue (a TypeError) if the codec cannot store `value`.
        """
        core = self._core
        try:
            key = check_key(key)
            data = core.encode(value)
            if core.sealer is not None:
                data = core.sealer.seal(data, core.scope, key)
            now = time()
            new = core.shared.backend.apply(
                core.scope, (Put(key, data, _expiry(ttl, now), if_absent),), now
            )
        except SatchelError as exc:
            core.tag(exc, key)
            raise
        if now >= core.shared.next_purge:
            core.after_write(now)
        return new == 1

    def set_many(
        self,
        items: Mapping[str, Any] | Iterable[tuple[str, Any]],
        ttl: float | dt.timedelta | None = None,
        if_absent: bool = False,
    ) -> int:
        """Store many values in one atomic batch; return how many were written.

        Every key and value is checked first: one bad item raises and nothing is stored.
        """
        core = self._core
        pairs = items.items() if isinstance(items, Mapping) else items
        try:
            encoded = core.encode_many(pairs)
            now = time()
            expires_at = _expiry(ttl, now)
            changes = [Put(key, data, expires_at, if_absent) for key, data in encoded]
            created = core.apply(changes, now) if changes else 0
        except SatchelError as exc:
            core.tag(exc)
            raise
        core.after_write(now)
        return (created or 0) if if_absent else len(changes)

    @_about_key
    def delete(self, key: str) -> bool:
        """Delete `key`; return False if it had no live value."""
        return self._core.apply((Delete(check_key(key)),), time()) == 1

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete `keys` in one batch; return how many had a live value."""
        try:
            wanted = [Delete(key) for key in dict.fromkeys(check_key(key) for key in keys)]
            return (self._core.apply(wanted, time()) or 0) if wanted else 0
        except SatchelError as exc:
            self._core.tag(exc)
            raise

    def delete_matching(self, pattern: str) -> int:
        """Delete every key matching the glob `pattern`; return how many."""
        try:
            core, deleted = self._core, 0
            batch: list[Delete] = []
            for record in core.records(pattern, values=False):
                batch.append(Delete(record.key))
                if len(batch) == PAGE_SIZE:
                    deleted += core.apply(batch, time()) or 0
                    batch = []
            if batch:
                deleted += core.apply(batch, time()) or 0
            return deleted
        except SatchelError as exc:
            self._core.tag(exc)
            raise

    def clear(self) -> None:
        """Delete every key of this scope (other scopes are untouched)."""
        core = self._core
        try:
            core.backend.clear(core.scope)
            core.backend.clear(kind_scope(core.scope, "b"))  # the chunks of its large values
        except SatchelError as exc:
            self._core.tag(exc)
            raise

    @_about_key
    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """Delete `key` and return its value, atomically; `default` (if given) when missing."""
        key, core = check_key(key), self._core
        while True:
            # Decoded before the delete, which happens only if the value is still the
            # one decoded: a value that cannot be read is never lost.
            record = core.get(key, time())
            if record is None:
                if default is _MISSING:
                    raise KeyNotFound("key not found")
                return default
            value = core.load(record.value, key)
            if core.apply((Delete(key),), time(), (_expect(record),)) is not None:
                return value

    @_about_key
    def incr(self, key: str, delta: int = 1) -> int:
        """Add `delta` to the int under `key` atomically and return the result.

        A missing key counts as 0. The expiry is kept. Raises UnsupportedValue if the
        stored value is not an int.
        """
        if type(delta) is not int:
            raise InvalidInputType(f"delta must be an int, not {type(delta).__name__}")
        key, core = check_key(key), self._core
        while True:  # again if another writer got in between
            now = time()
            record = core.get(key, now)
            if record is None:
                result, expires_at, condition = delta, None, Expect(key, None)
            else:
                current = core.load_small(record.value, key)
                if type(current) is not int:
                    raise UnsupportedValue(f"cannot increment a {type(current).__name__} value")
                result, expires_at, condition = current + delta, record.expires_at, _expect(record)
            change = Put(key, core.dump(result, key), expires_at)
            if core.apply((change,), now, (condition,)) is not None:
                break
        core.after_write(now)
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
            if (expected_version.key, expected_version.scope) != (key, self._core.scope):
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
        now = time()
        change = Put(key, self._core.dump(value, key), _expiry(ttl, now))
        condition = Expect(key, expected_version, created_at)
        return self._core.apply((change,), now, (condition,)) is not None

    @_about_key
    def update(self, key: str, fn: Callable[[Any], Any], default: Any = _MISSING) -> Any:
        """Replace the value with ``fn(value)`` atomically and return the new value.

        `fn` may run more than once if another writer gets in between. A missing key
        raises KeyNotFound, unless `default` is given (then ``fn(default)`` is stored).
        The expiry is kept.
        """
        key, core = check_key(key), self._core
        while True:
            record = core.get(key, time())
            if record is None:
                if default is _MISSING:
                    raise KeyNotFound("key not found")
                expires_at, condition, new = None, Expect(key, None), fn(default)
            else:
                expires_at, condition = record.expires_at, _expect(record)
                new = fn(core.load(record.value, key))
            change = Put(key, core.dump(new, key), expires_at)
            if core.apply((change,), time(), (condition,)) is not None:
                return new

    # -- large values ------------------------------------------------------------------

    @_about_key
    def open_blob(
        self, key: str, mode: str = "rb", *, ttl: float | dt.timedelta | None = None
    ) -> io.BufferedReader | BlobWriter:
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
            return open_reader(self._core, key)
        if mode == "wb":
            return BlobWriter(self._core, key, None if ttl is None else _ttl_seconds(ttl))
        raise InvalidInput(f'mode must be "rb" or "wb", not {mode!r}')

    def stream_lines(self, key: str, encoding: str | None = None) -> Iterator[Any]:
        """Lazily yield the lines of the bytes value of `key` (bytes, or str if `encoding`
        is given), line endings kept. Raises like ``open_blob(key, "rb")``, at once."""
        try:
            reader = open_reader(self._core, check_key(key))
        except SatchelError as exc:
            raise self._core.tag(exc, key) from exc.__cause__
        decode = None if encoding is None else (lambda line: line.decode(encoding))
        return lines(reader, decode)

    # -- time series and event sequences -------------------------------------------------

    def series(self, name: str) -> Series:
        """The time series `name` of this scope (empty until written). See `Series`."""
        try:
            return Series(self._core, name)
        except SatchelError as exc:
            raise self._core.tag(exc, name) from None

    def events(self, name: str) -> Events:
        """The event sequence `name` of this scope (empty until written). See `Events`."""
        try:
            return Events(self._core, name)
        except SatchelError as exc:
            raise self._core.tag(exc, name) from None

    def _names(self, names: Callable[[str], list[str]], pattern: str) -> list[str]:
        try:
            compiled = compile_pattern(pattern)
            return [name for name in names(self._core.scope) if compiled.matches(name)]
        except SatchelError as exc:
            raise self._core.tag(exc) from exc.__cause__

    def series_names(self, pattern: str = "*") -> list[str]:
        """Sorted names of this scope's non-empty time series matching the glob `pattern`."""
        return self._names(series_of(self._core.backend).series_names, pattern)

    def event_names(self, pattern: str = "*") -> list[str]:
        """Sorted names of this scope's event sequences matching the glob `pattern`."""
        return self._names(partial(event_names, self._core.backend), pattern)

    @_about_key
    def touch(self, key: str, ttl: float | dt.timedelta | None) -> bool:
        """Set how long `key` lives from now (None: forever); False if it has no live value."""
        key, now = check_key(key), time()
        return self._core.apply((Touch(key, _expiry(ttl, now)),), now) == 1

    # -- scopes and lifetime -------------------------------------------------------------

    @property
    def scope_name(self) -> str:
        """The scope this Store reads and writes."""
        return self._core.scope

    @property
    def url(self) -> str:
        """The engine this store uses (any password replaced)."""
        return self._core.shared.engine

    def scope(self, name: str) -> Store:
        """Return a Store for scope `name` sharing this one's connection and codec."""
        return Store(self._core.at(check_scope(name)))

    def scopes(self) -> list[str]:
        """Sorted names of the scopes holding at least one live value."""
        names = self._core.backend.scopes(time())
        return [s for s in names if s != RESERVED_SCOPE and split_kind(s) is None]

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
        core = self._core
        keyring, sealer, scope = core.keyring, core.sealer, core.scope
        if keyring is None or sealer is None:
            raise core.tag(InvalidInput("rotate_encryption needs an encryption_key"))
        checked = rewritten = 0

        def seal_again(plain: bytes, name: str) -> bytes:
            return sealer.seal(core.encode(core.decode(plain)), scope, name)

        def reseal(data: bytes, name: str) -> bytes | None:
            if is_current(data, keyring):
                return None
            return seal_again(unseal(data, keyring, scope, name), name)

        for record in core.scan(compile_pattern("*"), values=True):
            checked += 1
            if not is_current(record.value, keyring):
                try:
                    plain = unseal(record.value, keyring, scope, record.key)
                    if is_blob(plain):
                        rewritten += self._rotate_blob(record)
                        continue
                    data = seal_again(plain, record.key)
                except SatchelError as exc:
                    raise core.tag(exc, record.key) from exc.__cause__
                change = Put(record.key, data, record.expires_at)
                rewritten += core.apply((change,), time(), (_expect(record),)) is not None
            if progress is not None and checked % PAGE_SIZE == 0:
                progress(checked, rewritten)
        series = series_of(core.backend).series_names(scope)
        kinds: list[Series | Events] = [Series(core, n) for n in series]
        kinds += [Events(core, n) for n in event_names(core.backend, scope)]
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
            with (
                open_reader(self._core, key) as source,
                BlobWriter(self._core, key, ttl, expected_version=record.version) as target,
            ):
                while chunk := source.read(CHUNK_SIZE):
                    target.write(chunk)
        except (ValueChanged, KeyNotFound):
            return False  # replaced or deleted meanwhile
        return True

    def close(self) -> None:
        """Close the connection (for every scope view of it). Idempotent."""
        self._core.shared.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<satchel.Store {self._core.shared.engine} scope={self._core.scope!r}>"

    # -- the dict protocol -----------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        if not self.delete(key):
            raise self._core.tag(KeyNotFound("key not found"), key)

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
        else:
            # Large values and event sequences kept the way releases before 0.2 did move
            # into records; where that cannot be written (a file opened ?mode=ro),
            # readers find large values in place.
            with contextlib.suppress(SatchelError):
                migrate_blobs(backend, time())
            with contextlib.suppress(SatchelError):
                migrate_events(backend)
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
    return Store(Core(Shared(backend, chosen_codec, sealer), scope))


def core_of(store: Store) -> Core:
    """The private core of `store`, for satchel's own modules (export, the server)."""
    return store._core


def _expect(record: Record) -> Expect:
    """The condition that `record` is still the key's live record."""
    return Expect(record.key, record.version, record.created_at)


def _salt(backend: Backend) -> bytes:
    """The store's salt for passphrases (with their scrypt cost, see Keyring.read_salt),
    created by the first store that needs one. Raises CorruptData if what is stored
    is not one: a salt planted (say, empty) before first use would weaken every key."""
    raw = get_codec("raw")
    data = backend.get_value(RESERVED_SCOPE, SALT_KEY, time())
    if data is None:
        fresh = raw.encode(Keyring.salt_record(os.urandom(SALT_SIZE)))
        with contextlib.suppress(ReadOnlyError):  # then the read below reports it
            backend.apply(RESERVED_SCOPE, (Put(SALT_KEY, fresh, None, True),), time())
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
