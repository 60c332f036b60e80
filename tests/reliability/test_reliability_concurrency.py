"""Concurrency: 8 writers on overlapping keys, on every engine (issue 11).

Every engine of conftest.ENGINES except memory gets 8 processes (multiprocessing
"spawn"; each opens its own store on the engine URL); memory, whose records live in one
process, gets 8 threads, each with its own open of the same ``memory://name``. Every
worker runs a random mix of get/set/incr/compare_and_set/delete on a few shared keys,
and counts what it did to two counters:

- ``counter`` is only ever changed with ``incr``: it must end at the sum of every delta;
- ``cas-counter`` is only ever changed by a CAS loop (``info``, then ``get``, then
  ``compare_and_set(key, info, value + 1)``, retried until it wins): it must end at the
  number of wins.

No error at all may surface in a worker (no "database is locked", no BackendError),
every worker must finish within a bounded time (no deadlock), and every shared value
must end as one of the values some worker wrote. ``--long`` runs 10 times the ops.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import pytest

import satchel
from conftest import ENGINES, Engine

WORKERS = 8
OPS = 200  # per worker; x10 under --long
MEMORY_OPS_FACTOR = 20  # threads on memory:// are fast: more ops for real interleaving
# More variants of an engine of ENGINES: name -> (engine, query added to its URL).
VARIANTS = {
    "sqlite-full": ("sqlite", "durability=full"),
    "files-full": ("files", "durability=full"),
}
JOIN_TIMEOUT = 120.0  # seconds for every worker to finish (x10 under --long)
START_TIMEOUT = 60.0  # seconds for the workers to reach the start line
VALUE_KEYS = [f"v{i}" for i in range(4)]  # set / get / delete / compare_and_set
NUMBER_KEYS = [f"n{i}" for i in range(3)]  # incr / set int / delete


def run_worker(url: str, worker: int, ops: int, seed: int, start: Any) -> dict[str, Any]:
    """Run `ops` random operations on `url`; return what was done and every error seen."""
    rng = random.Random(seed)
    result: dict[str, Any] = {
        "worker": worker,
        "incr_total": 0,
        "cas_wins": 0,
        "cas_retries": 0,
        "ops": 0,
        "written": [],  # every value written to a VALUE_KEY
        "errors": [],
    }
    try:
        store = satchel.open(url)
    except BaseException:
        result["errors"].append(traceback.format_exc())
        return result
    try:
        start.wait(START_TIMEOUT)
        for seq in range(ops):
            op = rng.choice(
                ["incr", "incr", "cas", "cas", "get", "set", "cas_value", "delete", "number"]
            )
            try:
                if op == "incr":
                    delta = rng.choice([1, 2, 3, 10**20])
                    store.incr("counter", delta)
                    result["incr_total"] += delta
                elif op == "cas":
                    while True:
                        info = store.info("cas-counter")
                        current = store.get("cas-counter")
                        if store.compare_and_set("cas-counter", info, current + 1):
                            result["cas_wins"] += 1
                            break
                        result["cas_retries"] += 1
                elif op == "get":
                    store.get(rng.choice(VALUE_KEYS), None)
                    store.get_many(VALUE_KEYS)
                elif op == "set":
                    value = [worker, seq, "x" * rng.randrange(0, 300)]
                    result["written"].append(value)
                    store.set(rng.choice(VALUE_KEYS), value, if_absent=rng.random() < 0.2)
                elif op == "cas_value":
                    key = rng.choice(VALUE_KEYS)
                    value = [worker, seq, "cas"]
                    result["written"].append(value)
                    try:
                        info = store.info(key)
                    except satchel.KeyNotFound:
                        info = None
                    store.compare_and_set(key, info, value)
                elif op == "delete":
                    if rng.random() < 0.5:
                        store.delete(rng.choice(VALUE_KEYS))
                    else:
                        store.delete_many(rng.sample(NUMBER_KEYS, 2))
                else:  # number keys: incr, overwrite with an int, pop
                    key = rng.choice(NUMBER_KEYS)
                    choice = rng.random()
                    if choice < 0.6:
                        store.incr(key, rng.randrange(-5, 6))
                    elif choice < 0.8:
                        store.set(key, rng.randrange(100))
                    else:
                        store.pop(key, None)
            except BaseException:
                result["errors"].append(f"{op}: {traceback.format_exc()}")
            result["ops"] += 1
    except BaseException:
        result["errors"].append(traceback.format_exc())
    finally:
        try:
            store.close()
        except BaseException:
            result["errors"].append(f"close: {traceback.format_exc()}")
    return result


def process_main(url: str, worker: int, ops: int, seed: int, start: Any, out: str) -> None:
    """Entry point of a spawned worker: its result goes to the JSON file `out`."""
    result = run_worker(url, worker, ops, seed, start)
    Path(out).write_text(json.dumps(result))


def _run_processes(url: str, ops: int, seed: int, tmp_path: Path, timeout: float) -> list[dict]:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(WORKERS)
    outs = [tmp_path / f"worker-{i}.json" for i in range(WORKERS)]
    procs = [
        ctx.Process(
            target=process_main,
            args=(url, i, ops, seed * 1000 + i, start, str(outs[i])),
            name=f"satchel-worker-{i}",
        )
        for i in range(WORKERS)
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout + START_TIMEOUT
    hung = []
    for p in procs:
        p.join(max(deadline - time.monotonic(), 0.1))
        if p.is_alive():
            hung.append(p.name)
    for p in procs:  # only the processes this test started, by their own handles
        if p.is_alive():
            p.kill()
            p.join(10)
    assert not hung, f"workers still running after {timeout + START_TIMEOUT:.0f}s: {hung}"
    codes = {p.name: p.exitcode for p in procs}
    assert all(code == 0 for code in codes.values()), f"worker exit codes: {codes}"
    return [json.loads(out.read_text()) for out in outs]


def _run_threads(url: str, ops: int, seed: int, timeout: float) -> list[dict]:
    start = threading.Barrier(WORKERS)
    results: list[dict | None] = [None] * WORKERS

    def target(i: int) -> None:
        results[i] = run_worker(url, i, ops, seed * 1000 + i, start)

    threads = [
        threading.Thread(target=target, args=(i,), name=f"satchel-worker-{i}", daemon=True)
        for i in range(WORKERS)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout + START_TIMEOUT
    for t in threads:
        t.join(max(deadline - time.monotonic(), 0.1))
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"threads still running after {timeout + START_TIMEOUT:.0f}s: {hung}"
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def _url(engine: Engine, query: str, tmp_path: Path) -> str:
    url = engine(tmp_path)
    return f"{url}{'&' if '?' in url else '?'}{query}" if query else url


@pytest.mark.parametrize("name", [*ENGINES, *VARIANTS])
def test_concurrent_writers_lose_nothing(name: str, tmp_path: Path, long_run: bool) -> None:
    base, query = VARIANTS.get(name, (name, ""))
    engine: Engine = ENGINES[base]
    url = _url(engine, query, tmp_path)
    ops = OPS * (10 if long_run else 1) * (MEMORY_OPS_FACTOR if base == "memory" else 1)
    timeout = JOIN_TIMEOUT * (10 if long_run else 1)
    seed = uuid.uuid4().int % 1_000_000
    # The parent's store stays open: it sets the stage, and keeps memory://name alive.
    store = satchel.open(url)
    try:
        store.set("counter", 0)
        store.set("cas-counter", 0)
        began = time.monotonic()
        if base == "memory":
            switch = sys.getswitchinterval()
            sys.setswitchinterval(1e-5)  # interleave the threads often
            try:
                results = _run_threads(url, ops, seed, timeout)
            finally:
                sys.setswitchinterval(switch)
        else:
            results = _run_processes(url, ops, seed, tmp_path, timeout)
        elapsed = time.monotonic() - began

        errors = [f"worker {r['worker']}: {e}" for r in results for e in r["errors"]]
        assert not errors, f"seed {seed}: {len(errors)} errors in workers:\n" + "\n".join(
            errors[:5]
        )
        assert [r["ops"] for r in results] == [ops] * WORKERS

        incr_total = sum(r["incr_total"] for r in results)
        cas_wins = sum(r["cas_wins"] for r in results)
        assert store.get("counter") == incr_total, f"seed {seed}: lost incr updates"
        assert store.get("cas-counter") == cas_wins, f"seed {seed}: lost CAS updates"
        assert store.info("cas-counter").version == cas_wins + 1

        written = {json.dumps(v) for r in results for v in r["written"]}
        for key, value in store.get_many(VALUE_KEYS).items():
            assert json.dumps(value) in written, f"{key} holds {value!r}, never written"
        for key, value in store.get_many(NUMBER_KEYS).items():
            assert type(value) is int, f"{key} holds {value!r}"
        assert set(store.keys()) <= {"counter", "cas-counter", *VALUE_KEYS, *NUMBER_KEYS}
        print(
            f"{name}: {WORKERS} workers x {ops} ops in {elapsed:.1f}s, incr total "
            f"{incr_total}, {cas_wins} CAS wins, "
            f"{sum(r['cas_retries'] for r in results)} CAS retries"
        )
    finally:
        store.close()
        if engine.cleanup is not None:
            engine.cleanup(url)
