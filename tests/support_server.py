"""A satchel server for the tests: one per session, on a free loopback port, in a thread.

``fresh_url(tmp_path)`` adds a new tenant (its own scope prefix, a fresh token) and
returns an ``http://`` URL with the token in its query: an empty, isolated store.
``running()`` gives the server itself, for tests that add tenants of their own.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import satchel
from satchel._engines import connect


@dataclass
class Running:
    """A server started by `start`: its base URL, its config (live) and its engine."""

    url: str
    service: Any  # satchel.server.Service
    server: Any  # uvicorn.Server
    thread: threading.Thread
    workdir: Path

    def tenant(self, **options: Any) -> str:
        """Add a tenant (name and prefix made unique) and return a token for it."""
        from satchel.server import Tenant

        name = options.pop("name", None) or f"t{uuid.uuid4().hex[:12]}"
        options.setdefault("prefix", f"{name}:")
        return str(self.service.config.add_token(Tenant(name=name, **options)))


_RUNNING: Running | None = None
_LOCK = threading.Lock()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[Any], seconds: float = 20.0) -> None:
    """Wait until the server process `proc` answers /healthz at `url`; fail if it exits
    or does not answer within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
        time.sleep(0.05)


def serve(
    engine_url: str, config: Any, header_timeout: float | None = None, **app_options: Any
) -> Running:
    """Start a server for `engine_url` with `config` on a free loopback port;
    `app_options` go to create_app."""
    import uvicorn

    from satchel.server import Service, create_app
    from satchel.server.serving import uvicorn_config

    service = Service(connect(engine_url, {}), config)
    port = free_port()
    app = create_app(service, **app_options)
    # As `satchel serve` runs it (with its header timeout), but quiet and in a thread.
    server = uvicorn.Server(
        uvicorn_config(
            app, "127.0.0.1", port, header_timeout=header_timeout, log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, name=f"satchel-server-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    return Running(f"http://127.0.0.1:{port}", service, server, thread, Path())


def stop(running: Running) -> None:
    running.server.should_exit = True
    running.thread.join(10)
    running.service.close()


def running() -> Running:
    """The session's server (started on first use), backed by a SQLite file."""
    global _RUNNING
    with _LOCK:
        if _RUNNING is None:
            from satchel.server import Config

            workdir = Path(tempfile.mkdtemp(prefix="satchel-server-"))
            _RUNNING = serve(f"sqlite:///{workdir}/server.db", Config())
            _RUNNING.workdir = workdir
        return _RUNNING


def fresh_url(tmp_path: Path) -> str:
    """The URL of an empty store: a new tenant of the session's server."""
    server = running()
    return f"{server.url}?token={server.tenant()}"


def open_fresh(**options: Any) -> satchel.Store:
    return satchel.open(fresh_url(Path()), **options)


def stop_session_server() -> None:
    global _RUNNING
    with _LOCK:
        if _RUNNING is not None:
            stop(_RUNNING)
            shutil.rmtree(_RUNNING.workdir, ignore_errors=True)
            _RUNNING = None
