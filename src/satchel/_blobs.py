"""Large values: written and read as file objects, in chunks, never whole in memory.

A large value is a record whose value is a manifest (header id ``B``, then msgpack of
blob id, size, chunk size, chunk count, checksum, whether chunks are sealed) and whose
bytes sit in numbered chunks. The manifest is sealed like any value; each chunk is sealed
on its own, bound to its key, blob and position, so chunks cannot be swapped or moved. A
value that fits in one chunk is stored as a plain bytes value instead: ``get`` and
``info`` treat both alike.

Chunks are records too, in the scope's blob scope (``kind_scope(scope, "b")``, which no
user can name): ``c/<blob id>/<n:08d>`` holds chunk n, and ``h/<blob id>`` the blob's
head: msgpack of [key, committed, since, digest of the committed manifest record]. A
writer stores its chunks as it goes (invisible: no manifest names them yet), marks the
head committed, then writes the manifest as the key's value, under a condition if asked.
Nothing else frees chunks: `collect` (run by every store now and then) frees a blob
whose owner no longer holds its manifest (overwritten, deleted, expired), once its head
is COMMIT_GRACE old, and a staged blob once STAGED_LIFETIME old.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from time import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

import msgpack

from ._backends.base import (
    Backend,
    Delete,
    Expect,
    LegacyBlob,
    Put,
    Record,
)
from ._codecs import H_BLOB, H_BYTES, HEADER_SIZE, is_blob
from ._crypto import unseal
from ._errors import (
    BackendError,
    CorruptData,
    InvalidInput,
    KeyNotFound,
    SatchelError,
    UnsupportedValue,
    ValueChanged,
)
from ._keys import kind_scope, split_kind

if TYPE_CHECKING:
    from ._core import Core

CHUNK_SIZE = 1 << 20  # 1 MiB: big enough to amortise a round trip, small enough for RAM
MAX_CHUNK_SIZE = 64 << 20  # what a manifest may claim: a reader holds one chunk in memory
# A committed blob whose owner does not hold its manifest is freed only after this long:
# the writer marks the head committed just before it writes the manifest.
COMMIT_GRACE = 600.0
STAGED_LIFETIME = 86400.0  # an upload whose writer vanished is freed after this long
ANY_VERSION = 0  # BlobWriter's expected_version when any (or no) live record may be replaced
BATCH = 1000  # records per apply when freeing a blob


@dataclass(frozen=True, slots=True)
class Manifest:
    """Where a large value's bytes are and how to check them."""

    blob_id: str
    size: int
    chunk_size: int
    chunks: int
    checksum: str  # hex BLAKE2b-128 of the whole value
    sealed: bool  # chunks carry a record header (compressed and/or encrypted)

    def pack(self) -> bytes:
        fields = [self.blob_id, self.size, self.chunk_size, self.chunks, self.checksum, self.sealed]
        return H_BLOB + msgpack.packb(fields)


