"""How ``satchel serve`` runs the app under uvicorn, with a timeout uvicorn lacks.

uvicorn closes a keep-alive connection that stays idle after a response, but it waits
for ever for a request's headers: a connection that sends nothing, or its headers a
byte now and then (slowloris), holds a socket and a file descriptor until the server
runs out of them. Here every request's headers must be complete within
`header_timeout` seconds of the connection opening (for the first request) or of the
request's first byte; otherwise the connection is closed. A slow *body* is the app's
to refuse (``Gate`` in app.py: 408).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn

HEADER_TIMEOUT = 10.0  # seconds


class _HeaderDeadline(asyncio.Protocol):
    """Mixed in before uvicorn's HTTP protocol class (httptools or h11)."""

    header_timeout: float = HEADER_TIMEOUT
    cycle: Any  # uvicorn's: the request in progress, None before the first one
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    _header_timer: asyncio.TimerHandle | None = None

    def _between_requests(self) -> bool:
        return self.cycle is None or bool(self.cycle.response_complete)

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self._between_requests() and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self._between_requests():
            self._arm()  # the first byte of another request on a kept-alive connection
        super().data_received(data)
        if not self._between_requests():
            self._disarm()  # its headers are in: the app (and Gate) take over

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol(header_timeout: float = HEADER_TIMEOUT) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (as ``http="auto"`` picks it) with the header timeout."""
    base: type[asyncio.Protocol]
    try:
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # pragma: no cover - uvicorn without its [standard] extra
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    return type("SatchelHTTP", (_HeaderDeadline, base), {"header_timeout": header_timeout})


def uvicorn_config(
    app: Any, host: str, port: int, *, header_timeout: float | None = None, **options: Any
) -> uvicorn.Config:
    """The uvicorn settings ``satchel serve`` uses; `options` go to uvicorn.Config."""
    timeout = HEADER_TIMEOUT if header_timeout is None else header_timeout
    return uvicorn.Config(app, host=host, port=port, http=protocol(timeout), **options)
