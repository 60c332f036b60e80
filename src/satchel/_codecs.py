"""How a value becomes the bytes an engine stores, and back.

Every stored value starts with a 3-byte header: format version, codec id, flags (bit 0
encrypted, bit 1 compressed; reserved for later formats). The header says how to read
the record, so a store reads records written with any built-in codec, except pickle,
which is only ever unpickled by a store opened with ``codec="pickle"``.

Codec ids: ``b`` bytes, ``s`` str (both raw payloads, so a person reading the database
sees them as they are), ``t`` typed (msgpack with extension types), ``j`` JSON,
``p`` pickle, ``x`` a user-supplied codec; ``B`` marks the manifest of a large value
(see blobs.py), which the Store reads, never a codec.

Reading a record never trusts it: any damage, whatever the payload claims, is
CorruptData, in time and memory bounded by the record's size. msgpack refuses a length
beyond the bytes that follow it; tuples and sets nest at most MAX_NESTED_EXTENSIONS
deep; and since a dict or set whose keys share one hash takes quadratic time to build
(20,000 bigint keys that are multiples of 2**61 - 1 took 11 s), a typed record of
COUNT_FROM bytes or more in which more than MAX_SAME_HASH distinct extension values
share a hash is refused.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import pickle
import threading
import uuid
from collections.abc import Callable
from typing import Any, Protocol, cast

import msgpack

from ._errors import CorruptData, InvalidInput, InvalidInputType, UnsupportedValue

FORMAT_VERSION = 1
HEADER_SIZE = 3
BYTES, STR, TYPED, JSON, PICKLE, CUSTOM = b"b", b"s", b"t", b"j", b"p", b"x"
BLOB = b"B"
_KNOWN_IDS = frozenset(BYTES + STR + TYPED + JSON + PICKLE + CUSTOM)


def is_sealed(record: bytes) -> bool:
    """True if the header of `record` has flags (encrypted or compressed): `crypto.unseal`
    reads it."""
    return len(record) > 2 and record[2] != 0


def is_blob(record: bytes) -> bool:
    """True if `record` (unsealed) is the manifest of a large value (codec id ``B``)."""
    return record[1:2] == BLOB


class UserCodec(Protocol):
    """Any object with these two methods can be passed as ``codec=``."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


def _header(codec_id: bytes) -> bytes:
    return bytes((FORMAT_VERSION,)) + codec_id + b"\x00"


_H_BYTES, _H_STR, _H_TYPED, _H_JSON, _H_PICKLE, _H_CUSTOM, H_BLOB = map(
    _header, (BYTES, STR, TYPED, JSON, PICKLE, CUSTOM, BLOB)
)
H_BYTES = _H_BYTES

# --- typed: msgpack plus extension types for what msgpack lacks -------------------------

_TUPLE, _SET, _FROZENSET, _BIGINT, _DATETIME, _DATE, _TIME, _TIMEDELTA, _DECIMAL, _UUID = range(
    1, 11
)


class _PerThread(threading.local):
    packer: msgpack.Packer  # created on first use (see `_pack_top`)
    depth = 0  # of nested extension calls (see `_nested`)
    hashes: dict[int, Any] | None = None  # of the record being decoded (see `_from_ext`)


_local = _PerThread()


def _pack_top(value: Any) -> bytes:
    """`_pack` for a whole value, with a reused per-thread Packer (three times faster).

    Only top-level calls may use it: `_to_ext` runs inside a pack and must not re-enter.
    """
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(
            default=_to_ext, strict_types=True, use_bin_type=True
        )
    try:
        data: bytes = packer.pack(value)  # the buffer is reset even when this raises
    except UnicodeEncodeError:
        data = _pack(value)
    return data


def _pack(value: Any) -> bytes:
    data: bytes
    try:
        data = msgpack.packb(value, default=_to_ext, strict_types=True, use_bin_type=True)
    except UnicodeEncodeError:
        # A str with a lone surrogate: valid Python, not valid UTF-8. Keep it anyway.
        data = msgpack.packb(
            value,
            default=_to_ext,
            strict_types=True,
            use_bin_type=True,
            unicode_errors="surrogatepass",
        )
    return data


