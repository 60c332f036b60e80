"""Instructions per operation, counted by callgrind: a figure that machine load cannot move.

Wall-clock benchmarks (bench_core.py) swing by 30% or more on a shared 2-core machine,
too much to see a 5% change. This runs one workload under ``valgrind --tool=callgrind``
twice, with 0 and with N operations, and reports the difference per operation: satchel
on SQLite next to raw sqlite3 doing the same statements. Give ``--src`` another checkout's
``src`` folder to count that version too (before/after a change, in one run).

    python benchmarks/bench_instructions.py [--n 2000] [--src ../baseline/src ...]
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import subprocess
import sys
import tempfile

import msgpack

OPS = ("set", "get", "set_many", "get_many")
VALUE = {"name": "Ada", "age": 36, "tags": ["a", "b"], "score": 9.5, "ok": True}
UPSERT = "INSERT OR REPLACE INTO kv VALUES (?, ?)"


def _satchel(path: str, op: str, keys: list[str], batch: list[str]) -> None:
    import satchel

    store = satchel.open(f"sqlite:///{path}")
    store.set_many(dict.fromkeys(keys, VALUE))
    if op == "set":
        for key in batch:
            store.set(key, VALUE)
    elif op == "get":
        for key in batch:
            store.get(key)
    elif batch and op == "set_many":
        store.set_many(dict.fromkeys(batch, VALUE))
    elif batch:
        store.get_many(batch)
    store.close()


def _raw(path: str, op: str, keys: list[str], batch: list[str]) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB)")
    db.executemany(UPSERT, [(key, msgpack.packb(VALUE)) for key in keys])
    if op == "set":
        for key in batch:
            db.execute(UPSERT, (key, msgpack.packb(VALUE)))
    elif op == "get":
        for key in batch:
            msgpack.unpackb(db.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()[0])
    elif batch and op == "set_many":
        db.execute("BEGIN")
        db.executemany(UPSERT, [(key, msgpack.packb(VALUE)) for key in batch])
        db.execute("COMMIT")
    elif batch:
        marks = ",".join("?" * len(batch))
        rows = db.execute(f"SELECT v FROM kv WHERE k IN ({marks})", batch)
        [msgpack.unpackb(v) for (v,) in rows]
    db.close()


def workload(kind: str, op: str, n: int) -> None:
    keys = [f"user:{i:06d}" for i in range(max(n, 1))]
    path = os.path.join(tempfile.mkdtemp(), "bench.db")
    (_satchel if kind == "satchel" else _raw)(path, op, keys, keys[:n])


def instructions(kind: str, op: str, n: int, src: str | None) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every run
    if src:
        env["PYTHONPATH"] = src
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             __file__, "--workload", kind, op, str(n)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
    found = re.search(r"Collected : (\d+)", run.stderr)
    assert found, run.stderr[-2000:]
    return int(found.group(1))


def per_op(kind: str, op: str, n: int, src: str | None) -> float:
    return (instructions(kind, op, n, src) - instructions(kind, op, 0, src)) / n


def main() -> None:
    if sys.argv[1:2] == ["--workload"]:
        workload(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="operations (batch size for *_many)")
    parser.add_argument("--src", action="append", default=[],
                        help="also count the satchel in this src folder (repeatable)")  # fmt: skip
    args = parser.parse_args()
    print(f"instructions per operation, N={args.n}\n")
    print("| contender | " + " | ".join(OPS) + " |")
    print("| --- |" + " --: |" * len(OPS))
    raw = {op: per_op("raw", op, args.n, None) for op in OPS}
    print("| raw sqlite3 | " + " | ".join(f"{raw[op]:,.0f}" for op in OPS) + " |")
    for label, src in [("installed", None), *((s, s) for s in args.src)]:
        ours = {op: per_op("satchel", op, args.n, src) for op in OPS}
        print(f"| satchel ({label}) | " + " | ".join(f"{ours[op]:,.0f}" for op in OPS) + " |")
        ratios = " | ".join(f"{raw[op] / ours[op]:.3f}x" for op in OPS)
        print(f"| ratio to raw ({label}) | {ratios} |")


if __name__ == "__main__":
    main()
