"""Large-value benchmark: store.open_blob write and read next to a plain file copy.

Run by hand (not in CI) from the repository root, with PostgreSQL on 127.0.0.1:5432
(user postgres, trust) and Redis on 127.0.0.1:6379 for those two engines:

    .venv/bin/python benchmarks/bench_blobs.py [--size 1024] [--engines sqlite,files,...]
    .venv/bin/python benchmarks/bench_blobs.py --quick      # 16 MiB smoke run, not saved

For each engine (sqlite, files, postgres, redis) one value of --size MiB is written through
``store.open_blob(key, "wb")`` in 1 MiB pieces made on the fly from a fixed 2 MiB random
block (never the whole value in memory), then read back through ``store.open_blob(key,
"rb")`` in 1 MiB reads; the size and the BLAKE2b-128 of what was read are checked against
``store.info(key)`` and against the bytes written. The baseline is a plain file: written
from the same pieces, then copied to another file with ``shutil.copyfileobj``. Every phase
runs in a fresh child process that resets its peak RSS first (Linux /proc/self/clear_refs),
so the peak RSS growth of each phase is its own; it must stay under 64 MiB. The bench
harness of bench_core.py drives the rounds (write for every contender, then read for every
contender, order rotated each round, best of --repeat). Tables go to stdout and to
benchmarks/results/blobs-<YYYYMMDD-HHMM>.md and benchmarks/results/blobs-latest.md.
Everything the run creates (temp dirs, a PostgreSQL schema bench_<hex>, Redis keys under
the prefix bench-<hex>:) is removed at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import hashlib
import multiprocessing
import os
import platform
import random
import re
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql

import satchel
from bench_core import (
    Subject,
    Workload,
    best_of,
    check,
    cpu_model,
    fmt_ratio,
    md_table,
    positive_int,
    run_round,
    save_results,
    timed,
    version_of,
)
from bench_servers import delete_redis_keys, source_state
from satchel._blobs import CHUNK_SIZE, BlobWriter

MIB = 1 << 20
PIECE = MIB  # bytes per write and per read
BLOCK_SEED = 20261125
KEY = "bench/blob.bin"
RSS_LIMIT_MIB = 64

SQLITE, FILES, POSTGRES, REDIS, MEMORY = "sqlite", "files", "postgres", "redis", "memory"
BLOB_ENGINES: tuple[str, ...] = (SQLITE, FILES, POSTGRES, REDIS)
PLAIN = "plain file"
OPS: tuple[str, ...] = ("write", "read")

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


# --------------------------------------------------------------------------- engines


class Sandbox:
    """An isolated, empty place for one engine, removed by `cleanup()`: a temp dir (sqlite,
    files), a fresh PostgreSQL schema bench_<hex>, or a Redis key prefix bench-<hex>:."""

    def __init__(self, engine: str, root: Path, pg_url: str, redis_url: str) -> None:
        self.engine = engine
        self.tag = uuid.uuid4().hex[:12]
        self.dir: Path | None = None
        self.schema: str | None = None
        self.prefix: str | None = None
        self.pg_url, self.redis_url = pg_url, redis_url
        if engine == SQLITE:
            self.dir = root / f"sqlite-{self.tag}"
            self.dir.mkdir()
            self.url = f"sqlite:///{self.dir}/bench.db"
        elif engine == FILES:
            self.dir = root / f"files-{self.tag}"
            self.url = f"file://{self.dir}"
        elif engine == POSTGRES:
            self.schema = f"bench_{self.tag}"
            self.url = f"{pg_url}{'&' if '?' in pg_url else '?'}schema={self.schema}"
        elif engine == REDIS:
            self.prefix = f"bench-{self.tag}:"
            self.url = f"{redis_url}{'&' if '?' in redis_url else '?'}prefix={self.prefix}"
        elif engine == MEMORY:
            self.url = f"memory://bench-{self.tag}"
        else:
            raise ValueError(engine)

    def leftover(self) -> str:
        """What the engine still holds after the benchmark deleted everything (untimed)."""
        if self.dir is not None:
            files = [p for p in self.dir.rglob("*") if p.is_file()]
            return f"{sum(p.stat().st_size for p in files):,} bytes in {len(files)} files"
        if self.prefix is not None:
            client = redis.Redis.from_url(self.redis_url)
            try:
                names = list(client.scan_iter(match=self.prefix + "*", count=1000))
                used = sum(int(client.memory_usage(name) or 0) for name in names)
            finally:
                client.close()
            return f"{len(names)} Redis keys, {used:,} bytes"
        if self.schema is not None:
            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint"
                    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relkind IN ('r', 'm')",
                    (self.schema,),
                ).fetchone()
            return f"{int(row[0]) if row else 0:,} bytes in its tables (before VACUUM)"
        return "-"

    def cleanup(self) -> None:
        """Remove the dir, the schema or the keys. Idempotent."""
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self.schema is not None:
            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
                )
        if self.prefix is not None:
            client = redis.Redis.from_url(self.redis_url)
            try:
                delete_redis_keys(client, self.prefix)  # our prefix holds no glob characters
            finally:
                client.close()


def engine_list(text: str, allowed: Sequence[str]) -> list[str]:
    """Parse --engines: a comma-separated subset of `allowed`, in the order given."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown engine(s) {', '.join(unknown) or '(none)'}; choose from {','.join(allowed)}"
        )
    return list(dict.fromkeys(names))


