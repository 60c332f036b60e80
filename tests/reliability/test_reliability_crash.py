"""Crash durability: a writer killed with SIGKILL at a random moment loses nothing it
acknowledged, leaves no half-written value, and the store opens again without repair.

Each round starts a child process (``python -c``) that opens the store, says "ready",
then writes numbered values and reports every write that *returned* (acknowledged) on
its stdout, one line each. The parent kills it with SIGKILL 20-200 ms after "ready",
reads what the pipe still holds, reopens the store and checks:

- every acknowledged write is there with its exact value;
- writes are sequential, so the keys present are exactly k0..km with m at most one past
  the last acknowledged (a later write present with an earlier one missing is a loss);
- every key present decodes to the value written for it (no torn or half-written value);
- an overwritten key ("latest") holds a value at least as new as the last acknowledged;
- SQLite: ``PRAGMA integrity_check`` is "ok" after every kill.

Batches: a child calls ``set_many`` with one large batch and is killed at a random
moment inside the call; afterwards either the whole batch or none of it is present.

Large values: a child overwrites one key with a multi-chunk value through ``open_blob``
each round and is killed inside the write; afterwards the key holds the previous round's
value or this round's, whole (size and checksum), never a part or a mix.

Rounds per engine: 20 (single writes), 6 (large values, 8 MiB) and 6 (batches: 20,000
keys on SQLite and PostgreSQL, 500 on files, which fsyncs every file); ``--long``
multiplies by 10. The first batch round runs to completion to time the engine's part of
the call (the child says "begin" when the encoded batch goes to the backend); the later
kills are spread from that moment to just past the end of the call. The random seed of
each test is printed. The store is the same across rounds, so each child opens a store a
killed writer left.
"""

from __future__ import annotations

import inspect
import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

import satchel
import support_postgres

ROUNDS = 20
BATCH_ROUNDS = 6
LONG_FACTOR = 10
KILL_DELAY = (0.020, 0.200)  # seconds after the child said "ready"
CHILD_TIMEOUT = 60.0  # a child that is not ready by then is killed and the test fails


def blob_bytes(rnd: int, size: int) -> bytes:
    """The large value written in round rnd (shared with the child by source)."""
    block = bytes((rnd * 7 + i) % 251 for i in range(4096))
    return (block * (size // 4096 + 1))[:size]


def expected_value(rnd: int, i: int, small: bool = False) -> dict[str, Any]:
    """The value written under key i of round rnd (shared with the child by source)."""
    n = (i * 2654435761 + rnd * 40503) % (48 if small else 6000)
    return {
        "i": i,
        "round": rnd,
        "payload": chr(97 + (i + rnd) % 26) * n,
        "tag": (i * 31 + rnd).to_bytes(8, "big"),
        "ratio": i / 7,
    }


CHILD = (
    "from __future__ import annotations\nimport json, os, sys, time\n"
    "import satchel\n"
    + inspect.getsource(expected_value)
    + inspect.getsource(blob_bytes)
    + """
def say(line):
    os.write(1, (line + "\\n").encode())

url, mode, rnd, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store = satchel.open(url, **json.loads(sys.argv[5]))
if mode == "single":
    say("ready")
    i = 0
    while True:
        store.set(f"r{rnd}-k{i}", expected_value(rnd, i))
        say(f"k {i}")
        store.set("latest", [rnd, i])
        say(f"l {i}")
        i += 1
elif mode == "blob":
    data = blob_bytes(rnd, count)
    say("ready")
    start = time.monotonic()
    say("begin")
    with store.open_blob("blob", "wb") as f:
        for at in range(0, count, 1 << 18):
            f.write(data[at : at + (1 << 18)])
    say(f"done {time.monotonic() - start:.6f}")
    time.sleep(CHILD_LINGER)
else:
    batch = {f"b{rnd}-{i}": expected_value(rnd, i, small=True) for i in range(count)}
    backend = store._shared.backend  # say "begin" when the values go to the engine
    apply = backend.apply
    def traced(*args, **kwargs):
        global start
        start = time.monotonic()
        say("begin")
        return apply(*args, **kwargs)
    backend.apply = traced
    say("ready")
    store.set_many(batch)
    say(f"done {time.monotonic() - start:.6f}")
    time.sleep(CHILD_LINGER)
"""
).replace("CHILD_LINGER", "600")


@dataclass
class Case:
    """An engine configuration under test: url(tmp_path), options for satchel.open."""

    url: Callable[[Path], str]
    options: dict[str, Any] = field(default_factory=dict)
    cleanup: Callable[[str], None] | None = None
    sqlite_file: bool = False
    server: bool = False  # a server that finishes a killed client's statement on its own
    child_options: dict[str, Any] = field(default_factory=dict)  # options + what the child adds


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/crash.db"


def _files_url(tmp_path: Path) -> str:
    return f"file://{tmp_path}/crash-store"


CASES = {
    "sqlite-normal": Case(_sqlite_url, {"durability": "normal"}, sqlite_file=True),
    "sqlite-full": Case(_sqlite_url, {"durability": "full"}, sqlite_file=True),
    "files": Case(_files_url),
    "postgres": Case(support_postgres.fresh_url, cleanup=support_postgres.drop, server=True),
}


@pytest.fixture
def crash_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Case]]:
    case = CASES[request.param]
    url = case.url(tmp_path)
    child_options = dict(case.options)
    if case.server:  # names the child's sessions, see _settle_postgres
        child_options["application_name"] = f"satchel-crash-{uuid.uuid4().hex[:12]}"
    case = replace(case, child_options=child_options)
    yield url, case
    if case.cleanup is not None:
        case.cleanup(url)


