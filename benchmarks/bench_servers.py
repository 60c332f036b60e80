"""Server benchmark: satchel postgres / redis next to raw psycopg 3 / redis-py.

Run by hand (not in CI) from the repository root, with PostgreSQL on 127.0.0.1:5432
(user postgres, trust) and Redis on 127.0.0.1:6379:

    .venv/bin/python benchmarks/bench_servers.py [--n 3000] [--batch 10000] [--repeat 3]

It measures, in one process and one run, ops/s for single set / get / delete over N keys,
keys/s for set_many / get_many / delete_many of one batch, and ops/s for single set / get /
delete over the batch's keys (the baseline of the batch speed-up). Contenders: satchel
postgres, raw psycopg (one autocommit connection, the same statement shapes), satchel
redis and raw redis-py (SET / GET / DEL). Operations are interleaved as in bench_core.py
(every contender runs "set", then every contender runs "get", ..., the contender order
rotated each round) and each number is the best of --repeat rounds. The tables go to stdout
and to benchmarks/results/servers-<YYYYMMDD-HHMM>.md and benchmarks/results/servers-latest.md.
Everything the run creates (schemas satchel_bench and satchel_bench_raw, Redis keys
bench:*) is removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
import redis
from psycopg import sql

from bench_core import (
    RESULTS_DIR,
    Contender,
    Items,
    SatchelContender,
    Value,
    Workload,
    best_of,
    check,
    cpu_model,
    fmt_rate,
    fmt_ratio,
    make_value,
    md_table,
    positive_int,
    run_op,
    save_results,
    timed,
    version_of,
)
from bench_core import run_round as core_run_round

POSTGRES = "postgres"
REDIS = "redis"
SATCHEL_PG = "satchel postgres"
RAW_PG = "raw psycopg"
SATCHEL_REDIS = "satchel redis"
RAW_REDIS = "raw redis-py"
#: engine -> (satchel contender, raw contender)
PAIRS: dict[str, tuple[str, str]] = {
    POSTGRES: (SATCHEL_PG, RAW_PG),
    REDIS: (SATCHEL_REDIS, RAW_REDIS),
}

PG_SCHEMA = "satchel_bench"  # satchel's table (satchel_kv) and meta table
PG_RAW_SCHEMA = "satchel_bench_raw"  # the raw table (kv)
REDIS_PREFIX = "bench:"  # satchel's keys: bench:<len(scope)>:<scope>:<key>
REDIS_RAW_PREFIX = "bench:raw:"  # raw keys; never a satchel name (no length after bench:)
#: PostgreSQL advisory lock held for the whole run: a second run refuses to start, so it
#: can neither drop this run's schemas and keys nor skew its timings.
RUN_LOCK = 0x5A7C4E1B

SINGLE_OPS = ("set", "get", "delete")
BATCH_OPS = ("set_many", "get_many", "delete_many")
#: single set / get / delete over the batch's keys, one by one
EACH_OPS = ("set_each", "get_each", "delete_each")
OPS: tuple[str, ...] = SINGLE_OPS + BATCH_OPS + EACH_OPS
BATCH_OF = {"set": "set_many", "get": "get_many", "delete": "delete_many"}
EACH_OF = {"set": "set_each", "get": "get_each", "delete": "delete_each"}


# --------------------------------------------------------------------------- contenders


class ServerContender(Contender):
    """bench_core's Contender plus delete_many."""

    @abstractmethod
    def delete_many(self, keys: Sequence[str]) -> None: ...


class SatchelServer(SatchelContender, ServerContender):
    """satchel.open(url): per-op calls, set_many / get_many / delete_many per batch."""

    def delete_many(self, keys: Sequence[str]) -> None:
        self.store.delete_many(keys)


