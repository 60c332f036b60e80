"""Reliability: a real satchel server against hostile clients (issue 11, "Server").

Each test starts its own server (tests/support_server.py) on a free loopback port, with
a SQLite file under tmp_path behind it, and stops it at the end. While the hostile
clients run, a legitimate tenant A keeps writing numbered values through the http
engine and notes every acknowledged write; afterwards every one of them reads back
exactly, A holds no other key, its usage (/v1/usage) is what its records account for,
and a second tenant B sees nothing of A's (and A nothing of B's):

- 10,000 requests with wrong tokens (missing, wrong, revoked, malformed headers) over
  keep-alive connections: every one is a 401, none a 5xx, and A keeps being served.
- Clients cut mid-request (headers only, half a body, half a chunk of a large value, a
  reset mid-body): nothing half-written shows, no quota leaks, the server answers.
- Slow clients (slowloris: headers or a body a byte at a time, idle connections): A's
  writes stay prompt, and the server closes every slow connection within its timeouts
  (the server started as ``satchel serve`` starts it).
- Bodies over the limit, with a Content-Length and chunked without one: 413, nothing
  stored, usage unchanged.

``pytest --long`` sends more requests; ``pytest -s`` prints one "FAULTS" line per scenario
(rounds, writes acknowledged, lost, failed-and-reported, error types, and what the
hostile clients got).
"""

from __future__ import annotations

import base64
import collections
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import satchel
import support_server
from satchel.server import Config

LATENCY_BOUND = 2.0  # seconds: the slowest write A may see while hostile clients run
HOST = "127.0.0.1"
BLOB_SCOPE = "a\x1fb"  # where A's Store keeps the chunks of its large values (records)


def _chunk_put(key: bytes, data: bytes) -> bytes:
    """The /v1/apply body a Store sends for a chunk of a large value of A's."""
    return (b'{"scope": "a\\u001fb", "changes": [{"op": "put", "key": "c/%s/00000000", '
            b'"value": "%s"}]}' % (key, base64.b64encode(data)))  # fmt: skip


# --- the legitimate tenant ----------------------------------------------------------------


class _Writer:
    """Tenant A writing numbered values in a thread; every acknowledged write is noted."""

    def __init__(self, url: str, token: str, scope: str = "a") -> None:
        self.store = satchel.open(f"{url}?token={token}", scope=scope)
        self.acked: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.errors: list[BaseException] = []
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tenant-a-writer", daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            key, value = f"n{i:07d}", i
            began = time.perf_counter()
            try:
                self.store.set(key, value)
            except satchel.SatchelError as exc:
                self.failed[key] = value
                self.errors.append(exc)
            else:
                self.acked[key] = value
            self.latencies.append(time.perf_counter() - began)
            i += 1

    def __enter__(self) -> _Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "tenant A's writer hung"

    def verify(self, min_writes: int = 20) -> None:
        """Every acknowledged write reads back exactly; A holds no other key in its scope."""
        assert not self.errors, f"tenant A's writes failed: {self.errors[:3]}"
        assert len(self.acked) >= min_writes, f"tenant A wrote only {len(self.acked)} values"
        found = self.store.get_many(list(self.acked))
        lost = {k: v for k, v in self.acked.items() if found.get(k) != v}
        assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {list(lost.items())[:5]}"
        extra = set(self.store.keys()) - set(self.acked)
        assert not extra, f"keys nobody was told were written: {sorted(extra)[:5]}"

    def p99(self) -> float:
        if len(self.latencies) < 2:
            return max(self.latencies, default=0.0)
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[98]

    def summary(self, label: str, rounds: int, **extra: Any) -> None:
        """One line for the issue's table (shown with ``pytest -s``)."""
        kinds = sorted({type(exc).__name__ for exc in self.errors})
        more = " ".join(f"{k}={v}" for k, v in extra.items())
        print(
            f"\nFAULTS server {label}: rounds={rounds} acknowledged={len(self.acked)} lost=0 "
            f"failed-and-reported={len(self.failed)} errors={','.join(kinds) or '-'} "
            f"a-p99={self.p99() * 1000:.0f}ms a-max={max(self.latencies) * 1000:.0f}ms {more}"
        )


# --- servers and tenants --------------------------------------------------------------------


