"""Values as typed JSON, and records moving between stores (export, import, copy).

Typed JSON is plain JSON wherever plain JSON keeps the type exactly, and a one-key
object ``{"$tag": payload}`` where it cannot::

    None, bool, str, list         null, true/false, "text", [...]
    int                           a number when |n| <= 2**53 (exact in every JSON
                                  reader), else {"$int": "123..."} (hex "0x..." beyond
                                  Python's int/str digit limit)
    float                         a number (shortest repr, so -0.0 stays -0.0);
                                  {"$float": "nan" | "inf" | "-inf"}
    str with lone surrogates      {"$str": ["text", 55296, "more"]}  (surrogates as ints)
    bytes                         {"$bytes": "<base64>"}
    dict                          an object when every key is a str not starting with
                                  "$"; else {"$dict": [[key, value], ...]}
    tuple, set, frozenset         {"$tuple": [...]}, {"$set": [...]}, {"$frozenset": [...]}
    datetime, date, time          {"$datetime": "<isoformat>"} (naive or with offset), ...
    timedelta                     {"$timedelta": [days, seconds, microseconds]}
    Decimal, UUID                 {"$decimal": "1.10"}, {"$uuid": "<canonical form>"}

So ``satchel get`` output reads like ordinary JSON for ordinary values, and a reader
can always tell a tag from data: the encoder never writes a plain object with a "$"
key. The decoder treats a one-key object as a tag only if the key is one of the tags
above (``{"$schema": ...}`` stays a dict).

Any depth a store accepted converts: both directions walk a value with a stack of
their own instead of recursion, and text nested deeper than the json module's C code
recurses is written and read by small iterative fallbacks (`_dumps_deep`,
`_loads_deep`). A ``$dict`` or ``$set`` whose keys were crafted to share one hash is
refused (see codecs.MAX_SAME_HASH).

An export line is one JSON object per record::

    {"key": "k", "expires_at": "2030-01-01T00:00:00+00:00", "created_at": "...",
     "updated_at": "...", "version": 3, "value": <typed JSON>}

`expires_at` is absolute (UTC, or null): a dump imported later keeps each value's
real deadline instead of restarting its TTL, and a value that expired meanwhile is
not imported. `created_at`, `updated_at` and `version` are informative; a store sets
its own on import.

`import_lines` and `copy` move records BATCH at a time through the Store (a scan that
yields each record with its metadata to read, `set_many` to write), so they work between
any two engines and hold no storage rule of their own. `copy` streams large values chunk
by chunk through `open_blob`; an export line holds a large value whole, in base64.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import json
import math
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import repeat
from json.decoder import scanstring  # type: ignore[attr-defined]  # not in typeshed
from time import time
from typing import Any

from ._blobs import ANY_VERSION, CHUNK_SIZE, BlobWriter
from ._codecs import MAX_SAME_HASH, floods, is_blob
from ._core import KeyInfo
from ._errors import (
    CorruptData,
    DecryptionError,
    InvalidInput,
    KeyNotFound,
    SatchelError,
    UnsupportedValue,
    ValueChanged,
)
from ._keys import check_key
from ._store import Store, core_of

BATCH = 500  # records per round of reading and set_many when importing or copying
SAFE_INT = 2**53  # beyond this, JavaScript and jq readers round integers
EXPIRY_TOLERANCE = 0.001  # seconds: records whose expiries differ less share one write
LINE_FIELDS = ("key", "expires_at", "created_at", "updated_at", "version", "value")

_INT = re.compile(r"-?(?:0x[0-9a-f]+|[0-9]+)")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class BadTypedJSON(ValueError):
    """Text that is not typed JSON; the message says where (``value[2].$date: ...``)."""

    def __init__(self, message: str, path: str = "") -> None:
        self.message = message
        self.path = path
        super().__init__(f"{path.removeprefix('.')}: {message}" if path else message)

    def inside(self, segment: str) -> BadTypedJSON:
        """The same error, seen from one level up."""
        return BadTypedJSON(self.message, f"{segment}{self.path}")


# --- encoding -----------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """`value` as a structure `json.dumps` writes exactly (see the module docstring).

    Raises UnsupportedValue for a type the typed codec does not store.
    """
    root = [value]
    todo: list[tuple[Any, Any, Any]] = [(value, root, 0)]  # (value, where its form goes)
    while todo:  # a stack of our own, not recursion: any depth a codec stored converts
        item, parent, slot = todo.pop()
        kind = type(item)
        if (
            (kind is str and _SURROGATE.search(item) is None)
            or (kind is int and -SAFE_INT <= item <= SAFE_INT)
            or kind is bool
            or item is None
        ):
            continue  # the commonest: its own form, in place already
        parent[slot] = _shallow(item, todo)
    return root[0]


def _slots(items: Any, todo: list[tuple[Any, Any, Any]]) -> list[Any]:
    """A list to hold the forms of `items` (the items until done)."""
    forms = list(items)
    todo.extend(zip(forms, repeat(forms), range(len(forms)), strict=False))  # repeat: endless
    return forms


def _shallow(value: Any, todo: list[tuple[Any, Any, Any]]) -> Any:
    """The typed-JSON form of `value`, with the forms of the items it holds left to do."""
    kind = type(value)
    if value is None or kind is bool:
        return value
    if kind is str:
        return value if _SURROGATE.search(value) is None else {"$str": _split_surrogates(value)}
    if kind is int:
        if -SAFE_INT <= value <= SAFE_INT:
            return value
        try:
            return {"$int": str(value)}
        except ValueError:  # more digits than sys.get_int_max_str_digits() allows
            return {"$int": hex(value)}
    if kind is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if kind is list:
        return _slots(value, todo)
    if kind is dict:
        if all(type(k) is str and k[:1] != "$" and _SURROGATE.search(k) is None for k in value):
            form = dict(value)
            todo.extend(zip(value.values(), repeat(form), value, strict=False))
            return form
        return {"$dict": [_slots(pair, todo) for pair in value.items()]}
    if kind is bytes:
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if kind is tuple:
        return {"$tuple": _slots(value, todo)}
    if kind is set or kind is frozenset:
        return {f"${kind.__name__}": _slots(_ordered(value), todo)}
    if kind is dt.datetime or kind is dt.date or kind is dt.time:
        return {f"${kind.__name__}": value.isoformat()}
    if kind is dt.timedelta:
        return {"$timedelta": [value.days, value.seconds, value.microseconds]}
    if kind is decimal.Decimal:
        return {"$decimal": str(value)}
    if kind is uuid.UUID:
        return {"$uuid": str(value)}
    raise UnsupportedValue(f"typed JSON has no form for a value of type {kind.__qualname__}")


def _split_surrogates(text: str) -> list[str | int]:
    parts: list[str | int] = []
    start = 0
    for match in _SURROGATE.finditer(text):
        if match.start() > start:
            parts.append(text[start : match.start()])
        parts.append(ord(match.group()))
        start = match.end()
    if start < len(text):
        parts.append(text[start:])
    return parts


def _ordered(items: set[Any] | frozenset[Any]) -> list[Any]:
    """Sorted when the items compare (stable output for diffs), else as iterated."""
    try:
        return sorted(items)
    except TypeError:
        return list(items)


def dumps(value: Any, indent: int | None = None) -> str:
    """`value` as typed JSON text (always valid UTF-8, no NaN literals); a value nested
    deeper than json.dumps recurses is written compact."""
    return _dumps(to_json(value), indent)


def _dumps(data: Any, indent: int | None = None) -> str:
    separators = None if indent else (",", ":")
    try:
        return json.dumps(
            data, ensure_ascii=False, allow_nan=False, indent=indent, separators=separators
        )
    except RecursionError:
        return _dumps_deep(data)


class _Raw(str):
    """Text `_dumps_deep` writes as it is (brackets, commas, a key and its colon)."""


def _dumps_deep(data: Any) -> str:
    """json.dumps (compact) of JSON-ready `data`, without recursion."""
    parts, todo = [], [data]  # todo: what is left to write, last first
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind is _Raw:
            parts.append(item)
        elif kind is list or kind is dict:
            parts.append("[" if kind is list else "{")
            todo.append(_Raw("]" if kind is list else "}"))
            pairs = list(item.items()) if kind is dict else list(enumerate(item))
            for index, (key, child) in reversed(list(enumerate(pairs))):
                todo.append(child)
                if kind is dict:
                    todo.append(_Raw(json.dumps(key, ensure_ascii=False) + ":"))
                if index:
                    todo.append(_Raw(","))
        else:
            parts.append(json.dumps(item, ensure_ascii=False, allow_nan=False))
    return "".join(parts)


# --- decoding -----------------------------------------------------------------------


def _string(payload: Any) -> str:
    if type(payload) is not str:
        raise BadTypedJSON(f"needs a string, not {_kind(payload)}")
    return payload


def _list(payload: Any) -> list[Any]:
    if type(payload) is not list:
        raise BadTypedJSON(f"needs a list, not {_kind(payload)}")
    return payload


def _decode_int(payload: Any) -> int:
    text = _string(payload)
    if _INT.fullmatch(text) is None:
        raise BadTypedJSON(f"needs decimal or 0x-hex digits, not {text[:40]!r}")
    try:
        return int(text, 16 if "x" in text else 10)
    except ValueError as exc:  # more decimal digits than Python's limit
        raise BadTypedJSON(str(exc)) from None


def _decode_float(payload: Any) -> float:
    if payload not in ("nan", "inf", "-inf"):
        raise BadTypedJSON(f'needs "nan", "inf" or "-inf", not {payload!r:.40}')
    return float(payload)


def _decode_str(payload: Any) -> str:
    if type(payload) is not list:
        raise BadTypedJSON(
            f"needs a list of strings and surrogate code points, not {_kind(payload)}"
        )
    parts = []
    for part in payload:
        if type(part) is str:
            parts.append(part)
        elif type(part) is int and 0xD800 <= part <= 0xDFFF:
            parts.append(chr(part))
        else:
            raise BadTypedJSON(f"{part!r:.40} is neither a string nor a surrogate (55296-57343)")
    return "".join(parts)


def _decode_bytes(payload: Any) -> bytes:
    try:
        return base64.b64decode(_string(payload), validate=True)
    except binascii.Error as exc:
        raise BadTypedJSON(f"bad base64: {exc}") from None


def _flood(items: Iterable[Any]) -> None:
    seen: dict[int, Any] = {}
    if any(floods(seen, item) for item in items):
        raise BadTypedJSON(f"more than {MAX_SAME_HASH} keys share one hash (crafted)")


def _dict_of(flat: list[Any]) -> dict[Any, Any]:
    """The dict of decoded [key, value, key, value, ...] (a $dict's pairs, flattened)."""
    _flood(flat[::2])
    result = {}
    for index in range(0, len(flat), 2):
        try:
            result[flat[index]] = flat[index + 1]
        except TypeError:
            raise BadTypedJSON(
                f"{_kind(flat[index])} cannot be a dict key", f"[{index // 2}][0]"
            ) from None
    return result


def _pairs(payload: Any) -> list[Any]:
    if type(payload) is not list:
        raise BadTypedJSON(f"needs a list of [key, value] pairs, not {_kind(payload)}")
    for index, pair in enumerate(payload):
        if type(pair) is not list or len(pair) != 2:
            raise BadTypedJSON("needs a [key, value] pair", f"[{index}]")
    return [item for pair in payload for item in pair]


def _hashable(build: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
    def decode(items: list[Any]) -> Any:
        try:
            _flood(items)
            return build(items)
        except TypeError:
            raise BadTypedJSON("set items must be hashable (no lists, dicts or sets)") from None

    return decode


def _iso(parse: Callable[[str], Any], what: str) -> Callable[[Any], Any]:
    def decode(payload: Any) -> Any:
        text = _string(payload)
        try:
            return parse(text)
        except ValueError:
            raise BadTypedJSON(f"not an ISO 8601 {what}: {text[:40]!r}") from None

    return decode


def _decode_timedelta(payload: Any) -> dt.timedelta:
    if type(payload) is not list or len(payload) != 3 or any(type(p) is not int for p in payload):
        raise BadTypedJSON("needs [days, seconds, microseconds] as three integers")
    try:
        return dt.timedelta(*payload)
    except OverflowError as exc:
        raise BadTypedJSON(str(exc)) from None


def _decode_decimal(payload: Any) -> decimal.Decimal:
    text = _string(payload)
    try:
        return decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise BadTypedJSON(f"not a decimal number: {text[:40]!r}") from None


def _decode_uuid(payload: Any) -> uuid.UUID:
    text = _string(payload)
    try:
        return uuid.UUID(text)
    except ValueError:
        raise BadTypedJSON(f"not a UUID: {text[:40]!r}") from None


_TAGS: dict[str, Callable[[Any], Any]] = {
    "$int": _decode_int,
    "$float": _decode_float,
    "$str": _decode_str,
    "$bytes": _decode_bytes,
    "$datetime": _iso(dt.datetime.fromisoformat, "datetime"),
    "$date": _iso(dt.date.fromisoformat, "date"),
    "$time": _iso(dt.time.fromisoformat, "time"),
    "$timedelta": _decode_timedelta,
    "$decimal": _decode_decimal,
    "$uuid": _decode_uuid,
}


# Tags whose payload holds typed JSON: (the JSON to decode, how its path reads, what
# builds the value from the decoded items).
_HOLDERS: dict[str, tuple[Callable[[Any], list[Any]], Callable[[int], str], Callable[..., Any]]]
_HOLDERS = {
    "$tuple": (_list, lambda i: f"[{i}]", tuple),
    "$set": (_list, lambda i: f"[{i}]", _hashable(set)),
    "$frozenset": (_list, lambda i: f"[{i}]", _hashable(frozenset)),
    "$dict": (_pairs, lambda i: f"[{i // 2}][{i % 2}]", _dict_of),
}


@dataclass(slots=True)
class _Open:
    """A container being decoded: its items (JSON), how to name item i in an error path
    and build the value, and the items decoded so far."""

    items: list[Any]
    segment: Callable[[int], str]
    build: Callable[[list[Any]], Any]
    tag: str
    done: list[Any]


_PENDING: Any = object()  # `_open` put a container on the stack: its value comes later


def _open(data: Any, stack: list[_Open]) -> Any:
    """The value of `data` if it holds no typed JSON to decode, else _PENDING (it is on
    the stack)."""
    kind = type(data)
    if kind is list:
        stack.append(_Open(data, lambda i: f"[{i}]", list, "", []))
        return _PENDING
    if kind is not dict:
        return data  # None, bool, int, float, str: JSON keeps them as they are
    if len(data) == 1:
        ((tag, payload),) = data.items()
        decode = _TAGS.get(tag)
        holder = _HOLDERS.get(tag)
        try:
            if decode is not None:
                return decode(payload)
            if holder is not None:
                items, segment, build = holder
                stack.append(_Open(items(payload), segment, build, f".{tag}", []))
                return _PENDING
        except BadTypedJSON as exc:
            raise exc.inside(f".{tag}") from None
    keys = list(data)

    def as_dict(values: list[Any]) -> dict[str, Any]:
        return dict(zip(keys, values, strict=True))

    stack.append(_Open(list(data.values()), lambda i: f".{keys[i]}", as_dict, "", []))
    return _PENDING


def from_json(data: Any) -> Any:
    """The value a parsed typed-JSON structure stands for. Raises BadTypedJSON.

    Depth-first with a stack of its own, so no depth is too deep for it."""
    stack: list[_Open] = []
    try:
        value = _open(data, stack)
        while stack:
            top = stack[-1]
            items, done = top.items, top.done
            while len(done) < len(items):
                item = items[len(done)]
                if type(item) is list or type(item) is dict:
                    item = _open(item, stack)
                    if item is _PENDING:
                        break  # decode that container first
                done.append(item)
            else:
                stack.pop()
                try:
                    value = top.build(done)
                except BadTypedJSON as exc:
                    raise exc.inside(top.tag) from None
                if stack:
                    stack[-1].done.append(value)
    except BadTypedJSON as exc:
        raise exc.inside("".join(f.tag + f.segment(len(f.done)) for f in stack)) from None
    return value


def loads(text: str) -> Any:
    """Parse typed JSON text. Raises BadTypedJSON (a ValueError) saying what is wrong."""
    return from_json(_loads(text))


def _loads(text: str) -> Any:
    try:
        try:
            return json.loads(text)
        except RecursionError:  # nested deeper than json's C parser recurses
            return _loads_deep(text)
    except ValueError as exc:  # JSONDecodeError, or an int with too many digits
        raise BadTypedJSON(f"not JSON: {exc}") from None


_SPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"(-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)?")
_CONSTANTS = {"true": True, "false": False, "null": None, "NaN": math.nan,
              "Infinity": math.inf, "-Infinity": -math.inf}  # fmt: skip


def _loads_deep(text: str) -> Any:
    """json.loads without recursion (slower): a stack of the open lists and dicts, each
    with the key that awaits its value."""
    stack: list[tuple[Any, list[str]]] = []
    value: Any
    pos = _skip(text, 0)
    while True:
        char = text[pos : pos + 1]
        if char in ("[", "{"):
            pos = _skip(text, pos + 1)
            if text.startswith("]" if char == "[" else "}", pos):
                value, pos = ([] if char == "[" else {}), pos + 1
            else:
                if char == "[":
                    stack.append(([], []))
                else:
                    name, pos = _key(text, pos)
                    stack.append(({}, [name]))
                continue  # its first item comes next
        elif char == '"':
            value, pos = scanstring(text, pos + 1)
        elif number := _NUMBER.match(text, pos):
            integer, fraction, exponent = number.groups()
            value = float(number[0]) if fraction or exponent else int(integer)
            pos = number.end()
        else:
            word = next((w for w in _CONSTANTS if text.startswith(w, pos)), None)
            if word is None:
                raise json.JSONDecodeError("Expecting value", text, pos)
            value, pos = _CONSTANTS[word], pos + len(word)
        while True:  # `value` is whole: put it in its container, then go on or close it
            pos = _skip(text, pos)
            if not stack:
                if pos != len(text):
                    raise json.JSONDecodeError("Extra data", text, pos)
                return value
            container, pending = stack[-1]
            if type(container) is list:
                container.append(value)
            else:
                container[pending[0]] = value
            if text.startswith(",", pos):
                pos = _skip(text, pos + 1)
                if type(container) is dict:
                    pending[0], pos = _key(text, pos)
                break
            pos = _expect(text, pos, "]" if type(container) is list else "}")
            value = container
            stack.pop()


def _skip(text: str, pos: int) -> int:
    """The position of the first character at or after `pos` that is not a space."""
    return _SPACE.match(text, pos).end()  # type: ignore[union-attr]  # always matches


def _expect(text: str, pos: int, char: str) -> int:
    if not text.startswith(char, pos):
        raise json.JSONDecodeError(f"Expecting {char!r}", text, pos)
    return _skip(text, pos + 1)


def _key(text: str, pos: int) -> tuple[str, int]:
    """The dict key at `pos`, and the position after its colon."""
    if not text.startswith('"', pos):
        raise json.JSONDecodeError("Expecting property name in double quotes", text, pos)
    name, pos = scanstring(text, pos + 1)
    return name, _expect(text, _skip(text, pos), ":")


def _kind(data: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(data), "null" if data is None else "a number"
    )


# --- records: export lines, import batches, copies ---------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One record on its way into a store: key, value and absolute expiry (Unix s)."""

    key: str
    value: Any
    expires_at: float | None


def _iso_utc(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def export_line(key: str, value: Any, info: KeyInfo) -> str:
    """One JSON Lines record (no newline) for `key`. Raises UnsupportedValue naming the
    key for a value that has no typed-JSON form."""
    try:
        form = to_json(value)
    except UnsupportedValue as exc:
        exc.key = key
        raise
    record = {
        "key": key,
        "expires_at": _iso_utc(info.expires_at),
        "created_at": _iso_utc(info.created_at),
        "updated_at": _iso_utc(info.updated_at),
        "version": info.version,
        "value": form,
    }
    return _dumps(record)


def export_lines(
    store: Store, pattern: str, skipped: Callable[[SatchelError], object]
) -> Iterator[str]:
    """The export lines of the keys matching `pattern`, sorted by key.

    A value that cannot be read or has no typed-JSON form is left out and its error
    (naming the key) passed to `skipped`: one bad value does not stop a backup.
    """
    for key, value, info in read_records(store, pattern, skipped=skipped):
        try:
            yield export_line(key, value, info)
        except UnsupportedValue as exc:
            skipped(core_of(store).tag(exc, key))


def _moment(data: Any, field: str) -> float | None:
    if data is None:
        return None
    if type(data) is int or type(data) is float:  # Unix seconds, for hand-written lines
        if not -1e12 < data < 1e12:  # also rejects nan
            raise BadTypedJSON(f"{field} is out of range: {data!r:.40}")
        return float(data)
    if type(data) is not str:
        raise BadTypedJSON(f"{field} needs an ISO 8601 time or null, not {_kind(data)}")
    try:
        moment = dt.datetime.fromisoformat(data)
    except ValueError:
        raise BadTypedJSON(f"{field} is not an ISO 8601 time: {data[:40]!r}") from None
    if moment.tzinfo is None:
        raise BadTypedJSON(f"{field} needs a UTC offset (like +00:00): {data[:40]!r}")
    return moment.timestamp()


def parse_line(text: str) -> Entry:
    """The Entry an export line holds. Raises BadTypedJSON saying what is wrong."""
    record = _loads(text)
    if type(record) is not dict:
        raise BadTypedJSON(f"needs a JSON object, not {_kind(record)}")
    unknown = sorted(set(record) - set(LINE_FIELDS))
    if unknown:
        raise BadTypedJSON(f"unknown field(s) {', '.join(map(repr, unknown))}")
    for field in ("key", "value"):
        if field not in record:
            raise BadTypedJSON(f'missing field "{field}"')
    key = record["key"]
    if type(key) is not str:
        raise BadTypedJSON(f'"key" needs a string, not {_kind(key)}')
    for field in ("created_at", "updated_at"):
        _moment(record.get(field), field)  # informative, but must be well formed
    version = record.get("version")
    if version is not None and (type(version) is not int or version < 1):
        raise BadTypedJSON(f'"version" needs an integer >= 1, not {version!r:.40}')
    expires_at = _moment(record.get("expires_at"), "expires_at")
    try:
        value = from_json(record["value"])
    except BadTypedJSON as exc:
        raise exc.inside("value") from None
    return Entry(key, value, expires_at)


class LargeValue:
    """Stands for a large value (blob) in `read_records`: read it with `open_blob`."""

    __slots__ = ()


LARGE = LargeValue()


def read_records(
    store: Store,
    pattern: str = "*",
    large: bool = False,
    skipped: Callable[[SatchelError], object] | None = None,
) -> Iterator[tuple[str, Any, KeyInfo]]:
    """Yield ``(key, value, info)`` for the keys matching `pattern`, sorted by key.

    A key that expires or is deleted while this runs is left out. With `large`, the value
    of a large value (blob) is LARGE instead of its bytes, so it can be streamed. A value
    that cannot be read raises, naming its key; with `skipped`, that error is passed to
    it instead and the value left out.
    """
    core = core_of(store)
    for record in core.records(pattern, values=True):
        try:
            info, plain = core.info(record)
            if not is_blob(plain):
                yield record.key, core.decode(plain), info
            elif large:
                yield record.key, LARGE, info
            else:
                yield record.key, core.large(plain, record.key), info
        except (KeyNotFound, ValueChanged):  # replaced or deleted meanwhile
            continue
        except (CorruptData, DecryptionError, UnsupportedValue) as exc:
            if skipped is None:
                raise core.tag(exc, record.key) from exc.__cause__
            skipped(core.tag(exc, record.key))
        except SatchelError as exc:  # the engine failed: no use going on
            raise core.tag(exc, record.key) from exc.__cause__


@dataclass(slots=True)
class Tally:
    """What an import or a copy did."""

    read: int = 0  # records read
    size: int = 0  # their stored payload bytes (copy only)
    written: int = 0
    existing: int = 0  # left alone because of if_absent
    expired: int = 0  # past their expiry by the time they were written: not written


class BadLine(ValueError):
    """An import line (or a batch of lines) that cannot be imported; says how far it got."""

    def __init__(self, first: int, last: int, reason: str, imported: int) -> None:
        if first == last:
            done = f"imported before it: {imported} keys; nothing from line {first} on"
            super().__init__(f"line {first}: {reason} ({done})")
        else:  # a batch failed as it was written: some of its expiry groups may be in
            done = f"imported before the error: {imported} keys; nothing after line {last}"
            super().__init__(f"lines {first}-{last}: {reason} ({done})")
        self.first, self.last, self.imported = first, last, imported


def import_lines(store: Store, lines: Iterable[bytes], if_absent: bool = False) -> Tally:
    """Write the records of export lines to `store`, BATCH lines at a time.

    Each line is checked before its batch is written; blank lines are skipped. A bad
    line raises BadLine after every line before it was written.
    """
    tally, batch, first, number = Tally(), list[Entry](), 1, 0

    def flush(last: int) -> None:
        nonlocal first
        try:
            write_entries(store, batch, if_absent, tally)
        except (InvalidInput, UnsupportedValue) as exc:  # e.g. a ttl beyond the maximum
            raise BadLine(first, last, str(exc), tally.written) from None
        batch.clear()
        first = last + 1

    for number, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8")
            if not text.strip():
                continue
            entry = parse_line(text)
            check_key(entry.key)
        except (UnicodeDecodeError, BadTypedJSON, InvalidInput) as exc:
            if batch:
                flush(number - 1)
            raise BadLine(number, number, str(exc), tally.written) from None
        tally.read += 1
        batch.append(entry)
        if len(batch) == BATCH:
            flush(number)
    if batch:
        flush(number)
    return tally


def copy(
    src: Store,
    dst: Store,
    pattern: str = "*",
    if_absent: bool = False,
    progress: Callable[[int], object] | None = None,
) -> Tally:
    """Copy the keys matching `pattern`, with values and expiry, from `src` to `dst`.

    Reads and writes BATCH records at a time; `progress` is called with the number of
    records after each batch.
    """
    tally, batch = Tally(), list[Entry]()
    for key, value, info in read_records(src, pattern, large=True):
        expires_at = None if info.expires_at is None else info.expires_at.timestamp()
        tally.read += 1
        tally.size += info.size
        if value is LARGE:
            _copy_large(src, dst, key, expires_at, if_absent, tally)
            continue
        batch.append(Entry(key, value, expires_at))
        if len(batch) == BATCH:
            write_entries(dst, batch, if_absent, tally)
            if progress is not None:
                progress(len(batch))
            batch.clear()
    if batch:
        write_entries(dst, batch, if_absent, tally)
        if progress is not None:
            progress(len(batch))
    return tally


def _copy_large(
    src: Store, dst: Store, key: str, expires_at: float | None, if_absent: bool, tally: Tally
) -> None:
    """Stream one large value from `src` to `dst`, a chunk at a time."""
    ttl = None if expires_at is None else expires_at - time()
    if ttl is not None and ttl <= 0:
        tally.expired += 1
        return
    if if_absent and dst.exists(key):  # checked again, atomically, at the commit
        tally.existing += 1
        return
    try:
        expected = None if if_absent else ANY_VERSION
        with (
            src.open_blob(key) as source,
            BlobWriter(core_of(dst), key, ttl, expected_version=expected) as target,
        ):
            shutil.copyfileobj(source, target, CHUNK_SIZE)
    except ValueChanged:
        if if_absent and dst.exists(key):
            tally.existing += 1  # written by someone else meanwhile: theirs stays
        return  # else replaced in the source while read: not copied
    except KeyNotFound:  # deleted from the source meanwhile
        return
    tally.written += 1


def write_entries(store: Store, entries: Iterable[Entry], if_absent: bool, tally: Tally) -> None:
    """Write `entries` with as few ``set_many`` calls as their expiries allow.

    Store.set_many takes one ttl per call, so entries are grouped by expiry: those
    within EXPIRY_TOLERANCE of each other share the group's earliest expiry. Each call
    is atomic; a batch whose entries all share an expiry (or have none) is one call.
    An entry already past its expiry is counted, not written. A later entry for the
    same key wins.
    """
    latest: dict[str, Entry] = {}
    for entry in entries:
        latest.pop(entry.key, None)  # keep the last one, in its position
        latest[entry.key] = entry
    forever = {e.key: e.value for e in latest.values() if e.expires_at is None}
    timed = sorted((e for e in latest.values() if e.expires_at is not None), key=_expiry)
    if forever:
        _write_group(store, forever, None, if_absent, tally)
    start = 0
    while start < len(timed):
        first = _expiry(timed[start])
        end = start + 1
        while end < len(timed) and _expiry(timed[end]) - first < EXPIRY_TOLERANCE:
            end += 1
        group = {e.key: e.value for e in timed[start:end]}
        ttl = first - time()
        if ttl <= 0:
            tally.expired += len(group)
        else:
            _write_group(store, group, ttl, if_absent, tally)
        start = end


def _expiry(entry: Entry) -> float:
    assert entry.expires_at is not None
    return entry.expires_at


def _write_group(
    store: Store, group: dict[str, Any], ttl: float | None, if_absent: bool, tally: Tally
) -> None:
    written = store.set_many(group, ttl=ttl, if_absent=if_absent)
    tally.written += written
    tally.existing += len(group) - written
