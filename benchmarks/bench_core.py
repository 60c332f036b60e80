"""Core benchmark: satchel next to raw sqlite3, diskcache, sqlitedict, shelve and dict.

Run by hand (not in CI) from the repository root:

    .venv/bin/python benchmarks/bench_core.py [--n 20000] [--batch 10000] [--repeat 3]

It measures, in one process and one run, ops/s for single set / get / delete over N keys
and keys/s for set_many / get_many of one batch. Every contender gets its own fresh
temporary directory. Operations are interleaved: each round runs "set" for every contender,
then "get" for every contender, and so on, with the contender order rotated from round to
round, so machine noise hits all contenders alike. Each number is the best of --repeat
rounds. The tables go to stdout and to benchmarks/results/core-<YYYYMMDD-HHMM>.md and
benchmarks/results/core-latest.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import platform
import shelve
import shutil
import sqlite3
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import diskcache  # type: ignore[import-untyped]
import sqlitedict  # type: ignore[import-untyped]

import satchel

T = TypeVar("T")
C = TypeVar("C", bound="Subject")
W = TypeVar("W", bound="Workload")
Value = dict[str, Any]
Items = Sequence[tuple[str, Value]]

OPS: tuple[str, ...] = ("set", "get", "delete", "set_many", "get_many")
OP_HEADERS: dict[str, str] = {
    "set": "set (ops/s)",
    "get": "get (ops/s)",
    "delete": "delete (ops/s)",
    "set_many": "set_many (keys/s)",
    "get_many": "get_many (keys/s)",
}
RESULTS_DIR = Path(__file__).resolve().parent / "results"

SATCHEL_SQLITE = "satchel sqlite"
SATCHEL_MEMORY = "satchel memory"
RAW_SQLITE = "raw sqlite3"
DISKCACHE = "diskcache"
SQLITEDICT = "sqlitedict"
SHELVE = "shelve"
DICT = "dict"

# Raw sqlite3 get_many: one SELECT ... WHERE key IN (...) per chunk of this many keys.
# 500 stays below SQLITE_MAX_VARIABLE_NUMBER on every SQLite build (999 before 3.32).
RAW_IN_CHUNK = 500


def make_value(i: int) -> Value:
    """A ~100-byte record (as JSON), distinct per key."""
    return {
        "name": f"user-{i:05d}",
        "email": f"user{i}@example.com",
        "age": i % 100,
        "active": True,
        "tags": ["a", "b"],
    }


# --------------------------------------------------------------------------- contenders


class Subject(ABC):
    """What run_round drives: a named thing under test that can count, clear and close.

    Contender (below) is the key-value one; other benchmarks (bench_blobs.py,
    bench_series.py) subclass this with their own operations and `run` function.
    """

    name: str

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def clear(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


class Contender(Subject):
    """One store under test. Loops live here so each uses its natural fast path."""

    name: str
    #: If set, the single-delete phase deletes only this many of the N keys (see notes).
    delete_cap: int | None = None

    @abstractmethod
    def set_each(self, items: Items) -> None: ...

    @abstractmethod
    def get_each(self, keys: Sequence[str]) -> Any:
        """Get every key; return the last value read (checked by the harness)."""

    @abstractmethod
    def delete_each(self, keys: Sequence[str]) -> None: ...

    @abstractmethod
    def set_many(self, mapping: dict[str, Value]) -> None: ...

    @abstractmethod
    def get_many(self, keys: Sequence[str]) -> Mapping[str, Any]: ...


class SatchelContender(Contender):
    """satchel.open(url): set/get/delete per op, set_many/get_many per batch."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.store = satchel.open(url)

    def set_each(self, items: Items) -> None:
        set_ = self.store.set
        for key, value in items:
            set_(key, value)

    def get_each(self, keys: Sequence[str]) -> Any:
        get = self.store.get
        value = None
        for key in keys:
            value = get(key)
        return value

    def delete_each(self, keys: Sequence[str]) -> None:
        delete = self.store.delete
        for key in keys:
            delete(key)

    def set_many(self, mapping: dict[str, Value]) -> None:
        self.store.set_many(mapping)

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Any]:
        return self.store.get_many(keys)

    def count(self) -> int:
        return len(self.store)

    def clear(self) -> None:
        self.store.clear()

    def close(self) -> None:
        self.store.close()