def read_manifest(record: bytes) -> Manifest:
    """The Manifest in an unsealed manifest record. Raises CorruptData if damaged."""
    try:
        blob_id, size, chunk_size, chunks, checksum, sealed = msgpack.unpackb(
            record[HEADER_SIZE:]
        )
        manifest = Manifest(str(blob_id), int(size), int(chunk_size), int(chunks),
                            str(checksum), bool(sealed))  # fmt: skip
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptData(f"the manifest of a large value is damaged: {exc}") from exc
    if not (
        0 < manifest.chunk_size <= MAX_CHUNK_SIZE
        and manifest.size >= 0
        and manifest.chunks == -(-manifest.size // manifest.chunk_size)
    ):
        raise CorruptData(
            f"the manifest of a large value is damaged: {manifest.size} bytes in "
            f"{manifest.chunks} chunks of {manifest.chunk_size}"
        )
    return manifest


def chunk_name(key: str, blob_id: str, index: int) -> str:
    """The name a chunk is sealed under: no key holds a NUL, so none can collide."""
    return f"{key}\x00{blob_id}\x00{index}"


def head_key(blob_id: str) -> str:
    return f"h/{blob_id}"


def chunk_key(blob_id: str, index: int) -> str:
    return f"c/{blob_id}/{index:08d}"


def _digest(record: bytes) -> bytes:
    """What a head keeps of the manifest record it was committed with."""
    return hashlib.blake2b(record, digest_size=16).digest()


def _head(key: str, committed: bool, since: float, manifest: bytes = b"") -> bytes:
    return msgpack.packb([key, committed, since, _digest(manifest) if manifest else b""])


def _chunk_pages(backend: Backend, scope: str, blob_id: str, now: float) -> Iterator[list[Record]]:
    """The chunk records of `blob_id` in blob scope `scope`, BATCH keys at a time."""
    after = None
    while page := backend.scan(scope, f"c/{blob_id}/", after, BATCH, now, values=False):
        yield page
        if len(page) < BATCH:
            return
        after = page[-1].key


def _free(backend: Backend, scope: str, blob_id: str) -> None:
    """Delete the chunks and the head of `blob_id` in blob scope `scope`."""
    now = time()
    for page in _chunk_pages(backend, scope, blob_id, now):
        backend.apply(scope, [Delete(r.key) for r in page], now)
    backend.apply(scope, [Delete(head_key(blob_id))], now)


def _checksum() -> Any:
    return hashlib.blake2b(digest_size=16)


def _closed(key: str) -> InvalidInput:
    return InvalidInput("I/O operation on a closed blob", key=key)


class BlobWriter(io.RawIOBase):
    """A writable binary file whose bytes become the value of a key on `close()`.

    Until then readers see the old value. Leaving a ``with`` block by an exception,
    calling `discard()`, or dropping the writer without closing it, drops what was
    written and keeps the old value. A `ttl` (seconds) counts from `close()`.
    """

    def __init__(
        self, core: Core, key: str, ttl: float | None, expected_version: int | None = ANY_VERSION
    ) -> None:
        super().__init__()
        self._core, self._key, self._ttl = core, key, ttl
        self._expected = expected_version  # ValueChanged at close unless the key is at it
        self._blob_id = uuid.uuid4().hex
        self._scope = kind_scope(core.scope, "b")
        self._buffer = bytearray()
        self._chunks = 0
        self._size = 0
        self._hash = _checksum()
        self._done = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        """Append `data` (bytes-like); return how many bytes were taken (all of them)."""
        if self._done:
            raise self._core.tag(_closed(self._key))
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self._buffer += view
        self._size += len(view)
        while len(self._buffer) > CHUNK_SIZE:  # a value of one chunk stays a plain value
            self._flush_chunk(bytes(self._buffer[:CHUNK_SIZE]))
            del self._buffer[:CHUNK_SIZE]
        return len(view)

    def _flush_chunk(self, chunk: bytes) -> None:
        core, blob_id, index = self._core, self._blob_id, self._chunks
        if core.sealer is not None:
            name = chunk_name(self._key, blob_id, index)
            chunk = core.sealer.seal(H_BYTES + chunk, core.scope, name)
        changes = [Put(chunk_key(blob_id, index), chunk)]
        now = time()
        if not index:  # the head says whose chunks these are, and since when
            changes.append(Put(head_key(blob_id), _head(self._key, False, now)))
        try:
            core.backend.apply(self._scope, changes, now)
        except SatchelError as exc:
            raise core.tag(exc, self._key) from exc.__cause__
        self._chunks += 1

    def discard(self) -> None:
        """Drop what was written; the key keeps its old value. Idempotent."""
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        try:
            if self._chunks:
                _free(self._core.backend, self._scope, self._blob_id)
        except SatchelError as exc:
            raise self._core.tag(exc, self._key) from exc.__cause__
        finally:
            super().close()

    def close(self) -> None:
        """Make what was written the key's value, atomically. Idempotent."""
        if self._done:
            return
        self._done = True
        core, key = self._core, self._key
        backend, scope = core.backend, core.scope
        try:
            if self._chunks:
                if self._buffer:
                    self._flush_chunk(bytes(self._buffer))
                self._buffer = bytearray()
                self._check_staged()
                manifest = Manifest(self._blob_id, self._size, CHUNK_SIZE, self._chunks,
                                    self._hash.hexdigest(), core.sealer is not None)  # fmt: skip
                record = core.seal(manifest.pack(), key)
                now = time()
                head = _head(key, True, now, record)  # from now on, `collect` checks
                backend.apply(self._scope, (Put(head_key(self._blob_id), head),), now)
            else:  # fits in one chunk: an ordinary bytes value, any codec
                record = core.seal(H_BYTES + bytes(self._buffer), key)
            now = time()
            expires_at = None if self._ttl is None else now + self._ttl
            expect = () if self._expected == ANY_VERSION else (Expect(key, self._expected),)
            if backend.apply(scope, (Put(key, record, expires_at),), now, expect) is None:
                raise ValueChanged("the key changed before the value was committed")
        except BaseException as exc:
            if self._chunks:
                with contextlib.suppress(Exception):  # the first error is the one to report
                    _free(backend, self._scope, self._blob_id)
            if isinstance(exc, SatchelError):
                core.tag(exc, key)
            raise
        finally:
            super().close()

    def _check_staged(self) -> None:
        """Raise BackendError if a chunk was freed meanwhile (staged too long)."""
        backend, now = self._core.backend, time()
        found = sum(len(page) for page in _chunk_pages(backend, self._scope, self._blob_id, now))
        if found != self._chunks or backend.get(self._scope, head_key(self._blob_id), now) is None:
            raise BackendError(f"{self._chunks - found} staged chunks of the large value were "
                               "freed before the commit (staged for over a day?)")  # fmt: skip

    def __del__(self) -> None:
        # io's finaliser would call close(), publishing a half-written value.
        with contextlib.suppress(Exception):
            self.discard()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()

    def __repr__(self) -> str:
        return f"<satchel.BlobWriter key={self._key!r} written={self._size}>"


class BlobReader(io.RawIOBase):
    """A readable, seekable binary file over a large value, one chunk in memory at a time.

    Reading the whole value from the start checks its checksum at the end (CorruptData on
    a mismatch). If the value is replaced or deleted meanwhile, reading raises ValueChanged.
    """

    def __init__(self, core: Core, key: str, manifest: Manifest) -> None:
        super().__init__()
        self._core, self._key, self._manifest = core, key, manifest
        self._scope = kind_scope(core.scope, "b")
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None
        self._hash: Any = _checksum()  # None once a seek breaks the sequential read
        self._hashed = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        if self.closed:
            raise _closed(self._key)
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise _closed(self._key)
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._manifest.size}
        if whence not in base:
            raise InvalidInput(f"invalid whence {whence!r}", key=self._key)
        position = base[whence] + offset
        if position < 0:
            raise InvalidInput(f"negative seek position {position}", key=self._key)
        self._pos = position
        return position

    def _chunk(self, index: int) -> bytes:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        core, manifest = self._core, self._manifest
        scope, backend = core.scope, core.backend
        data = backend.get_value(self._scope, chunk_key(manifest.blob_id, index), time())
        if data is None:  # a store an earlier release wrote and nobody migrated (read-only)
            legacy = LegacyBlob(core.scope, self._key, manifest.blob_id, manifest.chunks)
            data = backend.legacy_chunk(legacy, index)
        # A replaced blob's chunks stay until `collect` frees them: read on only while
        # the key still holds this one.
        if not self._still_current():
            raise ValueChanged("the value was replaced or deleted while it was read",
                               key=self._key, scope=scope, engine=backend.engine)  # fmt: skip
        if data is None:
            raise CorruptData(f"chunk {index} of {manifest.chunks} of the large value "
                              "is missing", key=self._key, scope=scope)  # fmt: skip
        keyring = core.keyring
        try:
            if manifest.sealed:
                name = chunk_name(self._key, manifest.blob_id, index)
                data = unseal(data, keyring, scope, name)[HEADER_SIZE:]
            elif keyring is not None:  # chunks in the clear, though the store has a key
                keyring.refuse_plaintext()
        except SatchelError as exc:
            raise core.tag(exc, self._key) from exc.__cause__
        expected = min(manifest.chunk_size, manifest.size - index * manifest.chunk_size)
        if len(data) != expected:
            gap = f"{expected - len(data)} missing" if len(data) < expected else "too many"
            raise CorruptData(f"chunk {index} holds {len(data)} bytes, not {expected} ({gap})",
                              key=self._key, scope=scope)  # fmt: skip
        self._cached = (index, data)
        return data

    def _still_current(self) -> bool:
        """True if the key's live value is still this blob: then a chunk it lacks is lost,
        not replaced (`collect` frees a blob's chunks only after its manifest is gone)."""
        core = self._core
        data = core.backend.get_value(core.scope, self._key, time())
        if data is None:
            return False
        data = core.plain(data, self._key)
        return is_blob(data) and read_manifest(data).blob_id == self._manifest.blob_id

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise _closed(self._key)
        manifest, view = self._manifest, memoryview(buffer).cast("B")
        if self._pos >= manifest.size or not len(view):
            self._verify()
            return 0
        index, offset = divmod(self._pos, manifest.chunk_size)
        piece = memoryview(self._chunk(index))[offset : offset + len(view)]
        view[: len(piece)] = piece
        if self._hash is not None:
            if self._hashed == self._pos:
                self._hash.update(piece)
                self._hashed += len(piece)
            else:
                self._hash = None
        self._pos += len(piece)
        return len(piece)

    def _verify(self) -> None:
        if self._hash is not None and self._hashed == self._manifest.size:
            if self._hash.hexdigest() != self._manifest.checksum:
                raise CorruptData("the value does not match its checksum", key=self._key,
                                  scope=self._core.scope)  # fmt: skip
            self._hash = None  # checked once

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(self._manifest.chunk_size):
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        self._cached = None
        super().close()

    def __repr__(self) -> str:
        return f"<satchel.BlobReader key={self._key!r} size={self._manifest.size}>"


