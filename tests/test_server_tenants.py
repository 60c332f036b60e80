"""Tenants: one can never reach or learn of another's data; quotas refuse and store nothing."""

from __future__ import annotations

import base64
import time

import httpx
import pytest

import satchel
import support_server
from satchel import QuotaExceeded

SECRET = "alice's secret"


@pytest.fixture(scope="module")
def server() -> support_server.Running:
    return support_server.running()


@pytest.fixture
def alice(server):
    """A tenant holding records, a blob, a series and an event sequence in scope "vault"."""
    token = server.tenant()
    with satchel.open(f"{server.url}?token={token}", scope="vault") as store:
        store.set("k", SECRET)
        store.set("../k", SECRET)
        with store.open_blob("big", "wb") as f:
            f.write(b"s" * (3 << 20))
        store.series("temps").add(1, 20.5)
        store.events("log").apply({"secret": True})
    name = next(t.name for t in server.service.config.tenants.values() if t.prefix and
                server.service.config.tenant_for(token) is t)  # fmt: skip
    return token, name


def _c(server, token):
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})


def test_alice_data_is_stored_under_her_prefix(server, alice):
    _, name = alice
    assert f"{name}:vault" in server.service.backend.scopes(0)


@pytest.mark.parametrize(
    "scope",
    ["vault", "../vault", "{name}:vault", "/../{name}:vault", "..", "*", "{name}:*", "%",
     "vault/..", "\\u2215..\\u2215vault"],
)
def test_bob_reaches_nothing_of_alice_through_any_endpoint(server, alice, scope):
    _, name = alice
    scope = scope.format(name=name)
    bob = server.tenant()
    with _c(server, bob) as c:
        assert c.get("/v1/scopes").json() == {"scopes": []}
        for key in ("k", "../k", "../../vault/k", f"{name}:vault/k"):
            got = c.post("/v1/get", json={"scope": scope, "keys": [key]})
            assert got.status_code == 200 and got.json()["records"] == []
            assert c.get("/v1/value", params={"scope": scope, "key": key}).status_code == 404
        assert c.post("/v1/scan", json={"scope": scope}).json()["records"] == []
        assert c.get("/v1/keys", params={"scope": scope, "pattern": "*"}).json()["keys"] == []
        assert c.post("/v1/count", json={"scope": scope}).json() == {"count": 0}
        assert c.post("/v1/series/names", json={"scope": scope}).json()["names"] == []
        assert c.post("/v1/events/names", json={"scope": scope}).json()["names"] == []
        got = c.post("/v1/events/read", json={"scope": scope, "name": "log"}).json()
        assert got["events"] == []
        delete = {"scope": scope, "changes": [{"op": "delete", "key": "k"}]}
        assert c.post("/v1/apply", json=delete).json() == {"count": 0}
        assert c.post("/v1/clear", json={"scope": scope}).status_code == 200
        assert c.get("/v1/tenants").status_code == 403
        usage = c.get("/v1/usage").json()
        assert usage["keys"] == 0 and usage["bytes"] == 0
    # alice still has everything
    with satchel.open(f"{server.url}?token={alice[0]}", scope="vault") as store:
        assert store.get("k") == SECRET and store.get("../k") == SECRET
        assert len(store.get("big")) == 3 << 20


def test_blob_chunks_of_alice_are_out_of_reach(server, alice):
    token, name = alice
    blob_record = server.service.backend.get(f"{name}:vault", "big", 1e9)
    assert blob_record is not None
    from satchel._blobs import read_manifest

    blob_id = read_manifest(blob_record.value).blob_id
    bob = server.tenant()
    with _c(server, bob) as c:
        for scope, key in (("vault", "big"), (f"{name}:vault", "big"), ("../vault", "big")):
            params = {"scope": scope, "key": key, "blob_id": blob_id, "index": 0}
            assert c.get("/v1/blobs/chunk", params=params).status_code == 404
    with _c(server, token) as c:
        params = {"scope": "vault", "key": "big", "blob_id": blob_id, "index": 0}
        assert c.get("/v1/blobs/chunk", params=params).status_code == 200


