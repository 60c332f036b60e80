"""Encryption and compression benchmark: satchel sqlite plain, encrypted, compressed, both.

Run by hand (not in CI) from the repository root:

    .venv/bin/python benchmarks/bench_crypto.py [--n 20000] [--batch 10000] [--repeat 3]

Same harness, workload (~100-byte dict values) and interleaving as bench_core.py. The
compressed contenders use compress_min_size=64 so that the ~100-byte values are really
compressed (the default threshold, 1024 bytes, would leave them alone). The issue's
target: the encryption overhead on a single set stays under 25% of a plain SQLite set,
i.e. encrypted set >= 0.8x plain set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import satchel
from bench_core import (
    OP_HEADERS,
    OPS,
    SatchelContender,
    Workload,
    best_of,
    fmt_rate,
    fmt_ratio,
    md_table,
    run_round,
    save_results,
    version_of,
)

KEY = bytes(range(32))
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "encrypted (AES-256-GCM)": {"encryption_key": KEY},
    "compressed (zstd)": {"compress": "zstd", "compress_min_size": 64},
    "encrypted + compressed": {"encryption_key": KEY, "compress": "zstd", "compress_min_size": 64},
}


class SatchelVariant(SatchelContender):
    """satchel sqlite opened with extra options."""

    def __init__(self, name: str, url: str, options: dict[str, Any]) -> None:
        self.name = name
        self.store = satchel.open(url, **options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="keys for single ops")
    parser.add_argument("--batch", type=int, default=10_000, help="keys per batch")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; best is kept")
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)
    workload = Workload(args.n, args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        contenders = [
            SatchelVariant(name, f"sqlite:///{tmp}/{i}.db", options)
            for i, (name, options) in enumerate(VARIANTS.items())
        ]
        run_round(contenders, Workload(200, 200), 0)  # warm-up
        best = best_of([c.name for c in contenders], OPS, args.repeat,
                       lambda r: run_round(contenders, workload, r))  # fmt: skip
        for c in contenders:
            c.close()
    plain = best["plain"]
    rows = [[name] + [fmt_rate(best[name][op]) for op in OPS] for name in VARIANTS]
    ratios = [[name] + [fmt_ratio(best[name][op] / plain[op]) for op in OPS] for name in VARIANTS]
    encrypted_set = best["encrypted (AES-256-GCM)"]["set"] / plain["set"]
    overhead = 1 / encrypted_set - 1
    verdict = "met" if overhead < 0.25 else "**NOT met**"
    text = "\n".join(
        [
            "# satchel encryption and compression benchmark",
            "",
            f"- date: {dt.datetime.now():%Y-%m-%d %H:%M}; python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs; cryptography {version_of('cryptography')}, "
            f"zstandard {version_of('zstandard')}",
            f"- workload: N={args.n:,} single ops, batches of {args.batch:,}, "
            f"~100-byte dict values, best of {args.repeat} rounds, all on satchel sqlite",
            f"- command: `{' '.join(['.venv/bin/python', *sys.argv])}`",
            "",
            "## Throughput (higher is better)",
            "",
            md_table(["variant", *(OP_HEADERS[op] for op in OPS)], rows),
            "",
            "## Ratio vs plain",
            "",
            md_table(["variant", *(OP_HEADERS[op] for op in OPS)], ratios),
            "",
            "## Target",
            "",
            md_table(
                ["target", "measured", "result"],
                [["encryption overhead on a single set < 25%", f"{overhead:.1%}", verdict]],
            ),
            "",
        ]
    )
    print(text)
    if not args.no_save:
        save_results("crypto", text, dt.datetime.now())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
