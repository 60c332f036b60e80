"""Time series and event sequences over HTTP (one Backend primitive each).

Points and events are charged against the quota when written and recounted with the
records. (Large values need no endpoint: their chunks are records, in the blob scope of
their scope, written and read through /v1/apply, /v1/get and /v1/scan.)
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from .deps import RESPONSES, T
from .ledger import EVENT_COST, POINT_COST
from .models import B64, MAX_BATCH, EventsReseal, Int64, Name, ScopeBody, SeriesReseal, _Body
from .service import Service, b64decode
from .tenants import Tenant

Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]
OptT = Annotated[int | None, Field(ge=-(2**63), le=2**63 - 1)]


class Point(_Body):
    t: Int64
    value: B64


class Event(_Body):
    seq: Seq
    t: Int64
    data: B64


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


class EventsState(SeriesBody):
    which: Literal["head", "base"] = "head"


class EventsAppend(SeriesBody):
    after_seq: Seq
    events: Annotated[list[Point], Field(min_length=1, max_length=MAX_BATCH)]
    head: B64


class EventsRead(SeriesBody):
    after_seq: Seq = 0
    limit: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 1000


class EventsCompact(SeriesBody):
    base: Event


class Result(BaseModel):
    """`count`/`ok` for writes; `points`, `events`, `state` or `names` for reads."""

    count: int = 0
    ok: bool = True
    points: list[Point] | None = None
    events: list[Event] | None = None
    state: Event | None = None
    names: list[str] | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def routes(app: FastAPI, service: Service) -> None:
    """Register the series and events endpoints."""
    post = app.post
    backend = service.backend

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
        new = not backend.series_range(full, name, None, None, 1, values=False)
        service.add(t, sum(size_of(full, name, POINT_COST + len(v)) for _, v in points)
                    + (size_of(full, name, 0, 1) if new else 0))  # fmt: skip
        service.ledger.note(t.name, full)
        backend.series_put(full, name, points)
        return Result(count=len(points))

    @post("/v1/series/reseal", responses=RESPONSES, tags=["series"])
    def series_reseal(body: SeriesReseal, t: T) -> Result:
        """Set each point (distinct t) to `new` where it is still `old`; `count` replaced."""
        points = [(p.t, b64decode(p.old), b64decode(p.new)) for p in body.points]
        if len({ts for ts, _, _ in points}) != len(points):
            raise HTTPException(400, "two points have the same t")
        name, pairs = service.key(body.name), [(old, new) for _, old, new in points]
        return reseal(t, body.scope, name, POINT_COST, pairs,
                      lambda full: backend.series_reseal(full, name, points))  # fmt: skip

    @post("/v1/series/range", responses=RESPONSES, tags=["series"])
    def series_range(body: SeriesRange, t: T) -> Result:
        """Points with start <= t < stop, in t order (descending with `reverse`)."""
        full = service.scope(t, body.scope)
        points = backend.series_range(
            full, service.key(body.name), body.start, body.stop, body.limit,
            reverse=body.reverse, values=body.values,
        )  # fmt: skip
        return Result(points=[Point(t=ts, value=_b64(v)) for ts, v in points])

    @post("/v1/series/remove", responses=RESPONSES, tags=["series"])
    def series_remove(body: SeriesRemove, t: T) -> Result:
        """Delete the points with start <= t < stop."""
        full = service.writable(t, body.scope)
        return Result(count=backend.series_remove(full, service.key(body.name), body.start,
                                                  body.stop))  # fmt: skip

    @post("/v1/series/count", responses=RESPONSES, tags=["series"])
    def series_count(body: SeriesBody, t: T) -> Result:
        full = service.scope(t, body.scope)
        return Result(count=backend.series_count(full, service.key(body.name)))

    @post("/v1/series/names", responses=RESPONSES, tags=["series"])
    def series_names(body: ScopeBody, t: T) -> Result:
        return Result(names=backend.series_names(service.scope(t, body.scope)))

    @post("/v1/events/state", responses=RESPONSES, tags=["events"])
    def events_state(body: EventsState, t: T) -> Result:
        """The head or base state of a sequence (`state` null if none)."""
        full = service.scope(t, body.scope)
        state = backend.events_state(full, service.key(body.name), body.which)
        if state is None:
            return Result()
        return Result(state=Event(seq=state[0], t=state[1], data=_b64(state[2])))

    @post("/v1/events/append", responses=RESPONSES, tags=["events"])
    def events_append(body: EventsAppend, t: T) -> Result:
        """Append events if the last seq is `after_seq`; `ok` False if it moved on."""
        events = [(p.t, b64decode(p.value)) for p in body.events]
        head, name = b64decode(body.head), service.key(body.name)
        full = service.writable(t, body.scope)
        # The new head is charged whole (the old one is released by the next recount), and
        # a sequence begun (after seq 0) its container (Redis: a key; files engine: a file).
        growth = sum(size_of(full, name, EVENT_COST + len(v)) for _, v in events)
        growth += size_of(full, name, EVENT_COST + len(head))
        growth += size_of(full, name, 0, 1) if body.after_seq == 0 else 0
        service.add(t, growth)
        service.ledger.note(t.name, full)
        ok = backend.events_append(full, name, body.after_seq, events, head)
        if not ok:  # it moved on: nothing was written
            service.credit(t, growth)
        return Result(ok=ok)

    @post("/v1/events/reseal", responses=RESPONSES, tags=["events"])
    def events_reseal(body: EventsReseal, t: T) -> Result:
        """Set each event's (distinct seq) or state's (distinct which) data to `new` where
        it is still `old`; `count` replaced."""
        events = [(e.seq, b64decode(e.old), b64decode(e.new)) for e in body.events]
        states = [(s.which, b64decode(s.old), b64decode(s.new)) for s in body.states]
        if len({e[0] for e in events}) < len(events) or len({s[0] for s in states}) < len(states):
            raise HTTPException(400, "two events have the same seq, or two states the same which")
        name, pairs = service.key(body.name), [(o, n) for _, o, n in [*events, *states]]
        return reseal(t, body.scope, name, EVENT_COST, pairs,
                      lambda full: backend.events_reseal(full, name, events, states))  # fmt: skip

    @post("/v1/events/read", responses=RESPONSES, tags=["events"])
    def events_read(body: EventsRead, t: T) -> Result:
        full = service.scope(t, body.scope)
        found = backend.events_read(full, service.key(body.name), body.after_seq, body.limit)
        return Result(events=[Event(seq=seq, t=ts, data=_b64(v)) for seq, ts, v in found])

    @post("/v1/events/compact", responses=RESPONSES, tags=["events"])
    def events_compact(body: EventsCompact, t: T) -> Result:
        base, name = (body.base.seq, body.base.t, b64decode(body.base.data)), service.key(body.name)
        full = service.writable(t, body.scope)
        service.add(t, size_of(full, name, EVENT_COST + len(base[2])))
        backend.events_compact(full, name, base)
        return Result()

    @post("/v1/events/delete", responses=RESPONSES, tags=["events"])
    def events_delete(body: SeriesBody, t: T) -> Result:
        full = service.writable(t, body.scope)
        return Result(ok=backend.events_delete(full, service.key(body.name)))

    @post("/v1/events/names", responses=RESPONSES, tags=["events"])
    def events_names(body: ScopeBody, t: T) -> Result:
        return Result(names=backend.events_names(service.scope(t, body.scope)))