def test_engine_view_of_two_tenants(server, alice):
    bob = server.tenant()
    with satchel.open(f"{server.url}?token={bob}", scope="vault") as store:
        assert store.scopes() == [] and list(store.keys("*")) == [] and len(store) == 0
        assert store.get("k", None) is None
        store.set("k", "bob's")
        assert store.scopes() == ["vault"]
    with satchel.open(f"{server.url}?token={alice[0]}", scope="vault") as store:
        assert store.get("k") == SECRET and store.scopes() == ["vault"]


def test_prefix_looking_scopes_stay_inside_the_tenant(server):
    token = server.tenant()
    other = server.tenant()
    other_name = server.service.config.tenant_for(other).name
    with satchel.open(f"{server.url}?token={token}", scope=f"{other_name}:x") as store:
        store.set("k", 1)  # lands in "<token's prefix><other_name>:x", not in other's "x"
    with satchel.open(f"{server.url}?token={other}", scope="x") as store:
        assert store.get("k", None) is None and store.scopes() == []


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_over_quota_bytes_is_413_and_stores_nothing(server):
    token = server.tenant(quota_bytes=10_000)
    with satchel.open(f"{server.url}?token={token}") as store:
        store.set("a", b"x" * 6000)
        with pytest.raises(QuotaExceeded, match="quota"):
            store.set("b", b"x" * 6000)
        assert not store.exists("b")
        with pytest.raises(QuotaExceeded):
            store.set_many({"c": b"1" * 2000, "d": b"2" * 3000})
        assert store.get_many(["c", "d"]) == {}
        store.set("a", b"x" * 100)  # shrinking is fine, and frees room
        store.set("b", b"x" * 6000)
        store.delete("b")
        store.set_many({"c": b"1" * 2000, "d": b"2" * 3000})
        with pytest.raises(QuotaExceeded), store.open_blob("big", "wb") as f:
            f.write(b"z" * (3 << 20))
        assert not store.exists("big")
    with _c(server, token) as c:
        r = c.post("/v1/apply", json={"scope": "default", "changes": [
            {"op": "put", "key": "e", "value": b64(b"x" * 9000)}]})  # fmt: skip
        assert r.status_code == 413 and r.json()["error"]["code"] == "over_quota"
        assert "nothing was written" in r.json()["error"]["message"]
        usage = c.get("/v1/usage").json()
        assert usage["quota_bytes"] == 10_000 and usage["bytes"] <= 10_000


def test_over_quota_keys(server):
    token = server.tenant(quota_keys=4)
    with satchel.open(f"{server.url}?token={token}") as store:
        with store.open_blob("blob", "wb") as f:  # a large value is a key too
            f.write(b"b" * (2 << 20))
        store.set_many({"a": 1, "b": 2, "c": 3})
        with pytest.raises(QuotaExceeded, match="keys"):
            store.set("d", 4)
        store.set("a", 10)  # an overwrite adds no key
        assert store.incr("b") == 3
        store.pop("c")
        store.set("d", 4)
        assert sorted(store.keys()) == ["a", "b", "blob", "d"]
        with pytest.raises(QuotaExceeded, match="keys"), store.open_blob("blob2", "wb") as f:
            f.write(b"b" * (2 << 20))


def test_quota_counts_every_scope_of_the_tenant(server):
    token = server.tenant(quota_bytes=5_000)
    with satchel.open(f"{server.url}?token={token}") as store:
        store.scope("one").set("k", b"x" * 3000)
        with pytest.raises(QuotaExceeded):
            store.scope("two").set("k", b"x" * 3000)
        assert store.scopes() == ["one"]
        store.scope("one").clear()
        store.scope("two").set("k", b"x" * 3000)


def test_series_and_events_count_against_the_quota_even_after_a_recount(server):
    token = server.tenant(quota_bytes=20_000)
    tenant = server.service.tenant_for(token)
    with satchel.open(f"{server.url}?token={token}", scope="metrics") as store:
        series = store.series("cpu")
        for t in range(100):
            series.add(t, "x" * 100)
        store.events("log").apply({"big": "y" * 3000})
        used = server.service.usage(tenant).bytes
        assert used > 100 * 100 + 3000
        server.service.accounts.forget(tenant)  # as after a restart or the periodic recount
        assert server.service.usage(tenant).bytes >= 100 * 100 + 3000
        with pytest.raises(QuotaExceeded):
            for t in range(100, 200):
                series.add(t, "x" * 100)
        assert store.scopes() == []  # no records: the ledger is not the tenant's to see


