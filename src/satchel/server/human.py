"""Endpoints for people and the /ui page: keys by pattern, decoded values, incr, usage.

Values are decoded with satchel's own codecs, so a value stored by a Store with the
typed codec shows as what it is; an encrypted or compressed one shows as such, unread.

Every value a Store accepted can be shown (see `jsonable`), and the endpoints are sync
(run in the thread pool) and write their JSON themselves (`answer`): decoding and writing
a large value never holds up the event loop, and so the other requests.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import re
import uuid
from typing import Annotated, Any

from fastapi import FastAPI, Query, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from .._backends.base import Record
from .._blobs import read_manifest
from .._codecs import get_codec, is_blob, is_sealed
from .._errors import InvalidInput, KeyNotFound, SatchelError
from .._exchange import SAFE_INT  # what a browser's JSON keeps exact
from .._keys import check_key, compile_pattern
from .deps import RESPONSES, T
from .models import (
    Count,
    DeleteChange,
    ExpectIn,
    IncrBody,
    ItemPage,
    KeyEntry,
    KeyPage,
    PutChange,
    Tenants,
    UsageOut,
    ValueBody,
    ValueOut,
)
from .service import SCAN_BYTES, Service
from .tenants import Tenant

ScopeQ = Annotated[str, Query(min_length=1, max_length=255)]
PatternQ = Annotated[str, Query(max_length=4096)]
CursorQ = Annotated[str | None, Query(max_length=1024)]
LimitQ = Annotated[int, Query(ge=1, le=1000)]
KeyQ = Annotated[str, Query(min_length=1, max_length=1024)]
_typed = get_codec("typed")
_INCR_TRIES = 100
INT64 = 2**63  # /v1/incr adds to ints in [-INT64, INT64)
DECIMAL_BITS = 14_000  # ~4200 digits: under Python's int -> str limit (4300 by default)
MAX_DEPTH = 500  # levels of nesting shown (a value can nest deeper than Python recurses)
_SURROGATE = re.compile("[\ud800-\udfff]")


def jsonable(value: Any, depth: int = MAX_DEPTH) -> Any:
    """`value` as JSON can show it (tuples and sets as lists, times as ISO text, ...).

    Always valid JSON, made in time linear in the value's size: an int beyond +-2**53
    (which a browser would round) is text, in decimal up to ~4200 digits and in hex
    ("0x...") past that, since decimal takes time quadratic in the digits (and Python's
    int -> str limit, which is respected, refuses it); NaN and infinities are text;
    nesting deeper than `depth` levels shows as a note. Lone surrogates stay (`answer`
    writes them as \\u escapes).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if -SAFE_INT <= value <= SAFE_INT else _int_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (dt.timedelta, decimal.Decimal, uuid.UUID)):
        return str(value)
    if not isinstance(value, (dict, list, tuple, set, frozenset)):
        return repr(value)
    if depth <= 0:
        return f"... (nested deeper than {MAX_DEPTH} levels)"
    # Loops, not comprehensions: one frame a level (Python 3.11 gives a comprehension one).
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out[_key_text(k, depth - 1)] = jsonable(v, depth - 1)
        return out
    items = []
    for v in value:
        items.append(jsonable(v, depth - 1))
    if isinstance(value, (set, frozenset)):
        items.sort(key=repr)
    return items


def _int_text(value: int) -> str:
    if value.bit_length() <= DECIMAL_BITS:
        try:
            return str(value)
        except ValueError:  # the process set a lower int -> str limit
            pass
    return hex(value)


def _key_text(key: Any, depth: int) -> str:
    """A dict key as JSON text: a str as it is, anything else as Python would write it,
    except ints and tuples, whose repr() may be slow, fail, or recurse too deep."""
    if isinstance(key, str):
        return key
    if isinstance(key, (int, tuple, frozenset)) and not isinstance(key, bool):
        shown = jsonable(key, depth)
        return shown if isinstance(shown, str) else repr(shown)
    return repr(key)


def answer(model: BaseModel) -> Response:
    """`model` as a JSON answer, written by the json module where the endpoint runs (the
    thread pool), not by FastAPI on the event loop; pydantic's JSON writer also refuses
    lone surrogates (written here as \\u escapes) and nesting past a few hundred levels."""
    text = json.dumps(model.model_dump(), ensure_ascii=False, allow_nan=False,
                      separators=(",", ":"))  # fmt: skip
    return Response(text.encode("utf-8", "backslashreplace"), media_type="application/json")