# Each tuple/set level is a msgpack call of its own, with a large frame on the C stack:
# a few hundred levels would crash the process, so both directions stop here.
MAX_NESTED_EXTENSIONS = 32


def _nested(step: Callable[[Any], Any], data: Any, error: type[Exception]) -> Any:
    """Run one nested msgpack call, refusing to go deeper than MAX_NESTED_EXTENSIONS."""
    depth = _local.depth
    if depth >= MAX_NESTED_EXTENSIONS:
        raise error(f"tuples and sets nest more than {MAX_NESTED_EXTENSIONS} deep")
    _local.depth = depth + 1
    try:
        return step(data)
    finally:
        _local.depth = depth


def _pack_nested(items: list[Any]) -> bytes:
    packed: bytes = _nested(_pack, items, UnsupportedValue)
    return packed


def _unpack_nested(data: bytes) -> Any:
    return _nested(_unpack, data, CorruptData)


def _to_ext(obj: Any) -> msgpack.ExtType:
    kind = type(obj)
    if kind is tuple:
        return msgpack.ExtType(_TUPLE, _pack_nested(list(obj)))
    if kind is int:  # msgpack asks only for ints beyond 64 bits
        return msgpack.ExtType(
            _BIGINT, obj.to_bytes((obj.bit_length() + 8) // 8, "big", signed=True)
        )
    if kind is set:
        return msgpack.ExtType(_SET, _pack_nested(list(obj)))
    if kind is frozenset:
        return msgpack.ExtType(_FROZENSET, _pack_nested(list(obj)))
    if kind is dt.datetime:
        return msgpack.ExtType(_DATETIME, obj.isoformat().encode())
    if kind is dt.date:
        return msgpack.ExtType(_DATE, obj.isoformat().encode())
    if kind is dt.time:
        return msgpack.ExtType(_TIME, obj.isoformat().encode())
    if kind is dt.timedelta:
        return msgpack.ExtType(_TIMEDELTA, _pack([obj.days, obj.seconds, obj.microseconds]))
    if kind is decimal.Decimal:
        return msgpack.ExtType(_DECIMAL, str(obj).encode())
    if kind is uuid.UUID:
        return msgpack.ExtType(_UUID, obj.bytes)
    raise UnsupportedValue(f"the typed codec cannot store a value of type {kind.__qualname__}")


def _timedelta(data: bytes) -> dt.timedelta:
    fields = _unpack(data)
    if type(fields) is not list or len(fields) != 3 or any(type(f) is not int for f in fields):
        raise ValueError("needs [days, seconds, microseconds]")
    return dt.timedelta(*fields)


_FROM_EXT: dict[int, tuple[str, Callable[[bytes], Any]]] = {
    _TUPLE: ("tuple", lambda b: tuple(_unpack_nested(b))),
    _SET: ("set", lambda b: set(_unpack_nested(b))),
    _FROZENSET: ("frozenset", lambda b: frozenset(_unpack_nested(b))),
    _BIGINT: ("int", lambda b: int.from_bytes(b, "big", signed=True)),
    _DATETIME: ("datetime", lambda b: dt.datetime.fromisoformat(b.decode())),
    _DATE: ("date", lambda b: dt.date.fromisoformat(b.decode())),
    _TIME: ("time", lambda b: dt.time.fromisoformat(b.decode())),
    _TIMEDELTA: ("timedelta", _timedelta),
    _DECIMAL: ("Decimal", lambda b: decimal.Decimal(b.decode())),
    _UUID: ("UUID", lambda b: uuid.UUID(bytes=b)),
}

# Most distinct values of one record that may share a hash. Only extension values are
# counted: str and bytes hashes are randomized, and a msgpack int or float shares its
# hash with a few dozen others at most, so only these can flood a dict or set. A record
# under COUNT_FROM bytes holds too few keys (about 300) for a flood to cost more than a
# millisecond, so only larger ones are counted, keeping the common case fast.
MAX_SAME_HASH = 64
COUNT_FROM = 4096


def _from_ext(code: int, data: bytes) -> Any:
    try:
        name, convert = _FROM_EXT[code]
    except KeyError:
        raise CorruptData(f"unknown typed extension {code}; written by a newer satchel?") from None
    try:
        value = convert(data)
    except CorruptData:
        raise
    except Exception as exc:  # ValueError, TypeError, decimal's errors, RecursionError...
        raise CorruptData(f"a stored {name} is damaged: {_reason(exc)}") from exc
    seen = _local.hashes
    if seen is not None and code != _SET and floods(seen, value):  # a set is never a key
        raise CorruptData(f"more than {MAX_SAME_HASH} distinct keys share one hash (crafted)")
    return value


def floods(seen: dict[int, Any], value: Any) -> bool:
    """Note `value` in `seen` (hash -> the value, or a list of the distinct values that
    share it); True once more than MAX_SAME_HASH of them share its hash."""
    try:
        shared = hash(value)
    except TypeError:  # unhashable (holds a list): never a key
        return False
    known = seen.setdefault(shared, value)
    if known is value:
        return False
    if type(known) is not list:  # values are hashable, so never lists themselves
        if known == value:
            return False
        known = seen[shared] = [known]
    if value not in known:
        known.append(value)
    return len(known) > MAX_SAME_HASH


def _unpack_counted(data: bytes) -> Any:
    """`_unpack`, counting the extension values that share a hash (see COUNT_FROM)."""
    _local.hashes = {}
    try:
        return _unpack(data)
    finally:
        _local.hashes = None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _unpack(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(
        data, ext_hook=_from_ext, strict_map_key=False, unicode_errors="surrogatepass"
    )


def _encode_typed(value: Any) -> bytes:
    kind = type(value)
    if kind is bytes:
        return _H_BYTES + cast(bytes, value)
    if kind is str:
        return _H_STR + cast(str, value).encode("utf-8", "surrogatepass")
    try:
        data = _pack_top(value)
        # msgpack packs bytearray and memoryview as bytes without asking `_to_ext`, so
        # they would come back as bytes. Look for them only when the output holds a
        # bin marker.
        if (0xC4 in data or 0xC5 in data or 0xC6 in data) and _holds_bytes_like(value):
            raise UnsupportedValue(
                "the typed codec keeps types and cannot store bytearray or memoryview; "
                "convert them with bytes()"
            )
    except UnsupportedValue:
        raise
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:  # e.g. too deep
        raise UnsupportedValue(f"the typed codec cannot store this value: {exc}") from exc
    return _H_TYPED + data


_PLAIN = frozenset({str, int, float, bool, type(None), bytes})


def _holds_bytes_like(value: Any) -> bool:
    todo = [value]  # a stack, not recursion: as deep as msgpack packed it
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind is bytearray or kind is memoryview:
            return True
        if kind is dict:
            todo.extend(x for pair in item.items() for x in pair if type(x) not in _PLAIN)
        elif kind is list or kind is tuple or kind is set or kind is frozenset:
            todo.extend(x for x in item if type(x) not in _PLAIN)
    return False


# --- the other built-in codecs -------------------------------------------------------


def _encode_json(value: Any) -> bytes:
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return _H_JSON + text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise UnsupportedValue(f"the json codec cannot store this value: {exc}") from exc


def _encode_raw(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return _H_BYTES + bytes(value)
    raise UnsupportedValue(f"the raw codec stores bytes only, not {type(value).__qualname__}")


def _encode_pickle(value: Any) -> bytes:
    try:
        return _H_PICKLE + pickle.dumps(value, protocol=5)
    except Exception as exc:  # pickling fails with many exception types
        raise UnsupportedValue(f"the pickle codec cannot store this value: {exc}") from exc


class Codec:
    """Turns values into stored records (header + payload) and back.

    Build one with `get_codec`; `encode` raises UnsupportedValue, `decode` CorruptData.
    """

    __slots__ = ("_user", "encode", "name")

    def __init__(
        self, name: str, encode: Callable[[Any], bytes], user: UserCodec | None = None
    ) -> None:
        self.name = name
        self.encode = encode
        self._user = user

    def decode(self, record: bytes) -> Any:
        """Return the value a record holds."""
        if record[:HEADER_SIZE] == _H_TYPED:  # the common case, kept short
            try:
                if len(record) >= COUNT_FROM:
                    return _unpack_counted(record[HEADER_SIZE:])
                return msgpack.unpackb(
                    record[HEADER_SIZE:],
                    ext_hook=_from_ext,
                    strict_map_key=False,
                    unicode_errors="surrogatepass",
                )
            except CorruptData:
                raise
            except Exception as exc:  # incl. RecursionError, MemoryError: never escape raw
                raise CorruptData(f"stored value cannot be decoded: {_reason(exc)}") from exc
        if len(record) < HEADER_SIZE or record[0] != FORMAT_VERSION or record[1] not in _KNOWN_IDS:
            raise CorruptData(_describe_bad_header(record))
        if record[2]:
            raise CorruptData(f"record has flags {record[2]:#04x} this satchel cannot read")
        codec_id = record[1:2]
        body = memoryview(record)[HEADER_SIZE:]
        try:  # a typed record (with flags 0) took the fast path above
            if codec_id == BYTES:
                return bytes(body)
            if codec_id == STR:
                return str(body, "utf-8", "surrogatepass")
            if codec_id == JSON:
                return json.loads(str(body, "utf-8"))
            if codec_id == PICKLE:
                if self.encode is not _encode_pickle:
                    raise CorruptData(
                        "record was written with the pickle codec; open the store with "
                        'codec="pickle" to read it (only if you trust whoever wrote it)'
                    )
                return pickle.loads(body)
            if self._user is None:
                raise CorruptData("record was written with a custom codec this store does not have")
            return self._user.loads(bytes(body))
        except CorruptData:
            raise
        except Exception as exc:  # damaged payloads fail in many ways; never return garbage
            raise CorruptData(f"stored value cannot be decoded: {_reason(exc)}") from exc


def _describe_bad_header(record: bytes) -> str:
    if len(record) >= HEADER_SIZE and record[0] > FORMAT_VERSION:
        return f"record format {record[0]} was written by a newer satchel"
    return "stored bytes are not a satchel record (bad header)"


_BUILTIN = {
    "typed": _encode_typed,
    "json": _encode_json,
    "raw": _encode_raw,
    "pickle": _encode_pickle,
}


def get_codec(codec: str | UserCodec) -> Codec:
    """Return the codec named `codec` ("typed", "json", "raw", "pickle") or wrap a user codec.

    Raises InvalidInput for an unknown name, InvalidInputType for an object without
    `dumps`/`loads`.
    """
    if isinstance(codec, str):
        try:
            return Codec(codec, _BUILTIN[codec])
        except KeyError:
            names = ", ".join(sorted(_BUILTIN))
            raise InvalidInput(f"unknown codec {codec!r}; choose one of {names}") from None
    if not (callable(getattr(codec, "dumps", None)) and callable(getattr(codec, "loads", None))):
        raise InvalidInputType("codec must be a name or an object with dumps() and loads()")
    user = codec

    def encode_user(value: Any) -> bytes:
        try:
            data = user.dumps(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnsupportedValue(f"the custom codec cannot store this value: {exc}") from exc
        if not isinstance(data, bytes):
            raise UnsupportedValue(
                f"custom codec dumps() returned {type(data).__name__}, not bytes"
            )
        return _H_CUSTOM + data

    return Codec(type(codec).__qualname__, encode_user, user)