class RawPostgres(ServerContender):
    """psycopg 3, one autocommit connection, table kv (key text COLLATE "C" PK, value bytea)."""

    name = RAW_PG

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        schema, table = sql.Identifier(PG_RAW_SCHEMA), sql.Identifier(PG_RAW_SCHEMA, "kv")
        self.conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        self.conn.execute(
            sql.SQL(
                'CREATE TABLE {} (key text COLLATE "C" PRIMARY KEY, value bytea NOT NULL)'
            ).format(table)
        )
        t = table.as_string(self.conn)
        self.sql_set = (
            f"INSERT INTO {t} (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        self.sql_get = f"SELECT value FROM {t} WHERE key = %s"
        self.sql_delete = f"DELETE FROM {t} WHERE key = %s"
        self.sql_set_many = (
            f"INSERT INTO {t} (key, value) SELECT k, v FROM unnest(%s::text[], %s::bytea[])"
            " AS u(k, v) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        self.sql_get_many = f"SELECT key, value FROM {t} WHERE key = ANY(%s)"
        self.sql_delete_many = f"DELETE FROM {t} WHERE key = ANY(%s)"
        self.sql_count = f"SELECT count(*) FROM {t}"
        self.sql_clear = f"DELETE FROM {t}"

    def set_each(self, items: Items) -> None:
        execute, dumps, statement = self.conn.execute, json.dumps, self.sql_set
        for key, value in items:
            execute(statement, (key, dumps(value).encode()))

    def get_each(self, keys: Sequence[str]) -> Any:
        execute, loads, statement = self.conn.execute, json.loads, self.sql_get
        value = None
        for key in keys:
            value = loads(execute(statement, (key,)).fetchone()[0])  # type: ignore[index]
        return value

    def delete_each(self, keys: Sequence[str]) -> None:
        execute, statement = self.conn.execute, self.sql_delete
        for key in keys:
            execute(statement, (key,))

    def set_many(self, mapping: dict[str, Value]) -> None:
        dumps = json.dumps
        values = [dumps(value).encode() for value in mapping.values()]
        self.conn.execute(self.sql_set_many, (list(mapping), values))

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Any]:
        loads = json.loads
        rows = self.conn.execute(self.sql_get_many, (list(keys),)).fetchall()
        return {key: loads(raw) for key, raw in rows}

    def delete_many(self, keys: Sequence[str]) -> None:
        self.conn.execute(self.sql_delete_many, (list(keys),))

    def count(self) -> int:
        return int(self.conn.execute(self.sql_count).fetchone()[0])  # type: ignore[index]

    def clear(self) -> None:
        self.conn.execute(self.sql_clear)

    def close(self) -> None:
        self.conn.close()


class RawRedis(ServerContender):
    """redis-py, one client: SET / GET / DEL per op; pipeline of SET, MGET, DEL per batch."""

    name = RAW_REDIS

    def __init__(self, url: str) -> None:
        self.r = redis.Redis.from_url(url)
        self.prefix = REDIS_RAW_PREFIX

    def set_each(self, items: Items) -> None:
        set_, dumps, prefix = self.r.set, json.dumps, self.prefix
        for key, value in items:
            set_(prefix + key, dumps(value))

    def get_each(self, keys: Sequence[str]) -> Any:
        get, loads, prefix = self.r.get, json.loads, self.prefix
        value = None
        for key in keys:
            value = loads(get(prefix + key))  # type: ignore[arg-type]
        return value

    def delete_each(self, keys: Sequence[str]) -> None:
        delete, prefix = self.r.delete, self.prefix
        for key in keys:
            delete(prefix + key)

    def set_many(self, mapping: dict[str, Value]) -> None:
        dumps, prefix = json.dumps, self.prefix
        pipe = self.r.pipeline(transaction=False)
        for key, value in mapping.items():
            pipe.set(prefix + key, dumps(value))
        pipe.execute()

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Any]:
        loads, prefix = json.loads, self.prefix
        raws = self.r.mget([prefix + key for key in keys])
        return {key: loads(raw) for key, raw in zip(keys, raws, strict=True) if raw is not None}

    def delete_many(self, keys: Sequence[str]) -> None:
        prefix = self.prefix
        self.r.delete(*[prefix + key for key in keys])

    def count(self) -> int:
        return sum(1 for _ in self.r.scan_iter(match=self.prefix + "*", count=1000))

    def clear(self) -> None:
        delete_redis_keys(self.r, self.prefix)

    def close(self) -> None:
        self.r.close()


# --------------------------------------------------------------------------- services


