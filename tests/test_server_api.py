"""The server's JSON API: every status code it promises, and the http engine's mapping of them."""

from __future__ import annotations

import base64
import os
import socket
import sqlite3
import threading
import time
import uuid

import httpx
import pytest

import satchel
import support_server
from satchel import AccessDenied, BackendUnavailable, InvalidInput, KeyNotFound, ReadOnlyError
from satchel._backends.base import Put
from satchel._codecs import get_codec
from satchel.server import Config


@pytest.fixture(scope="module")
def server() -> support_server.Running:
    return support_server.running()


def client(server: support_server.Running, token: str | None) -> httpx.Client:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=10)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


TWICE = [{"op": "put", "key": "k", "value": ""}, {"op": "delete", "key": "k"}]  # one key twice


def put(scope: str, key: str, value: str = "") -> dict[str, object]:
    """The /v1/apply body of one put of base64 `value`."""
    return {"scope": scope, "changes": [{"op": "put", "key": key, "value": value}]}


def test_healthz_and_openapi_need_no_token(server):
    with client(server, None) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        spec = c.get("/openapi.json").json()
        assert "/v1/apply" in spec["paths"] and "/v1/keys" in spec["paths"]


@pytest.mark.parametrize("auth", [None, "Bearer nope", "Basic dXNlcjpwYXNz", "Bearer"])
def test_401_without_a_good_token(server, auth):
    headers = {} if auth is None else {"Authorization": auth}
    with httpx.Client(base_url=server.url, headers=headers) as c:
        for method, path, body in [
            ("GET", "/v1/scopes", None),
            ("POST", "/v1/get", {"scope": "s", "keys": ["k"]}),
            ("POST", "/v1/apply", put("s", "k")),
            ("GET", "/v1/keys?scope=s", None),
            ("GET", "/v1/tenants", None),
        ]:
            r = c.request(method, path, json=body)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"


def test_engine_with_a_wrong_token_raises_access_denied_without_the_token(server):
    store = satchel.open(f"{server.url}?token=wrong-secret-123")
    with pytest.raises(AccessDenied) as caught:
        store.set("k", 1)
    assert "wrong-secret-123" not in str(caught.value) and "401" in str(caught.value)
    assert "wrong-secret-123" not in store.url
    store.close()


def test_403_forbidden_scope(server):
    token = server.tenant(scopes=["app*"])
    with client(server, token) as c:
        assert c.post("/v1/apply", json=put("app1", "k", b64(b"x"))).status_code == 200
        for path, body in [
            ("/v1/get", {"scope": "other", "keys": ["k"]}),
            ("/v1/apply", put("other", "k")),
            ("/v1/scan", {"scope": "other"}),
        ]:
            r = c.post(path, json=body)
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    with satchel.open(f"{server.url}?token={token}", scope="other") as store:
        with pytest.raises(AccessDenied, match="403"):
            store.get("k")
        assert store.scope("app1").exists("k")


def test_403_read_only_tenant_reads_but_never_writes(server):
    reader = server.tenant(prefix="ro-tenant:", readonly=True)
    record = get_codec("typed").encode({"a": 1})  # put there by the operator, server-side
    server.service.backend.apply("ro-tenant:default", [Put("k", record)], time.time())
    with satchel.open(f"{server.url}?token={reader}") as r:
        assert r.get("k") == {"a": 1}
        with pytest.raises(ReadOnlyError):
            r.set("k", 2)
        with pytest.raises(ReadOnlyError):
            r.delete("k")
        with pytest.raises(ReadOnlyError):
            r.clear()
    with client(server, reader) as c:
        delete = {"scope": "default", "changes": [{"op": "delete", "key": "k"}]}
        r = c.post("/v1/apply", json=delete)
        assert r.status_code == 403 and r.json()["error"]["code"] == "read_only"