@dataclass
class Tally:
    """What a test saw, printed at its end (``pytest -s``) for the issue's table."""

    name: str
    rounds: int = 0
    acknowledged: int = 0
    lost: int = 0
    errors: list[str] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)

    def report(self) -> None:
        print(
            f"\n[crash] {self.name}: rounds={self.rounds} acknowledged={self.acknowledged} "
            f"lost={self.lost} errors={len(self.errors)} {self.notes}"
        )


class Child:
    """A writer process: ``lines`` are its stdout lines up to the point read."""

    def __init__(self, url: str, mode: str, rnd: int, count: int, options: dict[str, Any]):
        args = [sys.executable, "-c", CHILD, url, mode, str(rnd), str(count), json.dumps(options)]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        self._watchdog = threading.Timer(CHILD_TIMEOUT, self.proc.kill)
        self._watchdog.start()
        self.lines: list[str] = []

    def readline(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line:
            self.fail("the child ended before saying what it was asked")
        self.lines.append(line.strip())
        return line.strip()

    def kill(self) -> list[str]:
        """SIGKILL the child; return every line it wrote (acknowledgements included)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._watchdog.cancel()
        if self.proc.returncode != -signal.SIGKILL:  # it stopped on its own: an error
            self.fail("the writer ended before it was killed")
        assert self.proc.stdout is not None
        self.lines += self.proc.stdout.read().decode().splitlines()
        return self.lines

    def fail(self, why: str) -> None:
        self.proc.kill()
        self.proc.wait()
        self._watchdog.cancel()
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode(errors="replace")
        pytest.fail(f"{why} (exit {self.proc.returncode}); stderr:\n{err[-3000:]}")

    def close(self) -> None:
        self._watchdog.cancel()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _parse_acks(child: Child) -> tuple[set[int], int]:
    """(indices of acknowledged key writes, index of the last acknowledged 'latest')."""
    acked: set[int] = set()
    latest = -1
    for line in child.lines:
        what, _, index = line.partition(" ")
        if what == "k":
            acked.add(int(index))
        elif what == "l":
            latest = max(latest, int(index))
        elif what != "ready":
            raise AssertionError(f"unexpected child output {line!r}")
    return acked, latest


def _check_sqlite_file(url: str) -> None:
    path = url.removeprefix("sqlite:///").split("?")[0]
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (result,) = db.execute("PRAGMA integrity_check").fetchone()
    finally:
        db.close()
    assert result == "ok", f"SQLite integrity_check after a kill: {result}"


def _settle_postgres(case: Case, timeout: float = 20.0) -> None:
    """Wait until every server process of the killed child has ended.

    PostgreSQL runs a statement it received to its end (and commits it) even when the
    client that sent it was killed, and only then notices the closed connection and
    exits: until then, that unacknowledged write may or may not land, so the checks wait
    for it. The child's sessions are told apart by their application_name.
    """
    name = case.child_options["application_name"]
    deadline = time.monotonic() + timeout
    with psycopg.connect(support_postgres.BASE_URL, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchone()
            if row is None or row[0] == 0:
                return
            assert time.monotonic() < deadline, f"a killed client's session lives on: {name}"
            time.sleep(0.005)


def _reopen(url: str, case: Case) -> satchel.Store:
    """Open the store a killed writer left: it must open as is, without an error."""
    if case.server:
        _settle_postgres(case)
    store = satchel.open(url, **case.options)
    if case.sqlite_file:
        _check_sqlite_file(url)
    return store


def _key_index(key: str) -> int:
    return int(key.rsplit("k", 1)[1])


def _check_round(store: satchel.Store, rnd: int, acked: set[int], latest_acked: int) -> int:
    """Check one killed round of single writes; return the number of keys present."""
    present = sorted(_key_index(key) for key in store.keys(f"r{rnd}-k*"))
    lost = sorted(acked - set(present))
    assert not lost, f"round {rnd}: acknowledged writes lost: {lost[:20]}"
    assert present == list(range(len(present))), (
        f"round {rnd}: a gap in sequential writes: {present[:50]}"
    )
    last_acked = max(acked, default=-1)
    assert len(present) <= last_acked + 2, (
        f"round {rnd}: {len(present)} keys present but only {last_acked + 1} attempted"
    )
    found = store.get_many([f"r{rnd}-k{i}" for i in present])
    for i in present:
        value = found[f"r{rnd}-k{i}"]
        assert value == expected_value(rnd, i), f"round {rnd}: key k{i} holds {value!r:.200}"
    latest = store.get("latest", None)
    if latest is not None and latest[0] == rnd:
        assert latest[1] >= latest_acked, (
            f"round {rnd}: 'latest' is {latest} but [{rnd}, {latest_acked}] was acknowledged"
        )
        assert latest[1] in present, f"round {rnd}: 'latest' {latest} names an absent key"
    else:
        assert latest_acked == -1, (
            f"round {rnd}: 'latest' is {latest} but [{rnd}, {latest_acked}] was acknowledged"
        )
    return len(present)


def _final_check(store: satchel.Store, present_by_round: dict[int, int]) -> None:
    """Every value of every round is still there, and nothing else but 'latest'."""
    expected_keys = {f"r{r}-k{i}" for r, n in present_by_round.items() for i in range(n)}
    seen = set()
    for key, value in store.items():
        if key == "latest":
            continue
        rnd, i = int(key[1:].split("-", 1)[0]), _key_index(key)
        assert value == expected_value(rnd, i), f"{key} holds {value!r:.200}"
        seen.add(key)
    assert seen == expected_keys, f"missing: {sorted(expected_keys - seen)[:20]}"


@pytest.mark.parametrize("crash_url", list(CASES), indirect=True)
def test_sigkill_during_single_writes(crash_url: tuple[str, Case], long_run: bool) -> None:
    url, case = crash_url
    rounds = ROUNDS * (LONG_FACTOR if long_run else 1)
    seed = random.randrange(2**32)
    print(f"[crash] random seed {seed}")
    rng = random.Random(seed)
    tally = Tally(f"single writes, {url.split(':')[0]} {case.options}")
    present_by_round: dict[int, int] = {}
    for rnd in range(rounds):
        child = Child(url, "single", rnd, 0, case.child_options)
        try:
            if child.readline() != "ready":
                child.fail(f"round {rnd}: unexpected first line {child.lines[-1]!r}")
            time.sleep(rng.uniform(*KILL_DELAY))
            child.kill()
        finally:
            child.close()
        acked, latest_acked = _parse_acks(child)
        tally.rounds += 1
        tally.acknowledged += len(acked) + (latest_acked + 1)
        with _reopen(url, case) as store:
            present_by_round[rnd] = _check_round(store, rnd, acked, latest_acked)
        tally.notes["unacknowledged_but_present"] = tally.notes.get(
            "unacknowledged_but_present", 0
        ) + (present_by_round[rnd] - len(acked))
    with _reopen(url, case) as store:
        _final_check(store, present_by_round)
    assert sum(present_by_round.values()) > rounds, "the writers wrote almost nothing"
    tally.report()


def _kill_inside_call(
    child: Child, rnd: int, rounds: int, rng: random.Random, duration: float
) -> float:
    """Kill `child` inside its timed call ("begin" .. "done"); return the call's duration.

    Round 0 calibrates: the call runs to completion and its duration is measured. Later
    rounds spread the kills over the call, from its start to just after it ends.
    """
    try:
        if child.readline() != "ready":
            child.fail(f"round {rnd}: unexpected first line {child.lines[-1]!r}")
        if child.readline() != "begin":
            child.fail(f"round {rnd}: no 'begin' but {child.lines[-1]!r}")
        if rnd == 0:
            line = child.readline()
            if not line.startswith("done"):
                child.fail(f"the call did not complete: {line!r}")
            duration = float(line.split()[1])
        else:
            share = (rnd - 1 + rng.random()) / (rounds - 1)
            time.sleep(duration * (0.1 + 1.0 * share))
        child.kill()
    finally:
        child.close()
    return duration


BATCH_CASES = {
    "sqlite-normal": 20_000,
    "sqlite-full": 20_000,
    "files": 500,
    "postgres": 20_000,
}


@pytest.mark.parametrize(
    "crash_url,batch", [(name, size) for name, size in BATCH_CASES.items()], indirect=["crash_url"]
)
def test_sigkill_during_set_many(crash_url: tuple[str, Case], batch: int, long_run: bool) -> None:
    url, case = crash_url
    rounds = BATCH_ROUNDS * (LONG_FACTOR if long_run else 1)
    seed = random.randrange(2**32)
    print(f"[crash] random seed {seed}")
    rng = random.Random(seed)
    tally = Tally(f"set_many x{batch}, {url.split(':')[0]} {case.options}")
    duration = 0.0
    outcomes = {"all": 0, "none": 0}
    total_present = 0
    for rnd in range(rounds):
        child = Child(url, "batch", rnd, batch, case.child_options)
        duration = _kill_inside_call(child, rnd, rounds, rng, duration)
        completed = any(line.startswith("done") for line in child.lines)
        tally.rounds += 1
        with _reopen(url, case) as store:
            present = sum(1 for _ in store.keys(f"b{rnd}-*"))
            if completed:
                tally.acknowledged += batch
                assert present == batch, f"round {rnd}: acknowledged batch, {present}/{batch} left"
            assert present in (0, batch), f"round {rnd}: a torn batch, {present}/{batch} present"
            if present:
                keys = [f"b{rnd}-{i}" for i in range(batch)]
                found = store.get_many(keys)
                for i, key in enumerate(keys):
                    assert found[key] == expected_value(rnd, i, small=True), key
        outcomes["all" if present else "none"] += 1
        total_present += present
    with _reopen(url, case) as store:
        assert len(store) == total_present
    tally.notes.update(outcomes, batch_ms=round(duration * 1000))
    tally.report()


BLOB_SIZE = 8 << 20  # 8 chunks


@pytest.mark.parametrize("crash_url", list(CASES), indirect=True)
def test_sigkill_during_blob_write(crash_url: tuple[str, Case], long_run: bool) -> None:
    url, case = crash_url
    rounds = BATCH_ROUNDS * (LONG_FACTOR if long_run else 1)
    seed = random.randrange(2**32)
    print(f"[crash] random seed {seed}")
    rng = random.Random(seed)
    tally = Tally(f"blob write {BLOB_SIZE >> 20} MiB, {url.split(':')[0]} {case.options}")
    duration = 0.0
    outcomes = {"old": 0, "new": 0}
    previous: int | None = None  # the round whose value the key holds
    for rnd in range(rounds):
        child = Child(url, "blob", rnd, BLOB_SIZE, case.child_options)
        duration = _kill_inside_call(child, rnd, rounds, rng, duration)
        completed = any(line.startswith("done") for line in child.lines)
        tally.rounds += 1
        tally.acknowledged += completed
        if case.sqlite_file:
            _check_sqlite_file(url)
        with _reopen(url, case) as store:
            value = store.get("blob", None)
            if completed:
                assert value == blob_bytes(rnd, BLOB_SIZE), f"round {rnd}: acknowledged, lost"
            if value is None:
                assert previous is None, f"round {rnd}: the old value vanished"
            else:
                held = next((r for r in (rnd, previous) if r is not None
                             and value == blob_bytes(r, BLOB_SIZE)), None)  # fmt: skip
                assert held is not None, f"round {rnd}: a torn or mixed value"
                assert store.info("blob").size == BLOB_SIZE
                outcomes["new" if held == rnd else "old"] += held is not None
                previous = held
    tally.notes.update(outcomes, write_ms=round(duration * 1000))
    tally.report()
