"""Time series over HTTP (one primitive each).

Points are charged against the quota when written and recounted with the
records. (Large values and event sequences need no endpoint: they are records, in kind scopes
of their scope, written and read through /v1/apply, /v1/get and /v1/scan.)
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Annotated

from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from .._series import series_of
from .deps import RESPONSES, T
from .ledger import POINT_COST
from .models import B64, MAX_BATCH, Int64, Name, ScopeBody, SeriesReseal, _Body
from .service import Service, b64decode
from .tenants import Tenant

OptT = Annotated[int | None, Field(ge=-(2**63), le=2**63 - 1)]


class Point(_Body):
    t: Int64
    value: B64


class SeriesBody(ScopeBody):
    name: Name


class SeriesPut(SeriesBody):
    points: Annotated[list[Point], Field(max_length=MAX_BATCH)]


class SeriesRange(SeriesBody):
    start: OptT = None
    stop: OptT = None
    limit: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 1000
    reverse: bool = False
    values: bool = True


class SeriesRemove(SeriesBody):
    start: OptT = None
    stop: OptT = None


class Result(BaseModel):
    """`count`/`ok` for writes; `points` or `names` for reads."""

    count: int = 0
    ok: bool = True
    points: list[Point] | None = None
    names: list[str] | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def routes(app: FastAPI, service: Service) -> None:
    """Register the series endpoints."""
    post = app.post
    series = series_of(service.backend)

    size_of = service.costs.size_of

    def reseal(t: Tenant, scope: str, name: str, fixed: int, pairs: list[tuple[bytes, bytes]],
               call: Callable[[str], int]) -> Result:  # fmt: skip
        """Charge what a reseal may add (as if every item were replaced), `call` it on the
        tenant's scope, and give back what it freed if it replaced every item (else the
        next recount does)."""
        full = service.writable(t, scope)
        diffs = [size_of(full, name, fixed + len(new)) - size_of(full, name, fixed + len(old))
                 for old, new in pairs]  # fmt: skip
        service.add(t, sum(d for d in diffs if d > 0))
        count = call(full)
        if count == len(pairs):
            service.credit(t, -sum(d for d in diffs if d < 0))
        return Result(count=count)

    @post("/v1/series/put", responses=RESPONSES, tags=["series"])
    def series_put(body: SeriesPut, t: T) -> Result:
        """Write points (distinct t) in one transaction."""
        points = [(p.t, b64decode(p.value)) for p in body.points]
        if len({ts for ts, _ in points}) != len(points):
            raise HTTPException(400, "two points have the same t")
        name, full = service.key(body.name), service.writable(t, body.scope)
        # A new series costs a container (Redis: a key; files engine: a file) beside points.
        new = not series.series_range(full, name, None, None, 1, values=False)
        service.add(t, sum(size_of(full, name, POINT_COST + len(v)) for _, v in points)
                    + (size_of(full, name, 0, 1) if new else 0))  # fmt: skip
        service.ledger.note(t.name, full)
        series.series_put(full, name, points)
        return Result(count=len(points))

    @post("/v1/series/reseal", responses=RESPONSES, tags=["series"])
    def series_reseal(body: SeriesReseal, t: T) -> Result:
        """Set each point (distinct t) to `new` where it is still `old`; `count` replaced."""
        points = [(p.t, b64decode(p.old), b64decode(p.new)) for p in body.points]
        if len({ts for ts, _, _ in points}) != len(points):
            raise HTTPException(400, "two points have the same t")
        name, pairs = service.key(body.name), [(old, new) for _, old, new in points]
        return reseal(t, body.scope, name, POINT_COST, pairs,
                      lambda full: series.series_reseal(full, name, points))  # fmt: skip

    @post("/v1/series/range", responses=RESPONSES, tags=["series"])
    def series_range(body: SeriesRange, t: T) -> Result:
        """Points with start <= t < stop, in t order (descending with `reverse`)."""
        full = service.scope(t, body.scope)
        points = series.series_range(
            full, service.key(body.name), body.start, body.stop, body.limit,
            reverse=body.reverse, values=body.values,
        )  # fmt: skip
        return Result(points=[Point(t=ts, value=_b64(v)) for ts, v in points])

    @post("/v1/series/remove", responses=RESPONSES, tags=["series"])
    def series_remove(body: SeriesRemove, t: T) -> Result:
        """Delete the points with start <= t < stop."""
        full = service.writable(t, body.scope)
        return Result(count=series.series_remove(full, service.key(body.name), body.start,
                                                  body.stop))  # fmt: skip

    @post("/v1/series/count", responses=RESPONSES, tags=["series"])
    def series_count(body: SeriesBody, t: T) -> Result:
        full = service.scope(t, body.scope)
        return Result(count=series.series_count(full, service.key(body.name)))

    @post("/v1/series/names", responses=RESPONSES, tags=["series"])
    def series_names(body: ScopeBody, t: T) -> Result:
        return Result(names=series.series_names(service.scope(t, body.scope)))