def test_404_missing_key_and_unknown_paths(server):
    token = server.tenant()
    with client(server, token) as c:
        assert c.get("/v1/value", params={"scope": "s", "key": "nope"}).status_code == 404
        assert c.delete("/v1/value", params={"scope": "s", "key": "nope"}).status_code == 404
        chunk = {"scope": "s", "key": "k", "blob_id": "abc", "index": 0}
        assert c.get("/v1/blobs/chunk", params=chunk).status_code == 404  # no such route
        assert c.get("/v1/nothing-here").status_code == 404
        # a batch read is not an error: missing keys are left out
        assert c.post("/v1/get", json={"scope": "s", "keys": ["nope"]}).json() == {
            "records": [], "more": False}  # fmt: skip
    with satchel.open(f"{server.url}?token={token}") as store, pytest.raises(KeyNotFound):
        store.get("nope")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/apply", put("s", "a\x00b")),
        ("/v1/apply", put("s", "k", "not base64!")),
        ("/v1/apply", {"scope": "s", "changes": TWICE}),
        ("/v1/apply", {"scope": "s", "expect": [{"key": "a\x00b", "version": None}]}),
        ("/v1/get", {"scope": "__satchel__\x00", "keys": ["k"]}),
        ("/v1/get", {"scope": "s", "keys": ["é" * 600]}),
    ],
)
def test_400_bad_input(server, path, body):
    with client(server, server.tenant()) as c:
        r = c.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/apply", {"scope": "s", "changes": [{"op": "pop", "key": "k"}]}),
        ("/v1/apply", {"scope": "s", "changes": {"op": "delete", "key": "k"}}),
        ("/v1/apply", put("", "k")),
        ("/v1/apply", put("s", "")),
        ("/v1/apply", {"scope": "s", "changes": [{"op": "put", "key": "k"}]}),  # no value
        ("/v1/get", {"scope": "s", "keys": "k"}),
        ("/v1/get", {"scope": "s", "scopes": ["a", "b"], "keys": ["k"]}),  # no mixed scopes
        ("/v1/scan", {"scope": "s", "limit": 0}),
        ("/v1/apply", {"scope": "s", "expect": [{"key": "k", "version": -1}]}),
        ("/v1/apply", {"scope": "s", "changes": [], "items": []}),  # the old put's field
    ],
)
def test_422_malformed_body(server, path, body):
    with client(server, server.tenant()) as c:
        r = c.post(path, json=body)
        assert r.status_code == 422, r.text
        assert c.post(path, content=b"{not json", headers={
            "Content-Type": "application/json"}).status_code == 422  # fmt: skip


def test_bad_pattern_is_400_and_engine_raises_invalid_input(server):
    token = server.tenant()
    with client(server, token) as c:
        r = c.get("/v1/keys", params={"scope": "s", "pattern": "a\\"})
        assert r.status_code == 400, r.text
    with satchel.open(f"{server.url}?token={token}") as store, pytest.raises(InvalidInput):
        store._shared.backend.get_many("s", ["a\x00"], 0)  # past the Store's own checks


def test_413_body_too_large():
    running = support_server.serve("memory://", Config(), max_body=4096)
    try:
        token = running.tenant()
        with client(running, token) as c:
            r = c.post("/v1/apply", json=put("s", "k", b64(b"x" * 8000)))
            assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"

            def chunks():  # no Content-Length: counted as it arrives
                for _ in range(10):
                    yield b"x" * 1000

            r = c.post("/v1/apply", content=chunks(), headers={"Content-Type": "application/json"})
            assert r.status_code == 413
            assert c.get("/healthz").status_code == 200
        assert running.service.backend.scopes(0) == []
    finally:
        support_server.stop(running)