class _Tenants:
    """A (writing in scope "a") and B (holding a few values in scope "b") of one server."""

    def __init__(self, running: support_server.Running) -> None:
        self.running = running
        self.port = int(running.url.rsplit(":", 1)[1])
        self.a = running.tenant(name="tenant-a")
        self.b = running.tenant(name="tenant-b")
        with satchel.open(f"{running.url}?token={self.b}", scope="b") as store:
            store.set_many({f"b{i}": f"b's value {i}" for i in range(5)})

    def client(self, token: str | None) -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.running.url, headers=headers, timeout=10)

    def check_isolation(self) -> None:
        """A and B each see only their own scope, through every listing."""
        with self.client(self.a) as a, self.client(self.b) as b:
            assert a.get("/v1/scopes").json() == {"scopes": ["a"]}
            assert b.get("/v1/scopes").json() == {"scopes": ["b"]}
            for c, other in ((a, "b"), (b, "a")):
                page = c.get("/v1/keys", params={"scope": other, "limit": 1000})
                assert page.status_code == 200 and page.json()["keys"] == [], page.text
                assert c.get("/v1/value", params={"scope": other, "key": "n0000000"}).status_code \
                    == 404  # fmt: skip
        with satchel.open(f"{self.running.url}?token={self.b}", scope="a") as b_in_a:
            assert list(b_in_a.keys()) == [] and b_in_a.get("n0000000", None) is None
        with satchel.open(f"{self.running.url}?token={self.a}", scope="b") as a_in_b:
            assert list(a_in_b.keys()) == [] and a_in_b.get("b0", None) is None
        with satchel.open(f"{self.running.url}?token={self.b}", scope="b") as b_own:
            assert sorted(b_own.keys()) == [f"b{i}" for i in range(5)]

    def check_usage(self, token: str) -> dict[str, int]:
        """The tenant's usage is what its live records cost (nothing leaked or lost)."""
        service = self.running.service
        prefix = service.tenant_for(token).prefix
        with self.client(token) as c:
            want = {"bytes": 0, "keys": 0}
            listed = c.get("/v1/scopes").json()["scopes"]
            # and the blob scope of each (not listed): its records count as bytes
            for scope in [*listed, *(f"{s}\x1fb" for s in listed)]:
                after = None
                while True:
                    body = {"scope": scope, "after": after, "limit": 1000, "values": True}
                    page = c.post("/v1/scan", json=body).json()["records"]
                    for r in page:
                        want["keys"] += "\x1f" not in scope
                        value = base64.b64decode(r["value"])
                        want["bytes"] += service.costs.size_of(prefix + scope, r["key"], value, 1)
                    if not page:
                        break
                    after = page[-1]["key"]
            used = c.get("/v1/usage").json()
        assert {k: used[k] for k in want} == want, (used, want)
        return want

    def check_answers(self) -> None:
        with self.client(self.a) as c:
            assert c.get("/healthz").json() == {"status": "ok"}
            assert c.get("/v1/scopes").status_code == 200


@pytest.fixture
def server(tmp_path: Path) -> Iterator[support_server.Running]:
    running = support_server.serve(f"sqlite:///{tmp_path}/server.db", Config())
    yield running
    support_server.stop(running)


# --- raw HTTP/1.1, to send what no well-behaved client sends -----------------------------