class RawSqlite(Contender):
    """stdlib sqlite3 with satchel's settings: WAL, synchronous=NORMAL, autocommit, JSON."""

    name = RAW_SQLITE
    SQL_SET = "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)"
    SQL_GET = "SELECT value FROM kv WHERE key = ?"
    SQL_DELETE = "DELETE FROM kv WHERE key = ?"

    def __init__(self, workdir: Path) -> None:
        self.conn = sqlite3.connect(workdir / "raw.db", isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT)")
        self._in_sql: dict[int, str] = {}

    def set_each(self, items: Items) -> None:
        execute, dumps, sql = self.conn.execute, json.dumps, self.SQL_SET
        for key, value in items:
            execute(sql, (key, dumps(value)))

    def get_each(self, keys: Sequence[str]) -> Any:
        execute, loads, sql = self.conn.execute, json.loads, self.SQL_GET
        value = None
        for key in keys:
            value = loads(execute(sql, (key,)).fetchone()[0])
        return value

    def delete_each(self, keys: Sequence[str]) -> None:
        execute, sql = self.conn.execute, self.SQL_DELETE
        for key in keys:
            execute(sql, (key,))

    def set_many(self, mapping: dict[str, Value]) -> None:
        dumps = json.dumps
        self.conn.execute("BEGIN")
        try:
            self.conn.executemany(self.SQL_SET, [(k, dumps(v)) for k, v in mapping.items()])
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _select_in(self, n: int) -> str:
        sql = self._in_sql.get(n)
        if sql is None:
            marks = ",".join("?" * n)
            sql = self._in_sql[n] = f"SELECT key, value FROM kv WHERE key IN ({marks})"
        return sql

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Any]:
        execute, loads = self.conn.execute, json.loads
        out: dict[str, Any] = {}
        for start in range(0, len(keys), RAW_IN_CHUNK):
            chunk = keys[start : start + RAW_IN_CHUNK]
            for key, raw in execute(self._select_in(len(chunk)), chunk):
                out[key] = loads(raw)
        return out

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM kv").fetchone()[0])

    def clear(self) -> None:
        self.conn.execute("DELETE FROM kv")

    def close(self) -> None:
        self.conn.close()


class DiskCache(Contender):
    """diskcache.Cache(dir) with its defaults (WAL, synchronous=NORMAL, pickle)."""

    name = DISKCACHE

    def __init__(self, workdir: Path) -> None:
        self.cache = diskcache.Cache(str(workdir / "diskcache"))

    def set_each(self, items: Items) -> None:
        set_ = self.cache.set
        for key, value in items:
            set_(key, value)

    def get_each(self, keys: Sequence[str]) -> Any:
        get = self.cache.get
        value = None
        for key in keys:
            value = get(key)
        return value

    def delete_each(self, keys: Sequence[str]) -> None:
        delete = self.cache.delete
        for key in keys:
            delete(key)

    def set_many(self, mapping: dict[str, Value]) -> None:
        set_ = self.cache.set
        with self.cache.transact():
            for key, value in mapping.items():
                set_(key, value)

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Any]:
        get = self.cache.get
        return {key: get(key) for key in keys}

    def count(self) -> int:
        return len(self.cache)

    def clear(self) -> None:
        self.cache.clear()

    def close(self) -> None:
        self.cache.close()


class SqliteDictContender(Contender):
    """sqlitedict.SqliteDict(file, autocommit=True) with its defaults (journal DELETE)."""

    name = SQLITEDICT

    def __init__(self, workdir: Path) -> None:
        self.d = sqlitedict.SqliteDict(str(workdir / "sqlitedict.db"), autocommit=True)

    def set_each(self, items: Items) -> None:
        d = self.d
        for key, value in items:
            d[key] = value

    def get_each(self, keys: Sequence[str]) -> Any:
        d = self.d
        value = None
        for key in keys:
            value = d[key]
        return value

    def delete_each(self, keys: Sequence[str]) -> None:
        d = self.d
        for key in keys:
            del d[key]

    def set_many(self, mapping: dict[str, Value]) -> None:
        self.d.update(mapping)
        self.d.commit()

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Any]:
        d = self.d
        return {key: d[key] for key in keys}

    def count(self) -> int:
        return len(self.d)

    def clear(self) -> None:
        self.d.clear()

    def close(self) -> None:
        self.d.close()


