"""A time limit for calls that wait on a server which may never answer.

A server that hangs (its processes stopped, its machine frozen) keeps its TCP
connections open: the kernel still acknowledges, so neither keepalives nor
``tcp_user_timeout`` notice, and a blocking driver call waits forever. One daemon thread
per process watches the calls in flight. When a call overruns its limit the watcher
first asks the server to cancel it (a healthy server that is merely slow, or waiting for
a lock, then fails the statement cleanly); if the call has still not ended a second
later, the watcher shuts its socket down, so the driver fails at once with its own
"connection closed" error and the caller drops the connection.

Cost per call: two dict operations under a lock (about a microsecond).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from itertools import count
from typing import Literal

TICK = 0.1  # seconds between the watcher's looks: how late a limit may fire
CANCEL_WAIT = 1.0  # seconds a call may take to end after the cancel, before its socket goes
IDLE_EXIT = 5.0  # seconds without calls to watch after which the watcher thread ends

Fired = Literal["canceled", "shut"]


@dataclass(eq=False, slots=True)
class _Watch:
    deadline: float  # to cancel; then, once fired, to shut the socket down
    fd: int
    cancel: Callable[..., object] | None
    fired: Fired | None = None
    inode: int = 0  # of the socket when the limit fired: a number that the driver closed
    # after that and another socket reused is left alone


_lock = threading.Lock()
_due: dict[int, _Watch] = {}
_tokens = count(1)
_watcher: threading.Thread | None = None


def start(fd: int, seconds: float, cancel: Callable[..., object] | None = None) -> int:
    """Watch a call on socket `fd` for `seconds`; `cancel(timeout=)` asks the server to
    stop it. Returns a token for `stop`."""
    global _watcher
    token = next(_tokens)
    watch = _Watch(time.monotonic() + seconds, fd, cancel)
    with _lock:
        _due[token] = watch
        if _watcher is None:
            _watcher = threading.Thread(target=_watch, name="satchel-watchdog", daemon=True)
            _watcher.start()
    return token


def stop(token: int) -> Fired | None:
    """End the watch. None: the limit did not fire. "canceled": the server was asked to
    cancel the call. "shut": its socket was shut down. Either way, drop the connection."""
    with _lock:
        return _due.pop(token).fired


def _watch() -> None:
    global _watcher
    idle_since = time.monotonic()
    while True:
        time.sleep(TICK)
        now = time.monotonic()
        with _lock:  # held while acting, so `stop` never returns in the middle
            if _due:
                idle_since = now
            elif now - idle_since > IDLE_EXIT:
                _watcher = None
                return
            for watch in _due.values():
                if watch.deadline > now or watch.fired == "shut":
                    continue
                with suppress(Exception):  # the watcher must outlive any one call
                    if watch.fired is None:  # the call has not ended: `fd` is its socket
                        watch.fired, watch.deadline = "canceled", now + CANCEL_WAIT
                        watch.inode = os.fstat(watch.fd).st_ino
                        if watch.cancel is not None:  # in a thread of its own: a cancel
                            threading.Thread(  # sent to a hung server can block as well
                                target=_cancel, args=(watch.cancel,), daemon=True
                            ).start()
                    else:
                        _shut(watch)


def _shut(watch: _Watch) -> None:
    try:
        # A duplicate descriptor: closing it leaves the driver's own one alone, while
        # shutdown() acts on the connection both share.
        with socket.socket(fileno=os.dup(watch.fd)) as sock:
            if os.fstat(sock.fileno()).st_ino == watch.inode:
                sock.shutdown(socket.SHUT_RDWR)
                watch.fired = "shut"
    except OSError:
        pass  # the driver closed it already: the call is failing anyway


def _cancel(cancel: Callable[..., object]) -> None:
    with suppress(Exception):  # a cancel that fails leaves the shutdown to do the job
        cancel(timeout=CANCEL_WAIT)


def _after_fork() -> None:
    """A child has no watcher thread and no calls in flight."""
    global _lock, _watcher
    _lock, _watcher = threading.Lock(), None
    _due.clear()


os.register_at_fork(after_in_child=_after_fork)
