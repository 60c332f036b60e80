"""rlib-store's ``Store`` on satchel: key/values, time series and event sequences.

    >>> import operator
    >>> from satchel.compat.rstore import Store
    >>> with Store("", frozen=False) as es:
    ...     es.apply("some_dict", {"item": 1})
    ...     es.apply("some_dict", {"item": (operator.add, 1)})
    ...     es.current("some_dict")
    {'item': 2}

DSNs: ``postgresql://...``, ``redis://...``, ``sqlite://datafile.db`` (rlib-store's
relative form, as well as satchel's ``sqlite:///path``), any other satchel URL, and ``""``
for a private in-memory store. `namespace` is the satchel scope; `key` turns on
encryption (satchel's AES-256-GCM: 32 raw bytes, or a passphrase); ``frozen=True`` (the
default, as in rlib-store) opens the store read-only.

What is rlib-store's: the names and arguments, the dict protocol, the context manager,
events as ``(timestamp, item, op, value)`` with `op` an `operator` function.

What is satchel's, on purpose: values are stored with satchel's typed codec, never
pickled, so they keep their built-in types but arbitrary objects are refused (subclass
and override `_dump`/`_load` as in rlib-store, or pass ``codec="pickle"`` if you trust
every writer); an op is stored by name, so only the ops in `OPERATORS` are accepted;
`get` returns None for a missing key, ``s[k]`` raises KeyError.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from .._errors import InvalidInput
from .._events import Events
from .._store import Store as SatchelStore
from .._store import open as open_store

__all__ = ["OPERATORS", "Store"]

# rlib-store's operator functions and the op names satchel stores in their place.
OPERATORS: dict[Callable[..., Any], str] = {
    operator.setitem: "set",
    operator.delitem: "delete",
    operator.add: "add",
    operator.iadd: "add",
    operator.sub: "sub",
    operator.isub: "sub",
    operator.mul: "mul",
    operator.imul: "mul",
    operator.concat: "extend",
    operator.or_: "union",
    max: "max",
    min: "min",
}
_FUNCTIONS = {name: fn for fn, name in reversed(OPERATORS.items())}
_FUNCTIONS.update({"append": list.append, "merge": dict.update, "difference": operator.sub})


def _url(dsn: str) -> str:
    if not dsn:
        return "memory://"
    if dsn.startswith("sqlite://") and not dsn.startswith("sqlite:///"):
        return "sqlite:///" + dsn[len("sqlite://") :]  # rlib-store's relative path
    return dsn


def _change(change: Any) -> Any:
    """An rlib-store change (value, ``(op,)`` or ``(op, value)``) as a satchel one."""
    if isinstance(change, tuple) and change and callable(change[0]):
        op, *args = change
        name = OPERATORS.get(op)
        if name is None:
            names = ", ".join(sorted(set(OPERATORS.values())))
            raise InvalidInput(f"operator {op!r} cannot be stored; ops stored by name: {names}")
        if name == "delete":
            return ("delete",)
        return (name, *args[:1])
    return change


class Store:
    """An rlib-store style store (see the module docstring)."""

    def __init__(
        self,
        dsn: str = "",
        namespace: str = "default",
        key: bytes | str | None = None,
        frozen: bool = True,
        **options: Any,
    ) -> None:
        self._store: SatchelStore = open_store(
            _url(dsn), scope=namespace, encryption_key=key, readonly=frozen, **options
        )

    # -- key/value ----------------------------------------------------------------------

    def set(self, key: str, value: Any) -> None:
        """Store `value` under `key`."""
        self._store.set(key, value)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of `key`, or `default` when missing."""
        return self._store.get(key, default)

    def delete(self, key: str) -> bool:
        """Delete `key`; False if it was not there."""
        return self._store.delete(key)

    def has(self, key: str) -> bool:
        """True if `key` has a value."""
        return self._store.exists(key)

    def keys(self, pattern: str = "*") -> list[str]:
        """The keys of the namespace matching the glob `pattern`, sorted."""
        return list(self._store.keys(pattern))

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._store[key] = value

    def __delitem__(self, key: str) -> None:
        del self._store[key]

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __len__(self) -> int:
        return len(self._store)

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    # -- time series ----------------------------------------------------------------------

    def extend(self, name: str, *points: tuple[int, Any]) -> None:
        """Add the ``(timestamp, value)`` points to series `name`."""
        self._store.series(name).extend(points)

    def range(
        self, name: str, start: int | None = None, end: int | None = None
    ) -> list[tuple[int, Any]]:
        """The points of series `name` with ``start <= t < end``, by time."""
        return list(self._store.series(name).range(start, end))

    def first(self, name: str) -> tuple[int, Any] | None:
        """The earliest point of series `name`, or None."""
        return self._store.series(name).first()

    def last(self, name: str) -> tuple[int, Any] | None:
        """The latest point of series `name`, or None."""
        return self._store.series(name).last()

    def missing(self, name: str, start: int, end: int, step: int) -> list[int]:
        """The timestamps ``start, start+step, ... < end`` with no point in series `name`."""
        return self._store.series(name).missing(start, end, step)

    def iscomplete(self, name: str, start: int, end: int, step: int) -> bool:
        """True if series `name` has a point at every ``start, start+step, ... < end``."""
        return self._store.series(name).is_complete(start, end, step)

    def remove(self, name: str, start: int | None = None, end: int | None = None) -> int:
        """Delete the points of series `name` with ``start <= t < end``; return how many."""
        return self._store.series(name).remove(start, end)

    def timeseries(self, pattern: str = "*") -> list[str]:
        """The names of the namespace's time series."""
        return self._store.series_names(pattern)

    # -- event sequences --------------------------------------------------------------------

    def _events(self, name: str) -> Events:
        return self._store.events(name)

    def apply(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Record `changes` (value, ``(op, value)`` or ``(operator.delitem,)`` per item) on
        sequence `name`; return the new state."""
        return self._events(name).apply({item: _change(c) for item, c in changes.items()})

    def current(self, name: str) -> dict[str, Any]:
        """The current state of sequence `name`."""
        return self._events(name).current()

    def past(self, name: str, timestamp: int) -> dict[str, Any]:
        """The state of sequence `name` at `timestamp` (ms)."""
        return self._events(name).at(timestamp)

    def events(
        self, name: str, start: int | None = None, end: int | None = None
    ) -> list[tuple[int, Any, Callable[..., Any], Any]]:
        """The events of sequence `name` as ``(timestamp, item, op function, value)``."""
        return [(e.timestamp_ms, e.item, _FUNCTIONS[e.op], e.value)
                for e in self._events(name).history(start, end)]  # fmt: skip

    def prune(self, name: str, timestamp: int | None = None, remove: bool = False) -> int:
        """Fold the events of `name` before `timestamp` (None: all) into a snapshot; with
        ``remove=True`` delete the sequence. Return how many events went."""
        events = self._events(name)
        if remove:
            count = len(events)
            events.delete()
            return count
        return events.compact(timestamp)

    def eventsources(self, pattern: str = "*") -> list[str]:
        """The names of the namespace's event sequences."""
        return self._store.event_names(pattern)

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the store."""
        self._store.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        store = self._store
        return f"<satchel.compat.rstore.Store {store.url} namespace={store.scope_name!r}>"