class ShelveContender(Contender):
    """shelve.open(file): loops; sync() at the end of set_many only."""

    name = SHELVE

    def __init__(self, workdir: Path, delete_cap: int | None) -> None:
        self.path = str(workdir / "shelf")
        self.delete_cap = delete_cap
        self.shelf: shelve.Shelf[Any] = shelve.open(self.path)  # noqa: SIM115

    def set_each(self, items: Items) -> None:
        shelf = self.shelf
        for key, value in items:
            shelf[key] = value

    def get_each(self, keys: Sequence[str]) -> Any:
        shelf = self.shelf
        value = None
        for key in keys:
            value = shelf[key]
        return value

    def delete_each(self, keys: Sequence[str]) -> None:
        shelf = self.shelf
        for key in keys:
            del shelf[key]

    def set_many(self, mapping: dict[str, Value]) -> None:
        shelf = self.shelf
        for key, value in mapping.items():
            shelf[key] = value
        shelf.sync()

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Any]:
        shelf = self.shelf
        return {key: shelf[key] for key in keys}

    def count(self) -> int:
        return len(self.shelf)

    def clear(self) -> None:
        # Deleting key by key is O(n) per key on dbm.dumb; start a new empty shelf instead.
        self.shelf.close()
        self.shelf = shelve.open(self.path, flag="n")  # noqa: SIM115

    def close(self) -> None:
        self.shelf.close()


class DictContender(Contender):
    """A plain in-process dict: the ceiling."""

    name = DICT

    def __init__(self) -> None:
        self.d: dict[str, Value] = {}

    def set_each(self, items: Items) -> None:
        d = self.d
        for key, value in items:
            d[key] = value

    def get_each(self, keys: Sequence[str]) -> Any:
        d = self.d
        value = None
        for key in keys:
            value = d[key]
        return value

    def delete_each(self, keys: Sequence[str]) -> None:
        d = self.d
        for key in keys:
            del d[key]

    def set_many(self, mapping: dict[str, Value]) -> None:
        self.d.update(mapping)

    def get_many(self, keys: Sequence[str]) -> Mapping[str, Any]:
        d = self.d
        return {key: d[key] for key in keys}

    def count(self) -> int:
        return len(self.d)

    def clear(self) -> None:
        self.d.clear()

    def close(self) -> None:
        self.d.clear()


# --------------------------------------------------------------------------- harness


class Workload:
    """Keys and values, built once and shared by every contender."""

    def __init__(self, n: int, batch: int) -> None:
        self.items: list[tuple[str, Value]] = [(f"user:{i:06d}", make_value(i)) for i in range(n)]
        self.keys: list[str] = [key for key, _ in self.items]
        self.batch: dict[str, Value] = {f"batch:{i:06d}": make_value(i) for i in range(batch)}
        self.batch_keys: list[str] = list(self.batch)


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Run fn once with the garbage collector off (like timeit); return (seconds, result)."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - start
    finally:
        if was_enabled:
            gc.enable()
    return elapsed, result


def check(ok: bool, contender: Subject, what: str) -> None:
    if not ok:
        raise SystemExit(f"bench_core: sanity check failed for {contender.name}: {what}")


def run_op(c: Contender, op: str, w: Workload) -> tuple[float, int]:
    """Run one timed operation on c; return (seconds, number of keys handled)."""
    if op == "set":
        secs, _ = timed(lambda: c.set_each(w.items))
        check(c.count() == len(w.items), c, "count after set")
        return secs, len(w.items)
    if op == "get":
        secs, last = timed(lambda: c.get_each(w.keys))
        check(last == w.items[-1][1], c, "last value read by get")
        return secs, len(w.keys)
    if op == "delete":
        keys = w.keys if c.delete_cap is None else w.keys[: c.delete_cap]
        secs, _ = timed(lambda: c.delete_each(keys))
        check(c.count() == len(w.keys) - len(keys), c, "count after delete")
        if c.count():
            c.clear()  # untimed: drop the keys a capped delete left behind
        return secs, len(keys)
    if op == "set_many":
        secs, _ = timed(lambda: c.set_many(w.batch))
        check(c.count() == len(w.batch), c, "count after set_many")
        return secs, len(w.batch)
    if op == "get_many":
        secs, got = timed(lambda: c.get_many(w.batch_keys))
        last = w.batch_keys[-1]
        check(len(got) == len(w.batch) and got[last] == w.batch[last], c, "get_many result")
        return secs, len(w.batch_keys)
    raise ValueError(op)


def run_round(
    contenders: Sequence[C],
    w: W,
    rotate: int,
    ops: Sequence[str] = OPS,
    run: Callable[[C, str, W], tuple[float, int]] = run_op,  # type: ignore[assignment]
) -> dict[str, dict[str, float]]:
    """One round: every op for every contender, op by op; returns ops/s per contender."""
    k = rotate % len(contenders)
    order = list(contenders[k:]) + list(contenders[:k])
    rates: dict[str, dict[str, float]] = {c.name: {} for c in contenders}
    for op in ops:
        for c in order:
            secs, count = run(c, op, w)
            rates[c.name][op] = count / secs if secs > 0 else math.inf
    for c in contenders:
        c.clear()
        check(c.count() == 0, c, "count after clear")
    return rates