def open_reader(core: Core, key: str) -> io.BufferedReader:
    """A buffered binary reader over the bytes value of `key`, large or small."""
    backend = core.backend
    data = backend.get_value(core.scope, key, time())
    if data is None:
        raise KeyNotFound("key not found")
    data = core.plain(data, key)
    if is_blob(data):
        manifest = read_manifest(data)
        return io.BufferedReader(BlobReader(core, key, manifest), buffer_size=65536)
    value = core.codec.decode(data)
    if not isinstance(value, bytes):
        raise UnsupportedValue(f"the key holds a {type(value).__name__} value, not bytes")
    return io.BufferedReader(io.BytesIO(value))


def read_whole(core: Core, key: str, manifest: Manifest) -> bytes:
    """All the bytes of a large value."""
    with BlobReader(core, key, manifest) as reader:
        return reader.readall()


def lines(reader: io.BufferedReader, decode: Callable[[bytes], Any] | None) -> Iterator[Any]:
    """Yield the lines of `reader`, closing it at the end (or when the iterator is closed)."""
    with reader:
        for line in reader:
            yield line if decode is None else decode(line)


def collect(backend: Backend, now: float, limit: int, after: tuple[str, str] | None) -> (
    tuple[str, str] | None
):
    """Free up to `limit` blobs nobody holds (see the module docstring), looking at the
    heads after `after` ((blob scope, head key), None: from the start); return where to
    go on next time (None: a whole round is done)."""
    owners = {}  # blob scope -> the scope whose records hold the manifests
    for name in backend.scopes(now):
        split = split_kind(name)
        if split is not None and split[1] == "b":
            owners[name] = split[0]
    start_scope, start_key = after or ("", None)
    for scope in sorted(owners):
        if scope < start_scope:
            continue
        cursor = start_key if scope == start_scope else None
        while page := backend.scan(scope, "h/", cursor, min(limit, BATCH), now):
            for record in page:
                _collect_one(backend, scope, owners[scope], record, now)
            limit -= len(page)
            cursor = page[-1].key
            if limit <= 0:
                return scope, cursor
            if len(page) < BATCH:
                break
    return None


