"""The server under abuse (review, issue 17): no request holds up the others, no body is
read before its token is checked or for longer than a stated time, no stored value makes
an answer fail, and a broken config refuses every token instead of serving old ones."""

from __future__ import annotations

import base64
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import satchel
import support_server
from satchel._codecs import get_codec
from satchel._engines import connect
from satchel.server import Config, Service, Tenant, create_app

typed = get_codec("typed")


@pytest.fixture(scope="module")
def server() -> support_server.Running:
    return support_server.running()


def _client(url: str, token: str | None, timeout: float = 10) -> httpx.Client:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=url, headers=headers, timeout=timeout)


def _put(c: httpx.Client, scope: str, key: str, value: Any) -> None:
    """Store `value` as the typed codec makes it, past the Store (which would make a large
    one a blob): the record the server is asked to show."""
    item = {"op": "put", "key": key, "value": base64.b64encode(typed.encode(value)).decode()}
    r = c.post("/v1/apply", json={"scope": scope, "changes": [item]})
    assert r.status_code == 200, r.text


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list):
        depth, value = depth + 1, value[0] if value else None
    return depth


# --- 1. a huge int holds up nobody ------------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`satchel serve` in a process of its own (URL, token): in this one, a request holding
    the GIL would stop the test's clock too, and hide the very delay it looks for."""
    path, config = tmp_path / "server.toml", Config()
    token = config.add_token(Tenant(name="big", prefix="big:"))
    config.save(path)
    port = support_server.free_port()
    command = [sys.executable, "-c", "from satchel._cli import main; main()", "serve",
               "--url", "memory://", "--port", str(port), "--config", str(path)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        support_server.wait_healthy(url, proc)
        yield url, token
    finally:
        proc.kill()
        proc.wait(10)


def test_a_huge_int_holds_up_no_request(own_server):
    url, token = own_server
    big = int.from_bytes(b"\x7f" + os.urandom((1 << 20) - 1), "big")  # 1 MiB: 2.5M digits
    with _client(url, token) as c:
        _put(c, "big", "n", big)
    answers: dict[str, tuple[httpx.Response | Exception, float]] = {}

    def ask(name: str, method: str, path: str, **options: Any) -> None:
        began = time.monotonic()
        answer: httpx.Response | Exception
        try:
            with _client(url, token, timeout=15) as c:
                answer = c.request(method, path, **options)
        except httpx.HTTPError as exc:
            answer = exc
        answers[name] = answer, time.monotonic() - began

    asks = [
        ("value", "GET", "/v1/value", {"params": {"scope": "big", "key": "n"}}),
        ("items", "GET", "/v1/items", {"params": {"scope": "big"}}),
        ("incr", "POST", "/v1/incr", {"json": {"scope": "big", "key": "n", "delta": 1}}),
    ]
    threads = [threading.Thread(target=ask, args=(n, m, p), kwargs=o) for n, m, p, o in asks]
    slowest = 0.0
    with _client(url, None, timeout=15) as health:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 15
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            began = time.monotonic()
            assert health.get("/healthz").status_code == 200
            slowest = max(slowest, time.monotonic() - began)
            time.sleep(0.05)
    for t in threads:
        t.join(20)
    assert slowest < 1.0, f"/healthz waited {slowest:.1f}s"
    got = {}
    for name, (answer, took) in answers.items():
        assert isinstance(answer, httpx.Response) and took < 5, (name, answer, took)
        got[name] = answer
    value = got["value"].json()
    assert value["type"] == "int" and value["editable"] is False
    assert value["text"].startswith("0x") and int(value["text"], 16) == big  # exact, in hex
    [item] = got["items"].json()["items"]
    assert int(item["json_value"], 16) == big
    assert got["incr"].status_code == 400 and "64-bit" in got["incr"].json()["error"]["message"]
    with satchel.open(f"{url}?token={token}", scope="big") as store:
        assert store.get("n") == big  # the refused incr wrote nothing


def test_ints_are_shown_exactly_and_in_linear_time() -> None:
    from satchel.server.human import jsonable

    assert jsonable([2**53, -(2**53), 2**53 + 1]) == [2**53, -(2**53), str(2**53 + 1)]
    many = 10**5000 + 7  # past Python's 4300 digits (int -> str limit): hex, never str()
    assert jsonable(many) == hex(many)
    assert jsonable({many: 1, (1, many): 2}) == {hex(many): 1, repr([1, hex(many)]): 2}
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)  # the limit is respected, never worked around
    try:
        assert jsonable(10**1000) == hex(10**1000)
    finally:
        sys.set_int_max_str_digits(old)
    began = time.monotonic()
    jsonable(int.from_bytes(os.urandom(8 << 20), "big"))
    assert time.monotonic() - began < 1