def best_of(
    names: Sequence[str],
    ops: Sequence[str],
    repeat: int,
    one_round: Callable[[int], dict[str, dict[str, float]]],
    t0: float | None = None,
) -> dict[str, dict[str, float]]:
    """The best rate per contender and op over `repeat` rounds of `one_round(r)`; with
    `t0`, a progress line per round on stderr."""
    best = {name: dict.fromkeys(ops, 0.0) for name in names}
    for r in range(repeat):
        for name, per_op in one_round(r).items():
            for op, rate in per_op.items():
                best[name][op] = max(best[name][op], rate)
        if t0 is not None:
            print(f"  round {r + 1}/{repeat} done ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)  # fmt: skip
    return best


# --------------------------------------------------------------------------- report


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def fmt_ratio(x: float, digits: int = 2) -> str:
    return f"{x:.{digits if x >= 0.1 else digits + 1}f}x"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    align = ["---"] + ["--:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def version_of(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def shelve_backend(workdir: Path) -> str:
    import dbm

    path = str(workdir / "probe")
    with shelve.open(path):
        pass
    return dbm.whichdb(path) or "?"


def report(
    best: dict[str, dict[str, float]],
    args: argparse.Namespace,
    started: dt.datetime,
    elapsed: float,
    shelf_db: str,
    shelve_capped: bool,
) -> str:
    names = list(best)
    header = ["contender", *(OP_HEADERS[op] for op in OPS)]
    value_bytes = len(json.dumps(make_value(42)))

    rates = md_table(header, [[n, *(fmt_rate(best[n][op]) for op in OPS)] for n in names])
    base = best[RAW_SQLITE]
    ratios = md_table(
        header, [[n, *(fmt_ratio(best[n][op] / base[op]) for op in OPS)] for n in names]
    )
    sat, dc = best[SATCHEL_SQLITE], best[DISKCACHE]
    vs_dc = md_table(header, [[SATCHEL_SQLITE, *(fmt_ratio(sat[op] / dc[op]) for op in OPS)]])

    targets = [
        ("single set", "set", RAW_SQLITE, 0.9),
        ("single set", "set", DISKCACHE, 2.0),
        ("single get", "get", RAW_SQLITE, 0.85),
        ("single get", "get", DISKCACHE, 1.0),
        ("set_many", "set_many", RAW_SQLITE, 0.8),
    ]
    target_rows = []
    met_all = True
    for label, op, other, want in targets:
        ratio = sat[op] / best[other][op]
        met = ratio >= want
        met_all &= met
        other_label = "raw executemany" if op == "set_many" else other
        target_rows.append(
            [
                f"satchel sqlite {label} >= {want:g}x {other_label}",
                fmt_ratio(ratio, 3),
                "met" if met else "**NOT met**",
            ]
        )
    target_table = md_table(["target", "measured", "result"], target_rows)

    delete_note = (
        f"shelve delete is timed over the first {args.shelve_delete_max:,} of the N keys "
        f"(the store still holds N keys when it starts): {shelf_db} rewrites its whole index "
        "on every delete, O(n) per key, so a full sweep takes minutes. "
        "Use --shelve-delete-max 0 to sweep all N."
        if shelve_capped
        else "shelve delete is timed over all N keys."
    )
    return f"""# satchel core benchmark

- date: {started:%Y-%m-%d %H:%M} (local), run took {elapsed:.0f} s
- python {platform.python_version()} ({platform.python_implementation()}), \
sqlite {sqlite3.sqlite_version}, {platform.system()} {platform.machine()}
- machine: {os.cpu_count()} CPUs, {cpu_model()}
- versions: satchel {version_of("satchel")}, diskcache {version_of("diskcache")}, \
sqlitedict {version_of("sqlitedict")}; shelve backend: {shelf_db}
- workload: N={args.n:,} keys for single set/get/delete, one batch of {args.batch:,} keys \
for set_many/get_many, value = a 5-field dict (~{value_bytes} bytes as JSON), \
best of {args.repeat} rounds
- command: `.venv/bin/python benchmarks/bench_core.py --n {args.n} --batch {args.batch} \
--repeat {args.repeat}`

## Throughput (higher is better)

{rates}

## Ratio vs raw sqlite3

{ratios}

## satchel sqlite vs diskcache

{vs_dc}

## Targets

{target_table}

All targets met: {"yes" if met_all else "**no**"}

## How each contender is driven

- **satchel sqlite**: `satchel.open("sqlite:///<tmp>/s.db")` (defaults: typed codec, \
durability normal); `set`/`get`/`delete` per op; `set_many(dict)` / `get_many(keys)`.
- **raw sqlite3**: `sqlite3.connect(..., isolation_level=None)`, `PRAGMA journal_mode=WAL`, \
`synchronous=NORMAL`, table `kv (key TEXT PRIMARY KEY, value TEXT)`, values as \
`json.dumps`/`json.loads`; one autocommitted `INSERT OR REPLACE` / `SELECT` / `DELETE` per op; \
set_many = `executemany(INSERT OR REPLACE)` inside one `BEGIN`/`COMMIT`; get_many = \
`SELECT key, value ... WHERE key IN (...)` in chunks of {RAW_IN_CHUNK} keys.
- **diskcache**: `diskcache.Cache(dir)` defaults (WAL, synchronous=NORMAL, pickled values); \
set_many = loop of `set` inside `with cache.transact()`; get_many = loop of `get`.
- **sqlitedict**: `SqliteDict(file, autocommit=True)` defaults (journal_mode=DELETE, \
synchronous=FULL, pickled values, writes go through its worker thread); set_many = \
`update()` then `commit()`; get_many = loop.
- **shelve**: `shelve.open(file)` on {shelf_db}; loops; `sync()` at the end of set_many only \
(single ops are not synced). {delete_note}
- **satchel memory**: `satchel.open("memory://")`, same calls as satchel sqlite.
- **dict**: plain dict; set_many = `update`, get_many = dict comprehension.

Each contender has its own fresh temp dir. A short untimed warm-up round runs first. \
Rounds interleave by operation (set for all contenders, then get for all, ...) with the \
contender order rotated each round; stores are emptied (untimed) between rounds, so every \
single set and set_many inserts new keys. Timing: `time.perf_counter`, garbage collector \
off while timing. Sanity checks (counts, last value read) run untimed after each step.
"""


# --------------------------------------------------------------------------- main


def save_results(kind: str, text: str, started: dt.datetime) -> None:
    """Write a report to results/<kind>-<YYYYMMDD-HHMM>.md and results/<kind>-latest.md."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamped = RESULTS_DIR / f"{kind}-{started:%Y%m%d-%H%M}.md"
    latest = RESULTS_DIR / f"{kind}-latest.md"
    for path in (stamped, latest):
        path.write_text(text, encoding="utf-8")
    print(f"wrote {stamped} and {latest}", file=sys.stderr)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=positive_int, default=20_000, help="keys for single ops")
    parser.add_argument("--batch", type=positive_int, default=10_000, help="keys per batch")
    parser.add_argument("--repeat", type=positive_int, default=3, help="rounds; best is kept")
    parser.add_argument(
        "--shelve-delete-max",
        type=int,
        default=2_000,
        help="time shelve's single delete over at most this many keys (0 = all N)",
    )
    parser.add_argument(
        "--no-save", action="store_true", help="print only; do not write benchmarks/results/"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now()
    t0 = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="satchel-bench-"))
    contenders: list[Contender] = []
    try:
        dirs = {
            name: root / name.replace(" ", "-")
            for name in (SATCHEL_SQLITE, RAW_SQLITE, DISKCACHE, SQLITEDICT, SHELVE)
        }
        for d in dirs.values():
            d.mkdir()
        shelf_db = shelve_backend(root)
        cap = args.shelve_delete_max if 0 < args.shelve_delete_max < args.n else None
        contenders = [
            SatchelContender(SATCHEL_SQLITE, f"sqlite:///{dirs[SATCHEL_SQLITE]}/s.db"),
            RawSqlite(dirs[RAW_SQLITE]),
            DiskCache(dirs[DISKCACHE]),
            SqliteDictContender(dirs[SQLITEDICT]),
            ShelveContender(dirs[SHELVE], cap),
            SatchelContender(SATCHEL_MEMORY, "memory://"),
            DictContender(),
        ]

        print(
            f"warm-up, then {args.repeat} round(s) of N={args.n:,}, batch={args.batch:,} ...",
            file=sys.stderr,
        )
        run_round(contenders, Workload(min(args.n, 1_000), min(args.batch, 1_000)), 0)
        work = Workload(args.n, args.batch)
        names = [c.name for c in contenders]
        best = best_of(names, OPS, args.repeat, lambda r: run_round(contenders, work, r), t0)
    finally:
        for c in contenders:
            c.close()
        shutil.rmtree(root, ignore_errors=True)

    text = report(best, args, started, time.perf_counter() - t0, shelf_db, cap is not None)
    print(text)
    if not args.no_save:
        save_results("core", text, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