def satchel_urls(args: argparse.Namespace) -> dict[str, str]:
    """The satchel URLs of the two satchel contenders."""
    pg_sep = "&" if "?" in args.postgres_url else "?"
    redis_sep = "&" if "?" in args.redis_url else "?"
    return {
        SATCHEL_PG: f"{args.postgres_url}{pg_sep}schema={PG_SCHEMA}",
        SATCHEL_REDIS: f"{args.redis_url}{redis_sep}prefix={REDIS_PREFIX}",
    }


def delete_redis_keys(r: redis.Redis, prefix: str) -> int:
    """Delete every key starting with `prefix`; return how many."""
    names = list(r.scan_iter(match=prefix + "*", count=1000))  # our prefixes: no glob chars
    for start in range(0, len(names), 1000):
        r.delete(*names[start : start + 1000])
    return len(names)


def drop_schemas(conn: psycopg.Connection[Any]) -> list[str]:
    """Drop the benchmark's schemas; return the names of those that existed."""
    found = [
        row[0]
        for row in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)",
            ([PG_SCHEMA, PG_RAW_SCHEMA],),
        )
    ]
    for name in found:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
    return found


def vacuum(conn: psycopg.Connection[Any]) -> None:
    """VACUUM both tables (untimed, between rounds) so every round starts alike."""
    for schema, table in ((PG_SCHEMA, "satchel_kv"), (PG_RAW_SCHEMA, "kv")):
        conn.execute(sql.SQL("VACUUM {}").format(sql.Identifier(schema, table)))


# --------------------------------------------------------------------------- harness


class ServerWorkload(Workload):
    """bench_core's Workload, plus `each`: the batch's keys and values for single ops."""

    def __init__(self, n: int, batch: int) -> None:
        super().__init__(n, batch)
        self.each = Workload(0, 0)
        self.each.items = list(self.batch.items())
        self.each.keys = self.batch_keys


def run_server_op(c: ServerContender, op: str, w: ServerWorkload) -> tuple[float, int]:
    """Run one timed operation on c; return (seconds, number of keys handled)."""
    if op == "delete_many":
        secs, _ = timed(lambda: c.delete_many(w.batch_keys))
        check(c.count() == 0, c, "count after delete_many")
        return secs, len(w.batch_keys)
    if op in EACH_OPS:
        return run_op(c, op.removesuffix("_each"), w.each)
    return run_op(c, op, w)


def run_round(
    contenders: Sequence[ServerContender],
    w: ServerWorkload,
    rotate: int,
    admin: psycopg.Connection[Any],
) -> dict[str, dict[str, float]]:
    """bench_core's round over the server ops, then a VACUUM so rounds start alike."""
    rates = core_run_round(contenders, w, rotate, OPS, run_server_op)
    vacuum(admin)
    return rates


# --------------------------------------------------------------------------- report


