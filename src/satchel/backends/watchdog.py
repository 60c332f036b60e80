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
    deadline: float
    fd: int
    cancel: Callable[..., object] | None
    fired: Fired | None = None
    busy: bool = False  # the watcher is acting on this call: `stop` waits for it
    ended: bool = False  # the call has ended (its caller is in `stop`)


_cond = threading.Condition(threading.Lock())
_due: dict[int, _Watch] = {}
_tokens = count(1)
_watcher: threading.Thread | None = None


def start(fd: int, seconds: float, cancel: Callable[..., object] | None = None) -> int:
    """Watch a call on socket `fd` for `seconds`; `cancel(timeout=)` asks the server to
    stop it. Returns a token for `stop`."""
    global _watcher
    token = next(_tokens)
    watch = _Watch(time.monotonic() + seconds, fd, cancel)
    with _cond:
        _due[token] = watch
        if _watcher is None:
            _watcher = threading.Thread(target=_watch, name="satchel-watchdog", daemon=True)
            _watcher.start()
    return token


def stop(token: int) -> Fired | None:
    """End the watch. None: the limit did not fire. "canceled": the server was asked to
    cancel the call. "shut": its socket was shut down, so the connection must be dropped."""
    with _cond:
        watch = _due[token]
        watch.ended = True
        while watch.busy:
            _cond.wait()
        del _due[token]
        return watch.fired


def _watch() -> None:
    global _watcher
    idle_since = time.monotonic()
    while True:
        time.sleep(TICK)
        now = time.monotonic()
        with _cond:
            if _due:
                idle_since = now
            elif now - idle_since > IDLE_EXIT:
                _watcher = None
                return
            overdue = [w for w in _due.values() if w.fired is None and w.deadline <= now]
            for watch in overdue:
                watch.busy, watch.fired = True, "canceled"
        if overdue:
            try:
                with suppress(Exception):  # the watcher must outlive any one call
                    _fire(overdue)
            finally:
                with _cond:
                    for watch in overdue:
                        watch.busy = False
                    _cond.notify_all()


def _fire(overdue: list[_Watch]) -> None:
    """Cancel the calls, then shut the sockets of those not ended within CANCEL_WAIT."""
    for watch in overdue:
        if watch.cancel is not None:
            # In a thread of its own: a cancel sent to a hung server can block as well.
            threading.Thread(target=_cancel, args=(watch.cancel,), daemon=True).start()
    limit = time.monotonic() + CANCEL_WAIT
    while time.monotonic() < limit:
        with _cond:
            if all(watch.ended for watch in overdue):
                return
        time.sleep(0.01)
    with _cond:  # a caller cannot close its connection while this runs
        for watch in overdue:
            if not watch.ended:
                _shut(watch)


def _shut(watch: _Watch) -> None:
    # `fd` is still the call's socket: the call has not ended, and a driver that closes
    # its socket itself (the server went away) fails the call at once, well within
    # CANCEL_WAIT, so a socket that reused the number is never shut down here.
    try:
        # A duplicate descriptor: closing it leaves the driver's own one alone, while
        # shutdown() acts on the connection both share.
        with socket.socket(fileno=os.dup(watch.fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
            watch.fired = "shut"
    except OSError:
        pass  # the driver closed it already: the call is failing anyway


def _cancel(cancel: Callable[..., object]) -> None:
    with suppress(Exception):  # a cancel that fails leaves the shutdown to do the job
        cancel(timeout=CANCEL_WAIT)


def _after_fork() -> None:
    """A child has no watcher thread and no calls in flight."""
    global _cond, _watcher
    _cond, _watcher = threading.Condition(threading.Lock()), None
    _due.clear()


os.register_at_fork(after_in_child=_after_fork)