def test_server_survives_cut_requests_and_token_floods(server):
    host, port = server.url.removeprefix("http://").split(":")
    for _ in range(20):  # a client that promises a body and goes away mid-way
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"POST /v1/apply HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100000\r\n\r\n{\"scope\": \"s\", ")  # fmt: skip
    token = server.tenant()
    for scope in ("s", "s\\u001fb"):  # a scope, and its blob scope (chunks of large values)
        with socket.create_connection((host, int(port))) as s:  # authorised, cut mid-body
            s.sendall(b"POST /v1/apply HTTP/1.1\r\nHost: x\r\n"
                      b"Authorization: Bearer " + token.encode() + b"\r\n"
                      b"Content-Length: 100000\r\n\r\n{\"scope\": \"" + scope.encode()
                      + b"\", \"changes\": [{\"op\": \"put\", \"key\": \"c/x/00000000\", "
                      b"\"value\": \"" + b"x" * 5000)  # fmt: skip
    statuses: list[int] = []

    def flood() -> None:
        with client(server, "wrong") as c:
            statuses.extend(c.get("/v1/scopes").status_code for _ in range(100))

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [401] * 800
    with client(server, token) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/scopes").json() == {"scopes": []}  # nothing half-written


def test_human_endpoints_round_trip(server):
    token = server.tenant()
    with satchel.open(f"{server.url}?token={token}", scope="s") as store:
        store.set("when", {"n": 1, "t": (1, 2), "b": b"\x00\xff"})
        store.set("raw", b"\x01\x02")
        store.set("n", 5)
    with client(server, token) as c:
        v = c.get("/v1/value", params={"scope": "s", "key": "when"}).json()
        assert v["type"] == "dict" and v["json_value"] == {"n": 1, "t": [1, 2], "b": "00ff"}
        assert c.get("/v1/value", params={"scope": "s", "key": "raw"}).json()["hex"] == "0102"
        assert c.post("/v1/incr", json={"scope": "s", "key": "n", "delta": 3}).json() == {
            "count": 8}  # fmt: skip
        r = c.put("/v1/value", params={"scope": "s", "key": "new"}, json={"value": [1, "a"]})
        assert r.json() == {"count": 1}
        page = c.get("/v1/keys", params={"scope": "s", "pattern": "*", "limit": 2}).json()
        assert [k["key"] for k in page["keys"]] == ["n", "new"] and page["next_cursor"] == "new"
        rest = c.get("/v1/keys", params={"scope": "s", "cursor": "new"}).json()
        assert [k["key"] for k in rest["keys"]] == ["raw", "when"] and rest["next_cursor"] is None
        items = c.get("/v1/items", params={"scope": "s", "pattern": "[nr]*"}).json()
        assert [(i["key"], i["type"]) for i in items["items"]] == [
            ("n", "int"), ("new", "list"), ("raw", "bytes")]  # fmt: skip
        assert c.get("/v1/tenants").status_code == 403
        usage = c.get("/v1/usage").json()
        assert usage["keys"] == 4 and usage["bytes"] > 0
    with satchel.open(f"{server.url}?token={token}", scope="s") as store:
        assert store.get("new") == [1, "a"] and store.get("n") == 8


def test_http_engine_url_and_options(monkeypatch) -> None:
    monkeypatch.delenv("SATCHEL_TOKEN", raising=False)
    with pytest.raises(InvalidInput, match="token"):
        satchel.open("http://127.0.0.1:8470")
    with pytest.raises(InvalidInput, match="port"):
        satchel.open("http://127.0.0.1:99999", token="t")
    with pytest.raises(InvalidInput, match="unknown option"):
        satchel.open("http://127.0.0.1:8470", token="t", colour="blue")
    with satchel.open("https://127.0.0.1:8443/base/?token=s3cret") as store:
        assert store.url == "https://127.0.0.1:8443/base" and "s3cret" not in repr(store)


def test_a_dead_server_is_backend_unavailable_without_the_token(monkeypatch) -> None:
    port = support_server.free_port()
    monkeypatch.setenv("SATCHEL_TOKEN", "s3cret-token")  # the token from the environment
    with satchel.open(f"http://127.0.0.1:{port}") as store:
        with pytest.raises(BackendUnavailable) as caught:
            store.get("k")
        assert "s3cret-token" not in str(caught.value) and str(port) in str(caught.value)


