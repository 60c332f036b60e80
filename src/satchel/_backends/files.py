r"""``file:///dir``: one plain file per record under a directory (POSIX).

    dir/.satchel          marker: {"application": "satchel", "engine": "files", "format": 3}
    dir/.lock             the store's flock; its first 8 bytes count exclusive sections
    dir/.journal          a batch being applied (or whose writer died)
    dir/.tmp/             temp files (w-*) and cleared scopes (trash-*)
    dir/<scope>/<key>     one file per record (.scope: the name of a hashed scope)
    dir/.series/<scope>/<name>   a time series: a log of points

Names: every UTF-8 byte outside ``a-z 0-9 _ - .`` is percent-escaped (lowercase hex), as
are a leading or trailing dot and the first letter of a Windows device name (``con``).
A name is thus lowercase ASCII (case-insensitive file systems are fine), never ``.`` or
``..``, holds no ``/`` nor a character Windows forbids, and decodes to one key only. A
name over 200 characters becomes its first 120, ``~`` and the key's BLAKE2b-256 (no
escaped name holds ``~``); the record keeps the full key, checked on every read.

Records: the encoded value exactly as the Store made it (for a str, the 3-byte header
then its text), a newline, one line of JSON metadata (key, created_at, updated_at,
expires_at, version), a newline. Value and metadata share one file, so one rename swaps
both: a reader, or the store after a crash, sees the old record or the new, never a mix.

Writes go to ``.tmp`` (same file system), are fsynced, and renamed over the old file.
``durability="full"`` also fsyncs the directory, so a write that returned survives a
power loss; "normal" (default) may lose the last writes then, never tears or splits one.

Atomicity: a store-wide ``flock``, exclusive for a whole read-decide-write (incr,
compare_and_set, if_absent, pop), shared for reads, so nobody sees half a batch. A change
of several files (``put_many``, ``delete_many``) stages the new files, then writes the
list of renames and deletions as ``.journal`` (fsynced: the commit point), applies it,
fsyncs the scope directory and deletes the journal. A writer that dies drops its lock;
whoever takes it next and finds a journal rolls it forward (each step is idempotent).
A crash before the commit point leaves only temp files, deleted by the next open.

Large values and event sequences are records (see satchel._blobs, satchel._events).
Older formats kept them apart, and `satchel.open` moves them into records:

- format 1 (releases before 0.2) kept a large value's chunks as files
  ``.blobs/<scope>/<key>/<blob id>/<n>``, named by the record's metadata (``"blob"``,
  ``"chunks"``). `legacy_blobs` lists those of live records; `drop_legacy_blobs` moves
  ``.blobs`` to the trash in one rename and marks the store format 2;
- formats 1 and 2 kept each event sequence as a log ``.events/<scope>/<name>``, framed
  as series logs are (below) with first line ``satchel-events <nonce> <json name>`` and
  entries ``e|h|b <seq> <ms> <n>\n<data>\n``: an event, the head state, the base state.
  `legacy_sequences`, `legacy_states` and `legacy_events` read them;
  `drop_legacy_events` moves ``.events`` to the trash and marks a format 2 store format 3.

Once the marker says 3, these cost one read of the marker; releases that wrote the old
formats refuse format 3. A scope whose folder name is hashed is known from its records'
folder (``.scope``): old logs of such a scope without records are not found.

Series logs: a first line ``satchel-series <nonce> <json name>``, then batches, each
``@<size:16 hex> <crc32:8 hex>\n`` and its payload. A change appends one batch and
fsyncs; a batch torn by a crash fails its size or CRC, is ignored and cut off by the
next writer. Entries are ``p <t> <n>\n<value>\n`` (a point; the last one at t wins) and
``r <start> <stop>\n`` (remove, ``*``: unbounded). A log is rewritten (new file, one
rename) when half of it is dead entries (``series_reseal`` appends the replaced points).
Each store keeps the index of the logs it used lately (t -> offset), and reads only what
other processes appended since; the nonce tells a rewritten log from the one it indexed.

Costs: `scan` lists and sorts the whole scope directory, kept until the next write to
the store (the counter in ``.lock``), so paging through ``keys()`` lists once. `count`,
`scopes` and `purge_expired` read each record's last line. A log's index takes 24 bytes
a point, built by reading the log once. Use a local file system.

Links: the directory may be a symbolic link (resolved once, at open); below it the store
follows none. Its files are opened with O_NOFOLLOW and its folders checked with lstat
before use: a link where the store keeps a file or folder is CorruptData naming it (a
purge or a clear passes it by), never a way to write or delete outside.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import threading
import weakref
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast
from urllib.parse import unquote_to_bytes

from .._errors import (
    BackendError,
    BackendUnavailable,
    CorruptData,
    IncompatibleDatabase,
    InvalidInput,
)
from .base import (
    Backend,
    Change,
    Delete,
    EventState,
    Expect,
    LegacyBlob,
    Put,
    Record,
    SeriesEngine,
    Touch,
    holds,
)

FORMAT = 3  # 1: large values under .blobs (releases before 0.2); 2: event logs in .events
MARKER, LOCK, JOURNAL, TMP, SCOPE_NAME = ".satchel", ".lock", ".journal", ".tmp", ".scope"
NAME_LIMIT = 200  # characters of an escaped name (file systems allow 255 bytes)
HASHED_PREFIX = 120  # escaped characters kept in front of a hashed name
TAIL = 16384  # bytes read from a record's end for its metadata: the longest line fits
LISTINGS_CACHED = 4  # sorted scope listings kept per open store
SERIES = ".series"
LEGACY_BLOBS, LEGACY_EVENTS = ".blobs", ".events"  # chunk files (format 1), event logs (1, 2)
LOGS_CACHED = 8  # log indexes kept per open store
BATCH_HEAD = 27  # "@<size:16 hex> <crc32:8 hex>\n"
REWRITE_MIN = 1 << 20  # dead bytes a log may hold before it is rewritten
PART = 1 << 20  # bytes of entries per batch when a log is rewritten
BUFFER = 8192  # bytes buffered by a file reader or writer (given, open() skips isatty())
_MODES = {"rb": os.O_RDONLY, "r+b": os.O_RDWR, "ab": os.O_WRONLY | os.O_APPEND}

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-.")
_ESCAPED = [chr(b) if b in _SAFE else f"%{b:02x}" for b in range(256)]
_PLAIN = re.compile(r"[a-z0-9_-](?:[a-z0-9_.-]*[a-z0-9_-])?")  # its own file name
_DEVICE = re.compile(r"(?:con|prn|aux|nul|com[0-9]|lpt[0-9])(?:\.|$)")  # reserved on Windows
_OURS = frozenset((MARKER, LOCK, JOURNAL, TMP, LEGACY_BLOBS, SERIES, LEGACY_EVENTS))
_JOURNAL_STEP = re.compile(r"(?:\.tmp/w-[0-9a-f]+)?\n[^./][^/]*/[^./][^/]*")
_KEY = itemgetter(0)
META = ("key", "created_at", "updated_at", "expires_at", "version")  # a record's last line

# One step of a change: (temp file, record path) renames, (None, record path) deletes.
Step = tuple[str | None, str]


@lru_cache(maxsize=4096)
def escape_name(name: str) -> str:
    """The file name for key or scope `name`: lowercase ASCII, at most 200 characters."""
    if len(name) <= NAME_LIMIT and _PLAIN.fullmatch(name) and not _DEVICE.match(name):
        return name
    raw = name.encode()
    parts = [_ESCAPED[b] for b in raw]
    for i in (0, -1):
        if parts[i] == ".":
            parts[i] = "%2e"
    text = "".join(parts)
    if _DEVICE.match(text):
        text = f"%{ord(text[0]):02x}{text[1:]}"
    if len(text) > NAME_LIMIT:
        text = f"{text[:HASHED_PREFIX]}~{hashlib.blake2b(raw, digest_size=32).hexdigest()}"
    return text


def unescape_name(file_name: str) -> str | None:
    """The key or scope `file_name` stands for; None for a hashed name or a foreign file."""
    try:
        name = unquote_to_bytes(file_name).decode()
    except UnicodeDecodeError:
        return None
    return name if "~" not in file_name and escape_name(name) == file_name else None


def _live(record: Record | None, now: float) -> Record | None:
    if record is None or (record.expires_at is not None and record.expires_at <= now):
        return None
    return record


def _meta_line(record: Record) -> bytes:
    meta = {name: getattr(record, name) for name in META}
    return b"\n" + json.dumps(meta, ensure_ascii=False).encode() + b"\n"


def _parse(path: str, data: bytes, values: bool) -> tuple[Record, dict[str, Any]]:
    """The record in file `path` holding `data`, and its metadata (format 1 kept more)."""
    end = len(data) - 1
    sep = data.rfind(b"\n", 0, end)
    try:
        if sep < 0 or data[end] != 0x0A:
            raise ValueError("no metadata line")
        meta = json.loads(data[sep + 1 : end])
        key, created, updated, expires, version = map(meta.get, META)
        if not isinstance(key, str) or not isinstance(version, int):
            raise TypeError("no key or version")
        expires = None if expires is None else float(expires)
        record = Record(key, b"", float(created), float(updated), expires, version)
    except (ValueError, TypeError, AttributeError) as exc:
        raise CorruptData(f"{path} is not a satchel record ({exc})") from None
    if values:
        record.value = data[:sep]
    return record, meta


def _fsync(path: str, directory: bool = False) -> None:
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- logs (series; event sequences of formats 1 and 2) -------------------------------------


def _batch(payload: bytes) -> bytes:
    return b"@%016x %08x\n" % (len(payload), zlib.crc32(payload)) + payload


def _batches(f: BinaryIO, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, payload) of each whole batch from `start` on in the file of `end` bytes;
    a torn one ends the log."""
    f.seek(start)
    while len(head := f.read(BATCH_HEAD)) == BATCH_HEAD and head[:1] == b"@":
        try:
            size, crc = int(head[1:17], 16), int(head[18:26], 16)
        except ValueError:
            return
        if size > end - start - BATCH_HEAD:  # never read more than the file holds
            return
        payload = f.read(size)
        if len(payload) != size or zlib.crc32(payload) != crc:
            return
        yield start + BATCH_HEAD, payload
        start += BATCH_HEAD + size


