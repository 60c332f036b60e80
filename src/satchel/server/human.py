"""Endpoints for people and the /ui page: keys by pattern, decoded values, incr, usage.

Values are decoded with satchel's own codecs, so a value stored by a Store with the
typed codec shows as what it is; an encrypted or compressed one shows as such, unread.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import uuid
from typing import Annotated, Any

from fastapi import FastAPI, Query
from starlette.exceptions import HTTPException

from ..backends.base import Record
from ..blobs import is_manifest, read_manifest
from ..codecs import get_codec
from ..errors import InvalidInput, KeyNotFound, SatchelError
from ..keys import check_key, compile_pattern
from .deps import RESPONSES, T
from .models import (
    Count,
    IncrBody,
    ItemPage,
    KeyEntry,
    KeyPage,
    Tenants,
    UsageOut,
    ValueBody,
    ValueOut,
)
from .service import Service
from .tenants import Tenant

ScopeQ = Annotated[str, Query(min_length=1, max_length=255)]
PatternQ = Annotated[str, Query(max_length=4096)]
CursorQ = Annotated[str | None, Query(max_length=1024)]
LimitQ = Annotated[int, Query(ge=1, le=1000)]
KeyQ = Annotated[str, Query(min_length=1, max_length=1024)]
_typed = get_codec("typed")
_INCR_TRIES = 100


def jsonable(value: Any) -> Any:
    """`value` as JSON can show it (tuples and sets as lists, times as ISO text, ...)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k if isinstance(k, str) else repr(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (dt.timedelta, decimal.Decimal, uuid.UUID)):
        return str(value)
    return repr(value)


def describe(scope: str, key: str, record: Record) -> ValueOut:
    """A record as the UI shows it."""
    data: bytes = record.value
    out = ValueOut(
        scope=scope, key=key, size=len(data), version=record.version,
        created_at=record.created_at, updated_at=record.updated_at,
        expires_at=record.expires_at, type="",
    )  # fmt: skip
    if len(data) > 2 and data[2]:
        out.type = "sealed (encrypted or compressed)"
    elif is_manifest(data):
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
            if isinstance(value, bytes):
                out.hex = value.hex()
            elif isinstance(value, str):
                out.text = value
            out.json_value = jsonable(value)
            out.editable = isinstance(value, str) or _json_exact(value)
    return out


def _json_exact(value: Any) -> bool:
    """True if JSON holds `value` exactly (types included), so an edit loses nothing."""
    if value is None or type(value) in (bool, str):
        return True
    if type(value) is int:
        return -(2**53) <= value <= 2**53  # what a browser's JSON keeps exact
    if type(value) is float:
        return value == value and abs(value) != float("inf") and not value.is_integer()
    if type(value) is list:
        return all(_json_exact(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _json_exact(v) for k, v in value.items())
    return False


def routes(app: FastAPI, service: Service) -> None:
    """Register the endpoints that decode values with the typed codec."""

    def page(
        t: Tenant, scope: str, pattern: str, cursor: str | None, limit: int
    ) -> tuple[list[Record], str | None]:
        compiled = compile_pattern(pattern)
        after = None if cursor is None else check_key(cursor)
        found: list[Record] = []
        while len(found) < limit:
            got, _ = service.scan(t, scope, compiled.prefix, after, 500, True)
            found.extend(r for r in got if compiled.matches(r.key))
            if len(got) < 500:
                break
            after = got[-1].key
        found = found[:limit]
        return found, found[-1].key if len(found) == limit else None

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

    @app.get("/v1/items", responses=RESPONSES, tags=["people"])
    def items(t: T, scope: ScopeQ, pattern: PatternQ = "*", cursor: CursorQ = None,
              limit: LimitQ = 50) -> ItemPage:  # fmt: skip
        """Keys matching a glob with their decoded values, a page at a time."""
        found, next_cursor = page(t, scope, pattern, cursor, limit)
        return ItemPage(items=[describe(scope, r.key, r) for r in found], next_cursor=next_cursor)

    @app.get("/v1/value", responses=RESPONSES, tags=["people"])
    def value(t: T, scope: ScopeQ, key: KeyQ) -> ValueOut:
        """A value decoded for people, with its metadata; 404 if the key has none."""
        record = service.get_many(t, scope, [key]).get(key)
        if record is None:
            raise KeyNotFound(f"key {key!r} not found")
        return describe(scope, key, record)

    @app.put("/v1/value", responses=RESPONSES, tags=["people"])
    def put_value(t: T, scope: ScopeQ, key: KeyQ, body: ValueBody) -> Count:
        """Store a JSON value (or a str) with the typed codec; `count` 1 if the key was new."""
        if body.kind == "str" and not isinstance(body.value, str):
            raise InvalidInput("a value of kind str must be a JSON string")
        encoded = base64.b64encode(_typed.encode(body.value)).decode()
        _, new = service.put(t, scope, [(key, encoded)], body.ttl, False)
        return Count(count=int(new))

    @app.delete("/v1/value", responses=RESPONSES, tags=["people"])
    def delete_value(t: T, scope: ScopeQ, key: KeyQ) -> Count:
        """Delete a key; 404 if it had no value."""
        if not service.delete_many(t, scope, [key]):
            raise KeyNotFound(f"key {key!r} not found")
        return Count(count=1)

    @app.post("/v1/incr", responses=RESPONSES, tags=["people"])
    def incr(body: IncrBody, t: T) -> Count:
        """Add `delta` to an int value (a missing key counts as 0); `count` the new value."""
        for _ in range(_INCR_TRIES):
            record = service.get_many(t, body.scope, [body.key]).get(body.key)
            current = 0 if record is None else _typed.decode(record.value)
            if type(current) is not int:
                raise InvalidInput(f"key {body.key!r} holds a {type(current).__name__}, not an int")
            new = current + body.delta
            encoded = base64.b64encode(_typed.encode(new)).decode()
            version = None if record is None else record.version
            created = None if record is None else record.created_at
            ttl = None if record is None or record.expires_at is None else (
                record.expires_at - service.now()
            )
            if service.compare_and_set(t, body.scope, body.key, version, created, encoded, ttl):
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
