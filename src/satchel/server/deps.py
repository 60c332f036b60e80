"""What every route shares: the tenant of a request (from its bearer token), error bodies."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from .models import ErrorOut
from .service import Service
from .tenants import Tenant

_bearer = HTTPBearer(auto_error=False)

RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422, 503)
}


async def tenant(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Tenant:
    """The tenant whose bearer token the request carries; 401 without one.

    Async on purpose: it is cheap, and a sync dependency would cost each request one
    more trip through the thread pool."""
    service: Service = request.app.state.service
    found = None if creds is None else service.tenant_for(creds.credentials)
    if found is None:
        raise HTTPException(401, "missing or wrong token")
    return found


T = Annotated[Tenant, Depends(tenant)]
