"""Event sequences: a dict whose every change is kept as an event, replayable to any time.

Each `apply` appends its events and the new state in one atomic engine step that only
succeeds if nobody appended meanwhile (else it re-reads and retries), so concurrent
writers never lose an event and every reader sees one order: ``seq``. Timestamps are
milliseconds and never go back along ``seq`` (two events in one millisecond keep their
order by ``seq``). Operations are stored by name, never as code.
"""

from __future__ import annotations

import decimal
import operator
from collections.abc import Callable, Iterator, Mapping
from time import time
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ._errors import InvalidInput, InvalidInputType, SatchelError
from ._keys import check_key

if TYPE_CHECKING:
    from ._core import Core

PAGE = 1000  # events per round trip when replaying


class Event(NamedTuple):
    """One recorded change: at `timestamp_ms`, `op` applied to `item` with `value`."""

    timestamp_ms: int
    seq: int
    item: Any
    op: str
    value: Any


_MISSING: Any = object()
_NUMBERS = (int, float, decimal.Decimal)


def _number(value: Any, what: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, _NUMBERS):
        raise TypeError(f"{what} is a {type(value).__name__}, not a number")
    return value


def _arith(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def op(current: Any, value: Any) -> Any:
        start = 0 if current is _MISSING else _number(current, "the item")
        return fn(start, _number(value, "the operand"))

    return op


def _extreme(pick: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    return lambda current, value: value if current is _MISSING else pick(current, value)


def _seq(current: Any, kind: type | tuple[type, ...], what: str, empty: Any) -> Any:
    if current is _MISSING:
        return empty
    if not isinstance(current, kind):
        raise TypeError(f"the item is a {type(current).__name__}, not a {what}")
    return current


def _set(current: Any) -> Any:
    return _seq(current, (set, frozenset), "set", frozenset())


# name -> fn(current or _MISSING, operand) -> new value. delete is handled apart.
OPS: dict[str, Callable[[Any, Any], Any]] = {
    "set": lambda current, value: value,
    "add": _arith(operator.add),
    "sub": _arith(operator.sub),
    "mul": _arith(operator.mul),
    "max": _extreme(max),
    "min": _extreme(min),
    "append": lambda current, value: [*_seq(current, list, "list", ()), value],
    "extend": lambda current, value: [*_seq(current, list, "list", ()), *value],
    "union": lambda current, value: _set(current) | set(value) if current is not _MISSING
    else set(value),
    "difference": lambda current, value: set(_set(current)) - set(value),
    "merge": lambda current, value: {**_seq(current, dict, "dict", {}), **value},
}
OP_NAMES = (*OPS, "delete")


def _parse(change: Any) -> tuple[str, Any]:
    """(op, operand) from one value of an `apply` mapping."""
    if isinstance(change, tuple) and change and isinstance(change[0], str):
        name, *args = change
        if name == "delete":
            if args:
                raise InvalidInput("delete takes no operand: write ('delete',)")
            return name, None
        if name not in OPS:
            raise InvalidInput(
                f"unknown op {name!r}; use one of {', '.join(OP_NAMES)} "
                "(to store a tuple, write ('set', the_tuple))"
            )
        if len(args) != 1:
            raise InvalidInput(f"op {name!r} takes one operand: ({name!r}, value)")
        return name, args[0]
    return "set", change


def replay(state: dict[Any, Any], item: Any, op: str, value: Any) -> None:
    """Apply one event to `state` in place. Raises InvalidInput for a type mismatch."""
    if op == "delete":
        state.pop(item, None)
        return
    fn = OPS.get(op)
    if fn is None:
        raise InvalidInput(f"unknown op {op!r} in a stored event")
    try:
        state[item] = fn(state.get(item, _MISSING), value)
    except (TypeError, ValueError, ArithmeticError, KeyError) as exc:
        raise InvalidInput(f"cannot {op} {item!r}: {exc}") from exc


def _check_ms(
    value: object, what: str, guard: Callable[[SatchelError], SatchelError], optional: bool = True
) -> None:
    if (value is None and optional) or type(value) is int:
        return
    raise guard(InvalidInputType(f"{what} must be an int (ms){' or None' * optional}, "
                                 f"not {value!r}"))  # fmt: skip


class Events:
    """An event sequence: a dict whose changes are all recorded. Get one with
    ``store.events(name)``.

    >>> cart = store.events("cart:42")
    >>> cart.apply({"apples": ("add", 3), "note": "gift"})
    {'apples': 3, 'note': 'gift'}
    >>> cart.apply({"apples": ("sub", 1), "note": ("delete",)})
    {'apples': 2}
    """

    __slots__ = ("_core", "_name")

    def __init__(self, core: Core, name: str) -> None:
        self._core = core
        self._name = check_key(name)

    @property
    def name(self) -> str:
        """The sequence's name."""
        return self._name

    def _guard(self, exc: SatchelError) -> SatchelError:
        return self._core.tag(exc, self._name)

    def _seal_name(self, tag: str) -> str:
        return f"{self._name}\x00{tag}"  # no key holds a NUL: never a record's name

    def _dump(self, value: Any, tag: str) -> bytes:
        core = self._core
        return core.seal(core.encode(value), self._seal_name(tag))

    def _state(self, which: Literal["head", "base"]) -> tuple[int, int, dict[Any, Any]]:
        core = self._core
        found = core.backend.events_state(core.scope, self._name, which)
        if found is None:
            return 0, 0, {}
        seq, ts, data = found
        return seq, ts, core.load_small(data, self._seal_name(f"{which}{seq}@{ts}"))

    def _pages(self, after_seq: int) -> Iterator[list[tuple[int, int, bytes]]]:
        """The stored events after `after_seq`, a page at a time."""
        core = self._core
        while True:
            page = core.backend.events_read(core.scope, self._name, after_seq, PAGE)
            yield page
            if len(page) < PAGE:
                return
            after_seq = page[-1][0]

    def _events(self, after_seq: int) -> Iterator[Event]:
        core = self._core
        for page in self._pages(after_seq):
            for seq, ts, data in page:
                item, op, value = core.load_small(data, self._seal_name(f"e{seq}@{ts}"))
                yield Event(ts, seq, item, op, value)

    def apply(self, changes: Mapping[Any, Any]) -> dict[Any, Any]:
        """Record the changes atomically and return the new state.

        Each value of `changes` is a new value for its item, or an op: ``("add", 1)``,
        ``("sub", n)``, ``("mul", n)``, ``("max", v)``, ``("min", v)``, ``("append", v)``,
        ``("extend", [..])``, ``("union", {..})``, ``("difference", {..})``,
        ``("merge", {..})``, ``("delete",)``, ``("set", v)`` (needed to store a tuple).
        A missing item counts as 0, an empty list, set or dict. An unknown op or a type
        mismatch raises InvalidInput (a ValueError) and records nothing.
        """
        core = self._core
        try:
            if not isinstance(changes, Mapping):
                raise InvalidInput(f"changes must be a mapping, not {type(changes).__name__}")
            parsed = [(item, *_parse(change)) for item, change in changes.items()]
            if core.codec.name == "json" and any(type(i) is not str for i, *_ in parsed):
                raise InvalidInput("with the json codec, items must be str (JSON object keys)")
            while True:
                seq, ts, state = self._state("head")
                for item, op, value in parsed:
                    replay(state, item, op, value)
                if not parsed:
                    return state
                now = max(int(time() * 1000), ts)
                events = [
                    (now, self._dump([item, op, value], f"e{seq + i}@{now}"))
                    for i, (item, op, value) in enumerate(parsed, 1)
                ]
                head = self._dump(state, f"head{seq + len(parsed)}@{now}")
                if core.backend.events_append(
                    core.scope, self._name, seq, events, head
                ):
                    return state
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def current(self) -> dict[Any, Any]:
        """The state after every event ({} for a new sequence)."""
        try:
            return self._state("head")[2]
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def at(self, timestamp_ms: int) -> dict[Any, Any]:
        """The state as it was at `timestamp_ms` (every event up to and including it).

        Raises InvalidInput if that time lies before the last `compact`.
        """
        _check_ms(timestamp_ms, "timestamp_ms", self._guard, optional=False)
        try:
            seq, ts, state = self._state("base")
            if seq and timestamp_ms < ts:
                raise InvalidInput(f"events before {ts} ms were compacted; at() starts there")
            for event in self._events(seq):
                if event.timestamp_ms > timestamp_ms:
                    break
                replay(state, event.item, event.op, event.value)
            return state
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def history(self, start: int | None = None, stop: int | None = None) -> Iterator[Event]:
        """Lazily yield the recorded events with ``start <= timestamp_ms < stop``, by seq
        (events folded by `compact` are gone)."""
        _check_ms(start, "start", self._guard)
        _check_ms(stop, "stop", self._guard)
        return self._history(start, stop)

    def _history(self, start: int | None, stop: int | None) -> Iterator[Event]:
        for event in self._events(self._state("base")[0]):
            if stop is not None and event.timestamp_ms >= stop:
                return
            if start is None or event.timestamp_ms >= start:
                yield event

    def compact(self, before: int | None = None) -> int:
        """Fold the events older than `before` ms (None: all) into a snapshot; return how
        many were folded. `current()` and `at()` from the snapshot on are unchanged."""
        core = self._core
        _check_ms(before, "before", self._guard)
        try:
            seq, ts, state = self._state("base")
            folded = 0
            for event in self._events(seq):
                if before is not None and event.timestamp_ms >= before:
                    break
                replay(state, event.item, event.op, event.value)
                seq, ts, folded = event.seq, event.timestamp_ms, folded + 1
            if folded:
                base = (seq, ts, self._dump(state, f"base{seq}@{ts}"))
                core.backend.events_compact(core.scope, self._name, base)
            return folded
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def _reseal(self, reseal: Callable[[bytes, str], bytes | None]) -> tuple[int, int]:
        """Rewrite each event, then the snapshots, as ``reseal(data, seal name)`` gives them
        (None: left as it is), unless they changed meanwhile; return (checked, rewritten)."""
        core = self._core
        backend, scope, name = core.backend, core.scope, self._name
        checked = rewritten = 0
        try:
            for page in self._pages(0):
                checked += len(page)
                changes = [(seq, data, new) for seq, ts, data in page
                           if (new := reseal(data, self._seal_name(f"e{seq}@{ts}")))]  # fmt: skip
                if changes:
                    rewritten += backend.events_reseal(scope, name, changes)
            states: list[tuple[Literal["head", "base"], bytes, bytes]] = []
            for which in ("base", "head"):
                found = backend.events_state(scope, name, which)
                if found is not None:
                    seq, ts, data = found
                    checked += 1
                    if new := reseal(data, self._seal_name(f"{which}{seq}@{ts}")):
                        states.append((which, data, new))
            if states:
                rewritten += backend.events_reseal(scope, name, (), states)
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__
        return checked, rewritten

    def delete(self) -> bool:
        """Delete the sequence, events and snapshots; False if it did not exist."""
        core = self._core
        try:
            return core.backend.events_delete(core.scope, self._name)
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def __len__(self) -> int:
        """How many events are recorded (including those folded by `compact`)."""
        try:
            return self._state("head")[0]
        except SatchelError as exc:
            raise self._guard(exc) from exc.__cause__

    def __repr__(self) -> str:
        return f"<satchel.Events {self._name!r} scope={self._core.scope!r}>"
