"""PostgreSQL-specific behaviour: layout, index use, connection loss, configuration."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import msgpack
import psycopg
import pytest
from psycopg import sql

import satchel
import support_postgres
from satchel._backends.base import LegacyBlob, Put
from satchel._backends.postgres import SCAN, SCHEMA_VERSION, PostgresBackend
from satchel._blobs import migrate


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


# -- time series, event sequences, large values ----------------------------------------------


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


NOW = 1_800_000_000.0


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
        a.series_put("s", "x", [(1, b"a")])
        a.events_append("s", "e", 0, [(1, b"a")], b"head")
        assert b.series_names("s") == [] and b.events_names("s") == []
    with _admin() as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (_schema(url),)
            )
        ]
    assert len(names) == len(set(names)) == 1 + 2 * 4  # meta, and 4 tables for each
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
    assert _legacy_objects(url) == []
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
        b.series_put("s", "x", [(1, b"a")])
        assert b.events_append("s", "e", 0, [(1, b"a")], b"h")
        b.apply("s", [Put("k", b"v")], NOW)
        assert b.get_value("s", "k", NOW) == b"v"
    assert _rows(url, "we\"\"ird $$ 'name'_series") == 1


# -- large values kept by satchel 0.1 (schema version 2) -------------------------------

# What schema version 2 added for large values (as satchel 0.1 created it): chunks in a
# table of their own, a blob row per value, the kv column naming a record's blob, and
# triggers freeing a blob when its record is overwritten or deleted.
LEGACY_2 = """
ALTER TABLE {t} ADD COLUMN blob text COLLATE "C";
CREATE TABLE {blobs} (
    blob_id text COLLATE "C" PRIMARY KEY,
    scope text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    staged_at double precision
);
CREATE INDEX {blobs_staged} ON {blobs} (staged_at) WHERE staged_at IS NOT NULL;
CREATE TABLE {chunks} (
    blob_id text COLLATE "C" NOT NULL,
    n integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (blob_id, n)
);
ALTER TABLE {chunks} ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE FUNCTION {free_blob}() RETURNS trigger LANGUAGE plpgsql AS {body};
CREATE TRIGGER {on_delete} AFTER DELETE ON {t} FOR EACH ROW
    WHEN (OLD.blob IS NOT NULL) EXECUTE FUNCTION {free_blob}();
CREATE TRIGGER {on_update} AFTER UPDATE OF value, blob ON {t} FOR EACH ROW
    WHEN (OLD.blob IS NOT NULL) EXECUTE FUNCTION {free_blob}();
UPDATE {meta} SET value = '2' WHERE name = {version_name};
"""
LEGACY_2_FREE = """
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.blob IS NOT DISTINCT FROM OLD.blob
            AND NEW.value IS NOT DISTINCT FROM OLD.value THEN
        RETURN NULL;
    END IF;
    DELETE FROM {blobs} WHERE blob_id = OLD.blob;
    DELETE FROM {chunks} WHERE blob_id = OLD.blob;
    RETURN NULL;
