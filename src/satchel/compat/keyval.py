"""django-keyval's ``KeyVal`` on satchel: named stores without Django.

    >>> from satchel.compat.keyval import KeyVal
    >>> kv = KeyVal("store_name_1")
    >>> kv.set("key1", "value1")
    True
    >>> kv.get("key1")
    'value1'
    >>> kv.disconnect()             # any further use raises NameError

A KeyVal keeps its data in the default store (``satchel.open()``: ``$SATCHEL_URL``, else
SQLite in the user data directory) or in the store `url` names, in the scope
``"keyval:" + store_name``. The prefix keeps KeyVal's names apart from every other scope
of that store, so `KeyVal.flush_all` deletes what KeyVal stores, not the rest of the
database.

What is django-keyval's: the names and return values (`set` True for a new key, `get` and
`pop` raising KeyError, `delete` raising KeyError unless ``ignore_keyerror=True``),
`flush_all` on the class or an instance, `NameError` after `disconnect`.

What is satchel's, on purpose: values keep their type with satchel's default codec,
which stores the built-in types (None, bool, int, float, str, bytes, containers,
datetimes, Decimal, UUID) but not arbitrary objects: pass ``codec="pickle"`` to store
anything picklable, as django-keyval did (only if nobody you do not trust can write to
the store). Keys are non-empty str of at most 1024 UTF-8 bytes; store names may be empty
and are at most 248 UTF-8 bytes. Every error is a `satchel.SatchelError` (KeyNotFound is
a KeyError; Disconnected is a NameError).
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from .._errors import InvalidInput, InvalidInputType, KeyNotFound, StoreClosed
from .._store import Store
from .._store import open as open_store

__all__ = ["SCOPE_PREFIX", "Disconnected", "KeyVal"]

SCOPE_PREFIX = "keyval:"


class Disconnected(StoreClosed, NameError):
    """The KeyVal was disconnected; django-keyval raises NameError here, so this is one."""


class _FlushAll(Protocol):
    def __call__(self, url: str | os.PathLike[str] | None = None, **options: Any) -> None: ...


def _flush_all(store: Store) -> None:
    """Delete every KeyVal store name in the database `store` is connected to."""
    for scope in store.scopes():
        if scope.startswith(SCOPE_PREFIX):
            store.scope(scope).clear()


def _flush_all_at(url: str | os.PathLike[str] | None = None, **options: Any) -> None:
    with open_store(url, **options) as store:
        _flush_all(store)


class _FlushAllMethod:
    """`flush_all` works on the class (the default store, or `url`) and on an instance
    (the database the instance uses, even after `disconnect`), as in django-keyval."""

    def __get__(self, instance: KeyVal | None, owner: type[KeyVal]) -> _FlushAll:
        if instance is None:
            return _flush_all_at
        return instance._flush_all


class KeyVal:
    """A named key-value store; ``KeyVal(name)`` is ``KeyVal.connect(name)``.

    `url` picks the database (default: ``satchel.open()``), opened with `options`
    (``codec="pickle"`` and engine options); or pass an open `store` to share its
    connection (`disconnect` then leaves it open).
    """

    flush_all = _FlushAllMethod()

    def __init__(
        self,
        store_name: str,
        url: str | os.PathLike[str] | None = None,
        *,
        store: Store | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(store_name, str):
            raise InvalidInputType(f"store_name must be a str, not {type(store_name).__name__}")
        if store is not None and (url is not None or options):
            raise TypeError("give either a url (and options) or an open store, not both")
        self._name = store_name
        self._url = url
        self._options = options
        self._owned = store is None
        base = open_store(url, **options) if store is None else store
        try:
            self._store: Store | None = base.scope(SCOPE_PREFIX + store_name)
        except BaseException:
            if self._owned:
                base.close()
            raise
        self._base = base

    @classmethod
    def connect(
        cls,
        store_name: str,
        url: str | os.PathLike[str] | None = None,
        *,
        store: Store | None = None,
        **options: Any,
    ) -> KeyVal:
        """Connect to the store named `store_name`; the same as ``KeyVal(store_name)``."""
        return cls(store_name, url, store=store, **options)

    @property
    def store_name(self) -> str:
        """The name this KeyVal was connected with."""
        return self._name

    def _live(self) -> Store:
        store = self._store
        if store is None:
            raise Disconnected(
                f"KeyVal {self._name!r} is disconnected; connect again to use it",
                scope=SCOPE_PREFIX + self._name,
            )
        return store

    # -- the KeyVal methods -----------------------------------------------------------------

    def set(self, key: str, value: Any) -> bool:
        """Store `value` under `key`: True if the key was new, False if it was overwritten."""
        return self._live().set(key, value)

    def get(self, key: str) -> Any:
        """The value of `key`; raises KeyNotFound (a KeyError) if it has none."""
        return self._live().get(key)

    def get_default(self, key: str, default: Any = None) -> Any:
        """The value of `key`, or `default` if it has none."""
        return self._live().get(key, default)

    def pop(self, key: str) -> Any:
        """Delete `key` and return its value, atomically; KeyNotFound if it has none."""
        return self._live().pop(key)

    def pop_default(self, key: str, default: Any = None) -> Any:
        """Delete `key` and return its value, or return `default` if it has none."""
        return self._live().pop(key, default)

    def exists(self, key: str) -> bool:
        """True if `key` has a value."""
        return self._live().exists(key)

    def delete(self, key: str, ignore_keyerror: bool = False) -> bool:
        """Delete `key`; True if it existed.

        A missing key raises KeyNotFound (a KeyError), or returns False with
        ``ignore_keyerror=True``.
        """
        store = self._live()
        if store.delete(key):
            return True
        if ignore_keyerror:
            return False
        raise KeyNotFound("key not found", key=key, scope=store.scope_name, engine=store.url)

    def flush(self) -> None:
        """Delete every key of this store name (no error when there is none)."""
        self._live().clear()

    def _flush_all(self, url: str | os.PathLike[str] | None = None, **options: Any) -> None:
        if url is not None or options:
            _flush_all_at(url, **options)
        elif self._store is not None or not self._owned:
            _flush_all(self._base)
        else:  # disconnected: reach the same database again, briefly
            _flush_all_at(self._url, **self._options)

    def disconnect(self, store_name: str | None = None) -> None:
        """Prevent further use: every method but `flush_all` then raises NameError.

        Closes the connection this KeyVal opened. `store_name`, if given, must be this
        KeyVal's name (django-keyval documents ``kv.disconnect(store_name)``).
        """
        if store_name is not None and store_name != self._name:
            raise InvalidInput(
                f"this KeyVal is connected to {self._name!r}, not {store_name!r}",
                scope=SCOPE_PREFIX + self._name,
            )
        if self._store is None:
            return
        self._store = None
        if self._owned:
            self._base.close()

    def __repr__(self) -> str:
        state = "disconnected" if self._store is None else self._base.url
        return f"<satchel.compat.keyval.KeyVal {self._name!r} {state}>"
