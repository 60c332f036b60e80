"""PostgreSQL-specific behaviour: layout, index use, connection loss, configuration."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pytest

import satchel
import support_postgres
from satchel.backends.postgres import SCAN, SCHEMA_VERSION


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
            store.incr("n")
        assert store.get("n") == 10  # never retried behind the user's back
        assert store.incr("n") == 11  # the pool replaced the connection


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