END"""
MIB = 1 << 20


def _legacy_names(url: str, table: str) -> dict[str, sql.Composable]:
    schema = _schema(url)
    names: dict[str, sql.Composable] = {
        name: sql.Identifier(schema, table + suffix)
        for name, suffix in (("blobs", "_blobs"), ("chunks", "_chunks"),
                             ("free_blob", "_free_blob"))
    }  # fmt: skip
    for name, suffix in (("blobs_staged", "_blobs_staged"), ("on_delete", "_free_blob_on_delete"),
                         ("on_update", "_free_blob_on_update")):  # fmt: skip
        names[name] = sql.Identifier(table + suffix)
    names["t"] = sql.Identifier(schema, table)
    names["meta"] = sql.Identifier(schema, "satchel_meta")
    names["version_name"] = sql.Literal(f"{table}.schema_version")
    return names


def _make_legacy(url: str, table: str, payloads: dict[str, bytes]) -> dict[str, str]:
    """A store of `table` laid out as satchel 0.1 left it, holding `payloads` (key ->
    bytes of several chunks) as large values; return each key's blob id.

    The values are written by this satchel, then moved by hand: their chunk records into
    the chunks table, their heads into blob rows, the blob scope emptied."""
    with satchel.open(url, table=table) as store:
        for key, payload in payloads.items():
            with store.open_blob(key, "wb") as f:
                f.write(payload)
    names = _legacy_names(url, table)
    with _admin() as conn, conn.transaction():
        t, blob_scope = names["t"], "default\x1fb"
        heads = conn.execute(
            sql.SQL("SELECT key, value FROM {} WHERE scope = %s AND key LIKE 'h/%%'").format(t),
            (blob_scope,),
        ).fetchall()
        owners = {msgpack.unpackb(value)[0]: key[2:] for key, value in heads}
        assert sorted(owners) == sorted(payloads)
        body = sql.SQL(LEGACY_2_FREE).format(**names).as_string(conn)
        conn.execute(sql.SQL(LEGACY_2).format(body=sql.Literal(body), **names))
        conn.execute(
            sql.SQL(
                "INSERT INTO {chunks} (blob_id, n, data) "
                "SELECT split_part(key, '/', 2), split_part(key, '/', 3)::int, value "
                "FROM {t} WHERE scope = %s AND key LIKE 'c/%%'"
            ).format(**names),
            (blob_scope,),
        )
        for key, blob_id in owners.items():
            conn.execute(
                sql.SQL("INSERT INTO {blobs} VALUES (%s, 'default', %s, NULL)").format(**names),
                (blob_id, key),
            )
            conn.execute(
                sql.SQL("UPDATE {t} SET blob = %s WHERE scope = 'default' AND key = %s").format(
                    **names
                ),
                (blob_id, key),
            )
        conn.execute(sql.SQL("DELETE FROM {} WHERE scope = %s").format(t), (blob_scope,))
    return owners


def _legacy_objects(url: str, table: str = "satchel_kv") -> list[str]:
    """The objects of the old blob storage of `table` still in the database."""
    names = _legacy_names(url, table)
    found = []
    with _admin() as conn:
        for name in ("blobs", "chunks"):
            regclass = names[name].as_string(conn)
            if conn.execute("SELECT to_regclass(%s)", (regclass,)).fetchone() != (None,):
                found.append(name)
        function = names["free_blob"].as_string(conn) + "()"
        if conn.execute("SELECT to_regprocedure(%s)", (function,)).fetchone() != (None,):
            found.append("free_blob")
        kv = names["t"].as_string(conn)
        found += [
            row[0]
            for row in conn.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
                (kv,),
            )
        ]
        found += [
            "column " + row[0]
            for row in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                "AND attname = 'blob' AND NOT attisdropped",
                (kv,),
            )
        ]
    return found


def _version_of(url: str, table: str) -> str:
    names = _legacy_names(url, table)
    with _admin() as conn:
        query = sql.SQL("SELECT value FROM {meta} WHERE name = {version_name}").format(**names)
        return str(conn.execute(query).fetchone()[0])


@pytest.mark.parametrize("table", ["satchel_kv", "we\"ird $$ 'name'"])
def test_large_values_of_satchel_0_1_are_moved_to_records_on_open(url, table):
    big = bytes(range(256)) * 4096 * 3 + b"tail"  # 3 MiB and a bit: 4 chunks
    gone = b"g" * (2 * MIB + 1)  # overwritten before the move: its chunks go at once
    ids = _make_legacy(url, table, {"big": big, "gone": gone})
    assert len(_legacy_objects(url, table)) == 6  # 2 tables, function, 2 triggers, column
    with _admin() as conn:  # and a staged blob, never committed: left behind
        conn.execute(
            sql.SQL("INSERT INTO {blobs} VALUES ('staged', 'default', 'k', 1); "
                    "INSERT INTO {chunks} VALUES ('staged', 0, 'x')").format(
                **_legacy_names(url, table)
            )
        )  # fmt: skip
    now = time.time()
    with _backend(url, table=table) as b:  # opening sets version 3, touches nothing else
        assert _version_of(url, table) == str(SCHEMA_VERSION)
        assert len(_legacy_objects(url, table)) == 6
        found = sorted(b.legacy_blobs(now) or [])
        assert found == [
            LegacyBlob("default", "big", ids["big"], 4),
            LegacyBlob("default", "gone", ids["gone"], 3),
        ]
        assert b.legacy_chunk(found[0], 3) == b"tail"
        assert b.legacy_chunk(found[0], 4) is None
        # A record write before the move: the old triggers still free the old blob.
        assert b.apply("default", [Put("gone", b"plain")], now) == 0
        assert b.legacy_chunk(found[1], 0) is None
        assert b.legacy_blobs(now) == [found[0]]
    with satchel.open(url, table=table) as store:  # moves "big", drops the old storage
        assert store.get("big") == big
        with store.open_blob("big") as f:
            f.seek(3 * MIB - 10)
            assert f.read() == big[3 * MIB - 10 :]
        assert store.info("big").size == len(big)
        store["gone"] = "still writable"
        store["big"] = "small now"
        assert store.get("gone") == "still writable"
    assert _legacy_objects(url, table) == []
    with _backend(url, table=table) as b:
        assert b.legacy_blobs(now) is None
        head = b.get_value("default\x1fb", f"h/{ids['big']}", now)
        assert head is not None and msgpack.unpackb(head)[:2] == ["big", True]
        chunks = b.scan("default\x1fb", f"c/{ids['big']}/", None, 10, now)
        assert [len(r.value) for r in chunks] == [MIB, MIB, MIB, 4]


def test_two_processes_moving_the_same_old_large_values(url):
    payload = b"p" * (MIB + 5)
    _make_legacy(url, "satchel_kv", {"k": payload})
    now = time.time()
    with _backend(url) as first, _backend(url) as second:
        listed = first.legacy_blobs(now)
        assert listed is not None and len(listed) == 1
        assert migrate(second, now) == 1  # moves, then drops
        assert first.legacy_chunk(listed[0], 0) is None  # dropped meanwhile: gone
        assert first.legacy_blobs(now) is None
        first.drop_legacy_blobs()  # a second drop is a no-op
        assert migrate(first, now) == 0
    assert _legacy_objects(url) == []
    with satchel.open(url) as store:
        assert store.get("k") == payload
