"""PostgreSQL-specific behaviour: layout, index use, connection loss, configuration."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pytest

import satchel
import support_postgres
from satchel._backends.base import STAGED_LIFETIME, Delete, Expect, Put, Touch
from satchel._backends.postgres import SCAN, SCHEMA_VERSION, PostgresBackend


@pytest.fixture
def url(tmp_path) -> Iterator[str]:
    fresh = support_postgres.fresh_url(tmp_path)
    yield fresh
    support_postgres.drop(fresh)


def _schema(url: str) -> str:
    return dict(parse_qsl(urlsplit(url).query))["schema"]


def _admin() -> psycopg.Connection:
    return psycopg.connect(support_postgres.BASE_URL, autocommit=True)


def _kill_satchel_sessions() -> int:
    with _admin() as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'satchel' AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def test_table_holds_typed_records_with_metadata(url):
    with satchel.open(url) as store:
        store.set("user:1", {"a": (1, 2)})
        store.set("user:1", {"a": (1, 2)})
    with _admin() as conn:
        schema = _schema(url)
        row = conn.execute(
            "SELECT scope, key, version, created_at <= updated_at, value "
            f'FROM "{schema}".satchel_kv'
        ).fetchone()
        version = conn.execute(
            f"SELECT value FROM \"{schema}\".satchel_meta WHERE name = 'satchel_kv.schema_version'"
        ).fetchone()
    assert row[:4] == ("default", "user:1", 2, True)
    assert row[4][:3] == b"\x01t\x00"
    assert version == (str(SCHEMA_VERSION),)


def test_prefix_scan_is_an_index_range_scan(url):
    with satchel.open(url) as store:
        store.set_many({f"user:{i:05d}": i for i in range(5000)})
        store.set_many({f"other:{i:05d}": i for i in range(5000)})
    statement = SCAN[True, True, True].replace("{t}", f'"{_schema(url)}".satchel_kv')
    with _admin() as conn:
        conn.execute("ANALYZE " + f'"{_schema(url)}".satchel_kv')
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN " + statement,
                {"scope": "default", "low": "user:", "high": "user;", "now": 0.0, "limit": 500},
            )
        )
    assert "Index Scan using satchel_kv_pkey" in plan, plan
    assert "key >=" in plan and "key <" in plan, plan


def test_two_tables_in_one_schema_are_separate(url):
    with satchel.open(url) as a, satchel.open(url, table="other_app") as b:
        a.set("k", "from a")
        b.set("k", "from b")
        assert a.get("k") == "from a"
        assert b.get("k") == "from b"


def test_read_survives_a_killed_connection(url):
    with satchel.open(url, pool_min=1, pool_max=1) as store:
        store.set("k", 1)
        assert _kill_satchel_sessions() >= 1
        assert store.get("k") == 1  # retried once on a fresh connection


def test_write_on_a_killed_connection_says_it_may_not_have_applied(url):
    with satchel.open(url, pool_min=1, pool_max=1) as store:
        store.set("n", 10)
        assert _kill_satchel_sessions() >= 1
        with pytest.raises(satchel.BackendUnavailable, match="may or may not"):
            store.set("n", 20)
        assert store.get("n") == 10  # never retried behind the user's back
        assert store.incr("n") == 11  # the pool replaced the connection


def test_statement_blocked_past_op_timeout_is_canceled_and_not_applied(url):
    """A healthy server with a statement stuck behind a lock: the watchdog has it
    canceled at op_timeout, so the write is reported and not applied, nothing is
    retried, and the store goes on with a fresh connection."""
    with satchel.open(url, op_timeout=1) as store, _admin() as admin:
        store.set("k", 1)
        with admin.transaction():
            admin.execute(f'LOCK TABLE "{_schema(url)}".satchel_kv IN ACCESS EXCLUSIVE MODE')
            for op in (lambda: store.get("k"), lambda: store.set("k", 2)):
                start = time.monotonic()
                with pytest.raises(satchel.BackendUnavailable, match="op_timeout=1s"):
                    op()
                assert 1 <= time.monotonic() - start < 1.9  # canceled once, not retried
        assert store.get("k") == 1  # the canceled write did not land
        store.set("k", 3)
        assert store.get("k") == 3


def test_newer_schema_version_is_refused(url):
    satchel.open(url).close()
    with _admin() as conn:
        conn.execute(
            f"UPDATE \"{_schema(url)}\".satchel_meta SET value = '99' "
            "WHERE name = 'satchel_kv.schema_version'"
        )
    with pytest.raises(satchel.IncompatibleDatabase, match="newer"):
        satchel.open(url)


def test_unreachable_server_names_the_engine_without_password():
    bad = "postgresql://postgres:hunter2secret@127.0.0.1:1/postgres"
    with pytest.raises(satchel.BackendUnavailable) as caught:
        satchel.open(bad, connect_timeout=2)
    assert "hunter2secret" not in str(caught.value)
    assert "***" in str(caught.value)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"pool_max": "0"}, satchel.InvalidInput),
        ({"pool_min": "x"}, satchel.InvalidInput),
        ({"no_such_libpq_option": "1"}, satchel.InvalidInput),
        ({"table": ""}, satchel.InvalidInput),
        ({"op_timeout": "-1"}, satchel.InvalidInput),
        ({"op_timeout": "soon"}, satchel.InvalidInput),
        ({"op_timeout": "inf"}, satchel.InvalidInput),
    ],
)
def test_bad_options_are_invalid_input(url, options, error):
    with pytest.raises(error):
        satchel.open(url, **options)


def _incr_many(url: str, times: int) -> None:
    with satchel.open(url, pool_max=2) as store:
        for _ in range(times):
            store.incr("counter")


def test_incr_from_many_processes_loses_nothing(url):
    satchel.open(url).close()
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_incr_many, args=(url, 150)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    with satchel.open(url) as store:
        assert store.get("counter") == 600


def test_schemas_of_tests_are_isolated(tmp_path):
    first, second = (support_postgres.fresh_url(tmp_path) for _ in range(2))
    try:
        with satchel.open(first) as a, satchel.open(second) as b:
            a.set(uuid.uuid4().hex, 1)
            assert len(b) == 0
    finally:
        support_postgres.drop(first)
        support_postgres.drop(second)


# -- blobs, time series, event sequences ----------------------------------------------


class _Engine(PostgresBackend):
    def __enter__(self) -> _Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _backend(url: str, **options) -> _Engine:
    """The engine itself on the schema of `url`."""
    return _Engine(support_postgres.BASE_URL, schema=_schema(url), **options)


def _rows(url: str, table: str, where: str = "") -> int:
    with _admin() as conn:
        query = f'SELECT count(*) FROM "{_schema(url)}"."{table}" {where}'
        return int(conn.execute(query).fetchone()[0])


def _write_blob(
    b: PostgresBackend,
    key: str,
    blob_id: str,
    chunks: int,
    now: float,
    expires_at: float | None = None,
    scope: str = "s",
) -> bool:
    for i in range(chunks):
        b.blob_write(scope, key, blob_id, i, bytes([i]) * 1000, now)
    manifest = b"manifest:" + blob_id.encode()
    return b.blob_commit(scope, key, blob_id, chunks, manifest, expires_at, now)


NOW = 1_800_000_000.0

# Every write that replaces or removes the record: afterwards no chunk of its blob is left.
FREEING = {
    "put": lambda b: b.apply("s", [Put("k", b"v")], NOW),
    "put_many": lambda b: b.apply("s", [Put("k", b"v"), Put("x", b"v")], NOW),
    "delete": lambda b: b.apply("s", [Delete("k")], NOW),
    "delete_many": lambda b: b.apply("s", [Delete("k"), Delete("x")], NOW),
    "conditional delete": lambda b: b.apply("s", [Delete("k")], NOW, [Expect("k", 1)]),
    "clear": lambda b: b.clear("s"),
    "compare_and_set": lambda b: b.apply("s", [Put("k", b"v")], NOW, [Expect("k", 1)]),
    "blob_commit": lambda b: _write_blob(b, "k", "other", 2, NOW),
}


@pytest.mark.parametrize("write", list(FREEING))
def test_blob_chunks_are_freed_when_the_record_goes(url, write):
    with _backend(url) as b:
        assert _write_blob(b, "k", "b1", 3, NOW) is True
        _write_blob(b, "keep", "b2", 2, NOW, scope="t")  # another key's blob stays
        assert b.blob_read("s", "k", "b1", 2, NOW) == b"\x02" * 1000
        FREEING[write](b)
        assert b.blob_read("s", "k", "b1", 0, NOW) is None
        assert b.blob_read("t", "keep", "b2", 1, NOW) == b"\x01" * 1000
    assert _rows(url, "satchel_kv_chunks", "WHERE blob_id = 'b1'") == 0
    assert _rows(url, "satchel_kv_blobs", "WHERE blob_id = 'b1'") == 0
    assert _rows(url, "satchel_kv_chunks", "WHERE blob_id = 'b2'") == 2


def test_touch_keeps_the_blob(url):
    with _backend(url) as b:
        _write_blob(b, "k", "b1", 2, NOW)
        assert b.apply("s", [Touch("k", NOW + 100)], NOW)
        assert b.blob_read("s", "k", "b1", 1, NOW) == b"\x01" * 1000
    assert _rows(url, "satchel_kv_chunks") == 2


def test_expired_blob_reads_as_none_and_purge_frees_it(url):
    with _backend(url) as b:
        assert _write_blob(b, "k", "b1", 2, NOW, expires_at=NOW + 10) is True
        assert b.blob_read("s", "k", "b1", 0, NOW + 9) is not None
        assert b.blob_read("s", "k", "b1", 0, NOW + 10) is None
        assert _rows(url, "satchel_kv_chunks") == 2  # still there, invisible
        assert b.purge_expired(NOW + 10, 100) == 1
    assert _rows(url, "satchel_kv_chunks") == 0
    assert _rows(url, "satchel_kv_blobs") == 0


def test_commit_over_an_expired_record_counts_as_new(url):
    with _backend(url) as b:
        _write_blob(b, "k", "b1", 1, NOW, expires_at=NOW + 1)
        assert _write_blob(b, "k", "b2", 1, NOW + 5) is True
        assert b.get("s", "k", NOW + 5).version == 1
        assert _write_blob(b, "k", "b3", 1, NOW + 6) is False
        assert b.get("s", "k", NOW + 6).version == 2
    assert _rows(url, "satchel_kv_chunks") == 1


def test_staged_blob_is_freed_by_purge_after_its_lifetime(url):
    with _backend(url) as b:
        for i in range(3):
            b.blob_write("s", "k", "staged", i, b"x", NOW)
        assert b.purge_expired(NOW + STAGED_LIFETIME - 1, 100) == 0
        assert _rows(url, "satchel_kv_chunks") == 3
        b.purge_expired(NOW + STAGED_LIFETIME + 1, 100)
        assert _rows(url, "satchel_kv_chunks") == 0
        assert _rows(url, "satchel_kv_blobs") == 0
        with pytest.raises(satchel.BackendError, match="gone") as caught:
            b.blob_commit("s", "k", "staged", 3, b"m", None, NOW)
        assert b.get("s", "k", NOW) is None
    assert "postgresql://" in str(caught.value)


def test_purge_leaves_committed_and_young_staged_blobs(url):
    with _backend(url) as b:
        _write_blob(b, "k", "old", 2, NOW - 10 * STAGED_LIFETIME)
        b.blob_write("s", "j", "young", 0, b"x", NOW)
        b.purge_expired(NOW, 100)
        assert b.blob_read("s", "k", "old", 1, NOW) is not None
    assert _rows(url, "satchel_kv_chunks") == 3


def test_commit_with_a_missing_chunk_raises_and_writes_nothing(url):
    with _backend(url) as b:
        _write_blob(b, "k", "b1", 2, NOW)
        before = b.get("s", "k", NOW)
        b.blob_write("s", "k", "b2", 0, b"a", NOW)
        b.blob_write("s", "k", "b2", 2, b"c", NOW)
        with pytest.raises(satchel.BackendError, match="1 of its 3 chunks are missing") as caught:
            b.blob_commit("s", "k", "b2", 3, b"m2", None, NOW + 1)
        assert caught.value.key == "k" and caught.value.scope == "s"
        assert b.get("s", "k", NOW + 1) == before  # same value, version, times
        assert b.blob_read("s", "k", "b1", 1, NOW) == b"\x01" * 1000
        assert b.blob_read("s", "k", "b2", 0, NOW) is None
        b.blob_write("s", "k", "b2", 1, b"b", NOW)  # still staged: complete it
        assert b.blob_commit("s", "k", "b2", 3, b"m2", None, NOW + 1) is False
        assert [b.blob_read("s", "k", "b2", i, NOW) for i in range(3)] == [b"a", b"b", b"c"]
    assert _rows(url, "satchel_kv_chunks") == 3


def test_a_committed_blob_is_sealed(url):
    with _backend(url) as b:
        _write_blob(b, "k", "b1", 2, NOW)
        with pytest.raises(satchel.BackendError, match="already committed"):
            b.blob_write("s", "k", "b1", 0, b"evil", NOW)
        with pytest.raises(satchel.BackendError, match="already committed"):
            b.blob_commit("s", "k", "b1", 2, b"m", None, NOW)
        b.blob_discard("s", "k", "b1")  # a no-op on a committed blob
        assert b.blob_read("s", "k", "b1", 0, NOW) == b"\x00" * 1000
        assert b.blob_read("s", "k", "b1", 2, NOW) is None
        assert b.blob_read("s", "k", "nope", 0, NOW) is None
        assert b.blob_read("s", "other", "b1", 0, NOW) is None


def test_a_staged_blob_belongs_to_its_key(url):
    with _backend(url) as b:
        b.blob_write("s", "k", "b1", 0, b"x", NOW)
        with pytest.raises(satchel.BackendError):
            b.blob_write("s", "other", "b1", 1, b"x", NOW)
        with pytest.raises(satchel.BackendError, match="another key"):
            b.blob_commit("s", "other", "b1", 1, b"m", None, NOW)
        b.blob_discard("other-scope", "k", "b1")  # not its blob: nothing happens
        assert _rows(url, "satchel_kv_chunks") == 1
        b.blob_discard("s", "k", "b1")
        b.blob_discard("s", "k", "b1")  # idempotent
    assert _rows(url, "satchel_kv_chunks") == 0
    assert _rows(url, "satchel_kv_blobs") == 0


def test_chunks_are_stored_uncompressed_out_of_line(url):
    satchel.open(url).close()
    with _admin() as conn:
        storage = conn.execute(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attname = 'data'",
            (f'"{_schema(url)}".satchel_kv_chunks',),
        ).fetchone()
    assert storage == ("e",)


def test_blob_through_the_store_frees_its_chunks(url):
    with satchel.open(url) as store:
        payload = bytes(range(256)) * 4096 * 3  # 3 MiB: several chunks
        with store.open_blob("big", "wb") as f:
            f.write(payload)
        chunks = _rows(url, "satchel_kv_chunks")
        assert chunks >= 3
        with store.open_blob("big", "rb") as f:
            assert f.read() == payload
        store["big"] = "small now"
        assert _rows(url, "satchel_kv_chunks") == 0


def test_series_range_is_an_index_range_scan(url):
    with _backend(url) as b:
        for name in ("a", "b", "c"):
            b.series_put("s", name, [(t, b"v") for t in range(3000)])
        statements = b._sql
    with _admin() as conn:
        conn.execute(f'ANALYZE "{_schema(url)}".satchel_kv_series')
        params = {"scope": "s", "name": "b", "low": 100, "high": 200, "limit": 10}
        for reverse, scan in ((False, "Index Scan"), (True, "Index Scan Backward")):
            statement = statements[f"SERIES_RANGE{(reverse, True)}"]
            plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + statement, params))
            assert f"{scan} using satchel_kv_series_pkey" in plan, plan
            assert "Sort" not in plan, plan


def test_series_and_events_names_skip_through_the_index(url):
    with _backend(url) as b:
        b.series_put("s", "one", [(t, b"") for t in range(5000)])
        b.series_put("s", "two", [(1, b"")])
        b.series_put("t", "three", [(1, b"")])
        assert b.series_names("s") == ["one", "two"]
        assert b.series_names("t") == ["three"]
        assert b.series_names("u") == []


def test_tables_of_two_stores_in_one_schema_are_separate(url):
    long_table = "t" * 63  # derived names must be shortened without colliding
    with _backend(url) as a, _backend(url, table=long_table) as b:
        _write_blob(a, "k", "b1", 1, NOW)
        a.series_put("s", "x", [(1, b"a")])
        a.events_append("s", "e", 0, [(1, b"a")], b"head")
        assert b.blob_read("s", "k", "b1", 0, NOW) is None
        assert b.series_names("s") == [] and b.events_names("s") == []
        _write_blob(b, "k", "b2", 1, NOW)
        b.apply("s", [Put("k", b"v")], NOW)  # frees b's blob only
        assert a.blob_read("s", "k", "b1", 0, NOW) is not None
    with _admin() as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (_schema(url),)
            )
        ]
    assert len(names) == len(set(names)) == 1 + 2 * 6  # meta, and 6 tables for each
    assert all(len(name) <= 63 for name in names)


def test_events_append_without_a_head_and_after_delete(url):
    with _backend(url) as b:
        assert b.events_append("s", "e", 0, [(5, b"a"), (6, b"b")], b"h2")
        assert not b.events_append("s", "e", 0, [(7, b"x")], b"hx")
        assert not b.events_append("s", "e", 1, [(7, b"x")], b"hx")
        assert b.events_state("s", "e", "head") == (2, 6, b"h2")
        b.events_compact("s", "e", (1, 5, b"b1"))
        b.events_compact("s", "e", (0, 0, b"older"))  # behind the base: a no-op
        assert b.events_state("s", "e", "base") == (1, 5, b"b1")
        assert b.events_read("s", "e", 0, 10) == [(2, 6, b"b")]
        assert b.events_delete("s", "e") is True
        assert b.events_delete("s", "e") is False
        assert b.events_append("s", "e", 0, [(9, b"new")], b"h1")  # starts again at 1
        assert b.events_read("s", "e", 0, 10) == [(1, 9, b"new")]


def _race(b: PostgresBackend, name: str, barrier: threading.Barrier, me: int, rounds: int,
          wins: list[tuple[int, int]]) -> None:  # fmt: skip
    for after in range(rounds):
        barrier.wait()
        if b.events_append("s", name, after, [(me, str(me).encode())], b"head"):
            wins.append((after, me))
        barrier.wait()  # every racer has tried before the next round


@pytest.mark.parametrize("isolation", ["read committed", "serializable"])
def test_racing_appends_from_threads_have_one_winner_each(url, isolation):
    threads, rounds = 6, 25
    escaped = isolation.replace(" ", "\\ ")  # libpq's options are split at spaces
    options = {"options": f"-c default_transaction_isolation={escaped}"}
    backends = [_backend(url, libpq=options) for _ in range(threads)]
    barrier = threading.Barrier(threads)
    wins: list[tuple[int, int]] = []
    try:
        workers = [
            threading.Thread(target=_race, args=(backends[i], "e", barrier, i, rounds, wins))
            for i in range(threads)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        assert sorted(after for after, _ in wins) == list(range(rounds))
        events = backends[0].events_read("s", "e", 0, 1000)
        winners = dict(wins)
        assert [(seq, ts) for seq, ts, _ in events] == [
            (after + 1, winners[after]) for after in range(rounds)
        ]
        assert backends[0].events_state("s", "e", "head")[0] == rounds
    finally:
        for b in backends:
            b.close()


def _append_many(url: str, name: str, me: int, times: int) -> None:
    with _backend(url) as b:
        done = 0
        while done < times:
            head = b.events_state("s", name, "head")
            after = 0 if head is None else head[0]
            if b.events_append("s", name, after, [(me, f"{me}:{done}".encode())], b"h"):
                done += 1


def test_appends_from_many_processes_lose_nothing(url):
    satchel.open(url).close()
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_many, args=(url, "e", i, 40)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    with _backend(url) as b:
        events = b.events_read("s", "e", 0, 1000)
        assert [seq for seq, _, _ in events] == list(range(1, 161))
        for me in range(4):  # each process's events, in its own order
            mine = [data for _, ts, data in events if ts == me]
            assert mine == [f"{me}:{i}".encode() for i in range(40)]
        assert b.events_state("s", "e", "head")[0] == 160


# The schema of satchel 0.1 (version 1): records only.
SCHEMA_1 = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE {schema}.satchel_meta (name text PRIMARY KEY, value text NOT NULL);
CREATE TABLE {schema}.satchel_kv (
    scope text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value bytea NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    expires_at double precision,
    version bigint NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX satchel_kv_expiry ON {schema}.satchel_kv (expires_at) WHERE expires_at IS NOT NULL;
INSERT INTO {schema}.satchel_meta (name, value) VALUES ('satchel_kv.schema_version', '1');
"""


