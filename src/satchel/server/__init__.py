"""The satchel server: a Store over HTTP with tenants and quotas (needs ``satchel[server]``).

``create_app(Service(backend, config))`` is the ASGI app; ``satchel serve`` runs it.
Names load on first use, so ``satchel.server.cli`` works without the server extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .service import Service
    from .tenants import Config, Tenant

__all__ = ["Config", "Service", "Tenant", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "Service":
        from .service import Service

        return Service
    if name in ("Config", "Tenant"):
        from . import tenants

        return getattr(tenants, name)
    raise AttributeError(f"module 'satchel.server' has no attribute {name!r}")