def _bound(t: int | None) -> bytes:
    return b"*" if t is None else b"%d" % t


def _unbound(field: bytes) -> int | None:
    return None if field == b"*" else int(field)


def _parts(entries: Iterable[bytes]) -> Iterator[bytes]:
    """Join `entries` into payloads of about PART bytes."""
    part: list[bytes] = []
    size = 0
    for entry in entries:
        part.append(entry)
        size += len(entry)
        if size >= PART:
            yield b"".join(part)
            part, size = [], 0
    if part:
        yield b"".join(part)


class _Log:
    """What a log file holds, up to `end` (where its last whole batch ends)."""

    MAGIC = b""

    def __init__(self, nonce: bytes, name: str, end: int) -> None:
        self.nonce, self.name, self.end = nonce, name, end
        self.dead = 0  # bytes a rewrite would drop

    def apply(self, offset: int, payload: bytes) -> None:
        """Take in the batch `payload` found at file `offset`."""
        raise NotImplementedError

    def entries(self, f: BinaryIO) -> Iterator[bytes]:
        """The live entries, read from `f`, for a rewrite."""
        raise NotImplementedError


_L = TypeVar("_L", bound=_Log)


def _read_at(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


class _Series(_Log):
    """Index of a series log: sorted t, with the offset and length of each value."""

    MAGIC = b"satchel-series"

    def __init__(self, nonce: bytes, name: str, end: int) -> None:
        super().__init__(nonce, name, end)
        self.ts, self.offs, self.lens = array("q"), array("q"), array("q")

    @staticmethod
    def size(t: int, n: int) -> int:
        return len(b"p %d %d\n" % (t, n)) + n + 1

    def apply(self, offset: int, payload: bytes) -> None:
        self.dead += BATCH_HEAD
        pending: dict[int, tuple[int, int]] = {}
        pos = 0
        while pos < len(payload):
            eol = payload.index(b"\n", pos)
            kind, a, b = payload[pos:eol].split(b" ")
            if kind == b"p":
                t, n = int(a), int(b)
                if n < 0 or eol + n + 2 > len(payload) or not -(2**63) <= t < 2**63:
                    raise ValueError(f"damaged point entry {payload[pos:eol]!r}")
                if t in pending:
                    self.dead += self.size(t, pending[t][1])
                pending[t] = (offset + eol + 1, n)
                pos = eol + n + 2
            elif kind == b"r":
                self.insert(pending)
                pending = {}
                self.remove(_unbound(a), _unbound(b))
                self.dead += eol + 1 - pos
                pos = eol + 1
            else:
                raise ValueError(f"unknown entry {kind!r}")
        self.insert(pending)

    def insert(self, new: dict[int, tuple[int, int]]) -> None:
        """Add or replace the points `new` (t: offset, length)."""
        ts, offs, lens = self.ts, self.offs, self.lens
        times = sorted(new)
        if not times:
            return
        if not ts or times[0] > ts[-1]:  # the usual case: later points
            ts.extend(times)
            offs.extend(new[t][0] for t in times)
            lens.extend(new[t][1] for t in times)
            return
        merged = array("q"), array("q"), array("q")
        i = 0
        for t in times:
            j = bisect_left(ts, t, i)
            for out, column in zip(merged, (ts, offs, lens), strict=True):
                out.extend(column[i:j])
            if j < len(ts) and ts[j] == t:
                self.dead += self.size(t, lens[j])
                j += 1
            merged[0].append(t)
            merged[1].append(new[t][0])
            merged[2].append(new[t][1])
            i = j
        for out, column in zip(merged, (ts, offs, lens), strict=True):
            out.extend(column[i:])
        self.ts, self.offs, self.lens = merged

    def span(self, start: int | None, stop: int | None) -> tuple[int, int]:
        """Indexes i, j of the points with start <= t < stop: i up to j."""
        i = 0 if start is None else bisect_left(self.ts, start)
        j = len(self.ts) if stop is None else bisect_left(self.ts, stop)
        return i, max(i, j)

    def remove(self, start: int | None, stop: int | None) -> int:
        i, j = self.span(start, stop)
        self.dead += sum(map(self.size, self.ts[i:j], self.lens[i:j]))
        for column in (self.ts, self.offs, self.lens):
            del column[i:j]
        return j - i

    def entries(self, f: BinaryIO) -> Iterator[bytes]:
        for t, offset, n in zip(self.ts, self.offs, self.lens, strict=True):
            yield b"p %d %d\n%s\n" % (t, n, _read_at(f, offset, n))


class _LegacyEvents(_Log):
    """Index of an event log of formats 1 and 2: the offsets of the events from seq
    `first` on, and (seq, timestamp, offset, length) of the head and base states."""

    MAGIC = b"satchel-events"

    def __init__(self, nonce: bytes, name: str, end: int) -> None:
        super().__init__(nonce, name, end)
        self.first = 1
        self.offs, self.lens, self.stamps = array("q"), array("q"), array("q")
        self.head: tuple[int, int, int, int] | None = None
        self.base: tuple[int, int, int, int] | None = None

    def apply(self, offset: int, payload: bytes) -> None:
        pos = 0
        while pos < len(payload):
            eol = payload.index(b"\n", pos)
            kind, *fields = payload[pos:eol].split(b" ")
            seq, stamp, n = map(int, fields)
            pos = eol + n + 2
            if n < 0 or pos > len(payload) or payload[pos - 1] != 0x0A:
                raise ValueError("an entry overruns its batch")
            if not (0 <= seq < 2**63 and -(2**63) <= stamp < 2**63):  # as they are copied
                raise ValueError(f"seq {seq} or time {stamp} out of range")
            entry = (seq, stamp, offset + eol + 1, n)
            if kind == b"e":
                if seq != self.first + len(self.offs):
                    raise ValueError(f"event {seq} out of order")
                self.offs.append(entry[2])
                self.lens.append(n)
                self.stamps.append(stamp)
            elif kind == b"h":
                self.head = entry
            elif kind == b"b":
                if seq < self.first - 1:
                    raise ValueError(f"base {seq} behind the events")
                drop = min(seq + 1 - self.first, len(self.offs))
                for column in (self.offs, self.lens, self.stamps):
                    del column[:drop]
                self.first, self.base = seq + 1, entry
            else:
                raise ValueError(f"unknown entry {kind!r}")

    def check(self) -> None:
        """Raise ValueError unless the states sit where the events end and begin."""
        if self.head is not None and self.head[0] != self.first + len(self.offs) - 1:
            raise ValueError(f"head {self.head[0]} is not the last event")
        if self.base is not None and self.base[0] != self.first - 1:
            raise ValueError(f"base {self.base[0]} is not before the first event")


# flock belongs to the open file, which a forked child would share with its parent: a
# child reopens the lock file (closing its copy leaves the parent's lock alone).
_OPEN_BACKENDS: weakref.WeakSet[FilesBackend] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for backend in list(_OPEN_BACKENDS):
        if backend._fd is not None:
            os.close(backend._fd)
            backend._fd = None
        backend._lock = threading.Lock()  # a parent thread may have held the old one


os.register_at_fork(after_in_child=_after_fork_in_child)


class FilesBackend(Backend, SeriesEngine):
    """A satchel store in a directory of plain files. The directory is created if missing
    (its parent must exist); a non-empty directory that is no store is refused."""

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "normal") -> None:
        if durability not in ("normal", "full"):
            raise InvalidInput(f"durability must be 'normal' or 'full', not {durability!r}")
        self.path = Path(path).expanduser().absolute()
        self.engine = f"file://{self.path}"
        # The directory may be a link the user chose: resolved once, as below it the store
        # follows no link (its own files and folders are never links).
        self._root = os.path.realpath(self.path)
        self._tmp = os.path.join(self._root, TMP)
        self._journal = os.path.join(self._root, JOURNAL)
        self._full = durability == "full"
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._listings: dict[str, tuple[int, list[tuple[str, str]]]] = {}
        self._logs: dict[str, _Log] = {}
        if not self.path.parent.is_dir():
            raise BackendUnavailable(f"no directory {self.path.parent}", engine=self.engine)
        try:
            with self._locked(exclusive=True):
                self._prepare()
        except BaseException:
            self.close()
            raise
        _OPEN_BACKENDS.add(self)

    # -- the one way in: locks, recovery, errors -------------------------------------------

    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[int]:
        """Hold the thread lock and the store's flock (yields its descriptor); roll forward
        the batch of a writer that died; turn every OSError into a BackendError."""
        with self._lock:
            try:
                fd = self._fd if self._fd is not None else self._open_lock()
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                try:
                    if exclusive:
                        self._bump(fd)  # before any change, so a crash cannot skip it
                    if os.path.lexists(self._journal):  # a link there is refused on reading
                        fcntl.flock(fd, fcntl.LOCK_EX)
                        self._recover(fd)
                    yield fd
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError as exc:
                raise self._error(exc) from exc

    def _open_lock(self) -> int:
        with suppress(FileExistsError):
            os.mkdir(self._root)
        if not os.path.exists(os.path.join(self._root, MARKER)):
            foreign = set(os.listdir(self._root)) - _OURS  # look before writing anything
            if foreign:
                what = f"{self._root} is not empty and not a satchel store"
                raise IncompatibleDatabase(what, engine=self.engine)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW  # _bump writes in it
        self._fd = os.open(os.path.join(self._root, LOCK), flags)
        return self._fd

    @staticmethod
    def _generation(fd: int) -> int:
        return int.from_bytes(os.pread(fd, 8, 0).ljust(8, b"\0"), "big")

    def _bump(self, fd: int) -> None:
        os.pwrite(fd, ((self._generation(fd) + 1) % 2**64).to_bytes(8, "big"), 0)

    def _error(self, exc: OSError) -> BackendError | CorruptData:
        where, engine = exc.filename or self._root, self.engine
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a link
            return self._link(where)
        if exc.errno == errno.ENOSPC:
            return BackendError(f"no space left on the device for {where}", engine=engine)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return BackendError(f"not allowed: {where}: {exc.strerror}", engine=engine)
        if exc.errno == errno.ENOTDIR:
            return IncompatibleDatabase(f"{where} is not a directory", engine=engine)
        if not os.path.isdir(self._root):
            return BackendUnavailable(f"the store directory {self._root} is gone", engine=engine)
        return BackendError(f"{exc.strerror or exc}: {where}", engine=engine)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        _OPEN_BACKENDS.discard(self)

    # -- links: the store's own files and folders are never links ----------------------------
    # A link planted inside the store would lead writes, deletions and reads outside it. So
    # files are opened with O_NOFOLLOW (free), folders are checked with lstat on the way
    # down from the root before they are used, and a link found is refused, never followed.

    def _link(self, path: str) -> CorruptData:
        return CorruptData(
            f"{path} is a symbolic link, where satchel keeps its own file or folder;"
            " it follows no link out of its directory",
            engine=self.engine,
        )

    def _open(self, path: str, mode: str = "rb", buffering: int = BUFFER) -> BinaryIO:
        """open() for the store's own file `path`, refusing a link there. (os.open, not an
        opener=, after which open() spends a syscall setting close-on-exec.)"""
        try:
            fd = os.open(path, _MODES[mode] | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._link(path) from None
            raise
        try:
            return cast(BinaryIO, open(fd, mode, buffering))
        except BaseException:
            os.close(fd)
            raise

    def _inside(self, path: str, create: bool = False) -> bool:
        """Whether `path`, below the store's directory, was there: each step of the way is
        checked with lstat, a link refused. With `create`, the missing folders are made,
        each durable in its parent."""
        here, end, found = self._root, len(self._root), True
        while end != -1:  # find(), not split() and join(): this runs on every get
            parent, end = here, path.find(os.sep, end + 1)
            here = path if end == -1 else path[:end]
            try:
                if stat.S_ISLNK(os.lstat(here).st_mode):
                    raise self._link(here)
            except FileNotFoundError:
                if not create:
                    return False
                with suppress(FileExistsError):  # another writer was first
                    os.mkdir(here)
                _fsync(parent, directory=True)
                found = False
        return found

    def _subdirs(self, path: str) -> list[str]:
        """Paths of the folders in folder `path`; none if it is missing or behind a link
        (housekeeping passes links by: reads and writes report them)."""
        with suppress(FileNotFoundError, CorruptData):
            if self._inside(path):
                with os.scandir(path) as entries:
                    return [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        return []

    def _prepare(self) -> None:
        """Mark the directory as a store (or check the mark); delete what crashes left."""
        if not self._inside(self._tmp):
            os.mkdir(self._tmp)  # not fsynced: a .tmp lost to a crash is made again
        if not os.path.exists(os.path.join(self._root, MARKER)):
            self._mark()
        self._format()  # refuses a marker it cannot read
        with os.scandir(self._tmp) as entries:  # nobody writes there without our lock
            for entry in entries:
                if entry.name.startswith("trash-") and entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                elif entry.name.startswith(("w-", "trash-")):
                    with suppress(FileNotFoundError):
                        os.unlink(entry.path)  # a file, or a link (not what it points at)

    def _mark(self, version: int = FORMAT) -> None:
        """Write the marker of format `version` (lock held)."""
        marker = {"application": "satchel", "engine": "files", "format": version}
        os.replace(self._stage(json.dumps(marker).encode()), os.path.join(self._root, MARKER))
        _fsync(self._root, directory=True)

    def _format(self) -> int:
        """The format the marker names (lock held); IncompatibleDatabase if unknown."""
        marker = os.path.join(self._root, MARKER)
        with self._open(marker, buffering=0) as f:
            try:
                found = json.loads(f.read())
                version = found["format"] if found["application"] == "satchel" else None
            except (ValueError, KeyError, TypeError):
                version = None
        if type(version) is not int or not 1 <= version <= FORMAT:
            what = "is not a satchel marker" if version is None else f"has format {version!r}"
            raise IncompatibleDatabase(
                f"{marker} {what} (this satchel reads 1 to {FORMAT})", engine=self.engine
            )
        return version

    def _recover(self, fd: int) -> None:
        """Roll forward the batch of a writer that died after its commit point."""
        self._bump(fd)
        try:
            with self._open(self._journal, buffering=0) as f:
                plan = json.loads(f.read())
            if not all(_JOURNAL_STEP.fullmatch(f"{tmp or ''}\n{path}") for tmp, path in plan):
                raise ValueError("a step leaves the store")
        except FileNotFoundError:
            return  # another process recovered it while we waited for the lock
        except (ValueError, TypeError) as exc:
            raise CorruptData(f"{self._journal} is damaged: {exc}", engine=self.engine) from None
        root = self._root
        steps = [(tmp and os.path.join(root, tmp), os.path.join(root, p)) for tmp, p in plan]
        for directory in {os.path.dirname(path) for _, path in steps}:
            self._inside(directory)  # a scope folder that is a link is refused
        self._finish(steps)

    # -- records -----------------------------------------------------------------------------

    def _dir(self, scope: str, create: bool = False) -> str:
        """The folder of `scope` (lock held), made if missing and `create`."""
        name = escape_name(scope)
        path = os.path.join(self._root, name)
        if not self._inside(path) and create:
            os.mkdir(path)  # unlike _inside(create=True), no fsync of the root here
        if create and "~" in name:  # a hashed name: the directory keeps the scope's full name
            label = self._label(path)
            if label is None:
                os.replace(self._stage(scope.encode()), os.path.join(path, SCOPE_NAME))
            elif label != scope:
                raise CorruptData(f"{path} belongs to scope {label!r}", engine=self.engine)
        return path

    def _label(self, path: str) -> str | None:
        try:
            with self._open(os.path.join(path, SCOPE_NAME), buffering=0) as f:
                return f.read(TAIL).decode()  # a longer label names no scope: no match
        except (FileNotFoundError, UnicodeDecodeError, CorruptData):
            return None  # a link: as if missing, so a write replaces it

    def _scope_of(self, name: str) -> str | None:
        """The scope whose folder is named `name`, or None. A hashed name: as the label in
        that folder says (a link there names no scope)."""
        scope = unescape_name(name)
        if scope is None and "~" in name:
            folder = os.path.join(self._root, name)
            with suppress(CorruptData):
                scope = self._label(folder) if self._inside(folder) else None
        return scope if scope is not None and escape_name(scope) == name else None

    def _load(self, path: str, values: bool = True, key: str | None = None) -> Record | None:
        """The record in `path`, live or not, or None; with `key`, it must hold that key."""
        return self._read(path, values, key)[0]

    def _read(
        self, path: str, values: bool = True, key: str | None = None
    ) -> tuple[Record | None, dict[str, Any]]:
        """`_load`, and the record's metadata."""
        try:
            with self._open(path, buffering=0) as f:
                if not values:
                    f.seek(max(0, os.fstat(f.fileno()).st_size - TAIL))
                data = f.read()
        except FileNotFoundError:
            return None, {}
        record, meta = _parse(path, data, values)
        if key is not None and record.key != key:
            raise CorruptData(f"{path} holds another key, {record.key!r}", engine=self.engine)
        return record, meta

    def _stage(self, *chunks: bytes, sync: bool = True) -> str:
        """Write `chunks` to a new temp file (fsynced if `sync`); return its path."""
        tmp = os.path.join(self._tmp, f"w-{secrets.token_hex(8)}")
        self._inside(self._tmp)  # checked at each write too: a write costs an fsync anyway
        try:
            with open(tmp, "xb") as f:  # x: O_EXCL, which never follows a link
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                if sync:
                    os.fsync(f.fileno())
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise
        return tmp

    def _commit(self, steps: list[Step]) -> None:
        """Apply `steps` as one atomic change: through the journal when there are several."""
        for tmp, _ in steps:  # fsynced after all are written: one disk flush serves many
            if tmp is not None:
                _fsync(tmp)
        if len(steps) > 1:
            cut = len(self._root) + 1
            plan = [[tmp and tmp[cut:], path[cut:]] for tmp, path in steps]
            # The staged files must outlive a power loss if the plan does.
            _fsync(self._tmp, directory=True)
            os.replace(self._stage(json.dumps(plan).encode()), self._journal)
            _fsync(self._root, directory=True)
            self._finish(steps)
        elif steps:
            self._apply(steps)
            if self._full:
                _fsync(os.path.dirname(steps[0][1]), directory=True)

    def _finish(self, steps: list[Step]) -> None:
        self._apply(steps)
        for directory in {os.path.dirname(path) for _, path in steps}:
            _fsync(directory, directory=True)  # the changes are durable before the plan goes
        os.unlink(self._journal)
        _fsync(self._root, directory=True)  # a plan back from the dead could undo later writes

    @staticmethod
    def _apply(steps: Sequence[Step]) -> None:
        for tmp, path in steps:  # idempotent: a step done before a crash is skipped
            with suppress(FileNotFoundError):
                if tmp is None:
                    os.unlink(path)
                else:
                    os.replace(tmp, path)

    def _listing(self, scope: str, directory: str, fd: int) -> list[tuple[str, str]]:
        """(key, file name) of every record of `scope`, in its `directory`, sorted; listed
        once per write."""
        generation = self._generation(fd)
        cached = self._listings.get(scope)
        if cached is not None and cached[0] == generation:
            return cached[1]
        try:
            names = [name for name in os.listdir(directory) if not name.startswith(".")]
        except FileNotFoundError:
            names = []
        pairs = []
        for name in names:
            key = unescape_name(name)
            if key is None and "~" in name:  # hashed: the record knows its key
                record = self._load(os.path.join(directory, name), values=False)
                key = record.key if record and escape_name(record.key) == name else None
            if key is not None:
                pairs.append((key, name))
        pairs.sort()
        if len(self._listings) >= LISTINGS_CACHED:
            self._listings.clear()
        self._listings[scope] = (generation, pairs)
        return pairs

    def _scope_names(self) -> list[str]:
        names = []
        with os.scandir(self._root) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                    continue  # a link is no scope of the store's (using it reports it)
                scope = self._scope_of(entry.name)
                if scope is not None:
                    names.append(scope)
        return names

    # -- primitives --------------------------------------------------------------------------

    def get_many(self, scope: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        found = {}
        with self._locked(exclusive=False):
            directory = self._dir(scope)
            for key in keys:
                record = _live(self._load(os.path.join(directory, escape_name(key)), key=key), now)
                if record is not None:
                    found[key] = record
        return found

    def apply(
        self, scope: str, changes: Sequence[Change], now: float, expect: Sequence[Expect] = ()
    ) -> int | None:
        """One exclusive flock for the check and the changes; one change is one rename or
        unlink, several go through the journal (as put_many). A pure check takes the
        shared lock only."""
        with self._locked(exclusive=bool(changes)):
            directory = self._dir(scope)
            # Records read for the conditions, reused by the changes: a compare-and-set
            # reads its key once. A touched key is read whole, as its value is rewritten.
            seen: dict[str, Record | None] = {}
            if expect:
                touched = {c.key for c in changes if isinstance(c, Touch)}
                for condition in expect:
                    key = condition.key
                    if key not in seen:
                        path = os.path.join(directory, escape_name(key))
                        seen[key] = self._load(path, values=key in touched, key=key)
                    if not holds(_live(seen[key], now), condition):
                        return None
            steps: list[Step] = []
            hits = 0
            created = False
            try:
                for change in changes:
                    key = change.key
                    path = os.path.join(directory, escape_name(key))
                    touch = isinstance(change, Touch)
                    stored = seen[key] if key in seen else self._load(path, touch, key)
                    old = _live(stored, now)
                    if isinstance(change, Put):
                        if change.if_absent and old is not None:
                            continue
                        hits += old is None
                        born, version = (
                            (now, 1) if old is None else (old.created_at, old.version + 1)
                        )
                        record = Record(key, change.value, born, now, change.expires_at, version)
                        tmp = self._stage(change.value, _meta_line(record), sync=False)
                        steps.append((tmp, path))
                        created = True
                    elif isinstance(change, Delete):
                        if stored is None:
                            continue
                        steps.append((None, path))  # an expired record goes too, uncounted
                        hits += old is not None
                    else:
                        if old is None:
                            continue
                        old.expires_at = change.expires_at  # value, version, updated_at stay
                        tmp = self._stage(old.value, _meta_line(old), sync=False)
                        steps.append((tmp, path))
                        hits += 1
            except BaseException:
                for staged, _ in steps:
                    if staged is not None:
                        with suppress(OSError):
                            os.unlink(staged)
                raise
            if created:  # a Put may be the scope's first record
                self._dir(scope, create=True)
            self._commit(steps)
            return hits

    def scan(self, scope: str, prefix: str, after: str | None, limit: int, now: float,
             values: bool = True) -> list[Record]:  # fmt: skip
        found: list[Record] = []
        with self._locked(exclusive=False) as fd:
            directory = self._dir(scope)
            pairs = self._listing(scope, directory, fd)
            i = bisect_left(pairs, prefix, key=_KEY)
            if after is not None:
                i = max(i, bisect_right(pairs, after, key=_KEY))
            for key, name in pairs[i:]:
                if len(found) == limit or not key.startswith(prefix):
                    break
                record = _live(self._load(os.path.join(directory, name), values, key), now)
                if record is not None:
                    found.append(record)
        return found

    def count(self, scope: str, now: float) -> int:
        return len(self.scan(scope, "", None, 2**62, now, values=False))

    def scopes(self, now: float) -> list[str]:
        with self._locked(exclusive=False):
            names = self._scope_names()
        return sorted(scope for scope in names if self.scan(scope, "", None, 1, now, False))

    def clear(self, scope: str) -> None:
        trash = os.path.join(self._tmp, f"trash-{secrets.token_hex(8)}")
        with self._locked(exclusive=True):
            try:
                os.rename(self._dir(scope), trash)  # the whole scope goes in one step
            except FileNotFoundError:
                return
            if self._full:
                _fsync(self._root, directory=True)
        shutil.rmtree(trash, ignore_errors=True)  # what is left, the next open deletes

    def purge_expired(self, now: float, limit: int) -> int:
        purged = 0
        with self._locked(exclusive=True) as fd:
            for scope in self._scope_names():
                directory = self._dir(scope)
                for _, name in self._listing(scope, directory, fd):
                    if purged == limit:
                        return purged
                    path = os.path.join(directory, name)
                    with suppress(CorruptData):  # housekeeping: a bad file is reported on read
                        record = self._load(path, values=False)
                        if record is not None and _live(record, now) is None:
                            os.unlink(path)
                            purged += 1
        return purged

    # -- large values kept by format 1 -----------------------------------------------------

    def legacy_blobs(self, now: float) -> list[LegacyBlob] | None:
        """Format 1: the blobs in ``.blobs/<scope>/<key>/<blob id>`` named by the live
        record at ``<scope>/<key>``, each chunk a plain file. Later formats: None, from
        the marker alone. Links and damage are passed by, as a purge did: such a value reads
        as a missing chunk, as it did before."""
        found = []
        with self._locked(exclusive=False):
            if self._format() > 1:
                return None
            for scope_dir in self._subdirs(os.path.join(self._root, LEGACY_BLOBS)):
                scope_name = os.path.basename(scope_dir)
                folder = os.path.join(self._root, scope_name)
                scope = self._scope_of(scope_name)
                if scope is None:
                    continue  # no scope of the store's: no record names these chunks
                for key_dir in self._subdirs(scope_dir):
                    with suppress(CorruptData, FileNotFoundError):
                        blob = self._legacy_blob(scope, folder, key_dir, now)
                        if blob is not None:
                            found.append(blob)
        return found

    def _legacy_blob(self, scope: str, folder: str, key_dir: str, now: float) -> LegacyBlob | None:
        """The blob in `key_dir` the live record of its key names, if whole."""
        name = os.path.basename(key_dir)
        if not self._inside(folder):
            return None
        record, meta = self._read(os.path.join(folder, name), values=False)
        blob_id, chunks = meta.get("blob"), meta.get("chunks")
        if record is None or _live(record, now) is None or escape_name(record.key) != name:
            return None
        if not isinstance(blob_id, str) or type(chunks) is not int or chunks < 1:
            return None
        blob_dir = os.path.join(key_dir, escape_name(blob_id))
        if not self._inside(blob_dir):
            return None
        with os.scandir(blob_dir) as entries:
            files = {e.name for e in entries if e.is_file(follow_symlinks=False)}
        if not files.issuperset(map(str, range(chunks))):
            return None
        return LegacyBlob(scope, record.key, blob_id, chunks)

    def legacy_chunk(self, blob: LegacyBlob, index: int) -> bytes | None:
        """The file as stored; a link on the way is CorruptData, never followed."""
        blob_dir = os.path.join(self._root, LEGACY_BLOBS, escape_name(blob.scope),
                                escape_name(blob.key), escape_name(blob.blob_id))  # fmt: skip
        with self._locked(exclusive=False):
            try:
                if not self._inside(blob_dir):
                    return None
                with self._open(os.path.join(blob_dir, str(index)), buffering=0) as f:
                    return f.read()
            except FileNotFoundError:
                return None  # dropped meanwhile (or lost: the reader finds a chunk missing)

    def drop_legacy_blobs(self) -> None:
        """``.blobs`` goes to the trash in one rename (a link there: the link goes), then
        the marker says format 2."""
        self._drop_legacy(LEGACY_BLOBS, 1)

    def _drop_legacy(self, folder: str, version: int) -> None:
        """Move `folder` to the trash in one rename (a link there: the link goes); then a
        store of format `version` is marked the next one (a later store is left alone,
        an earlier one keeps its format until its older data is gone too)."""
        trash = os.path.join(self._tmp, f"trash-{secrets.token_hex(8)}")
        legacy = os.path.join(self._root, folder)
        with self._locked(exclusive=True):
            found = self._format()
            if found > version:
                return
            try:
                if stat.S_ISLNK(os.lstat(legacy).st_mode):
                    os.unlink(legacy)
                else:
                    os.rename(legacy, trash)
                _fsync(self._root, directory=True)
            except FileNotFoundError:
                pass
            if found == version:
                self._mark(version + 1)
        shutil.rmtree(trash, ignore_errors=True)  # what is left, the next open deletes

    # -- event sequences kept by formats 1 and 2 -----------------------------------------------

    def legacy_sequences(self) -> list[tuple[str, str]] | None:
        """Formats 1 and 2: (scope, name) of every log in ``.events/<scope>`` whose first
        line names it; links and foreign files are passed by. Format 3: None, from the
        marker alone."""
        found = []
        with self._locked(exclusive=False):
            if self._format() > 2:
                return None
            for scope_dir in self._subdirs(os.path.join(self._root, LEGACY_EVENTS)):
                scope = self._scope_of(os.path.basename(scope_dir))
                if scope is not None:
                    found += [(scope, name) for name in self._names_in(scope_dir, _LegacyEvents)]
        return sorted(found)

    def _legacy_log(self, scope: str, name: str) -> tuple[str, _LegacyEvents | None]:
        """The path of an old event log and its index (None: no such log, or dropped);
        CorruptData if it is damaged (lock held)."""
        path = self._log_path(LEGACY_EVENTS, scope, name)
        index = self._index(path, _LegacyEvents, name)
        try:
            if index is not None:
                index.check()
        except ValueError as exc:
            raise CorruptData(f"{path} is damaged: {exc}", engine=self.engine) from None
        return path, index

    def legacy_states(self, scope: str, name: str) -> tuple[EventState | None, EventState | None]:
        with self._locked(exclusive=False):
            path, index = self._legacy_log(scope, name)
            if index is None:
                return None, None
            with self._open(path, buffering=0) as f:
                head, base = (
                    None if state is None else (state[0], state[1], _read_at(f, *state[2:]))
                    for state in (index.head, index.base)
                )
            return head, base

    def legacy_events(
        self, scope: str, name: str, after_seq: int, limit: int
    ) -> list[tuple[int, int, bytes]]:
        with self._locked(exclusive=False):
            path, index = self._legacy_log(scope, name)
            if index is None:
                return []
            first = max(after_seq + 1, index.first) - index.first
            picked = range(first, min(len(index.offs), first + limit))
            with self._open(path) as f:
                return [(index.first + k, index.stamps[k],
                         _read_at(f, index.offs[k], index.lens[k])) for k in picked]  # fmt: skip

    def drop_legacy_events(self) -> None:
        """``.events`` goes to the trash in one rename (a link there: the link goes); a
        store of format 2 is then marked format 3."""
        self._drop_legacy(LEGACY_EVENTS, 2)

    # -- logs ----------------------------------------------------------------------------------

    def _log_path(self, kind: str, scope: str, name: str) -> str:
        return os.path.join(self._root, kind, escape_name(scope), escape_name(name))

    def _index(self, path: str, kind: type[_L], name: str) -> _L | None:
        """The index of log `path` of `name` (None if there is none), reading only what
        is new."""
        cached = self._logs.pop(path, None)
        try:
            self._inside(os.path.dirname(path))
            f = self._open(path)
        except FileNotFoundError:
            return None
        with f:
            try:
                magic, nonce, header = f.readline(TAIL).rstrip(b"\n").split(b" ", 2)
                if magic != kind.MAGIC:
                    raise ValueError(f"not a {kind.MAGIC.decode()} log")
                index = cached if isinstance(cached, kind) and cached.nonce == nonce else None
                size = os.fstat(f.fileno()).st_size
                if index is None or index.end > size:
                    label = json.loads(header)
                    if not isinstance(label, str):
                        raise ValueError("no name")
                    index = kind(nonce, label, f.tell())
                for offset, payload in _batches(f, index.end, size):
                    index.apply(offset, payload)
                    index.end = offset + len(payload)
            except (ValueError, TypeError, OverflowError, RecursionError) as exc:
                raise CorruptData(f"{path} is damaged: {exc}", engine=self.engine) from None
        if index.name != name:
            raise CorruptData(f"{path} holds another log, {index.name!r}", engine=self.engine)
        if len(self._logs) >= LOGS_CACHED:
            del self._logs[next(iter(self._logs))]
        self._logs[path] = index
        return index

    def _write_log(self, path: str, kind: type[_L], name: str, payloads: Iterable[bytes]) -> None:
        """Write log `path` anew (a new nonce), in one rename."""
        self._logs.pop(path, None)
        label = json.dumps(name, ensure_ascii=False).encode()
        self._inside(os.path.dirname(path), create=True)
        tmp = self._stage(
            b"%s %s %s\n" % (kind.MAGIC, secrets.token_hex(8).encode(), label), sync=False
        )
        try:
            with self._open(tmp, "ab") as f:
                for payload in payloads:
                    f.write(_batch(payload))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise
        if self._full:
            _fsync(os.path.dirname(path), directory=True)

    def _append(self, path: str, kind: type[_L], name: str, payload: bytes,
                index: _L | None) -> None:  # fmt: skip
        """Append one batch to log `path` (created if `index` is None); rewrite the log
        if half of it is dead."""
        if index is None:
            self._write_log(path, kind, name, (payload,))
        else:
            with self._open(path, "r+b") as f:
                f.truncate(index.end)  # a batch torn by a crash goes
                f.seek(index.end)
                f.write(_batch(payload))
                f.flush()
                os.fsync(f.fileno())
        index = self._index(path, kind, name)
        if index is None:
            raise BackendError(f"{path} vanished while written", engine=self.engine)
        if index.dead > max(REWRITE_MIN, index.end // 2):
            with self._open(path) as f:
                self._write_log(path, kind, name, _parts(index.entries(f)))

    def _drop_log(self, path: str) -> bool:
        self._logs.pop(path, None)
        try:
            self._inside(os.path.dirname(path))  # the link at `path` itself goes, harmless
            os.unlink(path)
        except FileNotFoundError:
            return False
        if self._full:
            _fsync(os.path.dirname(path), directory=True)
        return True

    def _names_in(self, directory: str, kind: type[_Log]) -> list[str]:
        """Sorted names of the logs of `kind` in `directory` (lock held): the name on a
        file's first line, if it is that file's name. Links and other files are passed by
        (reading the log itself reports a link)."""
        names = []
        try:
            if not self._inside(directory):
                return []
            with os.scandir(directory) as entries:
                files = [e.name for e in entries if e.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        for file in files:
            try:
                with self._open(os.path.join(directory, file)) as f:
                    found, _, label = f.readline(TAIL).rstrip(b"\n").split(b" ", 2)
                name = json.loads(label)
                if found == kind.MAGIC and isinstance(name, str) and escape_name(name) == file:
                    names.append(name)
            except (FileNotFoundError, ValueError, RecursionError, CorruptData):
                continue  # gone, foreign, a lone surrogate (no name) or a link meanwhile
        return sorted(names)

    # -- time series ---------------------------------------------------------------------------

    def series_put(self, scope: str, name: str, points: Sequence[tuple[int, bytes]]) -> None:
        if not points:
            return
        payload = b"".join(b"p %d %d\n%s\n" % (t, len(value), value) for t, value in points)
        path = self._log_path(SERIES, scope, name)
        with self._locked(exclusive=True):
            self._append(path, _Series, name, payload, self._index(path, _Series, name))

    def series_range(self, scope: str, name: str, start: int | None, stop: int | None,
                     limit: int, *, reverse: bool = False, values: bool = True,
                     ) -> list[tuple[int, bytes]]:  # fmt: skip
        path = self._log_path(SERIES, scope, name)
        with self._locked(exclusive=False):
            index = self._index(path, _Series, name)
            if index is None:
                return []
            i, j = index.span(start, stop)
            picked = (
                range(j - 1, max(i, j - limit) - 1, -1) if reverse else range(i, min(j, i + limit))
            )
            if not values:
                return [(index.ts[k], b"") for k in picked]
            with self._open(path) as f:
                return [(index.ts[k], _read_at(f, index.offs[k], index.lens[k])) for k in picked]

    def series_remove(self, scope: str, name: str, start: int | None, stop: int | None) -> int:
        path = self._log_path(SERIES, scope, name)
        with self._locked(exclusive=True):
            index = self._index(path, _Series, name)
            if index is None:
                return 0
            i, j = index.span(start, stop)
            if j - i == len(index.ts):
                self._drop_log(path)  # no point left: no file
            elif j > i:
                self._append(path, _Series, name, b"r %s %s\n" % (_bound(start), _bound(stop)),
                             index)  # fmt: skip
            return j - i

    def series_count(self, scope: str, name: str) -> int:
        path = self._log_path(SERIES, scope, name)
        with self._locked(exclusive=False):
            index = self._index(path, _Series, name)
            return 0 if index is None else len(index.ts)

    def series_names(self, scope: str) -> list[str]:
        with self._locked(exclusive=False):
            return self._names_in(os.path.join(self._root, SERIES, escape_name(scope)), _Series)

    def series_reseal(
        self, scope: str, name: str, points: Sequence[tuple[int, bytes, bytes]]
    ) -> int:
        """One batch of the replaced points, appended (as series_put)."""
        path = self._log_path(SERIES, scope, name)
        with self._locked(exclusive=True):
            index = self._index(path, _Series, name)
            if index is None or not points:
                return 0
            hits = []
            with self._open(path) as f:
                for t, old, new in points:
                    k = bisect_left(index.ts, t)
                    if (k < len(index.ts) and index.ts[k] == t and index.lens[k] == len(old)
                            and _read_at(f, index.offs[k], len(old)) == old):  # fmt: skip
                        hits.append(b"p %d %d\n%s\n" % (t, len(new), new))
            if hits:
                self._append(path, _Series, name, b"".join(hits), index)
            return len(hits)
