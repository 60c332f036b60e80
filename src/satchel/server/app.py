"""The ASGI app: the record-level JSON API under /v1, /healthz, /openapi.json and /ui.

Status codes: 401 missing or wrong token (before any of the body is read), 403 forbidden
scope or read-only tenant, 404 missing key, 400/422 bad input, 409 a conflict, 413 over
quota or body too large, 408 a body that came too slowly, 503 the engine failed, or the
server's config file is unreadable (then every token is refused until it is fixed: it may
hold a revocation).
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._errors import (
    BackendError,
    BackendUnavailable,
    CorruptData,
    DecryptionError,
    InvalidInput,
    KeyNotFound,
    QuotaExceeded,
    ReadOnlyError,
    SatchelError,
    UnsupportedValue,
    ValueChanged,
)
from . import extras, human, ui
from .deps import RESPONSES, T
from .models import Applied, ApplyBody, Count, GetBody, Records, ScanBody, ScopeBody, Scopes
from .service import Service, record_out
from .tenants import ConfigUnreadable

MAX_BODY = 64 * 1024 * 1024 + 1024 * 1024  # a 64 MiB base64 batch and some JSON around it
BODY_TIMEOUT = 30.0  # seconds of grace for a request body, after its headers ...
BODY_MIN_RATE = 16 * 1024  # ... and then at least this many bytes a second on average,
BODY_MAX_TIME = 120.0  # ... and all of it within this many seconds of the headers
log = logging.getLogger("satchel.server")
ENGINE_FAILED = {  # what a tenant reads of a 503; the server's log has the details
    "unavailable": "the storage engine is unavailable; try again later",
    "backend": "the storage engine failed; the server's log has the details",
}
_ERRORS: list[tuple[type[Exception], int, str]] = [
    (KeyNotFound, 404, "not_found"),
    (ReadOnlyError, 403, "read_only"),
    (PermissionError, 403, "forbidden"),
    (QuotaExceeded, 413, "over_quota"),
    (ValueChanged, 409, "value_changed"),
    (InvalidInput, 400, "invalid"),
    (UnsupportedValue, 400, "invalid"),
    (BackendUnavailable, 503, "unavailable"),
    (BackendError, 503, "backend"),
    (CorruptData, 422, "corrupt"),  # a stored value the operation cannot read
    (DecryptionError, 422, "corrupt"),
    (SatchelError, 503, "backend"),  # anything else satchel raises: never a 500
]


def public(exc: Exception) -> str:
    """What a client may read of `exc`: the message and the key it names, never the
    server-side scope (it holds the tenant prefix) or the engine (its URL or path)."""
    if not isinstance(exc, SatchelError):
        return str(exc)
    return exc.message if exc.key is None else f"{exc.message} (key {exc.key!r})"[:2000]


def error(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


class Gate:
    """What every request passes before its body is read, and while it is read.

    - A request under /v1 without a good bearer token is answered 401 at once (503 while
      the server's config file is unreadable), its body unread (and the connection closed
      if it announced one): nobody without a token makes the server read, or hold, a byte
      of a body. The tenant found goes to scope["state"]["tenant"] for ``deps.tenant``,
      so the token is looked up once.
    - A body over `limit` bytes is refused with 413, before or while it arrives.
    - A body that comes too slowly is refused with 408, closing the connection: it must
      have arrived at `min_rate` bytes a second on average after `timeout` seconds of
      grace, and whole within `max_time` seconds (so a client sending a byte now and
      then, or just at the minimal rate, cannot hold a connection and its request long).
    """

    def __init__(
        self, app: ASGIApp, service: Service, limit: int, timeout: float = BODY_TIMEOUT,
        min_rate: float = BODY_MIN_RATE, max_time: float = BODY_MAX_TIME,
    ) -> None:  # fmt: skip
        self.app, self.service, self.limit = app, service, limit
        self.timeout, self.min_rate, self.max_time = timeout, min_rate, max_time

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if scope["path"].startswith("/v1/"):
            refused = self.refused(scope, headers)
            if refused is not None:
                await refused(scope, receive, send)
                return
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await error(413, "too_large", f"the body limit is {self.limit} bytes")(
                scope, receive, send
            )
            return
        seen, done, slow = 0, False, False
        began = time.monotonic()
        deadline = began + self.max_time

        async def counted() -> Message:
            nonlocal seen, done, slow
            if done:  # the body is in: what comes now is a disconnect, whenever it comes
                return await receive()
            due = min(began + self.timeout + seen / self.min_rate, deadline)
            try:
                message = await asyncio.wait_for(receive(), max(due - time.monotonic(), 0.0))
            except TimeoutError:
                slow = True
                raise HTTPException(408, "the request body came too slowly") from None
            done = not message.get("more_body", False)
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"the body limit is {self.limit} bytes")
            return message

        async def closing(message: Message) -> None:
            if slow and message["type"] == "http.response.start":  # the rest is not read
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, counted, closing)

    def refused(self, scope: Scope, headers: dict[bytes, bytes]) -> JSONResponse | None:
        """The answer to a request without a good token, else None (its tenant noted)."""
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        token = token.strip()
        try:
            found = self.service.tenant_for(token) if scheme.lower() == "bearer" else None
        except ConfigUnreadable as exc:
            answer = error(503, "config_unreadable", exc.message)
        else:
            if found is not None:
                scope.setdefault("state", {})["tenant"] = found
                return None
            answer = error(401, "unauthorized", "missing or wrong token")
        if headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers:
            answer.headers["connection"] = "close"  # its body is not read: not for a next request
        return answer


def create_app(
    service: Service, *, max_body: int = MAX_BODY, body_timeout: float = BODY_TIMEOUT,
    body_min_rate: float = BODY_MIN_RATE, body_max_time: float = BODY_MAX_TIME,
) -> FastAPI:  # fmt: skip
    """The server app for `service` (an engine and its tenants); tokens are checked before
    a body is read, and bodies are at most `max_body` bytes and must arrive in time (see
    Gate)."""
    app = FastAPI(
        title="satchel server",
        version="1",
        description="The satchel Store over HTTP: records, tenants and quotas.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    install_errors(app)
    routes(app, service)
    extras.routes(app, service)
    human.routes(app, service)
    ui.routes(app)
    app.add_middleware(Gate, service=service, limit=max_body, timeout=body_timeout,
                       min_rate=body_min_rate, max_time=body_max_time)  # fmt: skip
    return app


def install_errors(app: FastAPI) -> None:
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        for kind, status, code in _ERRORS:
            if isinstance(exc, kind):
                if status == 503:  # its text names the engine's host, user or database
                    log.warning("%s %s: %s", request.method, request.url.path, exc)
                    return error(status, code, ENGINE_FAILED[code])
                return error(status, code, public(exc))
        raise exc

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        codes = {401: "unauthorized", 404: "not_found", 405: "method", 408: "too_slow",
                 413: "too_large"}  # fmt: skip
        return error(exc.status_code, codes.get(exc.status_code, "invalid"), str(exc.detail))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        where = "; ".join(
            f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in exc.errors()
        )
        return error(422, "invalid", where[:2000])

    for kind, _, _ in _ERRORS:
        app.add_exception_handler(kind, on_error)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)


def routes(app: FastAPI, service: Service) -> None:
    """The record-level API the http engine uses (one Backend primitive per call)."""
    post = app.post

    @app.get("/healthz", tags=["server"])
    async def healthz() -> dict[str, str]:
        """Async: answered on the event loop, even while every worker thread is busy."""
        return {"status": "ok"}

    @app.get("/v1/scopes", responses=RESPONSES, tags=["records"])
    def scopes(t: T, kinds: bool = False) -> Scopes:
        """Sorted names of the tenant's scopes holding a live record. With `kinds`, also
        their kind scopes (``scope + "\\u001fb"``: the chunks of a Store's large values),
        as the http engine lists them for the Store that frees unused chunks."""
        return Scopes(scopes=service.scopes(t, kinds))

    @post("/v1/get", responses=RESPONSES, tags=["records"])
    def get_many(body: GetBody, t: T) -> Records:
        """The live records of those keys that have one."""
        found = service.get_many(t, body.scope, body.keys)
        return Records(records=[record_out(r, body.values) for r in found.values()])

    @post("/v1/apply", responses=RESPONSES, tags=["records"])
    def apply(body: ApplyBody, t: T) -> Applied:
        """Make the changes (distinct keys) in one atomic step if every condition in
        `expect` holds. `count`: the puts that created a record, and the deletes and
        touches that found one; null if a condition failed (nothing was written). 413
        if the batch does not fit the quota (nothing was written)."""
        return Applied(count=service.apply(t, body.scope, body.changes, body.expect))

    @post("/v1/scan", responses=RESPONSES, tags=["records"])
    def scan(body: ScanBody, t: T) -> Records:
        """Records whose key starts with `prefix`, after `after`, in key order."""
        page, more = service.scan(t, body.scope, body.prefix, body.after, body.limit, body.values)
        return Records(records=[record_out(r, body.values) for r in page], more=more)

    @post("/v1/count", responses=RESPONSES, tags=["records"])
    def count(body: ScopeBody, t: T) -> Count:
        """How many live records the scope holds."""
        return Count(count=service.count(t, body.scope))

    @post("/v1/clear", responses=RESPONSES, tags=["records"])
    def clear(body: ScopeBody, t: T) -> Count:
        """Delete every record of the scope."""
        service.clear(t, body.scope)
        return Count(count=0)
