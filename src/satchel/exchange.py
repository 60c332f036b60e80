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
from time import time
from typing import Any

from .backends.base import ANY_VERSION
from .blobs import CHUNK_SIZE, BlobWriter, is_manifest
from .errors import InvalidInput, KeyNotFound, SatchelError, UnsupportedValue, ValueChanged
from .keys import check_key
from .store import KeyInfo, Store

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
        return [to_json(item) for item in value]
    if kind is dict:
        if all(type(k) is str and k[:1] != "$" and _SURROGATE.search(k) is None for k in value):
            return {k: to_json(v) for k, v in value.items()}
        return {"$dict": [[to_json(k), to_json(v)] for k, v in value.items()]}
    if kind is bytes:
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if kind is tuple:
        return {"$tuple": [to_json(item) for item in value]}
    if kind is set or kind is frozenset:
        return {f"${kind.__name__}": [to_json(item) for item in _ordered(value)]}
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
    """`value` as typed JSON text (always valid UTF-8, no NaN literals)."""
    try:
        return json.dumps(
            to_json(value),
            ensure_ascii=False,
            allow_nan=False,
            indent=indent,
            separators=None if indent else (",", ":"),
        )
    except RecursionError:
        raise UnsupportedValue("value nests too deeply for typed JSON") from None


# --- decoding -----------------------------------------------------------------------


def _string(payload: Any) -> str:
    if type(payload) is not str:
        raise BadTypedJSON(f"needs a string, not {_kind(payload)}")
    return payload


def _items(payload: Any) -> list[Any]:
    if type(payload) is not list:
        raise BadTypedJSON(f"needs a list, not {_kind(payload)}")
    return [_decode_at(item, f"[{index}]") for index, item in enumerate(payload)]


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


def _decode_dict(payload: Any) -> dict[Any, Any]:
    if type(payload) is not list:
        raise BadTypedJSON(f"needs a list of [key, value] pairs, not {_kind(payload)}")
    result = {}
    for index, pair in enumerate(payload):
        if type(pair) is not list or len(pair) != 2:
            raise BadTypedJSON("needs a [key, value] pair", f"[{index}]")
        key = _decode_at(pair[0], f"[{index}][0]")
        value = _decode_at(pair[1], f"[{index}][1]")
        try:
            result[key] = value
        except TypeError:
            raise BadTypedJSON(f"{_kind(key)} cannot be a dict key", f"[{index}][0]") from None
    return result


def _hashable(build: Callable[[list[Any]], Any]) -> Callable[[Any], Any]:
    def decode(payload: Any) -> Any:
        items = _items(payload)
        try:
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
    "$dict": _decode_dict,
    "$tuple": lambda payload: tuple(_items(payload)),
    "$set": _hashable(set),
    "$frozenset": _hashable(frozenset),
    "$datetime": _iso(dt.datetime.fromisoformat, "datetime"),
    "$date": _iso(dt.date.fromisoformat, "date"),
    "$time": _iso(dt.time.fromisoformat, "time"),
    "$timedelta": _decode_timedelta,
    "$decimal": _decode_decimal,
    "$uuid": _decode_uuid,
}


def from_json(data: Any) -> Any:
    """The value a parsed typed-JSON structure stands for. Raises BadTypedJSON."""
    kind = type(data)
    if kind is list:
        return [_decode_at(item, f"[{index}]") for index, item in enumerate(data)]
    if kind is dict:
        if len(data) == 1:
            ((tag, payload),) = data.items()
            decode = _TAGS.get(tag)
            if decode is not None:
                try:
                    return decode(payload)
                except BadTypedJSON as exc:
                    raise exc.inside(f".{tag}") from None
        return {key: _decode_at(value, f".{key}") for key, value in data.items()}
    return data  # None, bool, int, float, str: JSON keeps them as they are


def _decode_at(data: Any, segment: str) -> Any:
    try:
        return from_json(data)
    except BadTypedJSON as exc:
        raise exc.inside(segment) from None


def loads(text: str) -> Any:
    """Parse typed JSON text. Raises BadTypedJSON (a ValueError) saying what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadTypedJSON(f"not JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an int with too many digits
        raise BadTypedJSON(f"not JSON: {exc}") from None
    return from_json(data)


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
    """One JSON Lines record (no newline) for `key`."""
    record = {
        "key": key,
        "expires_at": _iso_utc(info.expires_at),
        "created_at": _iso_utc(info.created_at),
        "updated_at": _iso_utc(info.updated_at),
        "version": info.version,
        "value": to_json(value),
    }
    return json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


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
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadTypedJSON(f"not JSON: {exc}") from None
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
    store: Store, pattern: str = "*", large: bool = False
) -> Iterator[tuple[str, Any, KeyInfo]]:
    """Yield ``(key, value, info)`` for the keys matching `pattern`, sorted by key.

    A key that expires or is deleted while this runs is left out. With `large`, the value
    of a large value (blob) is LARGE instead of its bytes, so it can be streamed.
    """
    for record in store._records(pattern, values=True):
        try:
            info, plain = store._info(record)
            if not is_manifest(plain):
                yield record.key, store._decode(plain), info
            elif large:
                yield record.key, LARGE, info
            else:
                yield record.key, store._large(plain, record.key), info
        except (KeyNotFound, ValueChanged):  # replaced or deleted meanwhile
            continue
        except SatchelError as exc:
            raise store._tag(exc, record.key) from exc.__cause__


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
        with src.open_blob(key) as source, BlobWriter(
            dst, key, ttl, expected_version=None if if_absent else ANY_VERSION
        ) as target:
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
