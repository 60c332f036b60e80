"""Request and response bodies of the JSON API (they make /openapi.json).

Values travel as base64 of the record bytes the client's Store produced (typed codec,
maybe sealed), so a remote client gets exactly its types back. Expiry travels as
`expires_in` (seconds from now, as the sender counts them) so clocks need not agree.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_BATCH = 100_000  # items in one batch (the body limit applies too)
MAX_TIME = 1e10  # seconds, as MAX_TTL in the Store
Name = Annotated[str, Field(min_length=1, max_length=1024)]
# A scope (up to 255 UTF-8 bytes), or the blob scope of one: kind_scope(scope, "b").
ScopeName = Annotated[str, Field(min_length=1, max_length=257)]
B64 = Annotated[str, Field(max_length=64 * 1024 * 1024, description="base64 of bytes")]
ExpiresIn = Annotated[float | None, Field(default=None, ge=-MAX_TIME, le=MAX_TIME)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecordOut(BaseModel):
    """One live record; `value` is omitted when values were not asked for."""

    key: str
    value: str | None = None
    created_at: float
    updated_at: float
    expires_at: float | None
    version: int


class ScopeBody(_Body):
    scope: ScopeName


class GetBody(ScopeBody):
    keys: Annotated[list[Name], Field(max_length=MAX_BATCH)]
    values: bool = True


class PutChange(_Body):
    """Write `value` under `key`; with `if_absent`, leave a live record alone."""

    op: Literal["put"]
    key: Name
    value: B64
    expires_in: ExpiresIn = None
    if_absent: bool = False


class DeleteChange(_Body):
    """Delete the record of `key`."""

    op: Literal["delete"]
    key: Name


class TouchChange(_Body):
    """Set the expiry of the live record of `key` (null: never expires)."""

    op: Literal["touch"]
    key: Name
    expires_in: ExpiresIn = None


ChangeIn = Annotated[PutChange | DeleteChange | TouchChange, Field(discriminator="op")]


class ExpectIn(_Body):
    """A condition: the live record of `key` has `version` (null: there is none) and,
    unless `created_at` is null, was created then."""

    key: Name
    version: Annotated[int | None, Field(ge=0, le=2**63 - 1)] = None
    created_at: Annotated[float | None, Field(ge=0, le=MAX_TIME)] = None


class ApplyBody(ScopeBody):
    """Changes (distinct keys) made in one atomic step if every condition holds."""

    changes: Annotated[list[ChangeIn], Field(max_length=MAX_BATCH)] = []
    expect: Annotated[list[ExpectIn], Field(max_length=MAX_BATCH)] = []


class ScanBody(ScopeBody):
    prefix: Annotated[str, Field(max_length=1024)] = ""
    after: Annotated[str | None, Field(max_length=1024)] = None
    limit: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 500
    values: bool = True


class IncrBody(ScopeBody):
    key: Name
    delta: Int64 = 1


class PointReseal(_Body):
    t: Int64
    old: B64
    new: B64


class SeriesReseal(ScopeBody):
    """Replace each point's value by `new` if it is still `old`."""

    name: Name
    points: Annotated[list[PointReseal], Field(max_length=MAX_BATCH)]


class ValueBody(_Body):
    """A value to store with the typed codec: JSON as is, or a str."""

    value: Any
    kind: Literal["json", "str"] = "json"
    ttl: Annotated[float | None, Field(gt=0, le=MAX_TIME)] = None


class Count(BaseModel):
    count: int


class Applied(BaseModel):
    """What `Backend.apply` returned: null if a condition failed (nothing was written)."""

    count: int | None


class Records(BaseModel):
    records: list[RecordOut]
    more: bool = False


class Scopes(BaseModel):
    scopes: list[str]


class KeyEntry(BaseModel):
    key: str
    size: int
    version: int
    created_at: float
    updated_at: float
    expires_at: float | None


class KeyPage(BaseModel):
    keys: list[KeyEntry]
    next_cursor: str | None


class ValueOut(KeyEntry):
    """A value decoded for people: `json_value` its JSON form (human.jsonable: an int past
    2**53 as text, in hex past ~4200 digits), `hex` for bytes, `text` for a str or such an
    int (or why the value cannot be read)."""

    scope: str
    type: str
    json_value: Any = None
    editable: bool = False  # json_value saved back as JSON gives the very same value
    hex: str | None = None
    text: str | None = None


class ItemPage(BaseModel):
    items: list[ValueOut]
    next_cursor: str | None


class UsageOut(BaseModel):
    tenant: str
    bytes: int
    keys: int
    quota_bytes: int
    quota_keys: int
    readonly: bool


class Tenants(BaseModel):
    tenants: list[UsageOut]


class Error(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: Error
