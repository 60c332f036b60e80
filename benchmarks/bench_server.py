"""Load benchmark of the satchel server: concurrent clients doing get/set on loopback.

Run by hand (not in CI) from the repository root:

    .venv/bin/python benchmarks/bench_server.py [--clients 32] [--seconds 30] [--engine sqlite]

It starts ``satchel serve`` (a separate process, uvicorn, one worker) over a fresh SQLite
file (or memory://) with one tenant, then runs --clients clients (threads spread over
--procs processes, each client its own ``satchel.open("http://...")``) that each loop
over: set a random key of --keys to a ~100-byte dict, get a random key (half sets, half
gets) for --seconds. It reports requests/s, p50/p90/p99 latency and failed requests, then
runs the same workload with the same number of threads on the engine directly in this
process (the "local" ops/s) and prints the ratio remote / local. Tables go to stdout and
to benchmarks/results/server-<YYYYMMDD-HHMM>.md and server-latest.md (skip: --no-save).
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

import satchel

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import cpu_model, md_table, save_results


def value_for(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"user-{i}", "tags": ["a", "b", "c"], "score": i * 0.5,
            "bio": "x" * 40}  # fmt: skip


def client_loop(
    store: satchel.Store, keys: int, until: float, seed: int
) -> tuple[list[float], int]:
    """get/set until `until`; return latencies (seconds) and failures."""
    rng = random.Random(seed)
    latencies: list[float] = []
    failures = 0
    while (start := time.perf_counter()) < until:
        i = rng.randrange(keys)
        try:
            if rng.random() < 0.5:
                store.set(f"k{i}", value_for(i))
            else:
                store.get(f"k{i}", None)
        except Exception:
            failures += 1
        latencies.append(time.perf_counter() - start)
    return latencies, failures


def run_threads(make_store: Any, threads: int, keys: int, until: float, seed: int
                ) -> tuple[list[float], int]:  # fmt: skip
    results: list[tuple[list[float], int]] = []
    stores = [make_store() for _ in range(threads)]

    def one(n: int) -> None:
        results.append(client_loop(stores[n], keys, until, seed + n))

    workers = [threading.Thread(target=one, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for s in stores:
        s.close()
    return [x for r in results for x in r[0]], sum(r[1] for r in results)


def remote_worker(args: tuple[str, str, int, int, float, int]) -> tuple[list[float], int]:
    url, token, threads, keys, until, seed = args
    return run_threads(lambda: satchel.open(url, token=token), threads, keys, until, seed)


def pct(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(engine_url: str, config: Path, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", "from satchel._cli import main; main()", "serve",
               "--url", engine_url, "--port", str(port), "--config", str(config)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "UVICORN_LOG_LEVEL": "warning"})  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--engine", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    started = dt.datetime.now()
    work = Path(tempfile.mkdtemp(prefix="satchel-bench-server-"))
    engine_url = f"sqlite:///{work}/server.db" if args.engine == "sqlite" else "memory://"
    from satchel.server.tenants import Config, Tenant

    config = Config()
    token = config.add_token(Tenant(name="bench", prefix="bench:", quota_bytes=1 << 34,
                                    quota_keys=10**9))  # fmt: skip
    config.save(work / "server.toml")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_server(engine_url, work / "server.toml", port)
    url = f"http://127.0.0.1:{port}"
    try:
        with satchel.open(url, token=token) as store:  # the keys exist before the clock runs
            for i in range(0, args.keys, 1000):
                store.set_many({f"k{j}": value_for(j) for j in range(i, min(i + 1000, args.keys))})
        per_proc = [args.clients // args.procs + (n < args.clients % args.procs)
                    for n in range(args.procs)]  # fmt: skip
        until = time.perf_counter() + 2.0 + args.seconds  # 2 s for the processes to start
        t0 = time.perf_counter()
        with mp.get_context("fork").Pool(args.procs) as pool:
            parts = pool.map(remote_worker, [(url, token, n, args.keys, until, 100 * i)
                                             for i, n in enumerate(per_proc) if n])  # fmt: skip
        elapsed = min(time.perf_counter() - t0, args.seconds + 2.0) - 2.0
        latencies = sorted(x for p in parts for x in p[0])
        failed = sum(p[1] for p in parts)
        server_cpu = _cpu_seconds(server.pid)
    finally:
        server.terminate()
        server.wait(10)
    remote_rate = len(latencies) / max(elapsed, 1e-9)

    local_url = f"sqlite:///{work}/local.db" if args.engine == "sqlite" else "memory://bench"
    with satchel.open(local_url) as seed_store:
        seed_store.set_many({f"k{j}": value_for(j) for j in range(args.keys)})
        local_until = time.perf_counter() + min(args.seconds, 10.0)
        t1 = time.perf_counter()
        local, local_failed = run_threads(lambda: satchel.open(local_url), args.clients,
                                          args.keys, local_until, 7)  # fmt: skip
        local_elapsed = time.perf_counter() - t1
    local.sort()
    local_rate = len(local) / local_elapsed
    shutil.rmtree(work, ignore_errors=True)

    ms = 1000.0
    rows = [
        ["remote (http, satchel serve)", f"{len(latencies):,}", f"{remote_rate:,.0f}",
         f"{pct(latencies, .5) * ms:.2f}", f"{pct(latencies, .9) * ms:.2f}",
         f"{pct(latencies, .99) * ms:.2f}", str(failed)],
        [f"local ({args.engine}, same threads)", f"{len(local):,}", f"{local_rate:,.0f}",
         f"{pct(local, .5) * ms:.2f}", f"{pct(local, .9) * ms:.2f}",
         f"{pct(local, .99) * ms:.2f}", str(local_failed)],
    ]  # fmt: skip
    text = "\n".join([
        f"# satchel server load benchmark, {started:%Y-%m-%d %H:%M}",
        "",
        f"{args.clients} clients ({args.procs} processes), 50% set / 50% get of {args.keys:,} "
        f"keys (~100-byte dicts), {args.seconds:g} s, server engine {args.engine}, loopback.",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "",
        md_table(["run", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "failed"], rows),
        "",
        f"Remote / local ops/s: {remote_rate / local_rate:.2f}x",
        f"Server CPU per request: {server_cpu / max(len(latencies), 1) * 1e3:.2f} ms "
        f"(the whole run, preloading included: {server_cpu:.1f} s of CPU).",
        "",
        "Notes: the server (uvicorn, one worker) and the client processes share the machine's",
        "CPUs; the local run uses the same thread count on the same engine in one process.",
        "",
    ])  # fmt: skip
    print(text)
    if not args.no_save:
        save_results("server", text, started)


if __name__ == "__main__":
    main()
