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
     "vault/..", "\\u2215..\\u2215vault", "vault\x1fb", "{name}:vault\x1fb"],
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


def test_blob_chunks_of_alice_are_hers_alone(server, alice):
    token, name = alice
    blob_record = server.service.backend.get(f"{name}:vault", "big", 1e9)
    assert blob_record is not None
    from satchel._blobs import chunk_key, read_manifest

    chunk = chunk_key(read_manifest(blob_record.value).blob_id, 0)
    stored = server.service.backend.scan(f"{name}:vault\x1fb", "c/", None, 10, 1e9, False)
    assert [r.key for r in stored][:1] == [chunk]  # in the blob scope of her scope
    bob = server.tenant()
    for who, found in ((bob, []), (token, [chunk])):
        with _c(server, who) as c:
            for scope in ("vault\x1fb", f"{name}:vault\x1fb", "../vault\x1fb"):
                got = c.post("/v1/get", json={"scope": scope, "keys": [chunk]}).json()
                assert [r["key"] for r in got["records"]] == (found if scope == "vault\x1fb"
                                                              else [])  # fmt: skip
            assert "vault\x1fb" not in c.get("/v1/scopes").json()["scopes"]


def test_a_blob_scope_is_the_tenants_only_for_a_scope_it_may_use(server):
    token = server.tenant(scopes=["app*"])
    prefix = server.service.tenant_for(token).prefix
    put = {"op": "put", "key": "c/x/00000000", "value": b64(b"c")}
    with _c(server, token) as c:
        for scope, status in (
            ("app\x1fb", 200),  # the blob scope of a scope it may use
            ("other\x1fb", 403),  # of one it may not
            ("app\x1fz", 400),  # no such kind
            ("app\x1fb\x1fb", 400),  # a kind of a kind
            ("__satchel__\x1fb", 400),  # of the reserved scope
            ("\x1fb", 400),  # of no scope
        ):
            r = c.post("/v1/apply", json={"scope": scope, "changes": [put]})
            assert r.status_code == status, (scope, r.text)
            assert prefix not in r.text
        assert c.get("/v1/scopes").json() == {"scopes": []}  # a blob scope is not listed
        listed = c.get("/v1/scopes", params={"kinds": "true"}).json()  # but for an engine
        assert listed == {"scopes": ["app\x1fb"]}
        assert c.post("/v1/count", json={"scope": "app\x1fb"}).json() == {"count": 1}
    assert server.service.backend.count(f"{prefix}app\x1fb", 1e9) == 1
    with satchel.open(f"{server.url}?token={token}", scope="app") as store:
        store.set("k", 1)
        assert store.scopes() == ["app"]


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
        with store.open_blob("blob", "wb") as f:  # a large value is one key (its chunks: bytes)
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


def test_chunks_of_a_value_being_written_count_through_a_recount(server):
    token = server.tenant(quota_bytes=3 << 20)
    with satchel.open(f"{server.url}?token={token}", scope="s") as store, _c(server, token) as c:
        writer = store.open_blob("k", "wb")
        writer.write(b"c" * (2 << 20))  # one chunk of 1 MiB is stored (the rest is buffered)
        assert c.post("/v1/clear", json={"scope": "empty"}).status_code == 200  # recounts
        assert c.get("/v1/usage").json()["bytes"] >= 1 << 20
        with pytest.raises(QuotaExceeded):
            store.set("other", b"x" * (2 << 20))
        writer.discard()  # frees its chunks
        assert c.get("/v1/usage").json()["bytes"] < 10_000
        store.set("other", b"x" * (2 << 20))


def test_an_abandoned_upload_is_freed_by_the_server(server, monkeypatch):
    import satchel._blobs as blobs_module
    import satchel.server.service as service_module

    token = server.tenant(quota_bytes=3 << 20)
    tenant = server.service.tenant_for(token)
    with satchel.open(f"{server.url}?token={token}", scope="s") as store, _c(server, token) as c:
        writer = store.open_blob("k", "wb")
        writer.write(b"c" * (2 << 20))  # and its client vanishes (never closes it)
        assert c.get("/v1/usage").json()["bytes"] >= 1 << 20
        monkeypatch.setattr(blobs_module, "STAGED_LIFETIME", 0.2)
        monkeypatch.setattr(service_module, "PURGE_EVERY", 0.0)
        monkeypatch.setattr(server.service, "_next_purge", 0.0)  # housekeeping is due
        monkeypatch.setattr(server.service, "_next_collect", 0.0)  # and so is the collect
        time.sleep(0.3)
        item = {"op": "put", "key": "small", "value": b64(b"x" * 100)}
        assert c.post("/v1/apply", json={"scope": "s", "changes": [item]}).status_code == 200
        full = f"{tenant.prefix}s\x1fb"
        assert server.service.backend.scan(full, "", None, 10, time.time()) == []  # collected
        server.service.accounts.forget(tenant)  # as the periodic recount does
        assert c.get("/v1/usage").json()["bytes"] < 10_000  # the upload no longer counts
        with pytest.raises(satchel.BackendError, match="freed"):
            writer.close()  # its commit finds its chunks gone
        assert not store.exists("k")


def test_a_forged_manifest_does_not_shrink_the_count(server):
    from satchel._blobs import Manifest, read_manifest

    token = server.tenant(quota_bytes=4 << 20)
    tenant = server.service.tenant_for(token)
    with satchel.open(f"{server.url}?token={token}", scope="s") as store, _c(server, token) as c:
        with store.open_blob("k", "wb") as f:
            f.write(b"r" * (2 << 20))
        real = read_manifest(server.service.backend.get(f"{tenant.prefix}s", "k", 1e9).value)
        lie = Manifest(real.blob_id, 1, 1 << 20, 1, "00" * 16, False).pack()
        item = {"op": "put", "key": "k", "value": b64(lie)}
        assert c.post("/v1/apply", json={"scope": "s", "changes": [item]}).status_code == 200
        assert c.post("/v1/clear", json={"scope": "empty"}).status_code == 200  # recounts
        assert c.get("/v1/usage").json()["bytes"] >= 2 << 20  # the chunks it holds count
        item = {"op": "put", "key": "e", "value": b64(b"x" * (2 << 20))}
        assert c.post("/v1/apply", json={"scope": "s", "changes": [item]}).status_code == 413


def test_an_event_head_is_charged(server):
    token = server.tenant(quota_bytes=100_000)
    with satchel.open(f"{server.url}?token={token}") as store:
        log = store.events("e")
        with pytest.raises(QuotaExceeded):
            log.apply({"x": b"h" * 200_000})  # one small event, a big head
        assert log.current() == {} and len(log) == 0
        assert log.apply({"x": b"small"}) == {"x": b"small"}