class _Raw:
    """One keep-alive connection; requests written byte for byte, responses read by
    Content-Length."""

    def __init__(self, port: int, sock: socket.socket | None = None) -> None:
        self.port = port
        self.sock = sock or socket.create_connection((HOST, port), timeout=10)
        self.buf = b""
        self.reconnects = 0

    def request(self, method: str, path: str, headers: bytes, body: bytes = b"") -> tuple[
            int, dict[bytes, bytes], bytes]:  # fmt: skip
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n".encode() + headers
        self.sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status, fields, data = self.response()
        if fields.get(b"connection") == b"close":
            self.reconnect()
        return status, fields, data

    def reconnect(self) -> None:
        self.sock.close()
        self.sock = socket.create_connection((HOST, self.port), timeout=10)
        self.buf, self.reconnects = b"", self.reconnects + 1

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buf += data

    def response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        first, *lines = head.split(b"\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(b":") for x in lines)}
        size = int(fields.get(b"content-length", b"0"))
        while len(self.buf) < size:
            self._more()
        body, self.buf = self.buf[:size], self.buf[size:]
        return int(first.split()[1]), fields, body

    def close(self) -> None:
        self.sock.close()


def _in_threads(count: int, work: Callable[[int], None]) -> None:
    """Run work(0..count-1) in threads; re-raise the first failure."""
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a client thread hung"
    if failures:
        raise failures[0]


# --- 1. wrong tokens ------------------------------------------------------------------------


def test_ten_thousand_wrong_tokens_are_401_and_a_keeps_writing(server, long_run):
    tenants = _Tenants(server)
    revoked = server.tenant(name="tenant-gone")
    server.service.config.revoke("tenant-gone")
    auths = [
        b"",  # no Authorization header at all
        b"Authorization: Bearer wrong-token-%d\r\n",
        b"Authorization: Bearer " + revoked.encode() + b"\r\n",
        b"Authorization: Bearer " + tenants.a.encode()[:-1] + b"\r\n",  # A's, one char short
        b"Authorization: Basic dXNlcjpwYXNz\r\n",
        b"Authorization: Bearer\r\n",
        b"Authorization: Bearer \r\n",
        b"Authorization: bearer" + tenants.a.encode() + b"\r\n",
        b"Authorization: Token " + tenants.a.encode() + b"\r\n",
        b"Authorization: Bearer a b c\r\n",
        b"Authorization: Bearer \xff\xfe\x80\r\n",
        b"Authorization: Bearer " + b"x" * 4000 + b"\r\n",
    ]
    put = (b'{"scope": "a", "changes": [{"op": "put", "key": "intruder", '
           b'"value": "aW50cnVkZXI="}]}')  # fmt: skip
    requests = [
        ("GET", "/v1/scopes", b""),
        ("GET", "/v1/keys?scope=a", b""),
        ("GET", "/v1/usage", b""),
        ("POST", "/v1/apply", put),
        ("POST", "/v1/get", b'{"scope": "a", "keys": ["n0000000"]}'),
        ("POST", "/v1/apply", _chunk_put(b"intruder", b"chunk")),
        ("POST", "/v1/clear", b'{"scope": "a"}'),
    ]
    total, threads = (100_000 if long_run else 10_000), 8
    statuses: collections.Counter[int] = collections.Counter()
    leaks: list[bytes] = []
    reconnects = [0] * threads

    def flood(n: int) -> None:
        raw = _Raw(tenants.port)
        try:
            for i in range(n, total, threads):
                auth = auths[i % len(auths)].replace(b"%d", str(i).encode())
                method, path, body = requests[i % len(requests)]
                kind = b"Content-Type: application/json\r\n" if method == "POST" else b""
                status, fields, data = raw.request(method, path, auth + kind, body)
                statuses[status] += 1
                if status != 401 or b'"unauthorized"' not in data or \
                        fields.get(b"www-authenticate") != b"Bearer":  # fmt: skip
                    leaks.append(b"%d " % status + data[:200])
            reconnects[n] = raw.reconnects
        finally:
            raw.close()

    began = time.monotonic()
    with _Writer(server.url, tenants.a) as writer:
        _in_threads(threads, flood)
    elapsed = time.monotonic() - began
    writer.summary("wrong tokens", total, statuses=dict(statuses), reconnects=sum(reconnects),
                   seconds=f"{elapsed:.1f}")  # fmt: skip
    assert not leaks and statuses == {401: total}, (statuses, leaks[:5])
    writer.verify()
    tenants.check_isolation()
    tenants.check_usage(tenants.a)
    tenants.check_answers()
    assert writer.p99() < LATENCY_BOUND


# --- 2. clients cut mid-request -------------------------------------------------------------


def _cut(port: int, request: bytes, *, reset: bool) -> None:
    """Send `request` (a prefix of one) and go away: FIN, or RST if `reset`."""
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(request)
        time.sleep(0.002)  # let the server start on it
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_clients_cut_mid_request_leave_nothing_and_leak_no_quota(server, long_run):
    tenants = _Tenants(server)
    auth = b"Authorization: Bearer " + tenants.a.encode() + b"\r\n"
    rounds, threads = (5000 if long_run else 1000), 8

    def cuts(i: int) -> list[bytes]:
        put = (b'{"scope": "a", "changes": [{"op": "put", "key": "cut-%d", "value": "' % i
               + base64.b64encode(b"v" * 30000) + b'"}]}')  # fmt: skip
        put_head = (b"POST /v1/apply HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + auth + b"Content-Length: %d\r\n\r\n" % len(put))  # fmt: skip
        chunk = _chunk_put(b"cut%d" % i, b"c" * (1 << 20))
        chunk_head = (b"POST /v1/apply HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                      b"\r\n" + auth + b"Content-Length: %d\r\n\r\n" % len(chunk))  # fmt: skip
        return [
            put_head[: len(put_head) // 2],  # cut inside the headers
            put_head,  # headers only
            put_head + put[: len(put) // 2],  # half a body
            put_head + put[:-1],  # all but the last byte
            chunk_head + chunk[: len(chunk) // 2],  # half a chunk of a large value
        ]

    kinds = len(cuts(0))

    def cutter(n: int) -> None:
        for i in range(n, rounds, threads):
            request = cuts(i)[i % kinds]
            _cut(tenants.port, request, reset=(i // kinds) % 2 == 1)

    began = time.monotonic()
    with _Writer(server.url, tenants.a) as writer:
        _in_threads(threads, cutter)
        time.sleep(0.2)  # a few writes after the last cut
    elapsed = time.monotonic() - began
    chunks = server.service.backend.count(f"tenant-a:{BLOB_SCOPE}", time.time())
    writer.summary("cut clients", rounds, kinds=kinds, chunks=chunks,
                   seconds=f"{elapsed:.1f}")  # fmt: skip
    writer.verify()  # no "cut-*" key among A's: nothing half-written shows
    assert chunks == 0, "a cut chunk was stored"
    tenants.check_isolation()
    tenants.check_usage(tenants.a)
    tenants.check_answers()
    with satchel.open(f"{server.url}?token={tenants.a}", scope="a") as store:
        store.set("big-after-cuts", b"x" * (3 << 20))  # a large value (chunks) still works
        assert store.get("big-after-cuts") == b"x" * (3 << 20)


# --- 3. slow clients ------------------------------------------------------------------------


class _Slow:
    """A slowloris connection: `prefix` sent at once, then `trickle` a byte at a time."""

    def __init__(self, port: int, prefix: bytes, trickle: bytes) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.sock.sendall(prefix)
        self.trickle = trickle
        self.sent = 0
        self.closed_after: float | None = None  # seconds, once the server closed it
        self.answer = b""  # what the server said before it closed, if anything
        self.began = time.monotonic()

    def step(self) -> None:
        """Send the next byte; note when the server has closed the connection."""
        if self.closed_after is not None:
            return
        try:
            if self.sent < len(self.trickle):
                self.sock.send(self.trickle[self.sent : self.sent + 1])
                self.sent += 1
            self.sock.setblocking(False)
            try:
                data = self.sock.recv(4096)  # b"": closed; bytes: the server's answer
            except BlockingIOError:
                return
            finally:
                self.sock.setblocking(True)
        except OSError:
            data = b""
        self.closed_after = time.monotonic() - self.began
        if data:  # an answer (408): the server closes the connection right after
            self.answer = data

    def close(self) -> None:
        self.sock.close()


def test_slow_clients_do_not_starve_a_and_are_cut_off(tmp_path):
    header_timeout, body_timeout = 1.5, 1.5
    running = support_server.serve(
        f"sqlite:///{tmp_path}/server.db", Config(), header_timeout=header_timeout,
        body_timeout=body_timeout, body_min_rate=1024,
    )
    try:
        tenants = _Tenants(running)
        auth = b"Authorization: Bearer " + tenants.a.encode() + b"\r\n"
        head = (b"POST /v1/apply HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + auth + b"Content-Length: 100000\r\n\r\n")  # fmt: skip
        kinds = {
            "idle": (b"", b""),  # connects, sends nothing
            "headers": (b"", head),  # the headers a byte at a time
            "body": (head, b'{"scope": "a", "changes": [' + b" " * 1000),  # the body likewise
            "chunk": (head, _chunk_put(b"slow", b"c" * 70000)[:1000]),  # a large value's
        }
        slow = [_Slow(tenants.port, *kinds[k]) for k in kinds for _ in range(20)]
        with _Writer(running.url, tenants.a) as writer:
            deadline = time.monotonic() + header_timeout + body_timeout + 3.0
            while time.monotonic() < deadline and any(s.closed_after is None for s in slow):
                for s in slow:
                    s.step()
                time.sleep(0.05)
            # every slow client is gone: the server holds only A's connections
            left = len(running.server.server_state.connections)
        named = list(zip([k for k in kinds for _ in range(20)], slow, strict=True))
        open_after = [k for k, s in named if s.closed_after is None]
        answered = collections.Counter(
            (k, s.answer.split(b" ", 2)[1].decode() if s.answer else "closed") for k, s in named
        )
        cut_after = max((s.closed_after or 0) for s in slow)
        answers = ",".join(f"{k}:{a}x{n}" for (k, a), n in sorted(answered.items()))
        writer.summary("slow clients", len(slow), still_open=len(open_after),
                       cut_within=f"{cut_after:.1f}s", server_connections=left,
                       answers=answers)  # fmt: skip
        for s in slow:
            s.close()
        assert not open_after, f"the server kept {len(open_after)} slow clients: {open_after[:8]}"
        assert cut_after < header_timeout + body_timeout + 1.0, cut_after
        assert answered == {("idle", "closed"): 20, ("headers", "closed"): 20,
                            ("body", "408"): 20, ("chunk", "408"): 20}, answered  # fmt: skip
        assert left <= 4, f"the server still holds {left} connections"
        writer.verify()
        assert writer.p99() < 0.5 and max(writer.latencies) < LATENCY_BOUND
        tenants.check_isolation()
        tenants.check_usage(tenants.a)
        tenants.check_answers()
    finally:
        support_server.stop(running)


# --- 4. oversized bodies --------------------------------------------------------------------


def _send_and_read(port: int, head: bytes, body: Iterator[bytes]) -> int:
    """Send `head` and `body` from a thread while reading the answer; its status."""
    sock = socket.create_connection((HOST, port), timeout=10)

    def send() -> None:
        try:
            sock.sendall(head)
            for piece in body:
                sock.sendall(piece)
        except OSError:
            pass  # the server answered and closed before taking it all

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    raw = _Raw(port, sock)
    try:
        status, _, _ = raw.response()
    finally:
        sock.close()
        sender.join(10)
    return status


def test_oversized_bodies_are_413_and_store_nothing(tmp_path):
    limit = 1 << 20
    running = support_server.serve(f"sqlite:///{tmp_path}/server.db", Config(), max_body=limit)
    try:
        tenants = _Tenants(running)
        auth = b"Authorization: Bearer " + tenants.a.encode() + b"\r\n"
        value = base64.b64encode(b"o" * (limit * 2))

        def put(i: int) -> bytes:
            return (b'{"scope": "a", "changes": [{"op": "put", "key": "over-%d", "value": "%s"}]}'
                    % (i, value))  # fmt: skip

        def pieces(data: bytes) -> Iterator[bytes]:
            for at in range(0, len(data), 65536):
                yield data[at : at + 65536]

        def chunked(data: bytes) -> Iterator[bytes]:
            for piece in pieces(data):
                yield b"%x\r\n%s\r\n" % (len(piece), piece)
            yield b"0\r\n\r\n"

        post = b"POST /v1/apply HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth
        statuses: collections.Counter[int] = collections.Counter()
        with _Writer(running.url, tenants.a) as writer:
            for i in range(8):
                body = put(i)
                sized = b"Content-Length: %d\r\n\r\n" % len(body)
                chunks = b"Transfer-Encoding: chunked\r\n\r\n"
                blob = _chunk_put(b"over%d" % i, b"c" * 2 * limit)  # a chunk of a large value
                cases = [
                    (post + sized, iter(())),  # refused on the header alone
                    (post + sized, pieces(body)),
                    (post + chunks, chunked(body)),  # no Content-Length: refused while read
                    (post + b"Content-Length: %d\r\n\r\n" % len(blob), pieces(blob)),
                    (post + chunks, chunked(blob)),
                ]  # fmt: skip
                for head, data in cases:
                    statuses[_send_and_read(tenants.port, head, data)] += 1
        writer.summary("oversized bodies", sum(statuses.values()),
                       statuses=dict(statuses), limit=limit)  # fmt: skip
        assert statuses == {413: sum(statuses.values())}, statuses
        writer.verify()  # no "over-*" key among A's
        chunks = running.service.backend.count(f"tenant-a:{BLOB_SCOPE}", time.time())
        assert chunks == 0, "an oversized chunk was stored"
        tenants.check_isolation()
        tenants.check_usage(tenants.a)
        tenants.check_answers()
    finally:
        support_server.stop(running)
