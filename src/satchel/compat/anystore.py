"""anystore's ``get_store`` on satchel: one URI picks the engine, values keep their type.

    >>> from satchel.compat.anystore import get_store
    >>> store = get_store("memory://")
    >>> store.put("topic/maths", 100)
    >>> [key for key in store.iterate_keys(prefix="topic")]
    ['topic/maths']
    >>> with store.open("report.csv", "wb") as fh:
    ...     fh.write(b"a,b\\n")

URIs: ``memory://`` (private to this store), a directory path or ``file://`` URI (the
files engine), ``redis://``/``rediss://``, ``sqlite:///file.db``, ``postgresql://...``
(SQLAlchemy driver suffixes such as ``+psycopg`` are dropped), or None for satchel's
default store. Other keyword arguments go to `satchel.open` (``scope=``,
``encryption_key=``, ...).

What is anystore's: the names, `get`/`pop` raising `DoesNotExist` unless
``raise_on_nonexist=False`` (then None), `stream` yielding lines, `open` for file-like
reads and writes, `info` with ``size``, ``created_at``, ``updated_at``.

What is satchel's, on purpose: values keep their exact type (anystore guesses from the
content: here a str stays a str, an int an int, bytes stay bytes); `stream` and `open`
read bytes values (what `open(key, "wb")` and ``put(key, b"...")`` store); keys are
satchel keys (any non-empty str, `/` has no special meaning); `DoesNotExist` is a
`satchel.KeyNotFound`, hence a KeyError.
"""

from __future__ import annotations

import datetime as dt
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._blobs import BlobWriter
from .._errors import KeyNotFound
from .._keys import compile_pattern, escape_glob
from .._store import Store
from .._store import open as open_store

__all__ = ["AnyStore", "DoesNotExist", "Stats", "get_store"]


class DoesNotExist(KeyNotFound):
    """The key has no value (anystore's exception; also a satchel KeyNotFound/KeyError)."""


@dataclass(frozen=True, slots=True)
class Stats:
    """What `AnyStore.info` tells about a key."""

    key: str
    name: str  # the last path segment of the key, as in anystore
    store: str
    size: int
    created_at: dt.datetime
    updated_at: dt.datetime
    checksum: str


def _engine_url(uri: str | os.PathLike[str] | None) -> str | None:
    if uri is None:
        return None
    text = os.fspath(uri)
    if "://" not in text:  # a local directory, as anystore's default file store
        return Path(text).expanduser().absolute().as_uri()
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower().split("+", 1)[0]  # postgresql+psycopg -> postgresql
    return f"{scheme}://{rest}"


class AnyStore:
    """An anystore-style store over a `satchel.Store` (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.uri = store.url

    def put(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store `value` under `key`, replacing any value."""
        self.store.set(key, value, ttl=ttl)

    def get(self, key: str, raise_on_nonexist: bool = True) -> Any:
        """The value of `key`; DoesNotExist if missing (None with raise_on_nonexist=False)."""
        return self._or_missing(key, raise_on_nonexist, self.store.get)

    def pop(self, key: str, raise_on_nonexist: bool = True) -> Any:
        """Delete `key` and return its value (like Redis GETDEL)."""
        return self._or_missing(key, raise_on_nonexist, self.store.pop)

    def _or_missing(self, key: str, raise_on_nonexist: bool, read: Any) -> Any:
        try:
            return read(key)
        except KeyNotFound as exc:
            if not raise_on_nonexist:
                return None
            raise DoesNotExist(exc.message, key=exc.key, scope=exc.scope,
                               engine=exc.engine) from None  # fmt: skip

    def delete(self, key: str, ignore_errors: bool = False) -> None:
        """Delete `key`; DoesNotExist if it was not there, unless `ignore_errors`."""
        if not self.store.delete(key) and not ignore_errors:
            raise DoesNotExist("key not found", key=key, scope=self.store.scope_name,
                               engine=self.store.url)  # fmt: skip

    def exists(self, key: str) -> bool:
        """True if `key` has a value."""
        return self.store.exists(key)

    def stream(self, key: str, raise_on_nonexist: bool = True) -> Iterator[bytes]:
        """Yield the lines of the bytes value of `key`, one at a time."""
        try:
            return self.store.stream_lines(key)
        except KeyNotFound:
            if not raise_on_nonexist:
                return iter(())
            raise DoesNotExist("key not found", key=key, scope=self.store.scope_name,
                               engine=self.store.url) from None  # fmt: skip

    def open(self, key: str, mode: str = "rb") -> io.BufferedReader | BlobWriter:
        """A binary file object over the value of `key` ("rb" or "wb")."""
        try:
            return self.store.open_blob(key, mode)
        except KeyNotFound:
            raise DoesNotExist("key not found", key=key, scope=self.store.scope_name,
                               engine=self.store.url) from None  # fmt: skip

    def iterate_keys(
        self, prefix: str | None = None, exclude_prefix: str | None = None, glob: str | None = None
    ) -> Iterator[str]:
        """Yield the keys, sorted, that start with `prefix`, do not start with
        `exclude_prefix` and match the glob `glob` (all optional)."""
        pattern = "*" if prefix is None else escape_glob(prefix) + "*"
        matcher = None if glob is None else compile_pattern(glob)
        for key in self.store.keys(pattern):
            if exclude_prefix is not None and key.startswith(exclude_prefix):
                continue
            if matcher is None or matcher.matches(key):
                yield key

    def info(self, key: str) -> Stats:
        """Size, times and checksum of the value of `key`; DoesNotExist if missing."""
        try:
            found = self.store.info(key)
        except KeyNotFound:
            raise DoesNotExist("key not found", key=key, scope=self.store.scope_name,
                               engine=self.store.url) from None  # fmt: skip
        return Stats(key=key, name=key.rsplit("/", 1)[-1], store=self.uri, size=found.size,
                     created_at=found.created_at, updated_at=found.updated_at,
                     checksum=found.checksum)  # fmt: skip

    def close(self) -> None:
        """Close the underlying store."""
        self.store.close()

    def __enter__(self) -> AnyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def get_store(uri: str | os.PathLike[str] | None = None, **options: Any) -> AnyStore:
    """Open the store `uri` names (see the module docstring) as an AnyStore."""
    return AnyStore(open_store(_engine_url(uri), **options))
