"""What every route shares: the tenant of a request (from its bearer token), error bodies."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from .models import ErrorOut
from .tenants import Tenant


class _Bearer(HTTPBearer):
    """Names the bearer scheme in /openapi.json; app.Gate has checked the token already."""

    async def __call__(self, request: HTTPConnection) -> HTTPAuthorizationCredentials | None:
        return None


_bearer = _Bearer(auto_error=False)

RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422, 503)
}


async def tenant(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Tenant:
    """The tenant whose bearer token the request carries, as app.Gate found it (before the
    body was read); 401 without one.

    Async on purpose: it is cheap, and a sync dependency would cost each request one
    more trip through the thread pool."""
    found: Tenant | None = request.scope.get("state", {}).get("tenant")
    if found is None:  # Gate answers first; this holds if the app is put together otherwise
        raise HTTPException(401, "missing or wrong token")
    return found


T = Annotated[Tenant, Depends(tenant)]