def describe(scope: str, key: str, record: Record) -> ValueOut:
    """A record as the UI shows it."""
    data: bytes = record.value
    out = ValueOut(
        scope=scope, key=key, size=len(data), version=record.version,
        created_at=record.created_at, updated_at=record.updated_at,
        expires_at=record.expires_at, type="",
    )  # fmt: skip
    if is_sealed(data):
        out.type = "sealed (encrypted or compressed)"
    elif is_blob(data):
        try:
            out.type, out.size = "large bytes (blob)", read_manifest(data).size
        except SatchelError:
            out.type = "damaged blob"
    else:
        try:
            value = _typed.decode(data)
        except SatchelError as exc:
            out.type, out.text = "unreadable", str(exc)
        else:
            out.type = type(value).__name__
            out.json_value = jsonable(value)
            if isinstance(value, bytes):
                out.hex = out.json_value
            elif isinstance(value, str) or (type(value) is int and type(out.json_value) is str):
                out.text = out.json_value  # a str, or an int too long for a JSON number
            out.editable = _json_exact(value)
    return out


def _json_exact(value: Any) -> bool:
    """True if JSON holds `value` exactly (types included), so an edit loses nothing.

    Not recursive: a value may nest deeper than Python can recurse. A str with a
    surrogate is not exact: JSON joins a high and a low one into one character."""
    todo, depth = [value], [0]
    while todo:
        item, level = todo.pop(), depth.pop()
        kind = type(item)
        if kind is list or kind is dict:
            if level >= MAX_DEPTH:
                return False  # shown cut short
            if kind is dict:
                keys = list(item)
                if not all(type(k) is str for k in keys):
                    return False
                item = keys + list(item.values())
            todo.extend(item)
            depth.extend([level + 1] * len(item))
        elif kind is str:
            if _SURROGATE.search(item):
                return False
        elif kind is int:
            if not -SAFE_INT <= item <= SAFE_INT:
                return False
        elif kind is float:
            if not math.isfinite(item) or item.is_integer():
                return False
        elif item is not None and kind is not bool:
            return False
    return True


def _put(key: str, value: Any, ttl: float | None) -> PutChange:
    """A put of `value` encoded with the typed codec. Built unchecked: `key` passed the
    endpoint's checks, and the base64 of a value near the body limit may pass B64's."""
    encoded = base64.b64encode(_typed.encode(value)).decode()
    return PutChange.model_construct(op="put", key=key, value=encoded, expires_in=ttl,
                                     if_absent=False)  # fmt: skip


