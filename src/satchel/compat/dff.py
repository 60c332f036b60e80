"""DataFlux Func's ``DFF.STORE`` on satchel: change the import, keep the script.

    >>> from satchel.compat import dff as DFF
    >>> DFF.STORE.set("user:user-001", {"name": "User A"}, scope="users")
    True
    >>> DFF.STORE.get("user:user-001", scope="users")
    {'name': 'User A'}

`STORE` keeps its data in the default store (``satchel.open()``: ``$SATCHEL_URL``, else
SQLite in the user data directory), opened at its first use; ``DFFStore(url)`` or
``DFFStore(store=...)`` keeps it elsewhere. A DFF scope is a satchel scope, so
``satchel.open(scope="users")`` reads what ``STORE.set(..., scope="users")`` wrote.

What is DataFlux Func's: the method names and arguments (``expires`` or ``expire`` in
seconds, where 0 or None means never; ``not_exists``); ``get`` returning None for a
missing key; ``mget`` returning None for each missing key; the default scope being the
calling script's name; patterns where ``*`` and ``?`` are the only wildcards (``[``,
``\\``, ``%`` and ``_`` match themselves).

What is satchel's, on purpose: values keep their Python type (a tuple stays a tuple, a
datetime a datetime; DFF stored JSON); an expired key is free at once for
``not_exists=True``; a pattern without a wildcard names one exact key, never a
substring; keys may be up to 1024 UTF-8 bytes (DFF: 256 characters) and every error is
a `satchel.SatchelError`. The methods return what happened (DFF returned None): `set`
whether it wrote a new key, `mset` and the deletes how many keys they wrote or removed.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._store import Store
from .._store import open as open_store

__all__ = ["STORE", "DFFStore"]

# The only pattern characters that are special to satchel but not to DataFlux Func.
_LITERAL = str.maketrans({"\\": "\\\\", "[": "\\["})


def _glob(pattern: str) -> str:
    """A DFF pattern (``*`` and ``?`` are wildcards) as the satchel glob matching the same."""
    return pattern.translate(_LITERAL) if isinstance(pattern, str) else pattern


def _ttl(expires: Any, expire: Any) -> Any:
    """DFF's ``expires or expire``: a falsy value (None, 0) means the value never expires."""
    return expires or expire or None


def _script_name(depth: int) -> str:
    """The name of the module `depth` frames above the caller: DFF's default scope.

    An imported module is named by ``__name__``; a script run directly by the name it
    would be imported under (``python -m pkg.job`` gives "pkg.job", ``python job.py``
    gives "job"), so a script and an import of it share one scope.
    """
    namespace = sys._getframe(depth + 1).f_globals
    name = namespace.get("__name__")
    if isinstance(name, str) and name != "__main__":
        return name
    spec = namespace.get("__spec__")
    if spec is not None and isinstance(getattr(spec, "name", None), str):
        return str(spec.name)
    path = namespace.get("__file__")
    if isinstance(path, str) and path:
        return Path(path).stem
    return "__main__"


class DFFStore:
    """An object with the methods of DataFlux Func's ``DFF.STORE``, backed by a satchel store.

    `url` (or ``$SATCHEL_URL``, or the default SQLite file) is opened at first use with
    `options` (``codec=``, engine options); or give an open `store` to share it (then
    `close` leaves it open). `scope` replaces the default scope, the caller's script name.
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        store: Store | None = None,
        scope: str | None = None,
        **options: Any,
    ) -> None:
        if store is not None and (url is not None or options):
            raise TypeError("give either a url (and options) or an open store, not both")
        self._url = url
        self._options = options
        self._given = store
        self._opened: Store | None = None
        self._lock = threading.Lock()
        self._default_scope = scope

    def _base(self) -> Store:
        if self._given is not None:
            return self._given
        store = self._opened
        if store is None:
            with self._lock:
                if self._opened is None:
                    self._opened = open_store(self._url, **self._options)
                store = self._opened
        return store

    def _view(self, scope: str | None) -> Store:
        """The Store for `scope`; must be called straight from a public method."""
        if scope is None:
            scope = self._default_scope or _script_name(2)
        return self._base().scope(scope)

    # -- the DFF.STORE methods --------------------------------------------------------------

    def set(
        self,
        key: str,
        value: Any,
        expires: float | None = None,
        not_exists: bool = False,
        expire: float | None = None,
        scope: str | None = None,
    ) -> bool:
        """Store `value` under `key`; return True if the key had no live value.

        `expires` (or `expire`) is seconds to live, None or 0 for ever. With
        ``not_exists=True`` nothing is written if the key has a live value (and False is
        returned). Raises UnsupportedValue (a TypeError) for a value of an unsupported type.
        """
        return self._view(scope).set(key, value, ttl=_ttl(expires, expire), if_absent=not_exists)

    def mset(
        self,
        key_values: Mapping[str, Any],
        expires: float | None = None,
        not_exists: bool = False,
        expire: float | None = None,
        scope: str | None = None,
    ) -> int:
        """Store every pair of `key_values` in one atomic batch; return how many were written.

        ``not_exists=True`` skips the keys that have a live value.
        """
        return self._view(scope).set_many(
            key_values, ttl=_ttl(expires, expire), if_absent=not_exists
        )

    def keys(self, pattern: str = "*", scope: str | None = None) -> list[str]:
        """The keys matching `pattern` (``*``: any run of characters, ``?``: one), sorted."""
        return list(self._view(scope).keys(_glob(pattern)))

    def get(self, key: str, scope: str | None = None) -> Any:
        """The value of `key`, or None if it has no live value."""
        return self._view(scope).get(key, None)

    def __call__(self, key: str, scope: str | None = None) -> Any:
        """``STORE(key)`` is ``STORE.get(key)``, as in DataFlux Func."""
        return self._view(scope).get(key, None)

    def mget(self, keys: Iterable[str] | str, scope: str | None = None) -> dict[str, Any]:
        """``{key: value}`` for every key asked for, None for those without a live value."""
        wanted = [keys] if isinstance(keys, str) else list(keys)
        found = self._view(scope).get_many(wanted)
        return {key: found.get(key) for key in wanted}

    def getall(self, scope: str | None = None) -> dict[str, Any]:
        """``{key: value}`` for every live key of the scope, sorted by key."""
        return dict(self._view(scope).items())

    def get_pattern(self, pattern: str = "*", scope: str | None = None) -> dict[str, Any]:
        """``{key: value}`` for the keys matching `pattern`, sorted by key."""
        return dict(self._view(scope).items(_glob(pattern)))

    def delete(self, key: str, scope: str | None = None) -> bool:
        """Delete `key`; return False if it had no live value."""
        return self._view(scope).delete(key)

    def delete_pattern(self, pattern: str = "*", scope: str | None = None) -> int:
        """Delete the keys matching `pattern`; return how many."""
        return self._view(scope).delete_matching(_glob(pattern))

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the store this object opened (the next call opens it again).

        A store given as ``store=`` is left open: it belongs to whoever opened it.
        """
        with self._lock:
            store, self._opened = self._opened, None
        if store is not None:
            store.close()

    def __repr__(self) -> str:
        store = self._given if self._given is not None else self._opened
        where = "(not opened yet)" if store is None else store.url
        return f"<satchel.compat.dff.DFFStore {where}>"


STORE = DFFStore()
"""``DFF.STORE``: the default store, opened at first use."""