def test_a_forked_child_uses_its_own_connections(server) -> None:
    token = server.tenant()
    with satchel.open(f"{server.url}?token={token}") as store:
        store.set("parent", 1)
        pid = os.fork()
        if pid == 0:  # the child: same Store object, fresh connections
            code = 1
            try:
                for i in range(50):
                    store.set(f"child{i}", i)
                code = 0 if store.get("parent") == 1 else 1
            finally:
                os._exit(code)
        for _ in range(50):
            assert store.get("parent") == 1
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert len(list(store.keys("child*"))) == 50


def test_error_messages_show_neither_the_engine_nor_the_prefix(server) -> None:
    token = server.tenant()
    name = server.service.tenant_for(token).name
    with client(server, token) as c:
        r = c.post("/v1/apply", json=put("s", "a\x00b"))
        message = r.json()["error"]["message"]
        assert "NUL" in message and "a\\x00b" in message
        for text in (message, c.post("/v1/apply", json=put("s\x1fb", "c/\x00")).json()[
                "error"]["message"]):  # fmt: skip
            assert "sqlite" not in text and name not in text and "server.db" not in text


def test_an_engine_failure_is_503_naming_nothing_of_the_engine(tmp_path, caplog) -> None:
    path = tmp_path / "locked.db"
    running = support_server.serve(f"sqlite:///{path}?timeout=0.2", Config())
    try:
        token = running.tenant()
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # every write now waits, then fails
        try:
            with client(running, token) as c, caplog.at_level("WARNING", "satchel.server"):
                r = c.post("/v1/apply", json=put("s", "k"))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert r.status_code == 503 and r.json()["error"]["code"] == "backend"
        assert str(tmp_path) not in r.text and "locked" not in r.text
        assert str(path) in caplog.text  # the operator still learns what went wrong
        with satchel.open(f"{running.url}?token={token}", scope="s") as store:
            store.set("k", 1)  # and the server works once the engine does
            assert store.get("k") == 1
    finally:
        support_server.stop(running)


def test_the_engine_maps_each_answer_to_its_error() -> None:
    import satchel._backends.http as http

    backend = http.HTTPBackend("http://127.0.0.1:1", "t")
    cases = [
        (404, "not_found", KeyNotFound),
        (400, "invalid", InvalidInput),
        (422, "invalid", InvalidInput),
        (403, "read_only", ReadOnlyError),
        (403, "forbidden", AccessDenied),
        (401, "unauthorized", AccessDenied),
        (413, "over_quota", http.QuotaExceeded),
        (413, "too_large", InvalidInput),
        (503, "unavailable", BackendUnavailable),
        (503, "backend", satchel.BackendError),
        (502, "", BackendUnavailable),
        (408, "too_slow", BackendUnavailable),
    ]
    for status, code, error in cases:
        answer = httpx.Response(status, json={"error": {"code": code, "message": "m"}})
        with pytest.raises(error) as caught:
            backend._raise(answer)
        assert type(caught.value) is error, (status, code)
    html = httpx.Response(500, text="<html>oops</html>")
    with pytest.raises(satchel.BackendError, match="HTTP 500"):
        backend._raise(html)
    backend.close()


@pytest.mark.parametrize(
    "value, editable",
    [({"a": [1, 2.5, None, True, "x"]}, True), ("text", True), (2**53, True),
     ({"a": b"\x00"}, False), ({1: "x"}, False), ((1, 2), False), (2.0, False),
     (2**60, False), (float("nan"), False), ({"d": {"when": uuid.UUID(int=1)}}, False)],
)  # fmt: skip
def test_the_admin_page_edits_only_values_json_keeps_exactly(value, editable) -> None:
    from satchel._backends.base import Record
    from satchel.server.human import describe

    record = Record("k", get_codec("typed").encode(value), 0.0, 0.0, None, 1)
    assert describe("s", "k", record).editable is editable