def server_args(parser: argparse.ArgumentParser) -> None:
    """--postgres-url and --redis-url, shared with bench_series.py."""
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_PG_URL,
        help="PostgreSQL server (the run creates and drops a schema bench_<hex> in it)",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help="Redis server (the run writes and deletes keys under a prefix bench-<hex>:)",
    )


# --------------------------------------------------------------------------- data


def random_block() -> bytes:
    """The fixed random block every piece is cut from: 2 MiB, the same in every process."""
    return random.Random(BLOCK_SEED).randbytes(2 * PIECE)


def pieces(block: bytes, count: int) -> Iterator[memoryview]:
    """`count` pieces of 1 MiB: windows of `block` at offsets that differ piece to piece
    (no copy, so the generator costs ~nothing and holds nothing)."""
    view = memoryview(block)
    for i in range(count):
        offset = (i * 104_729) % PIECE  # a prime stride: neighbouring pieces differ
        yield view[offset : offset + PIECE]


def expected_checksum(count: int) -> str:
    """The BLAKE2b-128 of the `count` pieces, as store.info reports it."""
    digest = hashlib.blake2b(digest_size=16)
    for piece in pieces(random_block(), count):
        digest.update(piece)
    return digest.hexdigest()


# --------------------------------------------------------------------------- child side


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    if match is None:
        raise OSError(f"no {field} in /proc/self/status")
    return int(match.group(1))


def reset_peak_rss() -> tuple[int, str]:
    """Reset the peak RSS to the current RSS; return (it in KiB, how it is measured).

    Linux >= 4.0: writing 5 to /proc/self/clear_refs resets VmHWM. Elsewhere the peak
    cannot be reset: fall back to ru_maxrss (then only growth above the peak of the
    child's start-up shows)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return _status_kib("VmHWM"), "VmHWM"
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"


def peak_rss(method: str) -> int:
    """The peak RSS in KiB, by the method reset_peak_rss returned."""
    if method == "VmHWM":
        return _status_kib("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def write_plain(path: Path, block: bytes, count: int) -> None:
    with open(path, "wb") as f:
        for piece in pieces(block, count):
            f.write(piece)


def copy_plain(src: Path, dst: Path) -> None:
    with open(src, "rb") as fsrc, open(dst, "wb") as fdst:
        shutil.copyfileobj(fsrc, fdst, PIECE)


def write_blob(store: satchel.Store, block: bytes, count: int) -> None:
    writer = store.open_blob(KEY, "wb")
    assert isinstance(writer, BlobWriter)
    with writer:
        for piece in pieces(block, count):
            writer.write(piece)


def read_blob(store: satchel.Store) -> tuple[int, str]:
    """Read the value in 1 MiB reads; return (size, BLAKE2b-128) of what was read."""
    digest = hashlib.blake2b(digest_size=16)
    size = 0
    with store.open_blob(KEY, "rb") as f:
        while piece := f.read(PIECE):
            digest.update(piece)
            size += len(piece)
    return size, digest.hexdigest()


def child_phase(kind: str, where: str, op: str, count: int) -> dict[str, Any]:
    """One timed phase, run in a fresh child process: `op` ("write" or "read") of `count`
    MiB on a plain file in the dir `where` (kind PLAIN) or on the store at URL `where`."""
    block = random_block()
    out: dict[str, Any] = {}
    store: satchel.Store | None = None
    try:
        if kind == PLAIN:
            src, dst = Path(where) / "src.bin", Path(where) / "copy.bin"
            if op == "write":
                rss0, method = reset_peak_rss()
                secs, _ = timed(lambda: write_plain(src, block, count))
            else:
                rss0, method = reset_peak_rss()
                secs, _ = timed(lambda: copy_plain(src, dst))
                out["size"] = dst.stat().st_size
        else:
            store = satchel.open(where)
            opened = store
            len(opened)  # connect now, not inside the timed phase
            if op == "write":
                rss0, method = reset_peak_rss()
                secs, _ = timed(lambda: write_blob(opened, block, count))
            else:
                rss0, method = reset_peak_rss()
                secs, (out["size"], out["checksum"]) = timed(lambda: read_blob(opened))
                info = opened.info(KEY)
                out["info_size"], out["info_checksum"] = info.size, info.checksum
        out.update(secs=secs, rss_growth_kib=peak_rss(method) - rss0, rss_method=method)
    finally:
        if store is not None:
            store.close()
    return out


def in_child(kind: str, where: str, op: str, count: int) -> dict[str, Any]:
    """child_phase in a fresh spawned process (so its peak RSS is its own)."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(child_phase, kind, where, op, count).result()