def _open_and_set(url: str, key: str) -> None:
    with satchel.open(url) as store:
        store[key] = key


def test_a_version_1_database_is_upgraded_on_open(url):
    with _admin() as conn:
        conn.execute(SCHEMA_1.format(schema=f'"{_schema(url)}"'))
        conn.execute(
            f'INSERT INTO "{_schema(url)}".satchel_kv VALUES '
            "('default', 'old', 'opaque'::bytea, 1, 1, NULL, 3)"
        )
    ctx = multiprocessing.get_context("spawn")  # several first opens race to upgrade
    workers = [ctx.Process(target=_open_and_set, args=(url, f"p{i}")) for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    with satchel.open(url) as store:
        assert sorted(store.keys()) == ["old", "p0", "p1", "p2"]
        store.series("temp").add(1, 20.5)
        with store.open_blob("big", "wb") as f:
            f.write(b"x" * (3 << 20))
        store["big"] = 1
    assert _rows(url, "satchel_kv_chunks") == 0
    with _backend(url) as b:
        old = b.get("default", "old", NOW)
        assert (old.value, old.version) == (b"opaque", 3)
    with _admin() as conn:
        version = conn.execute(
            f'SELECT value FROM "{_schema(url)}".satchel_meta '
            "WHERE name = 'satchel_kv.schema_version'"
        ).fetchone()
    assert version == (str(SCHEMA_VERSION),)


def test_a_newer_database_is_not_touched(url):
    with _admin() as conn:
        conn.execute(SCHEMA_1.format(schema=f'"{_schema(url)}"'))
        conn.execute(f"UPDATE \"{_schema(url)}\".satchel_meta SET value = '{SCHEMA_VERSION + 1}'")
    with pytest.raises(satchel.IncompatibleDatabase, match="newer"):
        satchel.open(url)
    assert _rows(url, "satchel_kv") == 0
    with _admin() as conn:
        found = conn.execute(
            "SELECT to_regclass(%s)", (f'"{_schema(url)}".satchel_kv_chunks',)
        ).fetchone()
    assert found == (None,)


def test_a_table_name_with_quotes_and_dollars_works(url):
    with _backend(url, table="we\"ird $$ 'name'") as b:
        _write_blob(b, "k", "b1", 2, NOW)
        b.series_put("s", "x", [(1, b"a")])
        assert b.events_append("s", "e", 0, [(1, b"a")], b"h")
        b.apply("s", [Put("k", b"v")], NOW)
        assert b.blob_read("s", "k", "b1", 0, NOW) is None
    assert _rows(url, "we\"\"ird $$ 'name'_chunks") == 0


def _orphan_chunks(url: str) -> int:
    schema = _schema(url)
    return _rows(
        url,
        "satchel_kv_chunks",
        f'c WHERE NOT EXISTS (SELECT 1 FROM "{schema}".satchel_kv_blobs b '
        "WHERE b.blob_id = c.blob_id)",
    )


def test_racing_chunk_writes_discards_and_commits_leave_no_orphan_chunks(url):
    threads, rounds = 4, 40
    backends = [_backend(url) for _ in range(threads)]
    errors: list[BaseException] = []

    def writer(b: PostgresBackend, me: int) -> None:
        try:
            for r in range(rounds):
                blob_id = f"blob-{r}"  # every thread works on the same blobs
                for i in range(3):
                    with contextlib.suppress(satchel.BackendError):
                        b.blob_write("s", "k", blob_id, i, b"x" * 100, NOW)
                if me == 0:
                    b.blob_discard("s", "k", blob_id)
                elif me == 1:
                    with contextlib.suppress(satchel.BackendError):
                        b.blob_commit("s", "k", blob_id, 3, b"m", None, NOW)
                else:
                    b.purge_expired(NOW + 2 * STAGED_LIFETIME, 1000)
        except BaseException as exc:
            errors.append(exc)

    try:
        workers = [threading.Thread(target=writer, args=(backends[i], i)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        assert not errors, errors
        backends[0].apply("s", [Put("k", b"v")], NOW)  # frees the committed blob
        backends[0].purge_expired(NOW + 2 * STAGED_LIFETIME, 10_000)  # and the staged ones
    finally:
        for b in backends:
            b.close()
    assert _orphan_chunks(url) == 0
    assert _rows(url, "satchel_kv_chunks") == 0
