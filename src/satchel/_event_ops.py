"""The ops of event sequences: how one event changes a state, by name (never as code)."""

from __future__ import annotations

import decimal
import operator
from collections.abc import Callable
from typing import Any

from ._errors import InvalidInput

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


def parse_change(change: Any) -> tuple[str, Any]:
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