# --------------------------------------------------------------------------- contenders


class BlobWorkload(Workload):
    """bench_core's Workload (empty) plus the value: its size and checksum."""

    def __init__(self, mib: int) -> None:
        super().__init__(0, 0)
        self.pieces = mib
        self.size = mib * MIB
        self.checksum = expected_checksum(mib)


class BlobSubject(Subject):
    """A contender whose phases run in child processes; keeps each phase's RSS growth."""

    kind: str
    where: str

    def __init__(self, name: str) -> None:
        self.name = name
        self.rss_kib: dict[str, int] = {}  # op -> largest peak RSS growth over the rounds
        self.rss_method = "?"


class PlainFile(BlobSubject):
    """The baseline: write a temp file from the pieces, copyfileobj it to another."""

    kind = PLAIN

    def __init__(self, root: Path) -> None:
        super().__init__(PLAIN)
        self.dir = root / "plain"
        self.dir.mkdir()
        self.where = str(self.dir)

    def count(self) -> int:
        return sum(1 for _ in self.dir.iterdir())

    def clear(self) -> None:
        for path in self.dir.iterdir():
            path.unlink()

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class EngineBlob(BlobSubject):
    """satchel on one engine; the parent keeps a store open only to count and delete."""

    kind = "engine"

    def __init__(self, engine: str, sandbox: Sandbox) -> None:
        super().__init__(f"satchel {engine}")
        self.engine, self.sandbox, self.where = engine, sandbox, sandbox.url
        self.store = satchel.open(sandbox.url)
        self.left = "-"
        self.delete_secs = 0.0

    def count(self) -> int:
        return len(self.store)

    def clear(self) -> None:
        self.delete_secs, _ = timed(partial(self.store.delete, KEY))
        self.left = self.sandbox.leftover()

    def close(self) -> None:
        try:
            self.store.close()
        finally:
            self.sandbox.cleanup()


def run_blob_op(c: BlobSubject, op: str, w: BlobWorkload) -> tuple[float, int]:
    """One phase of c in a child process; return (seconds, bytes)."""
    out = in_child(c.kind, c.where, op, w.pieces)
    print(f"    {c.name} {op}: {out['secs']:.1f} s", file=sys.stderr)
    c.rss_kib[op] = max(c.rss_kib.get(op, 0), int(out["rss_growth_kib"]))
    c.rss_method = str(out["rss_method"])
    if op == "read":
        check(out["size"] == w.size, c, f"read {out['size']:,} bytes, not {w.size:,}")
        if c.kind != PLAIN:
            check(out["info_size"] == w.size, c, f"info().size is {out['info_size']:,}")
            check(out["checksum"] == w.checksum, c, "checksum of the bytes read")
            check(out["info_checksum"] == w.checksum, c, "info().checksum")
    return float(out["secs"]), w.size


def probe(engine: str, sandbox: Sandbox) -> str | None:
    """Write, read and delete a 3 MiB blob (untimed); None if it works, else the error."""
    try:
        with satchel.open(sandbox.url) as store:
            write_blob(store, random_block(), 3)
            size, checksum = read_blob(store)
            if (size, checksum) != (3 * MIB, store.info(KEY).checksum):
                return f"probe read back {size:,} bytes / {checksum}, not what was written"
            store.delete(KEY)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# --------------------------------------------------------------------------- report

