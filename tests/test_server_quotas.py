"""Server quotas against real storage, blobs sealed once committed, the ledger out of reach.

Each test runs its own server (support_server.serve) on its own store, as some of them
add an admin with an empty prefix, which sees every tenant's data.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import satchel
import support_server
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