def _collect_one(backend: Backend, scope: str, owner_scope: str, head: Record, now: float) -> None:
    try:
        key, committed, since, digest = msgpack.unpackb(head.value)
    except (ValueError, TypeError, msgpack.UnpackException):
        return  # not ours to judge: leave it
    blob_id = head.key.removeprefix("h/")
    if not committed:
        if now - since > STAGED_LIFETIME:
            _free(backend, scope, blob_id)
        return
    if now - since <= COMMIT_GRACE:
        return
    owner = backend.get(owner_scope, key, now) if isinstance(key, str) else None
    if owner is None or _digest(owner.value) != digest:
        _free(backend, scope, blob_id)


def migrate(backend: Backend, now: float) -> int:
    """Copy the large values kept the way releases before 0.2 kept them into blob scopes,
    then drop that old storage; return how many were copied. Safe to run from several
    processes at once (what one copies, the other copies again, byte for byte)."""
    legacy = backend.legacy_blobs(now)
    if legacy is None:
        return 0
    moved = 0
    for blob in legacy:
        owner = backend.get(blob.scope, blob.key, now)
        if owner is None:
            continue
        scope = kind_scope(blob.scope, "b")
        for index in range(blob.chunks):
            data = backend.legacy_chunk(blob, index)
            if data is None:
                break  # dropped meanwhile: whoever dropped it copied it first
            backend.apply(scope, [Put(chunk_key(blob.blob_id, index), data)], now)
        else:
            head = _head(blob.key, True, now, owner.value)
            backend.apply(scope, [Put(head_key(blob.blob_id), head)], now)
            moved += 1
    backend.drop_legacy_blobs()
    return moved
