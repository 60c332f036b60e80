"""A time limit for calls that wait on a server which may never answer.

A server that hangs (its processes stopped, its machine frozen) keeps its TCP
connections open: the kernel still acknowledges, so neither keepalives nor
``tcp_user_timeout`` notice, and a blocking driver call waits forever. One daemon thread
per process watches the calls in flight and shuts down the socket of any call that
overruns its limit; the driver then fails at once with its own "connection closed"
error, and the caller drops the connection.

Cost per call: two dict operations under a lock (well under a microsecond).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from itertools import count

TICK = 0.1  # seconds between the watcher's looks: how late a limit may fire

_lock = threading.Lock()
_due: dict[int, tuple[float, int]] = {}  # token -> (deadline, socket fd)
_tokens = count(1)
_watcher: threading.Thread | None = None


def start(fd: int, seconds: float) -> int:
    """Watch a call on socket `fd` for `seconds`; returns a token for `stop`."""
    global _watcher
    token = next(_tokens)
    with _lock:
        _due[token] = (time.monotonic() + seconds, fd)
        if _watcher is None:
            _watcher = threading.Thread(target=_watch, name="satchel-watchdog", daemon=True)
            _watcher.start()
    return token


def stop(token: int) -> bool:
    """End the watch; True if the limit fired (the socket is shut down, drop it)."""
    with _lock:
        return _due.pop(token, None) is None


def _watch() -> None:
    while True:
        time.sleep(TICK)
        now = time.monotonic()
        with _lock:  # held while shutting down, so `stop` never races a reused fd
            for token, (deadline, fd) in list(_due.items()):
                if deadline <= now:
                    del _due[token]
                    _shut(fd)


def _shut(fd: int) -> None:
    try:
        # A duplicate descriptor: closing it leaves the driver's own one alone, while
        # shutdown() acts on the connection both share.
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: the call is failing anyway


def _after_fork() -> None:
    global _lock, _watcher
    _lock, _watcher = threading.Lock(), None
    _due.clear()


os.register_at_fork(after_in_child=_after_fork)
