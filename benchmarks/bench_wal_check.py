"""What the damaged-WAL check costs the first open of a SQLite store after a crash.

Run by hand (not in CI) from the repository root:

    .venv/bin/python benchmarks/bench_wal_check.py [--rounds 7] [--mib 13]

Each round a child process writes about --mib MiB into a fresh store and dies by
SIGKILL, leaving its commits in the write-ahead log; the parent then times
``satchel.open`` + one ``get`` + ``close``, with the check (as shipped) and without it
(``first_opener`` patched to say another process holds the file), alternating which goes
first. The check's cost is mostly the checkpoint it runs at open, which SQLite would
otherwise run at the next close. Prints a table (median and best of the rounds).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import satchel
import satchel._backends.sqlite as sqlite_backend


def crashed_store(folder: Path, mib: int) -> tuple[Path, int]:
    """A store whose writer died with about `mib` MiB of commits in its WAL."""
    path = folder / "store.db"
    pid = os.fork()
    if pid == 0:
        try:
            store = satchel.open(path)
            for i in range(mib * 1024 // 16):  # ~16 KiB a commit, in batches of 8
                store.set_many({f"k{i}-{j}": "x" * 2000 for j in range(8)})
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    return path, Path(f"{path}-wal").stat().st_size


def first_open_ms(path: Path, check: bool) -> float:
    shipped = sqlite_backend.first_opener
    if not check:
        sqlite_backend.first_opener = lambda path: False
    try:
        start = time.perf_counter()
        with satchel.open(path) as store:
            store.get("k0-0")
        return (time.perf_counter() - start) * 1000
    finally:
        sqlite_backend.first_opener = shipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--mib", type=int, default=13)
    args = parser.parse_args()
    times: dict[bool, list[float]] = {True: [], False: []}
    wal_sizes = []
    for round_ in range(args.rounds):
        for check in (True, False) if round_ % 2 else (False, True):
            with tempfile.TemporaryDirectory() as folder:
                path, size = crashed_store(Path(folder), args.mib)
                wal_sizes.append(size)
                times[check].append(first_open_ms(path, check))
    print(f"first open after a crash, WAL {statistics.median(wal_sizes) / 2**20:.1f} MiB, "
          f"{args.rounds} rounds\n")  # fmt: skip
    print("| open + get + close | median ms | best ms |\n| --- | --: | --: |")
    for check, label in ((False, "without the check"), (True, "with the check (shipped)")):
        print(f"| {label} | {statistics.median(times[check]):.1f} | {min(times[check]):.1f} |")


if __name__ == "__main__":
    main()