def test_a_prefix_reaching_the_reserved_scope_is_refused() -> None:
    from satchel.server import Config
    from satchel.server.tenants import Tenant

    config = Config()
    config.tenants["sneaky"] = Tenant(name="sneaky", prefix="__sat")
    with pytest.raises(satchel.InvalidInput, match="reserved"):
        config.validate()


def _stage(c: httpx.Client, blob_id: str, size: int, index: int = 0) -> httpx.Response:
    params = {"scope": "s", "key": "k", "blob_id": blob_id, "index": index}
    return c.put("/v1/blobs/chunk", params=params, content=b"c" * size)


def test_staged_chunks_stay_counted_through_a_recount(server):
    token = server.tenant(quota_bytes=100_000)
    with _c(server, token) as c:
        assert _stage(c, "one", 90_000).status_code == 204
        assert c.post("/v1/clear", json={"scope": "empty"}).status_code == 200  # recounts
        assert c.get("/v1/usage").json()["bytes"] >= 90_000
        assert _stage(c, "two", 90_000).status_code == 413
        discard = {"scope": "s", "key": "k", "blob_id": "one"}
        assert c.post("/v1/blobs/discard", json=discard).status_code == 200
        assert c.get("/v1/usage").json()["bytes"] < 10_000
        assert _stage(c, "two", 90_000).status_code == 204


def test_an_abandoned_upload_leaves_the_count_after_its_lifetime(server, monkeypatch):
    import satchel.server.service as service_module

    token = server.tenant(quota_bytes=100_000)
    with _c(server, token) as c:
        assert _stage(c, "gone", 90_000).status_code == 204  # and its client vanishes
        assert c.get("/v1/usage").json()["bytes"] >= 90_000
        monkeypatch.setattr(service_module, "STAGED_LIFETIME", 0.2)
        monkeypatch.setattr(service_module, "PURGE_EVERY", 0.0)
        monkeypatch.setattr(server.service, "_next_purge", 0.0)  # housekeeping is due
        time.sleep(0.3)
        item = {"op": "put", "key": "small", "value": b64(b"x" * 100)}
        assert c.post("/v1/apply", json={"scope": "s", "changes": [item]}).status_code == 200
        assert c.get("/v1/usage").json()["bytes"] < 10_000  # the upload no longer counts
        assert _stage(c, "next", 90_000).status_code == 204
        commit = {"scope": "s", "key": "k", "blob_id": "gone", "chunks": 1, "manifest": ""}
        assert c.post("/v1/blobs/commit", json=commit).status_code == 409  # forgotten


def test_a_forged_manifest_does_not_shrink_the_count(server):
    from satchel._blobs import Manifest

    token = server.tenant(quota_bytes=100_000)
    with _c(server, token) as c:
        assert _stage(c, "real", 90_000).status_code == 204
        lie = Manifest("real", 1, 1 << 20, 1, "00" * 16, False).pack()
        commit = {"scope": "s", "key": "k", "blob_id": "real", "chunks": 1,
                  "manifest": b64(lie)}  # fmt: skip
        assert c.post("/v1/blobs/commit", json=commit).status_code == 200
        assert c.post("/v1/clear", json={"scope": "empty"}).status_code == 200  # recounts
        assert c.get("/v1/usage").json()["bytes"] >= 90_000
        item = {"op": "put", "key": "e", "value": b64(b"x" * 20_000)}
        assert c.post("/v1/apply", json={"scope": "s", "changes": [item]}).status_code == 413
        unknown = {**commit, "blob_id": "never-uploaded-here"}
        assert c.post("/v1/blobs/commit", json=unknown).status_code == 409


def test_an_event_head_is_charged(server):
    token = server.tenant(quota_bytes=100_000)
    with _c(server, token) as c:
        events = [{"t": 1, "value": b64(b"e")}]
        append = {"scope": "s", "name": "e", "after_seq": 0, "events": events,
                  "head": b64(b"h" * 200_000)}  # fmt: skip
        r = c.post("/v1/events/append", json=append)
        assert r.status_code == 413
        state = c.post("/v1/events/state", json={"scope": "s", "name": "e", "which": "head"})
        assert state.json()["state"] is None
