"""satchel.compat.dify: Dify's documented plugin storage examples, and the quota.

The examples of Dify's "Persistent Storage" page run on SQLite and memory; then the
isolation per (tenant, plugin), the 256-byte key limit, bytes-only values, and the quota:
exact accounting, nothing stored when it is exceeded, and never exceeded by writers
racing in threads or processes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import satchel
from satchel.compat.dify import (
    DEFAULT_QUOTA,
    USAGE_KEY,
    PluginStorage,
    QuotaExceeded,
    scope_name,
)

TENANT = "6f1c7e0a-0000-4000-8000-000000000001"
PLUGIN = "langgenius/demo"


@pytest.fixture(autouse=True)
def _private_default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's data dir: the default store is a file in tmp_path."""
    monkeypatch.setenv("SATCHEL_URL", f"sqlite:///{tmp_path}/default.db")


@pytest.fixture(params=["sqlite", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/dify.db"
    return f"memory://compat-dify-{uuid.uuid4().hex}"


@pytest.fixture
def base(url: str) -> Iterator[satchel.Store]:
    """A plain Store on the same data (it also keeps memory:// data alive between opens)."""
    with satchel.open(url) as s:
        yield s


@pytest.fixture
def make(url: str, base: satchel.Store) -> Iterator[Callable[..., PluginStorage]]:
    """make(tenant=, plugin=, quota=) -> PluginStorage on `url`, closed at teardown."""
    made: list[PluginStorage] = []

    def make_(tenant: str = TENANT, plugin: str = PLUGIN, **options: Any) -> PluginStorage:
        storage = PluginStorage(tenant, plugin, url, **options)
        made.append(storage)
        return storage

    yield make_
    for storage in made:
        storage.close()


@pytest.fixture
def storage(make: Callable[..., PluginStorage]) -> PluginStorage:
    return make()


def stored_bytes(base: satchel.Store, tenant: str = TENANT, plugin: str = PLUGIN) -> int:
    """The bytes of values a plugin keeps, summed in one read (one scan page: a snapshot)."""
    view = base.scope(scope_name(tenant, plugin))
    return sum(len(value) for key, value in view.items() if key != USAGE_KEY)


# -- the documented examples ------------------------------------------------------------------


def test_storing_different_data_types(
    storage: PluginStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("image.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(2000) + b"\xff\xd9")

    # String data (must convert to bytes)
    storage.set("user_name", "John Doe".encode("utf-8"))  # noqa: UP012 (as documented)

    # JSON data
    user_data = {"name": "John", "age": 30, "preferences": ["AI", "NLP"]}
    storage.set("user_data", json.dumps(user_data).encode("utf-8"))

    # File data
    with open("image.jpg", "rb") as f:
        image_data = f.read()
    storage.set("profile_image", image_data)

    assert storage.get("profile_image") == image_data
    assert storage.usage == len(b"John Doe") + len(json.dumps(user_data)) + len(image_data)


def test_retrieving_and_converting_data(storage: PluginStorage) -> None:
    storage.set("user_name", "John Doe".encode("utf-8"))  # noqa: UP012 (as documented)
    storage.set("user_data", json.dumps({"preferences": ["AI", "NLP"]}).encode("utf-8"))

    name_bytes = storage.get("user_name")
    assert name_bytes
    name = name_bytes.decode("utf-8")
    assert name == "John Doe"

    user_data_bytes = storage.get("user_data")
    assert user_data_bytes
    user_data = json.loads(user_data_bytes.decode("utf-8"))
    assert user_data["preferences"] == ["AI", "NLP"]


def test_handle_missing_keys(storage: PluginStorage) -> None:
    assert storage.get("never set") is None
    assert storage.exist("never set") is False


def test_deleting_data(storage: PluginStorage) -> None:
    storage.set("token", b"secret")
    assert storage.exist("token") is True
    assert storage.delete("token") is None
    assert storage.get("token") is None
    assert storage.exist("token") is False
    storage.delete("token")  # deleting a missing key is no error
    assert storage.usage == 0


def test_empty_bytes_are_a_value(storage: PluginStorage) -> None:
    storage.set("empty", b"")
    assert storage.get("empty") == b""
    assert storage.exist("empty") is True


# -- isolation, keys, values ------------------------------------------------------------------


def test_each_tenant_and_plugin_has_its_own_storage(make: Callable[..., PluginStorage]) -> None:
    pairs = [(TENANT, PLUGIN), (TENANT, "other/plugin"), ("tenant-2", PLUGIN)]
    # Ids that would meet if the scope were "tenant:plugin":
    pairs += [("a:b", "c"), ("a", "b:c")]
    storages = [make(tenant, plugin) for tenant, plugin in pairs]
    for i, storage in enumerate(storages):
        storage.set("key", str(i).encode())
    assert [s.get("key") for s in storages] == [str(i).encode() for i in range(len(pairs))]
    storages[0].delete("key")
    assert [s.exist("key") for s in storages] == [False] + [True] * (len(pairs) - 1)


def test_the_data_is_in_a_scope_per_plugin(storage: PluginStorage, base: satchel.Store) -> None:
    storage.set("k", b"v")
    scope = scope_name(TENANT, PLUGIN)
    assert scope == f"dify:36:{TENANT}:{PLUGIN}"
    assert base.scope(scope).get("k") == b"v"
    assert base.scopes() == [scope]


def test_keys_up_to_256_bytes(storage: PluginStorage) -> None:
    for key in ["k" * 256, "é" * 128, "a/../b", "a//b", "a\\b"]:
        storage.set(key, b"ok")
        assert storage.get(key) == b"ok"
    for key in ["k" * 257, "é" * 129]:
        for method, args in [("set", (key, b"no")), ("get", (key,)), ("exist", (key,))]:
            with pytest.raises(ValueError) as info:
                getattr(storage, method)(*args)
            assert isinstance(info.value, satchel.InvalidInput)
            assert "256" in str(info.value)
            assert "dify:" in str(info.value)  # names the scope
        with pytest.raises(satchel.InvalidInput):
            storage.delete(key)
    with pytest.raises(satchel.InvalidInput):
        storage.set("", b"x")
    with pytest.raises(TypeError):
        storage.get(b"key")  # type: ignore[arg-type]


def test_the_usage_record_cannot_be_reached_as_a_key(storage: PluginStorage) -> None:
    storage.set("k", b"12345")
    with pytest.raises(satchel.InvalidInput):
        storage.set(USAGE_KEY, b"0")
    with pytest.raises(satchel.InvalidInput):
        storage.delete(USAGE_KEY)
    assert storage.usage == 5


@pytest.mark.parametrize("value", ["text", 42, None, bytearray(b"x"), memoryview(b"x"), [b"x"]])
def test_a_value_that_is_not_bytes_is_a_type_error(storage: PluginStorage, value: object) -> None:
    with pytest.raises(TypeError) as info:
        storage.set("k", value)  # type: ignore[arg-type]
    assert isinstance(info.value, satchel.SatchelError)
    assert storage.exist("k") is False
    assert storage.usage == 0


# -- the quota --------------------------------------------------------------------------------


def test_default_quota_is_100_mib(storage: PluginStorage) -> None:
    assert DEFAULT_QUOTA == 100 * 1024 * 1024
    assert storage.quota == DEFAULT_QUOTA


def test_a_write_over_the_quota_stores_nothing(make: Callable[..., PluginStorage]) -> None:
    storage = make(quota=10)
    storage.set("a", b"1234567890")  # exactly the quota
    assert storage.usage == 10
    with pytest.raises(QuotaExceeded) as info:
        storage.set("b", b"1")
    error = info.value
    assert isinstance(error, satchel.SatchelError)
    assert (error.quota, error.used, error.needed) == (10, 10, 1)
    assert error.key == "b"
    assert error.scope == scope_name(TENANT, PLUGIN)
    assert "quota exceeded" in str(error) and "'b'" in str(error)
    assert storage.exist("b") is False
    assert storage.usage == 10


def test_a_value_larger_than_the_quota(make: Callable[..., PluginStorage]) -> None:
    storage = make(quota=10)
    with pytest.raises(QuotaExceeded):
        storage.set("big", bytes(11))
    assert storage.get("big") is None
    assert storage.usage == 0


def test_overwriting_counts_the_difference(
    make: Callable[..., PluginStorage], base: satchel.Store
) -> None:
    storage = make(quota=10)
    storage.set("a", bytes(8))
    storage.set("a", bytes(10))  # +2: fits
    assert storage.usage == 10
    with pytest.raises(QuotaExceeded):
        storage.set("a", bytes(11))
    assert storage.get("a") == bytes(10)  # the old value is kept
    storage.set("a", bytes(3))  # shrinking frees bytes
    assert storage.usage == 3
    storage.set("b", bytes(7))
    assert storage.usage == 10 == stored_bytes(base)


def test_deleting_gives_bytes_back(make: Callable[..., PluginStorage]) -> None:
    storage = make(quota=10)
    storage.set("a", bytes(6))
    with pytest.raises(QuotaExceeded):
        storage.set("b", bytes(6))
    storage.delete("a")
    assert storage.usage == 0
    storage.set("b", bytes(6))
    assert storage.usage == 6


def test_the_quota_is_per_plugin_and_shared_by_every_opener(
    make: Callable[..., PluginStorage],
) -> None:
    first, second = make(quota=10), make(quota=10)
    neighbour = make(plugin="other/plugin", quota=10)
    first.set("a", bytes(6))
    with pytest.raises(QuotaExceeded):
        second.set("b", bytes(6))
    neighbour.set("b", bytes(10))
    assert second.usage == 6
    assert neighbour.usage == 10


def test_a_zero_quota_allows_only_empty_values(make: Callable[..., PluginStorage]) -> None:
    storage = make(quota=0)
    storage.set("empty", b"")
    with pytest.raises(QuotaExceeded):
        storage.set("one", b"x")


@pytest.mark.parametrize("quota", [-1, 1.5, "10", True])
def test_a_bad_quota_is_refused(url: str, base: satchel.Store, quota: object) -> None:
    with pytest.raises(ValueError):
        PluginStorage(TENANT, PLUGIN, url, quota=quota)  # type: ignore[arg-type]


@pytest.mark.parametrize("lease", [0, -1, "30", None])
def test_a_bad_lease_is_refused(url: str, base: satchel.Store, lease: object) -> None:
    with pytest.raises(ValueError):
        PluginStorage(TENANT, PLUGIN, url, lease=lease)  # type: ignore[arg-type]


def test_clearing_the_scope_resets_the_count(
    make: Callable[..., PluginStorage], base: satchel.Store
) -> None:
    storage = make(quota=10)
    storage.set("a", bytes(10))
    base.scope(scope_name(TENANT, PLUGIN)).clear()
    assert storage.usage == 0
    storage.set("a", bytes(10))


def test_a_shared_store_stays_open(base: satchel.Store) -> None:
    storage = PluginStorage(TENANT, PLUGIN, store=base, quota=10)
    storage.set("k", b"12345")  # base has the typed codec: it keeps bytes as they are
    storage.close()
    assert base.scope(scope_name(TENANT, PLUGIN)).get("k") == b"12345"
    with PluginStorage(TENANT, PLUGIN, store=base, quota=10) as again:
        assert again.usage == 5
    with pytest.raises(TypeError):
        PluginStorage(TENANT, PLUGIN, "memory://", store=base)


def test_a_deleted_and_recreated_key_is_measured_again(
    make: Callable[..., PluginStorage], base: satchel.Store
) -> None:
    """A re-created key starts again at version 1, so no write may trust an old version."""
    storage = make(quota=1000)
    storage.set("k", bytes(300))
    storage.delete("k")
    storage.set("k", bytes(100))
    storage.set("k", bytes(200))
    assert storage.usage == 200 == stored_bytes(base)


def test_readers_do_not_wait_for_a_writer(make: Callable[..., PluginStorage]) -> None:
    storage, writer = make(), make(lease=60.0)
    storage.set("k", b"v")
    writer._acquire()  # holds the lease, as a writer in the middle of a write
    started = time.monotonic()
    assert storage.get("k") == b"v"
    assert storage.exist("k") is True
    assert storage.usage == 1
    assert time.monotonic() - started < 1


def test_a_writer_that_died_holding_the_lease(
    make: Callable[..., PluginStorage], base: satchel.Store
) -> None:
    dead, alive = make(lease=0.2), make()
    dead._acquire()  # takes the lease and never gives it back ...
    base.scope(scope_name(TENANT, PLUGIN)).set("orphan", bytes(7))  # ... after one write
    started = time.monotonic()
    alive.set("k", bytes(3))  # waits for the lease to run out, then recounts
    assert time.monotonic() - started >= 0.1
    assert alive.usage == 10 == stored_bytes(base)


def test_a_writer_that_outlived_its_lease_recounts(
    make: Callable[..., PluginStorage], base: satchel.Store
) -> None:
    slow, other = make(lease=0.1), make()
    with slow._held() as hold:
        time.sleep(0.2)  # frozen past its lease: `other` takes over
        other.set("k", bytes(5))
        base.scope(scope_name(TENANT, PLUGIN)).set("late", bytes(4))  # slow's write lands
        hold.used += 4
    # Giving the lease back, slow finds it lost and counts again.
    assert other.usage == 9 == stored_bytes(base)


class _FailsAfterWriting:
    """A Store stand-in whose `set` writes and then reports a lost connection."""

    def __init__(self, store: satchel.Store) -> None:
        self._store = store

    def set(self, *args: Any) -> bool:
        self._store.set(*args)
        raise satchel.BackendUnavailable("connection lost after the write was sent")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_an_error_after_a_write_is_counted_again(
    make: Callable[..., PluginStorage], base: satchel.Store
) -> None:
    storage = make(quota=100)
    storage.set("a", bytes(10))
    storage._store = _FailsAfterWriting(storage._store)  # type: ignore[assignment]
    with pytest.raises(satchel.BackendUnavailable):
        storage.set("b", bytes(20))
    assert storage.usage == 30 == stored_bytes(base)


def test_recount(make: Callable[..., PluginStorage], base: satchel.Store) -> None:
    storage = make()
    storage.set("a", bytes(10))
    base.scope(scope_name(TENANT, PLUGIN)).set("around", bytes(5))  # bypassing the quota
    assert storage.usage == 10
    assert storage.recount() == 15 == storage.usage


# -- the quota under concurrency --------------------------------------------------------------


def _churn(url: str, plugin: str, quota: int, seed: int, rounds: int, start: Any = None) -> int:
    """Random writes, overwrites and deletes on 40 keys; returns how many were refused.

    `start` (a barrier, if given) lets every writer begin at the same moment.
    """
    rng = random.Random(seed)
    refused = 0
    with PluginStorage(TENANT, plugin, url, quota=quota) as storage:
        if start is not None:
            start.wait(timeout=60)
        for _ in range(rounds):
            key = f"k{rng.randrange(40)}"
            if rng.random() < 0.2:
                storage.delete(key)
                continue
            try:
                storage.set(key, bytes(rng.randrange(1, 500)))
            except QuotaExceeded:
                refused += 1
    return refused


def _churn_process(
    url: str, plugin: str, quota: int, seed: int, rounds: int, start: Any, results: Any
) -> None:
    results.put(_churn(url, plugin, quota, seed, rounds, start))


class _Monitor(threading.Thread):
    """Sums the stored bytes of a plugin again and again until stopped; keeps the maximum."""

    def __init__(self, url: str, plugin: str) -> None:
        super().__init__(daemon=True)
        self.url, self.plugin = url, plugin
        self.stop = threading.Event()
        self.highest = 0
        self.samples = 0

    def run(self) -> None:
        with satchel.open(self.url) as store:
            while not self.stop.is_set():
                self.highest = max(self.highest, stored_bytes(store, plugin=self.plugin))
                self.samples += 1


@pytest.fixture
def _switch_threads_often() -> Iterator[None]:
    """Let the interpreter switch threads every few bytecodes, so that they interleave."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("_switch_threads_often")
def test_threads_writing_near_the_quota_never_pass_it(url: str, base: satchel.Store) -> None:
    quota = 4000  # about 16 values of the average size: most writes meet the limit
    plugin = "race/threads"
    monitor = _Monitor(url, plugin)
    monitor.start()
    refused: list[int] = []
    start = threading.Barrier(6)
    threads = [
        threading.Thread(
            target=lambda i=i: refused.append(_churn(url, plugin, quota, i, 300, start))
        )
        for i in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monitor.stop.set()
    monitor.join()
    assert len(refused) == 6 and sum(refused) > 0  # the quota was really in the way
    assert monitor.samples > 0 and monitor.highest <= quota
    with PluginStorage(TENANT, plugin, url, quota=quota) as storage:
        assert storage.usage == stored_bytes(base, plugin=plugin) <= quota


def test_processes_writing_near_the_quota_never_pass_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/race.db"
    quota, plugin = 4000, "race/processes"
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(4), ctx.Queue()
    workers = [
        ctx.Process(target=_churn_process, args=(url, plugin, quota, seed, 300, start, results))
        for seed in range(4)
    ]
    monitor = _Monitor(url, plugin)
    monitor.start()
    for worker in workers:
        worker.start()
    refused = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    monitor.stop.set()
    monitor.join()
    assert sum(refused) > 0
    assert monitor.samples > 0 and monitor.highest <= quota
    with satchel.open(url) as store, PluginStorage(TENANT, plugin, store=store) as storage:
        assert storage.usage == stored_bytes(store, plugin=plugin) <= quota


def _one_write_at_the_barrier(
    url: str, plugin_prefix: str, rounds: int, barrier: Any, me: int, results: Any
) -> None:
    won = []
    with satchel.open(url, codec="raw") as store:
        for round_ in range(rounds):
            storage = PluginStorage(TENANT, f"{plugin_prefix}{round_}", store=store, quota=100)
            barrier.wait(timeout=60)
            try:
                storage.set(f"writer-{me}", bytes(60))
                won.append(round_)
            except QuotaExceeded:
                pass
    results.put(won)


def test_two_writers_under_the_quota_cannot_both_pass_it(tmp_path: Path) -> None:
    """Each of 3 processes writes 60 of 100 bytes at once: every round exactly one wins."""
    url = f"sqlite:///{tmp_path}/barrier.db"
    rounds, writers = 15, 3
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(writers), ctx.Queue()
    procs = [
        ctx.Process(
            target=_one_write_at_the_barrier, args=(url, "race/", rounds, barrier, i, results)
        )
        for i in range(writers)
    ]
    for proc in procs:
        proc.start()
    wins = [round_ for _ in procs for round_ in results.get(timeout=120)]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert sorted(wins) == list(range(rounds))
    with satchel.open(url) as store:
        for round_ in range(rounds):
            assert stored_bytes(store, plugin=f"race/{round_}") == 60