def report(
    best: dict[str, dict[str, float]],
    args: argparse.Namespace,
    started: dt.datetime,
    elapsed: float,
    servers: dict[str, str],
) -> str:
    names = list(best)
    urls = satchel_urls(args)
    value_bytes = len(json.dumps(make_value(42)))
    b = f"{args.batch:,}"

    single = md_table(
        ["contender", "set (ops/s)", "get (ops/s)", "delete (ops/s)"],
        [[n, *(fmt_rate(best[n][op]) for op in SINGLE_OPS)] for n in names],
    )
    batches = md_table(
        ["contender", "set_many (keys/s)", "get_many (keys/s)", "delete_many (keys/s)"],
        [[n, *(fmt_rate(best[n][op]) for op in BATCH_OPS)] for n in names],
    )
    each = md_table(
        ["contender", "set (ops/s)", "get (ops/s)", "delete (ops/s)"],
        [[n, *(fmt_rate(best[n][op]) for op in EACH_OPS)] for n in names],
    )
    ratio_header = ["satchel / raw", *SINGLE_OPS, *BATCH_OPS]
    ratio_rows = []
    for engine, (sat, raw) in PAIRS.items():
        ops = SINGLE_OPS + BATCH_OPS
        ratio_rows.append(
            [f"{engine}: {sat} / {raw}", *(fmt_ratio(best[sat][op] / best[raw][op]) for op in ops)]
        )
    ratios = md_table(ratio_header, ratio_rows)

    def speedup(name: str, op: str) -> float:
        # keys/s of one batch over ops/s of the same keys one by one
        # = time of the single ops / time of the batch
        return best[name][BATCH_OF[op]] / best[name][EACH_OF[op]]

    speedups = md_table(
        ["contender", "set_many vs set", "get_many vs get", "delete_many vs delete"],
        [[n, *(fmt_ratio(speedup(n, op), 1) for op in SINGLE_OPS)] for n in names],
    )

    target_rows = []
    met_all = True
    for sat, raw in PAIRS.values():
        for op in ("set", "get"):
            ratio = best[sat][op] / best[raw][op]
            met = ratio >= 0.85
            met_all &= met
            target_rows.append(
                [f"{sat} single {op} >= 0.85x {raw}", fmt_ratio(ratio, 3), result(met)]
            )
    for sat, _raw in PAIRS.values():
        for op in SINGLE_OPS:
            ratio = speedup(sat, op)
            met = ratio >= 5.0
            met_all &= met
            target_rows.append(
                [
                    f"{sat} {BATCH_OF[op]} >= 5x {b} single {op}s",
                    fmt_ratio(ratio, 1),
                    result(met),
                ]
            )
    targets = md_table(["target", "measured", "result"], target_rows)

    return f"""# satchel server benchmark

- date: {started:%Y-%m-%d %H:%M} (local), run took {elapsed:.0f} s
- python {platform.python_version()} ({platform.python_implementation()}), \
{platform.system()} {platform.machine()}
- machine: {os.cpu_count()} CPUs, {cpu_model()}; PostgreSQL and Redis on the same machine \
(127.0.0.1, TCP)
- versions: satchel {version_of("satchel")} (git {source_state()}), \
psycopg {version_of("psycopg")} \
(psycopg-binary {version_of("psycopg-binary")}, psycopg-pool {version_of("psycopg-pool")}), \
redis-py {version_of("redis")}; servers: PostgreSQL {servers[POSTGRES]}, \
Redis {servers[REDIS]}
- workload: N={args.n:,} keys for single set/get/delete, one batch of {b} keys for \
set_many/get_many/delete_many, and the same {b} keys one by one for the batch speed-up; \
value = a 5-field dict (~{value_bytes} bytes as JSON), best of {args.repeat} rounds
- command: `.venv/bin/python benchmarks/bench_servers.py --n {args.n} --batch {args.batch} \
--repeat {args.repeat}`

## Single operations over N keys (ops/s, higher is better)

{single}

## Batches of {b} keys (keys/s, higher is better)

{batches}

## Ratio satchel / raw driver (same engine)

{ratios}

## Batch speed-up

Time of {b} single operations / time of one batch of the same {b} keys (both measured in \
this run; the raw drivers are shown for comparison, the targets are for satchel).

{speedups}

Single operations over the batch's {b} keys (ops/s), the baseline of the speed-up:

{each}

## Targets

{targets}

All targets met: {"yes" if met_all else "**no**"}

## How each contender is driven

- **satchel postgres**: `satchel.open("{urls[SATCHEL_PG]}")` (defaults: typed codec, \
pool 1..10, table `satchel_kv`); \
`set`/`get`/`delete` per op; `set_many(dict)` / `get_many(keys)` / `delete_many(keys)`.
- **raw psycopg**: `psycopg.connect("{args.postgres_url}", autocommit=True)`, one \
connection, table \
`{PG_RAW_SCHEMA}.kv (key text COLLATE "C" PRIMARY KEY, value bytea NOT NULL)`, values as \
`json.dumps(v).encode()` / `json.loads`; one `conn.execute` per op (psycopg prepares a \
statement after 5 runs, as it does for satchel): `INSERT ... VALUES (%s, %s) ON CONFLICT \
(key) DO UPDATE SET value = excluded.value`, `SELECT value ... WHERE key = %s`, \
`DELETE ... WHERE key = %s`. Batches are one statement each (no executemany): set_many = \
`INSERT ... SELECT k, v FROM unnest(%s::text[], %s::bytea[]) ... ON CONFLICT (key) DO \
UPDATE`, get_many = `SELECT key, value ... WHERE key = ANY(%s)`, delete_many = \
`DELETE ... WHERE key = ANY(%s)`.
- **satchel redis**: `satchel.open("{urls[SATCHEL_REDIS]}")`, \
same calls as satchel postgres.
- **raw redis-py**: `redis.Redis.from_url("{args.redis_url}")` defaults, keys \
`{REDIS_RAW_PREFIX}<key>`, values `json.dumps` / `json.loads`; `SET` / `GET` / `DEL` per op; \
set_many = one pipeline (`transaction=False`) of {b} `SET`s, get_many = one `MGET`, \
delete_many = one `DEL` of all keys.

Rounds interleave by operation (set for all contenders, then get for all, ...) with the \
contender order rotated each round; stores are emptied (untimed) between rounds and both \
PostgreSQL tables vacuumed, so every single set and set_many inserts new keys. A short \
untimed warm-up round runs first. Timing: `time.perf_counter`, garbage collector off while \
timing. Sanity checks (counts, last value read) run untimed after each step. At the end the \
schemas `{PG_SCHEMA}` and `{PG_RAW_SCHEMA}` are dropped and the Redis keys `{REDIS_PREFIX}*` \
deleted.
"""


