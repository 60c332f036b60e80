"""PostgreSQL-specific behaviour: layout, index use, connection loss, configuration."""

from __future__ import annotations

import multiprocessing
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
from satchel._backends.postgres import SCAN, SCHEMA_VERSION, PostgresBackend, _derived
from satchel._blobs import migrate
from satchel._codecs import get_codec


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


# -- time series, and what satchel 0.1 kept apart --------------------------------------


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


def test_series_names_skip_through_the_index(url):
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
        assert b.series_names("s") == []
    with _admin() as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (_schema(url),)
            )
        ]
    assert len(names) == len(set(names)) == 1 + 2 * 2  # meta, and kv and series for each
    assert all(len(name) <= 63 for name in names)


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
    assert _legacy_objects(url) == [] and _old_event_tables(url, "satchel_kv") == []
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


# -- event sequences kept by satchel 0.1 -------------------------------------------------

# The event tables satchel 0.1 created beside the kv table (named by _derived).
OLD_EVENT_TABLES = """
CREATE TABLE {events} (
    scope text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    ts bigint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (scope, name, seq)
);
CREATE TABLE {states} (
    scope text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    which text COLLATE "C" NOT NULL CHECK (which IN ('head', 'base')),
    seq bigint NOT NULL,
    ts bigint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (scope, name, which)
);
UPDATE {meta} SET value = '2' WHERE name = {version_name};
"""


def _old_event_names(url: str, table: str) -> dict[str, sql.Composable]:
    names = {name: sql.Identifier(_schema(url), _derived(table, f"_{name}"))
             for name in ("events", "states")}  # fmt: skip
    return {**_legacy_names(url, table), **names}


def _old_event_tables(url: str, table: str) -> list[str]:
    """The old event tables of `table` still in the database."""
    names = _old_event_names(url, table)
    with _admin() as conn:
        return [
            name
            for name in ("events", "states")
            if conn.execute("SELECT to_regclass(%s)", (names[name].as_string(conn),)).fetchone()
            != (None,)
        ]


@pytest.mark.parametrize("table", ["satchel_kv", "we\"ird $$ 'name'", "t" * 63])
def test_event_sequences_of_satchel_0_1_are_moved_to_records_on_open(url, table):
    with satchel.open(url, table=table) as store:
        store.set("k", 1)
    assert _old_event_tables(url, table) == []  # a new table has none
    typed = get_codec("typed")
    rows = [(n, 1000 + n, typed.encode([f"i{n}", "set", n])) for n in range(1, 6)]
    everything = typed.encode({f"i{n}": n for n in range(1, 6)})
    two = typed.encode({"i1": 1, "i2": 2})
    names = _old_event_names(url, table)
    with _admin() as conn, conn.transaction():  # a version 2 table, as satchel 0.1 left it
        conn.execute(sql.SQL(OLD_EVENT_TABLES).format(**names))
        # "log": events 3..5 after a base at 2; "other" in scope "s": two events, no base
        insert = sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s)").format(names["events"])
        with conn.cursor() as cur:
            cur.executemany(insert, [("default", "log", *row) for row in rows[2:]])
            cur.executemany(insert, [("s", "other", *row) for row in rows[:2]])
            cur.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s)").format(names["states"]),
                [("default", "log", "head", 5, 1005, everything),
                 ("default", "log", "base", 2, 1002, two),
                 ("s", "other", "head", 2, 1002, two)],
            )  # fmt: skip

    with _backend(url, table=table) as b:
        assert _version_of(url, table) == str(SCHEMA_VERSION)  # set on open, tables kept
        assert b.legacy_sequences() == [("default", "log"), ("s", "other")]
        assert b.legacy_states("default", "log") == ((5, 1005, everything), (2, 1002, two))
        assert b.legacy_states("s", "other") == ((2, 1002, two), None)
        assert b.legacy_states("default", "nope") == (None, None)
        assert b.legacy_events("default", "log", 2, 10) == rows[2:]
        assert b.legacy_events("default", "log", 3, 1) == rows[3:4]
        assert b.legacy_events("default", "log", 5, 10) == []
        with satchel.open(url, table=table) as store:  # moves them, drops the tables
            log = store.events("log")
            assert len(log) == 5 and log.current() == {f"i{n}": n for n in range(1, 6)}
            assert [e.seq for e in log.history()] == [3, 4, 5]
            assert log.at(1003) == {"i1": 1, "i2": 2, "i3": 3}
            with pytest.raises(satchel.InvalidInput):
                log.at(1001)  # compacted away
            assert store.scope("s").events("other").current() == {"i1": 1, "i2": 2}
            assert log.apply({"i6": 6})["i6"] == 6  # takes events on, after 5
            assert [e.seq for e in log.history()][-1] == 6
        # `b` found the tables at its open: another process dropped them meanwhile.
        assert b.legacy_states("default", "log") == (None, None)
        assert b.legacy_events("default", "log", 0, 10) == []
        assert b.legacy_sequences() is None
        b.drop_legacy_events()  # idempotent
    assert _old_event_tables(url, table) == []
    with _backend(url, table=table) as b:
        assert b.legacy_sequences() is None
