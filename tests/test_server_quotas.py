"""Server quotas against real storage, blobs sealed once committed, the ledger out of reach.

Each test runs its own server (support_server.serve) on its own store, as some of them
add an admin with an empty prefix, which sees every tenant's data.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import satchel
import support_redis
import support_server
from conftest import ENGINES
from satchel.engines import connect
from satchel.errors import BackendError
from satchel.keys import RESERVED_SCOPE
from satchel.server import Config
from satchel.server.ledger import LEDGER_SCOPE


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[support_server.Running]:
    server = support_server.serve(f"sqlite:///{tmp_path}/server.db", Config())
    yield server
    support_server.stop(server)


def client(running: support_server.Running, token: str) -> httpx.Client:
    return httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {token}"},
                        timeout=30)  # fmt: skip


# -- the ledger (issue 17, item 15) ---------------------------------------------------------


def _every_data_call(c: httpx.Client, scope: str) -> Iterator[tuple[str, httpx.Response]]:
    """Each endpoint that names a scope, called on `scope`, with a body it would accept."""
    s, one = {"scope": scope}, [{"t": 1, "value": b64(b"v")}]
    blob = {**s, "key": "k", "blob_id": "b"}
    q = {"scope": scope, "key": "server-ledger:x"}
    posts = {
        "/v1/get": {**s, "keys": ["server-ledger:x"]},
        "/v1/put": {**s, "items": [{"key": "server-ledger:x", "value": b64(b"forged")}]},
        "/v1/delete": {**s, "keys": ["server-ledger:x"]},
        "/v1/pop": {**s, "key": "server-ledger:x", "sha256": "0" * 64},
        "/v1/cas": {**s, "key": "server-ledger:x", "expected_version": 1, "value": b64(b"x")},
        "/v1/touch": {**s, "key": "server-ledger:x", "expires_in": 1},
        "/v1/scan": {**s, "prefix": ""},
        "/v1/count": s,
        "/v1/clear": s,
        "/v1/incr": {**s, "key": "n"},
        "/v1/blobs/commit": {**blob, "chunks": 1, "manifest": ""},
        "/v1/blobs/discard": blob,
        "/v1/series/put": {**s, "name": "n", "points": one},
        "/v1/series/range": {**s, "name": "n"},
        "/v1/series/remove": {**s, "name": "n"},
        "/v1/series/count": {**s, "name": "n"},
        "/v1/series/names": s,
        "/v1/events/append": {**s, "name": "n", "after_seq": 0, "events": one, "head": ""},
        "/v1/events/read": {**s, "name": "n"},
        "/v1/events/state": {**s, "name": "n"},
        "/v1/events/compact": {**s, "name": "n", "base": {"seq": 1, "t": 1, "data": ""}},
        "/v1/events/delete": {**s, "name": "n"},
        "/v1/events/names": s,
    }
    for path, body in posts.items():
        yield path, c.post(path, json=body)
    yield "GET /v1/keys", c.get("/v1/keys", params={"scope": scope})
    yield "GET /v1/items", c.get("/v1/items", params={"scope": scope})
    yield "GET /v1/value", c.get("/v1/value", params=q)
    yield "PUT /v1/value", c.put("/v1/value", params=q, json={"value": "forged"})
    yield "DELETE /v1/value", c.delete("/v1/value", params=q)
    chunk = {**blob, "index": 0}
    yield "PUT /v1/blobs/chunk", c.put("/v1/blobs/chunk", params=chunk, content=b"c")
    yield "GET /v1/blobs/chunk", c.get("/v1/blobs/chunk", params=chunk)


def _ledger(running: support_server.Running) -> list[tuple[str, bytes, int]]:
    records = running.service.backend.scan(LEDGER_SCOPE, "", None, 10_000, 0.0)
    return [(r.key, r.value, r.version) for r in records]


@pytest.mark.parametrize(
    ("prefix", "scope"),
    [("", LEDGER_SCOPE), ("__satchel__:", "server"), ("__sat", "chel__:server")],
)
def test_no_token_reaches_the_ledger_admin_with_an_empty_prefix_included(running, prefix, scope):
    shop = running.tenant(name="shop")
    with satchel.open(f"{running.url}?token={shop}", scope="m") as store:
        store.series("cpu").add(1, 0.5)  # notes the scope in the ledger
        store.events("log").apply({"a": 1})
        with store.open_blob("big", "wb") as f:  # and the blob's chunk bytes
            f.write(b"x" * (2 << 20))
    ledger = _ledger(running)
    assert len(ledger) == 2
    admin = running.tenant(name="ops", admin=True, prefix=prefix)
    with client(running, admin) as c:
        for what, answer in _every_data_call(c, scope):
            assert answer.status_code == 403, (what, answer.text)
        listed = c.get("/v1/scopes").json()["scopes"]
        assert scope not in listed
        for name in {*listed, RESERVED_SCOPE}:  # what it may see holds no ledger entry
            records = c.post("/v1/scan", json={"scope": name, "prefix": ""}).json()["records"]
            assert not [r for r in records if r["key"].startswith("server-")], name
            keys = c.get("/v1/keys", params={"scope": name}).json()["keys"]
            assert not [k for k in keys if k["key"].startswith("server-")], name
        assert c.post("/v1/clear", json={"scope": RESERVED_SCOPE}).status_code == 200
    assert _ledger(running) == ledger
    tenant = running.service.config.tenants["shop"]
    running.service.accounts.forget(tenant)
    assert running.service.usage(tenant).bytes > 2 << 20  # the recount still has it all


# -- committed blobs are sealed (issue 17, item 9) ------------------------------------------


@pytest.mark.parametrize("name", ["memory", "sqlite", "postgres", "redis", "http"])
def test_an_engine_refuses_chunks_for_a_committed_blob(name, tmp_path):
    engine = ENGINES[name]
    url = engine(tmp_path)
    backend = connect(url, {})
    try:
        now = time.time()
        backend.put("s", "k", b"old", now + 3600, now, False)
        for i in range(2):
            backend.blob_write("s", "k", "b1", i, b"%d" % i * 10, now)
        backend.blob_commit("s", "k", "b1", 2, b"manifest", now + 3600, now)
        before = backend.get("s", "k", now)
        for index in (0, 5):  # replacing a chunk, adding one past the end
            with pytest.raises(BackendError, match="already committed"):
                backend.blob_write("s", "k", "b1", index, b"evil", now)
        assert backend.get("s", "k", now) == before
        assert [backend.blob_read("s", "k", "b1", i, now) for i in (0, 1, 5)] == [
            b"0" * 10, b"1" * 10, None]  # fmt: skip
        if name == "redis":  # and the record keeps its native expiry
            client = support_redis.client_for(url)
            assert 0 < client.pttl(backend._name("s", "k")) <= 3_600_000
    finally:
        backend.close()
        if engine.cleanup is not None:
            engine.cleanup(url)


def _chunk(c: httpx.Client, key: str, blob_id: str, index: int, data: bytes) -> httpx.Response:
    params = {"scope": "s", "key": key, "blob_id": blob_id, "index": index}
    return c.put("/v1/blobs/chunk", params=params, content=data)


def test_the_server_refuses_chunks_for_a_committed_blob_and_charges_nothing(running):
    token = running.tenant(name="shop")
    tenant = running.service.config.tenants["shop"]
    with client(running, token) as c:
        assert _chunk(c, "k", "b1", 0, b"a" * 1000).status_code == 204
        commit = {"scope": "s", "key": "k", "blob_id": "b1", "chunks": 1, "manifest": b64(b"m")}
        assert c.post("/v1/blobs/commit", json=commit).status_code == 200
        used, record = c.get("/v1/usage").json()["bytes"], c.post(
            "/v1/get", json={"scope": "s", "keys": ["k"]}).json()["records"]  # fmt: skip
        for key, index in (("k", 0), ("k", 1), ("other", 0)):  # other: the engine refuses
            answer = _chunk(c, key, "b1", index, b"evil" * 1000)
            assert answer.status_code == 409, answer.text
            assert "already committed" in answer.json()["error"]["message"]
        assert c.get("/v1/usage").json()["bytes"] == used
        assert c.post("/v1/get", json={"scope": "s", "keys": ["k"]}).json()["records"] == record
        params = {"scope": "s", "key": "k", "blob_id": "b1", "index": 0}
        assert c.get("/v1/blobs/chunk", params=params).content == b"a" * 1000
        assert not running.service.staged  # nothing left counting for a day
        running.service.accounts.forget(tenant)
        assert c.get("/v1/usage").json()["bytes"] == used
        # the ledger remembers it past a restart of the server's own bookkeeping
        running.service.staged.clear()
        assert _chunk(c, "k", "b1", 0, b"evil").status_code == 409