def source_state() -> str:
    """The git commit of src/ and whether src/ has uncommitted changes ("?" without git)."""
    root = RESULTS_DIR.parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "?"
    if not head:
        return "?"
    return f"{head} + uncommitted changes in src/" if dirty else head


def result(met: bool) -> str:
    return "met" if met else "**NOT met**"


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=positive_int, default=3_000, help="keys for single ops")
    parser.add_argument("--batch", type=positive_int, default=10_000, help="keys per batch")
    parser.add_argument("--repeat", type=positive_int, default=3, help="rounds; best is kept")
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server (the run creates and drops two schemas in it)",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/0",
        help=f"Redis server (the run writes and deletes keys {REDIS_PREFIX}*)",
    )
    parser.add_argument(
        "--no-save", action="store_true", help="print only; do not write benchmarks/results/"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now()
    t0 = time.perf_counter()
    try:
        admin = psycopg.connect(args.postgres_url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise SystemExit(
            f"bench_servers: cannot reach PostgreSQL at {args.postgres_url}: {exc}"
        ) from None
    r = redis.Redis.from_url(args.redis_url, socket_connect_timeout=10)
    try:
        r.ping()
    except redis.ConnectionError as exc:
        raise SystemExit(f"bench_servers: cannot reach Redis at {args.redis_url}: {exc}") from None
    servers = {
        POSTGRES: str(admin.execute("SHOW server_version").fetchone()[0]),  # type: ignore[index]
        REDIS: str(r.info("server")["redis_version"]),
    }

    locked = admin.execute("SELECT pg_try_advisory_lock(%s)", (RUN_LOCK,)).fetchone()
    if not (locked and locked[0]):
        raise SystemExit(
            "bench_servers: another bench_servers.py run is using these servers; "
            "wait until it ends (it holds PostgreSQL advisory lock "
            f"{RUN_LOCK}, released when that process exits)"
        )
    # With the lock held, anything with our names is left over from a killed run.
    left = drop_schemas(admin)
    stale = delete_redis_keys(r, REDIS_PREFIX)
    if left or stale:
        print(
            f"removed leftovers of an earlier run: schemas {left}, {stale} Redis keys",
            file=sys.stderr,
        )

    urls = satchel_urls(args)
    contenders: list[ServerContender] = []
    try:
        contenders = [
            SatchelServer(SATCHEL_PG, urls[SATCHEL_PG]),
            RawPostgres(args.postgres_url),
            SatchelServer(SATCHEL_REDIS, urls[SATCHEL_REDIS]),
            RawRedis(args.redis_url),
        ]
        print(
            f"warm-up, then {args.repeat} round(s) of N={args.n:,}, batch={args.batch:,} ...",
            file=sys.stderr,
        )
        run_round(contenders, ServerWorkload(min(args.n, 1_000), min(args.batch, 1_000)), 0, admin)
        work = ServerWorkload(args.n, args.batch)
        best = best_of([c.name for c in contenders], OPS, args.repeat,
                       lambda r: run_round(contenders, work, r, admin), t0)  # fmt: skip
    finally:
        for c in contenders:
            c.close()
        drop_schemas(admin)
        delete_redis_keys(r, REDIS_PREFIX)
        admin.close()
        r.close()

    text = report(best, args, started, time.perf_counter() - t0, servers)
    print(text)
    if not args.no_save:
        save_results("servers", text, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
