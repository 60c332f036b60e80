"""The satchel server: a Store over HTTP with tenants and quotas (needs ``satchel[server]``).

``create_app(Service(backend, config))`` is the ASGI app; ``satchel serve`` runs it.
"""

from __future__ import annotations

from .app import create_app
from .service import Service
from .tenants import Config, Tenant

__all__ = ["Config", "Service", "Tenant", "create_app"]