def test_incr_keeps_to_64_bit_ints(server) -> None:
    token = server.tenant()
    with _client(server.url, token) as c:
        _put(c, "s", "top", 2**63 - 1)
        r = c.post("/v1/incr", json={"scope": "s", "key": "top", "delta": 1})
        assert r.status_code == 400 and "64-bit" in r.json()["error"]["message"]
        r = c.post("/v1/incr", json={"scope": "s", "key": "top", "delta": -1})
        assert r.json() == {"count": 2**63 - 2}


# --- 4. no body before the token, none for ever -----------------------------------------


def _status_line(sock: socket.socket) -> tuple[bytes, bytes]:
    """The status line and headers the server sends, or b"" if it sends none in time."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    head = data.split(b"\r\n\r\n")[0]
    return head.split(b"\r\n")[0], head.lower()


@pytest.mark.parametrize("auth", [b"", b"Authorization: Bearer nope\r\n",
                                  b"Authorization: Basic dXNlcjpwYXNz\r\n"])  # fmt: skip
@pytest.mark.parametrize(
    "request_line",
    [
        b"POST /v1/apply",
        b"PUT /v1/value?scope=s&key=k",
        b"POST /v1/series/put",
    ],
)
def test_no_body_is_read_before_the_token_is_checked(server, auth, request_line) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=3) as sock:
        began = time.monotonic()
        sock.sendall(request_line + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + auth + b"Content-Length: %d\r\n\r\n{" % (60 << 20))  # fmt: skip
        status, head = _status_line(sock)  # no body comes: only an early answer gets here
        assert status == b"HTTP/1.1 401 Unauthorized", status
        assert time.monotonic() - began < 2
        assert b"connection: close" in head  # the unread body is not waited for
    with _client(server.url, None) as c:  # what needs no token still answers
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/openapi.json").status_code == 200
        assert c.get("/ui").status_code == 200 and c.get("/ui/app.js").status_code == 200


def test_a_trickled_body_is_cut_within_the_stated_time(tmp_path) -> None:
    from satchel.server import app

    assert app.BODY_MAX_TIME <= 120  # the default, as the README states it
    limit = 2.0
    running = support_server.serve(f"sqlite:///{tmp_path}/s.db", Config(), body_timeout=0.5,
                                   body_min_rate=1024, body_max_time=limit)  # fmt: skip
    try:
        token = running.tenant()
        host, port = running.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=limit + 3) as sock:
            began = time.monotonic()
            sock.sendall(b"POST /v1/apply HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         b"\r\nAuthorization: Bearer " + token.encode() + b"\r\n"
                         b"Content-Length: 1048576\r\n\r\n")  # fmt: skip
            sock.setblocking(False)
            answer = b""
            while not answer and time.monotonic() - began < limit + 3:
                try:  # 5 KiB/s: well over the minimal rate, and never done
                    sock.send(b" " * 512)
                    answer = sock.recv(65536)
                except BlockingIOError:
                    pass
                except OSError:
                    break
                time.sleep(0.1)
            took = time.monotonic() - began
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert took < limit + 1.5, took
    finally:
        support_server.stop(running)


# --- 12. every value the Store accepted can be shown --------------------------------------


def test_values_json_cannot_hold_as_they_are_are_shown_not_500(server) -> None:
    token = server.tenant()
    odd = "a\udc80b\ud800"  # lone surrogates: a valid str, not valid UTF-8
    values: dict[str, Any] = {
        "surrogate": odd,
        "in-dict": {odd: [odd, b"\x00"]},
        "deep-450": _nested(450),
        "deep-900": _nested(900),
        "deeper": (_nested(800), (_nested(800), (_nested(800),))),
        "nan": [float("nan"), float("-inf")],
        "keys": {(1, 2**70): 1, 2**64: {10**5000}},
    }
    with satchel.open(f"{server.url}?token={token}", scope="s") as store:
        for key, value in values.items():
            store.set(key, value)
    with _client(server.url, token) as c:
        shown = {}
        for key in values:
            r = c.get("/v1/value", params={"scope": "s", "key": key})
            assert r.status_code == 200, (key, r.text[:300])
            shown[key] = r.json()
        page = c.get("/v1/items", params={"scope": "s"})
        assert page.status_code == 200, page.text[:300]
        assert sorted(i["key"] for i in page.json()["items"]) == sorted(values)
    assert shown["surrogate"]["text"] == odd and shown["surrogate"]["json_value"] == odd
    assert shown["in-dict"]["json_value"] == {odd: [odd, "00"]}
    assert not shown["surrogate"]["editable"]  # JSON may pair the surrogates up
    assert _depth(shown["deep-450"]["json_value"]) == 450 and shown["deep-450"]["editable"]
    assert _depth(shown["deep-900"]["json_value"]) < 900  # cut, and it says so
    assert not shown["deep-900"]["editable"] and not shown["deeper"]["editable"]
    assert shown["nan"]["json_value"] == ["nan", "-inf"]
    assert shown["keys"]["type"] == "dict"


# --- 14. a broken config refuses every token ----------------------------------------------


def test_an_unreadable_config_refuses_every_token_and_is_logged(tmp_path, caplog) -> None:
    path, scratch = tmp_path / "server.toml", tmp_path / "scratch.toml"
    config = Config()
    gone, kept = (config.add_token(Tenant(name=n, prefix=f"{n}:")) for n in ("gone", "kept"))
    config.save(path)
    config.revoke("gone")
    config.save(scratch)
    revoked = scratch.read_text()
    service = Service(connect("memory://", {}), Config.load(path), path)
    running = _serve(service)
    stamps = iter(range(int(time.time()) + 10, int(time.time()) + 100))

    def rewrite(text: str) -> None:
        path.write_text(text)
        stamp = next(stamps)  # a new mtime, however coarse the file system's clock
        os.utime(path, (stamp, stamp))
        time.sleep(1.2)  # the server looks at the file at most once a second

    try:
        with _client(running.url, gone) as c:
            assert c.get("/v1/scopes").status_code == 200
        caplog.set_level(logging.ERROR, logger="satchel.server")
        rewrite(revoked + "\nnot toml [\n")  # a revocation, and a typo
        for token in (gone, kept):
            with _client(running.url, token) as c:
                r = c.get("/v1/scopes")
                assert r.status_code == 503, r.text
                assert r.json()["error"]["message"] == "server configuration is unreadable"
        logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(logged) == 1 and str(path) in logged[0] and "line" in logged[0], logged
        with (
            satchel.open(running.url, token=kept) as store,
            pytest.raises(satchel.BackendUnavailable, match="unreadable"),
        ):
            store.get("k", None)
        rewrite(revoked)  # valid again: the revocation holds
        with _client(running.url, gone) as c:
            assert c.get("/v1/scopes").status_code == 401
        with _client(running.url, kept) as c:
            assert c.get("/v1/scopes").status_code == 200
    finally:
        support_server.stop(running)


def _serve(service: Service) -> support_server.Running:
    """As support_server.serve, for a service that reads its config file again."""
    import uvicorn

    from satchel.server.serving import uvicorn_config

    port = support_server.free_port()
    config = uvicorn_config(create_app(service), "127.0.0.1", port, log_level="warning",
                            lifespan="off")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    return support_server.Running(f"http://127.0.0.1:{port}", service, server, thread, Path())
