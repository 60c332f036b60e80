"""Time series and event sequence benchmark: store.series() and store.events() per engine.

Run by hand (not in CI) from the repository root, with PostgreSQL on 127.0.0.1:5432
(user postgres, trust) and Redis on 127.0.0.1:6379 for those two engines:

    .venv/bin/python benchmarks/bench_series.py [--points 1000000] [--events 100000]
    .venv/bin/python benchmarks/bench_series.py --quick      # small smoke run, not saved

For each engine (memory, sqlite, postgres, redis, files; pick with --engines):

- time series: ``ts.extend`` in batches of --batch points (timestamps 0, 1, 2, ...) until
  the series holds --points; points/s over the whole run, over the first --edge batches
  (an empty series) and over the last --edge batches (a big one). Then the time of
  ``list(ts.range(a, a + 1000))``, 1,000 points out of the big series, median over
  --windows random windows.
- event sequence: --events events recorded by ``ev.apply({"n": ("add", 1)})`` in a loop
  (--per-apply K > 1: K items per apply, {"n0": ("add", 1), ...}, events/K applies); then
  ``ev.at(t)`` for a time t halfway through, ``ev.current()``, ``ev.compact()`` (folding
  every event) and ``ev.current()`` again.

The harness of bench_core.py drives the rounds (each step for every engine, then the next
step, the engine order rotated each round). The files engine may run with smaller sizes
(--files-points, --files-events); its row is then flagged. Tables go to stdout and to
benchmarks/results/series-<YYYYMMDD-HHMM>.md and benchmarks/results/series-latest.md.
Everything the run creates (temp dirs, a PostgreSQL schema bench_<hex>, Redis keys under
the prefix bench-<hex>:) is removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import satchel
from bench_blobs import FILES, MEMORY, POSTGRES, REDIS, SQLITE, Sandbox, engine_list, server_args
from bench_core import (
    Subject,
    Workload,
    best_of,
    check,
    cpu_model,
    fmt_rate,
    fmt_ratio,
    md_table,
    positive_int,
    run_round,
    save_results,
    timed,
    version_of,
)
from bench_servers import source_state
from satchel._events import Events
from satchel._series import Series

SERIES_ENGINES: tuple[str, ...] = (MEMORY, SQLITE, POSTGRES, REDIS, FILES)
NAME = "bench"  # the series' and the sequence's name
WINDOW = 1_000  # points per range read
FLAT = 0.8  # last batches / first batches at or above this: appending stays flat
CURRENT_CALLS = 21  # current() is timed this many times; the median is kept
AT_CALLS = 3  # at() likewise
SEGMENTS = 10  # the applies are timed in this many parts (first and last compared)

OPS: tuple[str, ...] = ("extend", "range", "apply", "at", "current", "compact", "current_after")


def value_at(t: int) -> float:
    """The value of the point at t: a float, like a sensor reading."""
    return 20.0 + (t % 100) / 10


# --------------------------------------------------------------------------- contenders


class SeriesWorkload(Workload):
    """bench_core's Workload (empty) plus the sizes, per engine."""

    def __init__(self, args: argparse.Namespace, scale: int = 1) -> None:
        super().__init__(0, 0)
        self.batch_size = max(1, args.batch // scale)
        self.per_apply: int = args.per_apply
        self.windows: int = args.windows
        self.edge: int = args.edge
        self.seed: int = args.seed
        self.quiet = scale > 1  # no progress lines (the warm-up)
        self.points: dict[str, int] = {e: max(WINDOW, args.points // scale) for e in SERIES_ENGINES}
        self.events: dict[str, int] = {
            e: max(2 * args.per_apply, args.events // scale) for e in SERIES_ENGINES
        }
        self.points[FILES] = max(WINDOW, args.files_points // scale)
        self.events[FILES] = max(2 * args.per_apply, args.files_events // scale)

    def applies(self, engine: str) -> int:
        return -(-self.events[engine] // self.per_apply)  # ceil: at least --events events

    def changes(self) -> dict[str, Any]:
        if self.per_apply == 1:
            return {"n": ("add", 1)}
        return {f"n{j}": ("add", 1) for j in range(self.per_apply)}

    def state_after(self, applies: int) -> dict[str, Any]:
        return {item: applies for item in self.changes()}


class SeriesSubject(Subject):
    """satchel on one engine: one series and one event sequence, both named NAME."""

    def __init__(self, engine: str, sandbox: Sandbox) -> None:
        self.name = f"satchel {engine}"
        self.engine, self.sandbox = engine, sandbox
        self.store = satchel.open(sandbox.url)
        self.ts: Series = self.store.series(NAME)
        self.ev: Events = self.store.events(NAME)
        self.reset()

    def reset(self) -> None:
        """Forget the last round's details (kept for the report)."""
        self.batch_secs: list[float] = []
        self.batch_sizes: list[int] = []
        self.range_secs: list[float] = []
        self.apply_secs: list[float] = []
        self.apply_sizes: list[int] = []
        self.mid_ms = 0
        self.applies = 0
        self.details: dict[str, float] = {}

    def count(self) -> int:
        return len(self.ts) + len(self.ev)

    def clear(self) -> None:
        self.ts.remove()
        self.ev.delete()

    def close(self) -> None:
        try:
            self.store.close()
        finally:
            self.sandbox.cleanup()


def read_window(ts: Series, a: int) -> list[tuple[int, Any]]:
    return list(ts.range(a, a + WINDOW))


def apply_loop(ev: Events, changes: dict[str, Any], applies: int) -> None:
    apply = ev.apply
    for _ in range(applies):
        apply(changes)


def median_time(fn: Callable[[], Any], calls: int) -> tuple[float, Any]:
    """The median of `calls` timed runs of fn, and the last result."""
    times, result = [], None
    for _ in range(calls):
        secs, result = timed(fn)
        times.append(secs)
    return statistics.median(times), result


def run_series_op(c: SeriesSubject, op: str, w: SeriesWorkload) -> tuple[float, int]:
    """One timed step of c; return (seconds, how many points or events it handled)."""
    points, applies = w.points[c.engine], w.applies(c.engine)
    events = applies * w.per_apply
    secs: float
    if op == "extend":
        c.reset()
        for start in range(0, points, w.batch_size):
            stop = min(start + w.batch_size, points)
            batch = [(t, value_at(t)) for t in range(start, stop)]
            secs, _ = timed(partial(c.ts.extend, batch))
            c.batch_secs.append(secs)
            c.batch_sizes.append(len(batch))
        check(len(c.ts) == points, c, "len(series) after extend")
        secs, handled = sum(c.batch_secs), points
    elif op == "range":
        rng = random.Random(w.seed)
        for _ in range(w.windows):
            a = rng.randrange(0, points - WINDOW + 1)
            secs, got = timed(partial(read_window, c.ts, a))
            ok = len(got) == WINDOW and got[0] == (a, value_at(a))
            check(ok and got[-1][0] == a + WINDOW - 1, c, f"range({a}, {a + WINDOW})")
            c.range_secs.append(secs)
        secs, handled = statistics.median(c.range_secs), WINDOW
    elif op == "apply":
        # In SEGMENTS timed parts, to compare the first and the last; halfway (between
        # two parts) the time is noted for at(): events so far are at or before it, the
        # rest after it (the 3 ms pause, untimed, makes sure).
        changes = w.changes()
        bounds = [applies * i // SEGMENTS for i in range(SEGMENTS + 1)]
        for i in range(SEGMENTS):
            if i == SEGMENTS // 2:
                c.mid_ms = int(time.time() * 1000)
                time.sleep(0.003)
            n = bounds[i + 1] - bounds[i]
            secs, _ = timed(partial(apply_loop, c.ev, changes, n))
            c.apply_secs.append(secs)
            c.apply_sizes.append(n * w.per_apply)
        c.applies = applies
        check(c.ev.current() == w.state_after(applies), c, "current() after apply")
        check(len(c.ev) == events, c, "len(events) after apply")
        secs, handled = sum(c.apply_secs), events
    elif op == "at":
        secs, state = median_time(partial(c.ev.at, c.mid_ms), AT_CALLS)
        check(state == w.state_after(applies // 2), c, "at(mid) before compact")
        handled = (applies // 2) * w.per_apply  # events replayed
    elif op in ("current", "current_after"):
        secs, state = median_time(c.ev.current, CURRENT_CALLS)
        check(state == w.state_after(applies), c, f"{op}()")
        handled = 1
    elif op == "compact":
        secs, folded = timed(c.ev.compact)
        check(folded == events, c, f"compact() folded {folded}, not {events}")
        handled = events
    else:
        raise ValueError(op)
    c.details[op] = secs
    if not w.quiet:
        print(f"    {c.name} {op}: {secs:.3f} s", file=sys.stderr)
    return secs, handled


def probe(sandbox: Sandbox) -> str | None:
    """Use every call the benchmark times, once, on tiny data (untimed); None if all work,
    else the error."""
    try:
        with satchel.open(sandbox.url) as store:
            ts, ev = store.series(NAME), store.events(NAME)
            ts.extend([(0, 1.0), (1, 2.0)])
            if list(ts.range(0, 2)) != [(0, 1.0), (1, 2.0)]:
                return "series probe read back the wrong points"
            ts.remove()
            ev.apply({"n": ("add", 1)})
            ev.at(int(time.time() * 1000))
            ev.compact()
            if ev.current() != {"n": 1}:
                return "event probe: wrong current()"
            ev.delete()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# --------------------------------------------------------------------------- report


def ms(secs: float) -> str:
    return f"{secs * 1000:,.2f}" if secs < 1 else f"{secs * 1000:,.0f}"


def edge_rate(sizes: list[int], secs: list[float], edge: int, last: bool) -> float:
    """Items/s over the first (or last) `edge` timed parts, at most half of them."""
    k = max(1, min(edge, len(secs) // 2))
    part = slice(-k, None) if last else slice(None, k)
    return sum(sizes[part]) / sum(secs[part])


def report(
    best: dict[str, dict[str, float]],
    subjects: Sequence[SeriesSubject],
    failed: dict[str, str],
    w: SeriesWorkload,
    args: argparse.Namespace,
    started: dt.datetime,
    elapsed: float,
) -> str:
    reduced = [
        c.name
        for c in subjects
        if (w.points[c.engine], w.events[c.engine]) != (args.points, args.events)
    ]

    def label(c: SeriesSubject) -> str:
        return f"{c.name} *" if c.name in reduced else c.name

    k = max(1, min(args.edge, -(-args.points // args.batch) // 2))
    series_rows, apply_rows, event_rows, target_rows = [], [], [], []
    met_all = True
    for c in subjects:
        first = edge_rate(c.batch_sizes, c.batch_secs, args.edge, False)
        last = edge_rate(c.batch_sizes, c.batch_secs, args.edge, True)
        ev_first = edge_rate(c.apply_sizes, c.apply_secs, 1, False)
        ev_last = edge_rate(c.apply_sizes, c.apply_secs, 1, True)
        flat = last / first >= FLAT
        met_all &= flat
        series_rows.append(
            [
                label(c),
                f"{w.points[c.engine]:,}",
                fmt_rate(best[c.name]["extend"]),
                fmt_rate(first),
                fmt_rate(last),
                fmt_ratio(last / first),
                ms(statistics.median(c.range_secs)),
                f"{ms(min(c.range_secs))} - {ms(max(c.range_secs))}",
            ]
        )
        events = w.applies(c.engine) * w.per_apply
        d = c.details
        apply_rows.append(
            [
                label(c),
                f"{events:,} ({w.applies(c.engine):,} x {w.per_apply})",
                fmt_rate(best[c.name]["apply"]),
                fmt_rate(ev_first),
                fmt_rate(ev_last),
                fmt_ratio(ev_last / ev_first),
            ]
        )
        event_rows.append(
            [
                label(c),
                ms(d["at"]),
                ms(d["current"]),
                ms(d["compact"]),
                ms(d["current_after"]),
            ]
        )
        target_rows.append(
            [
                f"{c.name}: last {k} batches >= {FLAT:g}x first {k} batches",
                fmt_ratio(last / first, 3),
                "met" if flat else "**NOT met**",
            ]
        )
    series_table = md_table(
        [
            "engine",
            "points",
            "extend, all (points/s)",
            f"first {k} batches (points/s)",
            f"last {k} batches (points/s)",
            "last / first",
            f"range of {WINDOW:,} (ms, median)",
            "range min - max (ms)",
        ],
        series_rows,
    )
    apply_table = md_table(
        [
            "engine",
            "events (applies x items)",
            "apply, all (events/s)",
            f"first {100 // SEGMENTS}% (events/s)",
            f"last {100 // SEGMENTS}% (events/s)",
            "last / first",
        ],
        apply_rows,
    )
    event_table = md_table(
        [
            "engine",
            "at(mid), before compact (ms)",
            "current(), before compact (ms)",
            "compact() (ms)",
            "current(), after compact (ms)",
        ],
        event_rows,
    )
    targets = md_table(["target", "measured", "result"], target_rows)
    flagged = (
        f"\\* {', '.join(reduced)}: smaller sizes (--files-points {args.files_points:,}, "
        f"--files-events {args.files_events:,}); its rates are not directly comparable."
        if reduced
        else "All engines ran the same sizes."
    )
    failures = (
        "\n".join(f"- **{engine}**: not measured, {why}" for engine, why in failed.items())
        if failed
        else "- none"
    )
    how_apply = (
        '`ev.apply({"n": ("add", 1)})` in a loop: one event per apply'
        if w.per_apply == 1
        else f'`ev.apply({{"n0": ("add", 1), ..., "n{w.per_apply - 1}": ("add", 1)}})` in a '
        f"loop: {w.per_apply} events per apply"
    )
    command = " ".join([".venv/bin/python", "benchmarks/bench_series.py", *sys.argv[1:]])
    return f"""# satchel time series and event sequence benchmark

- date: {started:%Y-%m-%d %H:%M} (local), run took {elapsed:.0f} s
- python {platform.python_version()} ({platform.python_implementation()}), \
{platform.system()} {platform.machine()}; machine: {os.cpu_count()} CPUs, {cpu_model()}; \
load average (1 min) at the start {args.load_start:.1f}, at the end {os.getloadavg()[0]:.1f} \
(other processes on the machine share the CPUs and the disk)
- versions: satchel {version_of("satchel")} (git {source_state()}), \
psycopg {version_of("psycopg")}, redis-py {version_of("redis")}; PostgreSQL and Redis on \
this machine (127.0.0.1, TCP)
- workload: a series grown to {args.points:,} points in batches of {args.batch:,}; \
{args.windows} random range reads of {WINDOW:,} points; {args.events:,} events; \
best of {args.repeat} round(s) for the rates (the details are from the last round)
- command: `{command}`

## Time series (higher is better, except times)

{series_table}

## Event sequence: recording (higher is better)

{apply_table}

## Event sequence: reading the state (ms, lower is better)

{event_table}

{flagged}

## Target: appending to a big series costs the same as to an empty one

{targets}

All met: {"yes" if met_all else "**no**"}

## Engines not measured

{failures}

## How it is measured

- **extend**: `ts.extend(batch)` with a list of {args.batch:,} `(t, float)` pairs, \
timestamps 0, 1, 2, ... so every batch appends after the last point; each batch built \
untimed and timed on its own. "all" = points / total time; first / last = the first / \
last {k} batches (an empty series vs one about to hold all its points).
- **range**: `list(ts.range(a, a + {WINDOW}))` for {args.windows} windows at random `a` \
(seed {args.seed}) in the full series; each read checked (1,000 points, first and last t, \
values); the table gives the median and the spread.
- **apply**: {how_apply}; the "events/s" rate counts events. The loop is timed in \
{SEGMENTS} equal parts: first / last = the first / last part (an empty sequence vs a long \
one). Halfway through, the time `t` (ms) is noted and the loop pauses 3 ms (untimed), so \
`ev.at(t)` must return the state after exactly half the applies (checked).
- **at(mid)**: `ev.at(t)` before any compaction: reads and replays half the events; \
median of {AT_CALLS} calls.
- **current()**: median of {CURRENT_CALLS} calls, before and after `ev.compact()` \
(which folds every event into a snapshot; one call, timed). Checked against the expected \
state each time.
- Engines: memory `memory://bench-<hex>`, sqlite `sqlite:///<tmp>/bench.db`, files \
`file:///<tmp>/files-<hex>`, postgres `{args.postgres_url}?schema=bench_<hex>`, redis \
`{args.redis_url}?prefix=bench-<hex>:`; engine defaults otherwise.
- Rounds run each step for every engine, then the next step, the engine order rotated \
each round; the series and the sequence are deleted after each round. One untimed warm-up \
round on 1/100 of the sizes runs first. Timing: `time.perf_counter`, garbage collector off \
while timing; checks run untimed.
"""


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--engines",
        type=lambda text: engine_list(text, SERIES_ENGINES),
        default=",".join(SERIES_ENGINES),
        help="comma-separated engines to measure",
    )
    parser.add_argument(
        "--points", type=positive_int, default=1_000_000, help="points the series grows to"
    )
    parser.add_argument("--batch", type=positive_int, default=10_000, help="points per extend")
    parser.add_argument(
        "--edge", type=positive_int, default=5, help="batches counted as first and as last"
    )
    parser.add_argument(
        "--windows", type=positive_int, default=21, help="random range reads (median kept)"
    )
    parser.add_argument("--events", type=positive_int, default=100_000, help="events to apply")
    parser.add_argument(
        "--per-apply", type=positive_int, default=1, help="events (items) per apply call"
    )
    parser.add_argument(
        "--files-points",
        type=positive_int,
        default=None,
        help="points for files (None: --points)",
    )
    parser.add_argument(
        "--files-events",
        type=positive_int,
        default=None,
        help="events for files (None: --events)",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the random range windows")
    parser.add_argument("--repeat", type=positive_int, default=1, help="rounds; best is kept")
    parser.add_argument(
        "--tmp", default=None, help="where the temp dirs go (None: the system temp dir)"
    )
    server_args(parser)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: --points 50000 --events 2000 --windows 5, not saved (unless --save)",
    )
    parser.add_argument("--save", action="store_true", help="save even a --quick run")
    parser.add_argument(
        "--no-save", action="store_true", help="print only; do not write benchmarks/results/"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.points, args.events, args.windows = 50_000, 2_000, 5
    args.files_points = args.files_points or args.points
    args.files_events = args.files_events or args.events
    args.saving = not args.no_save and (args.save or not args.quick)
    if min(args.points, args.files_points) < WINDOW:
        parser.error(f"--points and --files-points must be at least {WINDOW:,}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.load_start = os.getloadavg()[0]
    started = dt.datetime.now()
    t0 = time.perf_counter()
    work = SeriesWorkload(args)
    subjects: list[SeriesSubject] = []
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="satchel-bench-series-", dir=args.tmp) as tmp:
        try:
            for engine in args.engines:
                sandbox = Sandbox(engine, Path(tmp), args.postgres_url, args.redis_url)
                error = probe(sandbox)
                if error is None:
                    subjects.append(SeriesSubject(engine, sandbox))
                else:
                    failed[engine] = error
                    sandbox.cleanup()
                    print(f"{engine}: not measured: {error}", file=sys.stderr)
            if not subjects:
                raise SystemExit("bench_series: no engine left to measure")
            print("warm-up round ...", file=sys.stderr)
            run_round(subjects, SeriesWorkload(args, scale=100), 0, OPS, run_series_op)
            best = best_of(
                [c.name for c in subjects], OPS, args.repeat,
                lambda r: run_round(subjects, work, r, OPS, run_series_op), t0,
            )  # fmt: skip
        finally:
            for c in subjects:
                c.close()

    text = report(best, subjects, failed, work, args, started, time.perf_counter() - t0)
    print(text)
    if args.saving:
        save_results("series", text, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
