"""Server quotas against real storage, large values charged as records, the ledger out of reach.

Each test runs its own server (support_server.serve) on its own store, as some of them
add an admin with an empty prefix, which sees every tenant's data. The quota test writes
through the server on each engine and compares what the tenant is charged (and what a
recount finds) with how much the engine's storage grew; run it with -s for the table.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import msgpack
import psycopg
import pytest

import satchel
import support_postgres
import support_redis
import support_server
from conftest import ENGINES
from satchel._backends.base import Delete, Expect, Put, Touch
from satchel._blobs import CHUNK_SIZE
from satchel._engines import connect
from satchel._errors import QuotaExceeded
from satchel._keys import RESERVED_SCOPE
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
    q = {"scope": scope, "key": "server-ledger:x"}
    put = {"op": "put", "key": "server-ledger:x", "value": b64(b"forged")}
    expect = [{"key": "server-ledger:x", "version": 1}]
    applies = [  # each kind of change, and a conditional write (the old cas and pop)
        {**s, "changes": [put]},
        {**s, "changes": [{"op": "delete", "key": "server-ledger:x"}]},
        {**s, "changes": [{"op": "touch", "key": "server-ledger:x", "expires_in": 1}]},
        {**s, "changes": [put], "expect": expect},
        {**s, "changes": [], "expect": expect},
    ]
    for body in applies:
        yield f"/v1/apply {body}", c.post("/v1/apply", json=body)
    posts = {
        "/v1/get": {**s, "keys": ["server-ledger:x"]},
        "/v1/scan": {**s, "prefix": ""},
        "/v1/count": s,
        "/v1/clear": s,
        "/v1/incr": {**s, "key": "n"},
        "/v1/series/put": {**s, "name": "n", "points": one},
        "/v1/series/range": {**s, "name": "n"},
        "/v1/series/remove": {**s, "name": "n"},
        "/v1/series/count": {**s, "name": "n"},
        "/v1/series/names": s,
    }
    for path, body in posts.items():
        yield path, c.post(path, json=body)
    yield "GET /v1/keys", c.get("/v1/keys", params={"scope": scope})
    yield "GET /v1/items", c.get("/v1/items", params={"scope": scope})
    yield "GET /v1/value", c.get("/v1/value", params=q)
    yield "PUT /v1/value", c.put("/v1/value", params=q, json={"value": "forged"})
    yield "DELETE /v1/value", c.delete("/v1/value", params=q)


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
        with store.open_blob("big", "wb") as f:  # its chunks are records: no ledger entry
            f.write(b"x" * (2 << 20))
    ledger = _ledger(running)
    assert len(ledger) == 1
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


def test_ledger_entries_of_an_older_server_move_out_of_reach(tmp_path):
    from satchel.server.service import Service

    url = f"sqlite:///{tmp_path / 'old.db'}"
    backend = connect(url, {})
    old = {"server-ledger:shop:shop:m": b"", "server-blobs:shop:6:shop:m:big": b"\x95"}
    for key, value in old.items():
        backend.apply(RESERVED_SCOPE, [Put(key, value, None, True)], time.time())
    salt = Put("encryption-salt", b"\x01b\x00salt", None, True)
    backend.apply(RESERVED_SCOPE, [salt], time.time())
    # what a server before 0.2 kept of each large value's chunk bytes: no longer needed
    backend.apply(LEDGER_SCOPE, [Put("server-blobs:shop:6:shop:m:old", b"\x95")], time.time())
    Service(backend, Config(tenants={}))
    left = [r.key for r in backend.scan(RESERVED_SCOPE, "", None, 100, time.time())]
    assert left == ["encryption-salt"]  # a Store's salt stays where Stores look for it
    moved = {r.key: r.value for r in backend.scan(LEDGER_SCOPE, "", None, 100, time.time())}
    assert moved == {"server-ledger:shop:shop:m": b""}
    backend.close()


# -- large values: their chunks are records, charged as such ---------------------------------


def test_a_large_value_is_charged_and_one_over_quota_keeps_the_old_value(running):
    token = running.tenant(name="shop", quota_bytes=5 << 20, quota_keys=1)
    tenant = running.service.config.tenants["shop"]
    blob_scope = "shop:s\x1fb"  # kind_scope of the tenant's server-side scope
    with satchel.open(f"{running.url}?token={token}", scope="s") as store:
        with store.open_blob("k", "wb") as f:
            f.write(b"a" * (3 << 20))
        usage = running.service.usage(tenant)
        charged = usage.bytes
        assert charged >= 3 << 20 and usage.keys == 1  # its chunks' bytes; one key
        running.service.accounts.forget(tenant)
        recounted = running.service.usage(tenant)
        assert (recounted.bytes, recounted.keys) == (charged, 1)
        stored = running.service.backend.scan(blob_scope, "", None, 100, time.time(), False)
        assert len(stored) == 4  # three chunks and the blob's head, in the blob scope
        with pytest.raises(QuotaExceeded, match="bytes"), store.open_blob("k", "wb") as f:
            f.write(b"b" * (4 << 20))  # refused at its second chunk
        assert store.open_blob("k").read() == b"a" * (3 << 20)  # the old value
        assert running.service.usage(tenant).bytes == charged  # its chunks are freed
        scan = running.service.backend.scan
        assert scan(blob_scope, "", None, 100, time.time(), False) == stored
        # its chunks fit, but the key its manifest adds does not: refused at the commit
        with pytest.raises(QuotaExceeded, match="keys"), store.open_blob("k2", "wb") as f:
            f.write(b"b" * (1 << 20) + b"c")
        assert not store.exists("k2") and running.service.usage(tenant).bytes == charged
        assert scan(blob_scope, "", None, 100, time.time(), False) == stored
        store.delete("k")
    running.service.accounts.forget(tenant)
    # the manifest is gone; its chunks stay (and count) until the server collects them
    assert running.service.usage(tenant).bytes >= 3 << 20


def test_large_values_an_older_server_kept_become_the_tenants_records(tmp_path):
    path, blob_scope = tmp_path / "old.db", "shop:vault\x1fb"
    data = os.urandom(2 * CHUNK_SIZE + 5)
    store = satchel.open(f"sqlite:///{path}", scope="shop:vault")  # as the server kept it
    with store, store.open_blob("big", "wb") as f:
        f.write(data)
    db = sqlite3.connect(path)  # its chunks back where a server before 0.2 kept them
    try:
        db.execute("CREATE TABLE satchel_blobs (blob_id TEXT PRIMARY KEY, scope TEXT, "
                   "key TEXT, staged_at REAL NOT NULL)")  # fmt: skip
        db.execute("CREATE TABLE satchel_chunks (blob_id TEXT NOT NULL, n INTEGER NOT NULL, "
                   "data BLOB NOT NULL, PRIMARY KEY (blob_id, n))")  # fmt: skip
        (head,) = db.execute("SELECT key FROM satchel_kv WHERE scope = ? AND key LIKE 'h/%'",
                             (blob_scope,)).fetchone()  # fmt: skip
        db.execute("INSERT INTO satchel_blobs VALUES (?, 'shop:vault', 'big', 0)", (head[2:],))
        db.execute("INSERT INTO satchel_chunks SELECT ?, CAST(substr(key, -8) AS INTEGER), "
                   "value FROM satchel_kv WHERE scope = ? AND key LIKE 'c/%'",
                   (head[2:], blob_scope))  # fmt: skip
        db.execute("DELETE FROM satchel_kv WHERE scope = ?", (blob_scope,))
        db.commit()
    finally:
        db.close()
    running = support_server.serve(f"sqlite:///{path}", Config())  # moves them at start
    try:
        token = running.tenant(name="shop")
        with satchel.open(f"{running.url}?token={token}", scope="vault") as store:
            assert store.open_blob("big").read() == data
        assert running.service.backend.legacy_blobs(time.time()) is None
        assert running.service.backend.count(blob_scope, time.time()) == 4  # 3 chunks, a head
        assert running.service.usage(running.service.config.tenants["shop"]).bytes > len(data)
    finally:
        support_server.stop(running)


# -- what a tenant is charged against what its writes take (issue 17, item 3) ---------------


class Meter:
    """The storage an engine takes.

    SQLite: the bytes of the file's pages that rows use (dbstat; an overflow page counts
    whole, as no other row can use it). PostgreSQL: the main fork of each table, index
    and TOAST relation of the schema (whole 8 KiB pages: a workload may fill pages begun
    before it, or begin pages it leaves mostly free). Redis: MEMORY USAGE of the store's
    keys. Files engine: blocks on disk. Memory engine: the Python objects of its data.
    """

    def __init__(self, name: str, url: str, tmp_path: Path, backend: Any) -> None:
        self.name, self.url, self.tmp_path, self.backend = name, url, tmp_path, backend

    def size(self) -> int:
        if self.name == "sqlite":
            with contextlib.closing(sqlite3.connect(self.tmp_path / "server.db")) as db:
                return int(db.execute(_SQLITE_USED).fetchone()[0] or 0)
        if self.name == "postgres":
            schema = dict(parse_qsl(urlsplit(self.url).query))["schema"]
            with psycopg.connect(support_postgres.BASE_URL) as conn:
                row = conn.execute(_PG_SIZE, {"schema": schema}).fetchone()
            return int(row[0]) if row else 0
        if self.name == "redis":
            client, prefix = support_redis.client_for(self.url), support_redis.prefix_of(self.url)
            pipe = client.pipeline(transaction=False)
            for name in client.scan_iter(match=prefix.replace("*", "\\*") + "*", count=1000):
                pipe.memory_usage(name, samples=0)
            return sum(n or 0 for n in pipe.execute())
        if self.name == "files":
            return sum(os.lstat(os.path.join(root, n)).st_blocks * 512
                       for root, dirs, files in os.walk(self.tmp_path / "store")
                       for n in dirs + files)  # fmt: skip
        return _deep_size(self.backend._data)


def _deep_size(root: object) -> int:
    """sys.getsizeof of `root` and of every object it refers to, each counted once."""
    seen, stack, total = set(), [root], 0
    while stack:
        obj = stack.pop()
        if id(obj) not in seen and not isinstance(obj, type):
            seen.add(id(obj))
            total += sys.getsizeof(obj)
            stack.extend(gc.get_referents(obj))
    return total


_SQLITE_USED = (
    "SELECT sum(CASE WHEN pagetype = 'overflow' THEN pgsize ELSE pgsize - unused END) FROM dbstat"
)
_PG_SIZE = """
WITH t AS (SELECT c.oid, c.reltoastrelid FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'i'))
SELECT sum(pg_relation_size(oid)) FROM (
    SELECT oid FROM t
    UNION SELECT reltoastrelid FROM t WHERE reltoastrelid <> 0
    UNION SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT reltoastrelid FROM t)
) AS r"""
_URLS = {"sqlite": "sqlite:///{}/server.db", "files": "file://{}/store"}
# Small entries of each kind, and entries of a container of their own (one HTTP request
# each): enough that whole pages (SQLite, PostgreSQL) matter little, few where each
# entry takes a block (files) or is measured exactly (Redis, memory). A series, sequence
# or scope is only rows on SQLite and PostgreSQL: measured where it is more (a key, a
# file or folder, objects).
SCALE = {"sqlite": (1000, 100, False), "postgres": (1000, 200, False),
         "redis": (300, 50, True), "files": (100, 30, True), "memory": (300, 50, True)}
LONG = "n" * 1000  # a long key or series name (some engines keep names in every row)


def _workloads(
    c: httpx.Client, n: int, each: int, containers: bool
) -> Iterator[tuple[str, int, Callable[[], None]]]:
    """(kind, how many entries, the writes): `n` small entries of each kind, as many with
    long names or values of ~1 KB (which spill on SQLite), and with `containers`, `each`
    entries that each have a scope, series or sequence of their own."""

    def ok(answer: httpx.Response) -> None:
        assert answer.status_code in (200, 204), answer.text

    def records(scope: str, keys: list[str], value: bytes) -> Callable[[], None]:
        changes = [{"op": "put", "key": k, "value": b64(value)} for k in keys]
        return lambda: ok(c.post("/v1/apply", json={"scope": scope, "changes": changes}))

    def points(name: str, n: int, series: int = 1) -> Callable[[], None]:
        def write() -> None:
            for s in range(series):
                batch = [{"t": t, "value": b64(b"v")} for t in range(n // series)]
                ok(c.post("/v1/series/put", json={"scope": "p", "name": f"{name}{s}",
                                                  "points": batch}))  # fmt: skip
        return write

    def events(n: int, sequences: int = 1) -> Callable[[], None]:
        """The records a Store writes for `sequences` sequences of n/sequences events
        (see _events.py): a head each, and each event's timestamp and data."""
        keys = []
        for s in range(sequences):
            sid = f"{{{s:032x}}}"
            keys += [sid, *(f"{sid}/{0:016x}/{i:016d}" for i in range(1, n // sequences + 1))]
        return records("e\x1fe", keys, msgpack.packb([1 << 40, b"e"]))

    def scopes(n: int) -> Callable[[], None]:
        return lambda: [ok(c.post("/v1/apply", json={"scope": f"s{i}", "changes": [
            {"op": "put", "key": "k", "value": b64(b"v")}]})) for i in range(n)]  # fmt: skip

    yield "records", n, records("r", [f"key{i:05d}" for i in range(n)], b"v")
    yield "records, 1000-byte keys", n, records("r", [f"{i:04d}{LONG}" for i in range(n)], b"")
    yield "records, 1 KB values", n, records("v", [f"k{i}" for i in range(n)], b"\xa5" * 1000)
    if containers:
        yield "records, one per scope", each, scopes(each)
    yield "points", n, points("cpu", n)
    yield "points, 1000-byte names", n, points(LONG, n)
    if containers:
        yield "series of one point", each, points("one", each, series=each)
    yield "events", n, events(n)
    if containers:
        yield "sequences of one event", each, events(each, sequences=each)
    # the chunks and heads of large values: records in the blob scope of a scope
    yield "blob scope records", n, records("b\x1fb", [f"c/{i:032x}/00000000" for i in range(n)],
                                          b"c")  # fmt: skip


def _warm_up(c: httpx.Client) -> None:
    """What the first write of a kind makes once (tables, folders) is made before measuring."""
    for scope in ("r", "v", "p", "e\x1fe", "b\x1fb"):
        c.post("/v1/apply", json={"scope": scope, "changes": [{"op": "put", "key": "w",
                                                               "value": ""}]})  # fmt: skip
    one = [{"t": 0, "value": ""}]
    c.post("/v1/series/put", json={"scope": "p", "name": "w", "points": one})


def measure(name: str, tmp_path: Path) -> list[tuple[str, int, int, int, int]]:
    """(kind, entries, growth, charged, recounted) for each workload on engine `name`."""
    engine = ENGINES[name]
    url = _URLS[name].format(tmp_path) if name in _URLS else engine(tmp_path)
    running = support_server.serve(url, Config())
    service, rows = running.service, []
    meter = Meter(name, url, tmp_path, service.backend)
    n, each, containers = SCALE[name]
    try:
        token = running.tenant(name="t", prefix="t:", quota_bytes=1 << 40, quota_keys=1 << 40)
        tenant = service.config.tenants["t"]
        with client(running, token) as c:
            _warm_up(c)
            for kind, entries, write in _workloads(c, n, each, containers):
                size, used = meter.size(), service.usage(tenant).bytes
                write()
                growth, charged = meter.size() - size, service.usage(tenant).bytes - used
                service.accounts.forget(tenant)
                recounted = service.usage(tenant).bytes - used
                rows.append((kind, entries, growth, charged, recounted))
    finally:
        support_server.stop(running)
        if engine.cleanup is not None:
            engine.cleanup(url)
    return rows


@pytest.mark.parametrize("name", ["sqlite", "postgres", "redis", "files", "memory"])
def test_a_tenant_is_charged_at_least_half_of_the_storage_its_writes_take(name, tmp_path):
    rows = measure(name, tmp_path)
    for kind, entries, growth, charged, recounted in rows:  # shown with -s
        print(f"{name:8} {kind:25} growth {growth / entries:7.1f}  charged {charged / entries:7.1f}"
              f"  recounted {recounted / entries:7.1f}  growth/charged {growth / charged:5.2f}")
    short = [(kind, growth, charged, recounted) for kind, _, growth, charged, recounted in rows
             if min(charged, recounted) < growth / 2]  # fmt: skip
    assert not short


# -- /v1/apply: one quota check for the whole batch ------------------------------------------


def _apply_setup(running: support_server.Running, **quota: int) -> tuple[Any, Any, Any]:
    """A tenant with `quota`, its engine over HTTP holding k (1 KB) and gone, and its usage."""
    token = running.tenant(name="shop", **quota)
    tenant = running.service.config.tenants["shop"]
    backend = connect(f"{running.url}?token={token}", {})
    now = time.time()
    assert backend.apply("s", [Put("k", b"a" * 1000), Put("gone", b"g")], now) == 2
    return backend, tenant, running.service.usage(tenant)


def test_an_apply_batch_over_quota_writes_nothing(running):
    backend, tenant, before = _apply_setup(running, quota_bytes=20_000, quota_keys=10)
    used = (before.bytes, before.keys)
    now = time.time()
    # The delete frees room, but not enough for the put: the batch is refused whole.
    batch = [Put("new", b"n" * 20_000), Delete("gone"), Touch("k", now + 60)]
    with pytest.raises(QuotaExceeded, match="nothing was written"):
        backend.apply("s", batch, now)
    found = backend.get_many("s", ["k", "new", "gone"], time.time())
    assert sorted(found) == ["gone", "k"]
    assert found["k"].value == b"a" * 1000 and found["k"].expires_at is None
    usage = running.service.usage(tenant)
    assert (usage.bytes, usage.keys) == used
    # Too many keys: refused as well, though the bytes fit.
    with pytest.raises(QuotaExceeded, match="keys"):
        backend.apply("s", [Put(f"n{i}", b"") for i in range(9)], time.time())
    assert backend.count("s", time.time()) == 2
    # Net of what it deletes, a batch that fits goes through and is counted.
    assert backend.apply("s", [Delete("k"), Put("new", b"n" * 10_000)], time.time()) == 2
    counted = running.service.usage(tenant)
    assert counted.bytes > used[0] + 7_000 and counted.keys == 2
    running.service.accounts.forget(tenant)
    recounted = running.service.usage(tenant)
    backend.close()
    assert (counted.bytes, counted.keys) == (recounted.bytes, recounted.keys)


def test_an_apply_whose_condition_fails_charges_nothing(running):
    backend, tenant, before = _apply_setup(running)
    used = (before.bytes, before.keys)
    k = backend.get("s", "k", time.time())
    assert k is not None
    batch = [Put("k", b"b" * 50_000), Put("new", b"n" * 50_000), Delete("gone")]
    for stale in (Expect("k", k.version + 1), Expect("k", None), Expect("new", 1)):
        assert backend.apply("s", batch, time.time(), [stale]) is None
        usage = running.service.usage(tenant)
        assert (usage.bytes, usage.keys) == used  # not charged, and no delete credited
    assert sorted(backend.get_many("s", ["k", "new", "gone"], time.time())) == ["gone", "k"]
    # With the condition met, the same batch is charged what a recount finds.
    held = Expect("k", k.version, k.created_at)
    assert backend.apply("s", batch, time.time(), [held]) == 2
    counted = running.service.usage(tenant)
    assert counted.bytes > used[0] + 95_000 and counted.keys == 2
    running.service.accounts.forget(tenant)
    recounted = running.service.usage(tenant)
    backend.close()
    assert (counted.bytes, counted.keys) == (recounted.bytes, recounted.keys)