SECURE_DELETE_NOTE = (
    ": freed pages are overwritten with zeros, so deleting a large value writes its whole "
    "size again (to the WAL, then to the database file at the next checkpoint); SQLite "
    "does not shrink its files, so they keep their size after the delete"
)


def secure_delete() -> bool:
    """Whether this SQLite build overwrites freed pages by default."""
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        return bool(conn.execute("PRAGMA secure_delete").fetchone()[0])


def mb_s(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e6:,.0f}"


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def report(
    best: dict[str, dict[str, float]],
    subjects: Sequence[BlobSubject],
    failed: dict[str, str],
    args: argparse.Namespace,
    started: dt.datetime,
    elapsed: float,
    hash_rate: float,
) -> str:
    base = best[PLAIN]
    rows = []
    over = []
    for c in subjects:
        rate = best[c.name]
        grow = [c.rss_kib.get(op, 0) for op in OPS]
        fits = all(g < RSS_LIMIT_MIB * 1024 for g in grow)
        if c.kind != PLAIN and not fits:
            over.append(c.name)
        rows.append(
            [
                c.name,
                mb_s(rate["write"]),
                mb_s(rate["read"]),
                fmt_ratio(rate["write"] / base["write"]),
                fmt_ratio(rate["read"] / base["read"]),
                mib(grow[0]),
                mib(grow[1]),
                "-" if c.kind == PLAIN else ("yes" if fits else "**NO**"),
            ]
        )
    table = md_table(
        [
            "contender",
            "write (MB/s)",
            "read (MB/s)",
            "write vs plain",
            "read vs plain",
            "peak RSS growth, write (MiB)",
            "peak RSS growth, read (MiB)",
            f"< {RSS_LIMIT_MIB} MiB",
        ],
        rows,
    )
    failures = (
        "\n".join(f"- **{engine}**: not measured, {why}" for engine, why in failed.items())
        if failed
        else "- none"
    )
    leftovers = "\n".join(
        f"- {c.name}: `store.delete(key)` took {c.delete_secs:.2f} s; then {c.left}"
        for c in subjects
        if isinstance(c, EngineBlob)
    )
    method = subjects[0].rss_method if subjects else "?"
    command = " ".join([".venv/bin/python", "benchmarks/bench_blobs.py", *sys.argv[1:]])
    return f"""# satchel large-value (blob) benchmark

- date: {started:%Y-%m-%d %H:%M} (local), run took {elapsed:.0f} s
- python {platform.python_version()} ({platform.python_implementation()}), \
{platform.system()} {platform.machine()}; machine: {os.cpu_count()} CPUs, {cpu_model()}; \
load average (1 min) at the start {args.load_start:.1f}, at the end {os.getloadavg()[0]:.1f} \
(other processes on the machine share the CPUs and the disk)
- versions: satchel {version_of("satchel")} (git {source_state()}), \
psycopg {version_of("psycopg")}, redis-py {version_of("redis")}; PostgreSQL and Redis on \
this machine (127.0.0.1, TCP)
- workload: one value of {args.size:,} MiB ({args.size * MIB:,} bytes), written in 1 MiB \
pieces, read back in 1 MiB reads; satchel chunk size {CHUNK_SIZE // MIB} MiB; \
best of {args.repeat} round(s)
- command: `{command}`

## Throughput (MB/s = 10^6 bytes/s, higher is better) and peak memory

{table}

Peak RSS growth: the child process's peak RSS during the phase minus its RSS when the \
phase started ({method}; the peak is reset just before the phase), the largest over the \
rounds. The limit for satchel is {RSS_LIMIT_MIB} MiB per phase. \
Over the limit: {", ".join(over) if over else "none"}.

## Engines not measured

{failures}

## Deleting the blob, and what the engine still held afterwards

{leftovers or "- (no engine measured)"}

The delete is timed once per round, after the read (the last round's numbers). Python's \
sqlite3 here links SQLite {sqlite3.sqlite_version} with `secure_delete` \
{"on" if secure_delete() else "off"} by default{SECURE_DELETE_NOTE if secure_delete() else ""}.

## How it is measured

- **satchel <engine>**: `store.open_blob("{KEY}", "wb")`, then `write()` of each 1 MiB \
piece, then `close()` (the commit), all timed. Read: `store.open_blob(key, "rb")`, \
`read(1 MiB)` until EOF, each piece fed to a BLAKE2b-128 (timed: this is the check a \
reader would do; satchel's reader also checks the checksum itself at EOF), then, untimed, \
the size and checksum are compared with `store.info(key)` and with the bytes written. \
URLs: sqlite `sqlite:///<tmp>/bench.db`, files `file:///<tmp>/files-<hex>`, postgres \
`{args.postgres_url}?schema=bench_<hex>`, redis `{args.redis_url}?prefix=bench-<hex>:`; \
engine defaults otherwise (durability normal for sqlite and files).
- **plain file**: write = `open(tmp, "wb")` and `write()` of the same 1 MiB pieces (no \
fsync); read = `shutil.copyfileobj(open(tmp, "rb"), open(tmp2, "wb"), 1 MiB)` (no fsync). \
The ratios are satchel / plain file.
- The data: 1 MiB windows, at offsets that change from piece to piece, of one fixed \
2 MiB random block (seed {BLOCK_SEED}), so the generator holds 2 MiB and costs nothing. \
BLAKE2b-128 alone runs at {mb_s(hash_rate)} MB/s on this machine (measured in this run); \
satchel hashes on write, and the read phase hashes twice (satchel's check and ours).
- Every phase runs in a fresh spawned child process (start-up, imports and connecting \
untimed). Before the rounds each engine writes, reads and deletes a 3 MiB blob (untimed; \
an engine that fails this is listed as not measured). Rounds run write for every \
contender, then read for every contender, the order rotated each round; the blob (and \
the temp files) are deleted after each round, then the temp dirs, the schema and the Redis \
keys at the end. Caches are warm: each read follows its write within minutes, so the \
operating system's page cache (and PostgreSQL's shared buffers) may hold part of the data. \
Timing: `time.perf_counter`, garbage collector off.
"""


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--size", type=positive_int, default=1024, help="size of the value in MiB")
    parser.add_argument(
        "--engines",
        type=lambda text: engine_list(text, BLOB_ENGINES),
        default=",".join(BLOB_ENGINES),
        help="comma-separated engines to measure",
    )
    parser.add_argument("--repeat", type=positive_int, default=1, help="rounds; best is kept")
    parser.add_argument(
        "--tmp", default=None, help="where the temp dirs go (None: the system temp dir)"
    )
    server_args(parser)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: --size 16, not saved (unless --save)"
    )
    parser.add_argument("--save", action="store_true", help="save even a --quick run")
    parser.add_argument(
        "--no-save", action="store_true", help="print only; do not write benchmarks/results/"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.size = 16
    args.saving = not args.no_save and (args.save or not args.quick)
    if args.size * MIB <= CHUNK_SIZE:
        parser.error(f"--size must exceed one chunk ({CHUNK_SIZE // MIB} MiB)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.load_start = os.getloadavg()[0]
    started = dt.datetime.now()
    t0 = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="satchel-bench-blobs-", dir=args.tmp))
    try:
        # sqlite, files and two plain files on this disk; PostgreSQL's data on its own.
        on_disk = sum(e in (SQLITE, FILES) for e in args.engines) + 2
        need = on_disk * args.size * MIB + 256 * MIB
        free = shutil.disk_usage(root).free
        if free < need:
            raise SystemExit(
                f"bench_blobs: {root} has {free / MIB:,.0f} MiB free; this run needs "
                f"~{need / MIB:,.0f} MiB (use --tmp, a smaller --size, or fewer --engines)"
            )
        print(f"checksumming the {args.size:,} MiB value ...", file=sys.stderr)
        hash_secs, work = timed(lambda: BlobWorkload(args.size))
        hash_rate = work.size / hash_secs

        subjects: list[BlobSubject] = [PlainFile(root)]
        failed: dict[str, str] = {}
        try:
            for engine in args.engines:
                sandbox = Sandbox(engine, root, args.postgres_url, args.redis_url)
                error = probe(engine, sandbox)
                if error is None:
                    subjects.append(EngineBlob(engine, sandbox))
                else:
                    failed[engine] = error
                    sandbox.cleanup()
                    print(f"{engine}: not measured: {error}", file=sys.stderr)
            best = best_of(
                [c.name for c in subjects], OPS, args.repeat,
                lambda r: run_round(subjects, work, r, OPS, run_blob_op), t0,
            )  # fmt: skip
        finally:
            for c in subjects:
                c.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    text = report(best, subjects, failed, args, started, time.perf_counter() - t0, hash_rate)
    print(text)
    if args.saving:
        save_results("blobs", text, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
