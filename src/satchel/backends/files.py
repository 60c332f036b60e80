"""``file:///dir``: one plain file per record under a directory (POSIX).

    dir/.satchel          marker: {"application": "satchel", "engine": "files", "format": 1}
    dir/.lock             the store's flock; its first 8 bytes count exclusive sections
    dir/.journal          a batch being applied (or whose writer died)
    dir/.tmp/             temp files (w-*) and cleared scopes (trash-*)
    dir/<scope>/<key>     one file per record (.scope: the name of a hashed scope)

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

Costs: `scan` lists and sorts the whole scope directory, kept until the next write to
the store (the counter in ``.lock``), so paging through ``keys()`` lists once. `count`,
`scopes` and `purge_expired` read each record's last line. Use a local file system.
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
import threading
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from ..errors import (
    BackendError,
    BackendUnavailable,
    CorruptData,
    IncompatibleDatabase,
    InvalidInput,
)
from .base import CREATED_AT_TOLERANCE, Backend, Modifier, Record

FORMAT = 1
MARKER, LOCK, JOURNAL, TMP, SCOPE_NAME = ".satchel", ".lock", ".journal", ".tmp", ".scope"
MARKER_CONTENT = {"application": "satchel", "engine": "files", "format": FORMAT}
NAME_LIMIT = 200  # characters of an escaped name (file systems allow 255 bytes)
HASHED_PREFIX = 120  # escaped characters kept in front of a hashed name
TAIL = 16384  # bytes read from a record's end for its metadata: the longest line fits
LISTINGS_CACHED = 4  # sorted scope listings kept per open store

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-.")
_ESCAPED = [chr(b) if b in _SAFE else f"%{b:02x}" for b in range(256)]
_PLAIN = re.compile(r"[a-z0-9_-](?:[a-z0-9_.-]*[a-z0-9_-])?")  # its own file name
_DEVICE = re.compile(r"(?:con|prn|aux|nul|com[0-9]|lpt[0-9])(?:\.|$)")  # reserved on Windows
_OURS = frozenset((MARKER, LOCK, JOURNAL, TMP))
_JOURNAL_STEP = re.compile(r"(?:\.tmp/w-[0-9a-f]+)?\n[^./][^/]*/[^./][^/]*")
_KEY = itemgetter(0)
ANY = 0  # for _put: write whatever the version (versions start at 1)
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
    meta = json.dumps({name: getattr(record, name) for name in META}, ensure_ascii=False)
    return b"\n" + meta.encode() + b"\n"


def _parse(path: str, data: bytes, values: bool) -> Record:
    end = len(data) - 1
    sep = data.rfind(b"\n", 0, end)
    try:
        if sep < 0 or data[end] != 0x0A:
            raise ValueError("no metadata line")
        key, created, updated, expires, version = map(json.loads(data[sep + 1 : end]).get, META)
        if not isinstance(key, str) or not isinstance(version, int):
            raise TypeError("no key or version")
        expires = None if expires is None else float(expires)
        record = Record(key, b"", float(created), float(updated), expires, version)
    except (ValueError, TypeError, AttributeError) as exc:
        raise CorruptData(f"{path} is not a satchel record ({exc})") from None
    if values:
        record.value = data[:sep]
    return record


def _fsync(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


class FilesBackend(Backend):
    """A satchel store in a directory of plain files. The directory is created if missing
    (its parent must exist); a non-empty directory that is no store is refused."""

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "normal") -> None:
        if durability not in ("normal", "full"):
            raise InvalidInput(f"durability must be 'normal' or 'full', not {durability!r}")
        self.path = Path(path).expanduser().absolute()
        self.engine = f"file://{self.path}"
        self._root = str(self.path)
        self._tmp = os.path.join(self._root, TMP)
        self._journal = os.path.join(self._root, JOURNAL)
        self._full = durability == "full"
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._listings: dict[str, tuple[int, list[tuple[str, str]]]] = {}
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
                    if os.path.exists(self._journal):
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
        self._fd = os.open(os.path.join(self._root, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        return self._fd

    @staticmethod
    def _generation(fd: int) -> int:
        return int.from_bytes(os.pread(fd, 8, 0).ljust(8, b"\0"), "big")

    def _bump(self, fd: int) -> None:
        os.pwrite(fd, ((self._generation(fd) + 1) % 2**64).to_bytes(8, "big"), 0)

    def _error(self, exc: OSError) -> BackendError:
        where, engine = exc.filename or self._root, self.engine
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

    def _prepare(self) -> None:
        """Mark the directory as a store (or check the mark); delete what crashes left."""
        os.makedirs(self._tmp, exist_ok=True)
        marker = os.path.join(self._root, MARKER)
        if not os.path.exists(marker):
            os.replace(self._stage(json.dumps(MARKER_CONTENT).encode()), marker)
            _fsync(self._root, directory=True)
        with open(marker, "rb") as f:
            try:
                found = json.loads(f.read())
                version = found["format"] if found["application"] == "satchel" else None
            except (ValueError, KeyError, TypeError):
                version = None
        if type(version) is not int or version > FORMAT:
            what = "is not a satchel marker" if version is None else f"has format {version!r}"
            raise IncompatibleDatabase(
                f"{marker} {what} (this satchel reads {FORMAT})", engine=self.engine
            )
        for name in os.listdir(self._tmp):  # nobody writes there without the lock we hold
            if name.startswith("w-"):
                with suppress(FileNotFoundError):
                    os.unlink(os.path.join(self._tmp, name))
            elif name.startswith("trash-"):
                shutil.rmtree(os.path.join(self._tmp, name), ignore_errors=True)

    def _recover(self, fd: int) -> None:
        """Roll forward the batch of a writer that died after its commit point."""
        self._bump(fd)
        try:
            with open(self._journal, "rb") as f:
                plan = json.loads(f.read())
            if not all(_JOURNAL_STEP.fullmatch(f"{tmp or ''}\n{path}") for tmp, path in plan):
                raise ValueError("a step leaves the store")
        except FileNotFoundError:
            return  # another process recovered it while we waited for the lock
        except (ValueError, TypeError) as exc:
            raise CorruptData(f"{self._journal} is damaged: {exc}", engine=self.engine) from None
        root = self._root
        self._finish([(tmp and os.path.join(root, tmp), os.path.join(root, p)) for tmp, p in plan])

    # -- records -----------------------------------------------------------------------------

    def _dir(self, scope: str, create: bool = False) -> str:
        name = escape_name(scope)
        path = os.path.join(self._root, name)
        if create:
            with suppress(FileExistsError):
                os.mkdir(path)
            if "~" in name:  # a hashed name: the directory keeps the scope's full name
                label = self._label(path)
                if label is None:
                    os.replace(self._stage(scope.encode()), os.path.join(path, SCOPE_NAME))
                elif label != scope:
                    raise CorruptData(f"{path} belongs to scope {label!r}", engine=self.engine)
        return path

    @staticmethod
    def _label(path: str) -> str | None:
        try:
            with open(os.path.join(path, SCOPE_NAME), "rb") as f:
                return f.read().decode()
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    def _load(self, path: str, values: bool = True, key: str | None = None) -> Record | None:
        """The record in `path`, live or not, or None; with `key`, it must hold that key."""
        try:
            with open(path, "rb") as f:
                if not values:
                    f.seek(max(0, os.fstat(f.fileno()).st_size - TAIL))
                data = f.read()
        except FileNotFoundError:
            return None
        record = _parse(path, data, values)
        if key is not None and record.key != key:
            raise CorruptData(f"{path} holds another key, {record.key!r}", engine=self.engine)
        return record

    def _stage(self, *chunks: bytes, sync: bool = True) -> str:
        """Write `chunks` to a new temp file (fsynced if `sync`); return its path."""
        tmp = os.path.join(self._tmp, f"w-{secrets.token_hex(8)}")
        try:
            with open(tmp, "xb") as f:
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

    def _listing(self, scope: str, fd: int) -> list[tuple[str, str]]:
        """(key, file name) of every record of `scope`, sorted; listed once per write."""
        generation = self._generation(fd)
        cached = self._listings.get(scope)
        if cached is not None and cached[0] == generation:
            return cached[1]
        directory = self._dir(scope)
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
                if entry.name.startswith(".") or not entry.is_dir():
                    continue
                scope = unescape_name(entry.name)
                if scope is None and "~" in entry.name:
                    scope = self._label(entry.path)
                if scope is not None and escape_name(scope) == entry.name:
                    names.append(scope)
        return names

    # -- primitives --------------------------------------------------------------------------

    def get_many(self, scope: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        directory = self._dir(scope)
        found = {}
        with self._locked(exclusive=False):
            for key in keys:
                record = _live(self._load(os.path.join(directory, escape_name(key)), key=key), now)
                if record is not None:
                    found[key] = record
        return found

    def _put(self, scope: str, items: Sequence[tuple[str, bytes]], expires: float | None,
             now: float, only: int | None, born: float | None = None,
             ) -> tuple[int, int]:  # fmt: skip
        """Write `items` as one change (lock held): each only if its live version is `only`
        (None: no live record; ANY: whatever) and, with `born`, it was created then.
        Return (how many written, how many new)."""
        directory = self._dir(scope)
        steps: list[Step] = []
        new = 0
        try:
            for key, value in items:
                path = os.path.join(directory, escape_name(key))
                old = _live(self._load(path, values=False, key=key), now)
                if only != ANY and (None if old is None else old.version) != only:
                    continue
                if born is not None and old and abs(old.created_at - born) > CREATED_AT_TOLERANCE:
                    continue
                new += old is None
                created, version = (now, 1) if old is None else (old.created_at, old.version + 1)
                record = Record(key, value, created, now, expires, version)
                steps.append((self._stage(value, _meta_line(record), sync=False), path))
        except BaseException:
            for tmp, _ in steps:
                with suppress(OSError):
                    os.unlink(str(tmp))
            raise
        if steps:
            self._dir(scope, create=True)
            self._commit(steps)
        return len(steps), new

    def put(self, scope: str, key: str, value: bytes, expires_at: float | None, now: float,
            if_absent: bool) -> bool:  # fmt: skip
        with self._locked(exclusive=True):
            only = None if if_absent else ANY
            return self._put(scope, ((key, value),), expires_at, now, only)[1] == 1

    def put_many(self, scope: str, items: Sequence[tuple[str, bytes]],
                 expires_at: float | None, now: float, if_absent: bool) -> int:  # fmt: skip
        with self._locked(exclusive=True):
            return self._put(scope, items, expires_at, now, None if if_absent else ANY)[0]

    def delete_many(self, scope: str, keys: Sequence[str], now: float) -> int:
        directory = self._dir(scope)
        with self._locked(exclusive=True):
            steps: list[Step] = []
            live = 0
            for key in keys:
                path = os.path.join(directory, escape_name(key))
                record = self._load(path, values=False, key=key)
                if record is not None:  # an expired record goes too, uncounted
                    steps.append((None, path))
                    live += _live(record, now) is not None
            self._commit(steps)
            return live

    def pop(
        self, scope: str, key: str, now: float, decode: Callable[[bytes], Any]
    ) -> tuple[Any] | None:
        path = os.path.join(self._dir(scope), escape_name(key))
        with self._locked(exclusive=True):
            record = _live(self._load(path, key=key), now)
            if record is None:
                return None
            value = decode(record.value)  # if it raises, nothing is deleted
            self._commit([(None, path)])
            return (value,)

    def compare_and_set(self, scope: str, key: str, expected_version: int | None, value: bytes,
                        expires_at: float | None, now: float, *,
                        expected_created_at: float | None = None) -> bool:  # fmt: skip
        with self._locked(exclusive=True):
            only, born = expected_version, expected_created_at
            return self._put(scope, ((key, value),), expires_at, now, only, born)[0] == 1

    def modify(self, scope: str, key: str, fn: Modifier, now: float) -> None:
        path = os.path.join(self._dir(scope), escape_name(key))
        with self._locked(exclusive=True):
            value, expires_at = fn(_live(self._load(path, key=key), now))
            self._put(scope, ((key, value),), expires_at, now, ANY)

    def touch(self, scope: str, key: str, expires_at: float | None, now: float) -> bool:
        path = os.path.join(self._dir(scope), escape_name(key))
        with self._locked(exclusive=True):
            record = _live(self._load(path, key=key), now)
            if record is None:
                return False
            record.expires_at = expires_at  # value, version and updated_at stay
            self._commit([(self._stage(record.value, _meta_line(record), sync=False), path)])
            return True

    def scan(self, scope: str, prefix: str, after: str | None, limit: int, now: float,
             values: bool = True) -> list[Record]:  # fmt: skip
        directory = self._dir(scope)
        found: list[Record] = []
        with self._locked(exclusive=False) as fd:
            pairs = self._listing(scope, fd)
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
                for _, name in self._listing(scope, fd):
                    if purged == limit:
                        return purged
                    path = os.path.join(directory, name)
                    with suppress(CorruptData):  # housekeeping: a bad file is reported on read
                        record = self._load(path, values=False)
                        if record is not None and _live(record, now) is None:
                            os.unlink(path)
                            purged += 1
        return purged