def routes(app: FastAPI, service: Service) -> None:
    """Register the endpoints that decode values with the typed codec."""

    def page(
        t: Tenant, scope: str, pattern: str, cursor: str | None, limit: int
    ) -> tuple[list[Record], str | None]:
        """The records whose key matches, and the cursor of the next page if this one is
        full: `limit` records, or SCAN_BYTES of values (a page is held and sent whole)."""
        compiled = compile_pattern(pattern)
        after = None if cursor is None else check_key(cursor)
        found: list[Record] = []
        size = 0
        while True:
            got, more = service.scan(t, scope, compiled.prefix, after, 500, True)
            for r in got:
                if compiled.matches(r.key):
                    found.append(r)
                    size += len(r.value)
                    if len(found) == limit or size >= SCAN_BYTES:
                        return found, r.key
            if not more and len(got) < 500:
                return found, None
            after = got[-1].key

    @app.get("/v1/keys", responses=RESPONSES, tags=["people"])
    def keys(t: T, scope: ScopeQ, pattern: PatternQ = "*", cursor: CursorQ = None,
             limit: LimitQ = 50) -> KeyPage:  # fmt: skip
        """Keys matching a glob, in order, a page at a time: pass `next_cursor` back."""
        found, next_cursor = page(t, scope, pattern, cursor, limit)
        entries = [
            KeyEntry(
                key=r.key,
                size=len(r.value),
                version=r.version,
                created_at=r.created_at,
                updated_at=r.updated_at,
                expires_at=r.expires_at,
            )
            for r in found
        ]
        return KeyPage(keys=entries, next_cursor=next_cursor)

    @app.get("/v1/items", responses=RESPONSES, tags=["people"], response_model=ItemPage)
    def items(t: T, scope: ScopeQ, pattern: PatternQ = "*", cursor: CursorQ = None,
              limit: LimitQ = 50) -> Response:  # fmt: skip
        """Keys matching a glob with their decoded values, a page at a time (at most
        `limit`, fewer once they hold 8 MiB)."""
        found, next_cursor = page(t, scope, pattern, cursor, limit)
        return answer(ItemPage(items=[describe(scope, r.key, r) for r in found],
                               next_cursor=next_cursor))  # fmt: skip

    @app.get("/v1/value", responses=RESPONSES, tags=["people"], response_model=ValueOut)
    def value(t: T, scope: ScopeQ, key: KeyQ) -> Response:
        """A value decoded for people, with its metadata; 404 if the key has none."""
        record = service.get_many(t, scope, [key]).get(key)
        if record is None:
            raise KeyNotFound(f"key {key!r} not found")
        return answer(describe(scope, key, record))

    @app.put("/v1/value", responses=RESPONSES, tags=["people"])
    def put_value(t: T, scope: ScopeQ, key: KeyQ, body: ValueBody) -> Count:
        """Store a JSON value (or a str) with the typed codec; `count` 1 if the key was new."""
        if body.kind == "str" and not isinstance(body.value, str):
            raise InvalidInput("a value of kind str must be a JSON string")
        return Count(count=service.apply(t, scope, [_put(key, body.value, body.ttl)]) or 0)

    @app.delete("/v1/value", responses=RESPONSES, tags=["people"])
    def delete_value(t: T, scope: ScopeQ, key: KeyQ) -> Count:
        """Delete a key; 404 if it had no value."""
        if not service.apply(t, scope, [DeleteChange(op="delete", key=key)]):
            raise KeyNotFound(f"key {key!r} not found")
        return Count(count=1)

    @app.post("/v1/incr", responses=RESPONSES, tags=["people"])
    def incr(body: IncrBody, t: T) -> Count:
        """Add `delta` to an int value (a missing key counts as 0); `count` the new value.

        For 64-bit ints (as Redis INCRBY): a larger one, or a result past 64 bits, is 400
        and nothing is written (Store.incr has no such limit)."""
        for _ in range(_INCR_TRIES):
            record = service.get_many(t, body.scope, [body.key]).get(body.key)
            current = 0 if record is None else _typed.decode(record.value)
            if type(current) is not int:
                raise InvalidInput(f"key {body.key!r} holds a {type(current).__name__}, not an int")
            new = current + body.delta
            if not -INT64 <= new < INT64:  # and its JSON answer would be slow to write
                raise InvalidInput(f"/v1/incr adds to 64-bit ints only, and key {body.key!r} "
                                   f"would pass 64 bits; use Store.incr")  # fmt: skip
            version = None if record is None else record.version
            created = None if record is None else record.created_at
            ttl = None
            if record is not None and record.expires_at is not None:
                ttl = record.expires_at - service.now()
            same = ExpectIn(key=body.key, version=version, created_at=created)
            if service.apply(t, body.scope, [_put(body.key, new, ttl)], [same]) is not None:
                return Count(count=new)
        raise HTTPException(409, "the value kept changing; try again")

    @app.get("/v1/usage", responses=RESPONSES, tags=["people"])
    def usage(t: T) -> UsageOut:
        """The tenant's bytes and keys against its quota."""
        return _usage(t, service)

    @app.get("/v1/tenants", responses=RESPONSES, tags=["people"])
    def tenants(t: T) -> Tenants:
        """Every tenant's usage against its quota (admin tokens only)."""
        if not t.admin:
            raise PermissionError("only an admin token may list tenants")
        return Tenants(tenants=[_usage(x, service) for x in service.config.tenants.values()])


def _usage(tenant: Tenant, service: Service) -> UsageOut:
    used = service.usage(tenant)
    return UsageOut(
        tenant=tenant.name, bytes=used.bytes, keys=used.keys, quota_bytes=tenant.quota_bytes,
        quota_keys=tenant.quota_keys, readonly=tenant.readonly,
    )  # fmt: skip
