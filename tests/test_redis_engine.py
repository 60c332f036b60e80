"""Redis-specific behaviour: key layout, native expiry, MATCH escaping, the cluster,
round trips, errors and options.

Tests taking the `url` fixture run on plain Redis and on the session's Redis Cluster;
`_name` spells out the key layout independently of the engine. The tests that count
commands or stop a server use a private redis-server (started from the binary on a free
port), so nothing else talking to Redis disturbs them.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from redis.connection import AbstractConnection
from redis.crc import key_slot

import satchel
import support_redis
from conftest import ENGINES, require_service
from satchel._backends.base import EventState, Put
from satchel._backends.redis import BLOBS_MIGRATED, LAYOUT, RedisBackend, open_redis
from satchel._blobs import Manifest
from satchel._codecs import get_codec
from satchel._keys import compile_pattern

PASSWORD = "s3cret-pw-9f4e"


@pytest.fixture(params=["redis", "redis-cluster"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    fresh = ENGINES[request.param](tmp_path)
    yield fresh
    support_redis.drop(fresh)


@pytest.fixture
def cluster_url(tmp_path: Path) -> Iterator[str]:
    fresh = support_redis.fresh_cluster_url(tmp_path)
    yield fresh
    support_redis.drop(fresh)


@pytest.fixture(scope="module")
def private_port() -> Iterator[int]:
    """A redis-server of this module's own, with a password."""
    server = support_redis.LocalServers(1, args=["--requirepass", PASSWORD])
    try:
        port = server.start()[0]
    except RuntimeError as exc:
        require_service("redis-server", f"could not start one: {exc}")
    yield port
    server.stop()


@pytest.fixture
def private(private_port: int) -> Iterator[tuple[satchel.Store, redis.Redis]]:
    """A store on the private server, and a raw client of that server."""
    raw = redis.Redis(port=private_port, password=PASSWORD)
    raw.flushall()
    store = satchel.open(f"redis://:{PASSWORD}@127.0.0.1:{private_port}/0")
    yield store, raw
    store.close()
    raw.close()


def _raw(url: str) -> redis.Redis | RedisCluster:
    return support_redis.client_for(url)


def _name(url: str, scope: str, key: str) -> bytes:
    encoded = scope.encode()
    return b"%s%d:%s:%s" % (
        support_redis.prefix_of(url).encode(),
        len(encoded),
        encoded,
        key.encode(),
    )


def _names(url: str) -> list[bytes]:
    """The Redis keys under the prefix but ``~layout`` (see test_..._migrated_at_open)."""
    prefix = support_redis.prefix_of(url)  # t-<hex>: needs no escaping
    names = _raw(url).scan_iter(match=f"{prefix}*", count=1000)
    return sorted(name for name in names if name != f"{prefix}~layout".encode())


# --- key layout ----------------------------------------------------------------------------


def test_scope_and_key_never_collide_in_redis(url: str) -> None:
    with satchel.open(url) as store:
        store.scope("x").set("a:b", 1)
        store.scope("x:a").set("b", 2)
        assert _names(url) == sorted([_name(url, "x", "a:b"), _name(url, "x:a", "b")])
        assert store.scope("x").get("a:b") == 1
        assert store.scope("x:a").get("b") == 2
        assert list(store.scope("x").keys()) == ["a:b"]
        assert list(store.scope("x:a").keys()) == ["b"]
        store.scope("x").clear()
        assert store.scope("x:a").get("b") == 2
        assert store.scopes() == ["x:a"]


def test_each_record_is_one_hash_with_its_metadata(url: str) -> None:
    with satchel.open(url, codec="raw") as store:
        store.set("k", b"v1")
        store.set("k", b"v2")
        fields = _raw(url).hgetall(_name(url, "default", "k"))
    assert sorted(fields) == [b"created_at", b"updated_at", b"value", b"version"]
    assert fields[b"version"] == b"2"
    assert fields[b"value"].endswith(b"v2")
    assert float(fields[b"created_at"]) <= float(fields[b"updated_at"])


def test_scope_length_counts_utf8_bytes(url: str) -> None:
    with satchel.open(url, scope="é") as store:
        store.set("k\n{}", 1)
        assert _names(url) == [_name(url, "é", "k\n{}")]
        assert b":2:\xc3\xa9:" in _names(url)[0]
        assert store.scopes() == ["é"]


def test_other_keys_under_the_prefix_are_not_scopes(url: str) -> None:
    prefix = support_redis.prefix_of(url)
    _raw(url).set(f"{prefix}junk", "x")
    _raw(url).set(f"{prefix}9:short", "x")
    with satchel.open(url) as store:
        store.set("k", 1)
        assert store.scopes() == ["default"]


def test_glob_characters_in_prefix_and_scope_are_literal(url: str) -> None:
    base, plain = url.rsplit("prefix=", 1)
    other_url = f"{base}prefix={plain[:-1]}a:"
    globbing_url = f"{base}prefix={plain[:-1]}[ab]:"  # unescaped, it would match "...a:"
    try:
        with satchel.open(other_url) as other, satchel.open(globbing_url) as store:
            other.set("k", 1)
            other.scope("ab").set("k", 1)
            store.set("mine", 2)
            store.scope("a?").set("q", 3)
            assert list(store.keys()) == ["mine"]
            assert store.scopes() == ["a?", "default"]
            assert list(store.scope("a?").keys()) == ["q"]
            store.clear()
            store.scope("a?").clear()
            assert store.scopes() == []
            assert other.get("k") == 1
            assert other.scope("ab").get("k") == 1
    finally:
        support_redis.drop(other_url)
        support_redis.drop(globbing_url)


# --- expiry --------------------------------------------------------------------------------


def test_redis_expires_records_natively(url: str) -> None:
    raw = _raw(url)
    name = _name(url, "default", "k")
    with satchel.open(url) as store:
        store.set("k", 1, ttl=0.3)
        assert 0 < raw.pttl(name) <= 301
        assert raw.hget(name, "expires_at") is not None
        store.set("k", 2)  # no ttl now: no native expiry either
        assert raw.pttl(name) == -1
        assert raw.hget(name, "expires_at") is None
        store.touch("k", 0.3)
        assert 0 < raw.pttl(name) <= 301
        store.set_many({"a": 1, "b": 2}, ttl=0.3)
        assert all(0 < raw.pttl(_name(url, "default", k)) <= 301 for k in "ab")
        deadline = time.monotonic() + 5
        names = [name, _name(url, "default", "a"), _name(url, "default", "b")]
        while any(raw.exists(n) for n in names) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(raw.exists(n) for n in names)
        assert len(store) == 0


def test_the_clients_clock_decides_expiry(url: str) -> None:
    """A record Redis still holds (no native expiry left) is absent once expires_at passed."""
    raw = _raw(url)
    name = _name(url, "default", "k")
    with satchel.open(url) as store:
        store.set("k", 1, ttl=0.05)
        raw.persist(name)
        time.sleep(0.1)
        assert raw.exists(name)
        assert store.get("k", None) is None
        assert "k" not in store
        assert store.get_many(["k"]) == {}
        assert list(store.keys()) == []
        assert len(store) == 0
        assert store.scopes() == []
        assert store.delete("k") is False
        assert store.touch("k", 10) is False
        assert store.set("k", 2, if_absent=True) is True
        assert store.info("k").version == 1


# --- patterns ------------------------------------------------------------------------------

SPECIAL_KEYS = [
    "a{b}c",
    "a{b}d",
    "{x}",
    "{x}y",
    "x}{",
    "a*b",
    "a*c",
    "a?b",
    "a[1]",
    "a[2]",
    "a\\b",
    "a\\c",
    "a]",
    "é*\n",
    "plain",
]
SPECIAL_PATTERNS = [
    "*",
    "a{*",
    "a{b}*",
    "{*",
    "{x}*",
    "x}*",
    "a\\**",
    "a\\?*",
    "a\\[*",
    "a\\\\*",
    "a]*",
    "é\\**",
    "a\\[?]",
    "a*",
    "[{x]*",
    "*}",
]


def test_keys_with_glob_and_hash_tag_characters(url: str) -> None:
    with satchel.open(url) as store:
        store.set_many({key: key for key in SPECIAL_KEYS})
        for pattern in SPECIAL_PATTERNS:
            compiled = compile_pattern(pattern)
            expected = sorted(key for key in SPECIAL_KEYS if compiled.matches(key))
            assert list(store.keys(pattern)) == expected, pattern
            assert [v for _, v in store.items(pattern)] == expected, pattern
        assert store.delete_matching("a\\**") == 2
        assert store.get_many(SPECIAL_KEYS) == {
            k: k for k in SPECIAL_KEYS if not k.startswith("a*")
        }


# --- the cluster ---------------------------------------------------------------------------


def test_ten_thousand_keys_spread_over_the_cluster(cluster_url: str) -> None:
    keys = [str(i) for i in range(10_000)]
    random.Random(4).shuffle(keys)
    raw = _raw(cluster_url)
    assert isinstance(raw, RedisCluster)
    names = [_name(cluster_url, "default", key) for key in keys]
    assert len({key_slot(name) for name in names}) > 5000
    with satchel.open(cluster_url) as store:
        assert store.set_many({key: int(key) for key in keys}) == 10_000
        nodes = {raw.get_node_from_key(name).name for name in names}
        assert len(nodes) == 3
        assert len(_names(cluster_url)) == 10_000
        assert list(store.keys()) == sorted(keys)
        assert len(store) == 10_000
        assert store.get_many(keys[:3000]) == {key: int(key) for key in keys[:3000]}
        assert list(store.keys("12*")) == sorted(k for k in keys if k.startswith("12"))
        assert store.set_many({key: 0 for key in keys[:5000]}, if_absent=True) == 0
        assert store.delete_many(keys[:5000]) == 5000
        assert len(store) == 5000


def _flush_scripts(raw: RedisCluster) -> None:
    for node in raw.get_primaries():
        raw.get_redis_connection(node).script_flush()


def test_cluster_batches_survive_lost_scripts(cluster_url: str) -> None:
    raw = _raw(cluster_url)
    assert isinstance(raw, RedisCluster)
    with satchel.open(cluster_url) as store:
        store.set_many({f"k{i}": i for i in range(100)})
        _flush_scripts(raw)
        assert store.set_many({f"k{i}": -i for i in range(100)}) == 100
        _flush_scripts(raw)
        assert store.delete_many([f"k{i}" for i in range(50)]) == 50
        _flush_scripts(raw)
        assert store.set("k99", "x") is False
        assert len(store) == 50


def test_keys_with_the_same_hash_tag_share_a_slot(cluster_url: str) -> None:
    with satchel.open(cluster_url) as store:
        store.set_many({"{user1}:a": 1, "{user1}:b": 2, "{user2}:a": 3})
        assert list(store.keys("{user1}*")) == ["{user1}:a", "{user1}:b"]
        assert store.pop("{user1}:a") == 1
        assert store.incr("{user1}:b") == 3


# --- processes ---------------------------------------------------------------------------


def _incr_worker(url: str, count: int) -> int:
    with satchel.open(url) as store:
        for _ in range(count):
            store.incr("counter")
        return int(store.get("counter"))


def test_incr_from_processes_loses_nothing(url: str) -> None:
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.starmap_async(_incr_worker, [(url, 150)] * 4).get(timeout=60)
    assert max(results) == 600
    with satchel.open(url) as store:
        assert store.get("counter") == 600


def _incr_inherited(store: satchel.Store, results: Any) -> None:
    results.put(store.incr("k"))


def test_store_opened_before_fork_works_in_the_child(url: str) -> None:
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    with satchel.open(url) as store:
        store.set("k", 1)
        child = ctx.Process(target=_incr_inherited, args=(store, results))  # not pickled
        child.start()
        try:
            assert results.get(timeout=30) == 2
        finally:
            child.join(30)
        assert child.exitcode == 0
        assert store.incr("k") == 3


# --- round trips ---------------------------------------------------------------------------


def _count_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count socket writes of whole commands (a pipeline is one) from now on."""
    sent = [0]
    original = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        sent[0] += 1
        original(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sent


def _commands(raw: redis.Redis) -> dict[str, int]:
    stats = raw.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}


OPERATIONS: dict[str, Callable[[satchel.Store], object]] = {
    "set": lambda s: s.set("k", 1),
    "set ttl": lambda s: s.set("k", 1, ttl=60),
    "set if_absent": lambda s: s.set("new", 1, if_absent=True),
    "get": lambda s: s.get("k"),
    "exists": lambda s: s.exists("k"),
    "info": lambda s: s.info("k"),
    "touch": lambda s: s.touch("k", 30),
    "compare_and_set": lambda s: s.compare_and_set("k", s.info("k").version + 99, 2),
    "delete": lambda s: s.delete("k"),
    "get_many 100": lambda s: s.get_many([f"b{i}" for i in range(100)]),
    "set_many 100": lambda s: s.set_many({f"b{i}": i for i in range(100)}),
    "delete_many 100": lambda s: s.delete_many([f"b{i}" for i in range(100)]),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_one_round_trip_per_operation(
    private: tuple[satchel.Store, redis.Redis], operation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, raw = private
    store.set("k", 0)  # connect, load the scripts
    store.set_many({f"b{i}": i for i in range(100)})
    run = OPERATIONS[operation]
    if operation == "compare_and_set":  # info() is one more round trip: do it before
        version = store.info("k").version
        run = lambda s: s.compare_and_set("k", version + 99, 2)  # noqa: E731
    before = _commands(raw)
    sent = _count_round_trips(monkeypatch)
    run(store)
    round_trips = sent[0]
    monkeypatch.undo()
    after = _commands(raw)
    assert round_trips == 1
    # On the server: one command from the client (a script's own calls count too, under
    # their names; INFO is the raw client's).
    top_level = {"evalsha", "hmget", "info"}
    delta = {name: after[name] - before.get(name, 0) for name in after if name in top_level}
    delta["info"] -= 1
    if operation == "get":  # the hot path: a plain HMGET
        assert delta == {"info": 0, "hmget": 1, "evalsha": 0}
    else:
        assert delta["evalsha"] == 1


def test_iterating_pages_scans_once(private: tuple[satchel.Store, redis.Redis]) -> None:
    store, raw = private
    store.set_many({f"k{i:05d}": i for i in range(2600)})  # six pages of 500
    full = _commands(raw).get("scan", 0)
    len(store)
    one_scan = _commands(raw)["scan"] - full
    before = _commands(raw)["scan"]
    assert sum(1 for _ in store) == 2600
    assert _commands(raw)["scan"] - before == one_scan
    store.set("k99999", 0)  # a new iteration scans again and sees it
    assert list(store.keys())[-1] == "k99999"


# --- errors --------------------------------------------------------------------------------


def _assert_hidden(exc: BaseException, secret: str) -> None:
    assert secret not in str(exc)
    assert secret not in repr(exc)
    cause = exc.__cause__
    while cause is not None:
        assert secret not in str(cause)
        cause = cause.__cause__


def test_wrong_password_is_an_error_without_the_password(tmp_path: Path) -> None:
    support_redis.fresh_url(tmp_path)  # skips (or fails in CI) without the server
    base = support_redis.BASE_URL.split("://", 1)[1]  # its default user takes any password
    with pytest.raises(satchel.SatchelError) as caught:
        satchel.open(f"redis://someone:{PASSWORD}@{base}")
    _assert_hidden(caught.value, PASSWORD)
    assert caught.value.engine is not None and "someone:***@" in caught.value.engine


def test_wrong_password_for_the_default_user(private_port: int) -> None:
    wrong = PASSWORD[::-1]
    with pytest.raises(satchel.SatchelError) as caught:
        satchel.open(f"redis://:{wrong}@127.0.0.1:{private_port}/0")
    _assert_hidden(caught.value, wrong)
    with pytest.raises(satchel.SatchelError) as caught:
        satchel.open(f"redis://127.0.0.1:{private_port}/0")
    assert "refused the credentials" in str(caught.value)


def test_unparsable_url_shows_no_piece_of_the_password() -> None:
    with pytest.raises(satchel.InvalidInput) as caught:
        satchel.open("redis://:s3c/r3t@127.0.0.1:6379/0")  # "/" not percent-encoded
    _assert_hidden(caught.value, "s3c")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # not shown


def test_wrong_password_on_the_cluster(cluster_url: str) -> None:
    nodes = cluster_url.split("://", 1)[1].split("?")[0]
    with pytest.raises(satchel.SatchelError) as caught:
        satchel.open(f"redis+cluster://someone:{PASSWORD}@{nodes}")
    _assert_hidden(caught.value, PASSWORD)


def test_server_gone_is_unavailable_without_the_password() -> None:
    server = support_redis.LocalServers(1, args=["--requirepass", PASSWORD])
    try:
        port = server.start()[0]
    except RuntimeError as exc:
        require_service("redis-server", f"could not start one: {exc}")
    try:
        store = satchel.open(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
        store.set("k", 1)
        assert PASSWORD not in store.url
    finally:
        server.stop()
    for operation in (lambda: store.get("k"), lambda: store.set("k", 2), lambda: len(store)):
        with pytest.raises(satchel.BackendUnavailable) as caught:
            operation()
        _assert_hidden(caught.value, PASSWORD)
    store.close()


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
def test_unreachable_port_is_unavailable_at_once(scheme: str) -> None:
    port = support_redis.free_port()
    start = time.monotonic()
    with pytest.raises(satchel.BackendUnavailable) as caught:
        satchel.open(f"{scheme}://127.0.0.1:{port}", socket_timeout=1)
    assert time.monotonic() - start < 3
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_socket_timeout_bounds_a_server_that_never_answers() -> None:
    with socket.socket() as silent:  # accepts connections (in the backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(satchel.BackendUnavailable):
            satchel.open(f"redis://127.0.0.1:{port}/0", socket_timeout=0.3)
        assert time.monotonic() - start < 3


def test_foreign_data_at_a_key_is_reported(url: str) -> None:
    raw = _raw(url)
    raw.set(_name(url, "default", "str"), "someone else's")
    raw.hset(_name(url, "default", "hash"), mapping={"version": "x", "value": "y"})
    with satchel.open(url) as store:
        for key in ("str", "hash"):
            with pytest.raises(satchel.SatchelError) as caught:
                store.get(key)
            assert caught.value.key == key
            with pytest.raises(satchel.SatchelError):
                store.set(key, 1)
            with pytest.raises(satchel.SatchelError):
                store.delete(key)
        with pytest.raises(satchel.SatchelError):
            list(store.keys())
        with pytest.raises(satchel.SatchelError):
            len(store)
        assert raw.get(_name(url, "default", "str")) == b"someone else's"


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"colour": "blue"},
        {"max_connections": 0},
        {"max_connections": "many"},
        {"socket_timeout": "-1"},
        {"socket_timeout": True},
        {"prefix": 3},
    ],
)
def test_bad_options_are_invalid_input(options: dict[str, Any]) -> None:
    with pytest.raises(satchel.InvalidInput):
        satchel.open(support_redis.BASE_URL, **options)


def test_unknown_option_in_the_query_is_invalid_input() -> None:
    with pytest.raises(satchel.InvalidInput, match="colour"):
        satchel.open(f"{support_redis.BASE_URL}?colour=blue")


def test_options_in_the_query(url: str) -> None:
    with satchel.open(f"{url}&max_connections=4&socket_timeout=5") as store:
        store.set("k", 1)
        assert store.get("k") == 1


def test_threads_wait_for_a_small_pool(url: str) -> None:
    with satchel.open(f"{url}&max_connections=2") as store:

        def work() -> None:
            for _ in range(50):
                store.incr("counter")

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert store.get("counter") == 400


def test_database_number_from_the_path(tmp_path: Path) -> None:
    url = support_redis.fresh_url(tmp_path)
    base, query = url.split("?")
    other = f"{base.rsplit('/', 1)[0]}/3?{query}"
    try:
        with satchel.open(other) as store:
            store.set("k", 1)
        assert _raw(other).exists(_name(other, "default", "k"))
        assert not _raw(url).exists(_name(url, "default", "k"))
    finally:
        support_redis.drop(other)


def test_close_is_idempotent(url: str) -> None:
    backend = open_redis(url.split("?")[0], {"prefix": support_redis.prefix_of(url)})
    backend.close()
    backend.close()


# --- large values, time series, old event sequences (backend level) ---------------------------


@pytest.fixture
def backend(url: str) -> Iterator[RedisBackend]:
    opened = open_redis(url.split("?")[0], {"prefix": support_redis.prefix_of(url)})
    yield opened
    opened.close()


def _fields(url: str, key: str, scope: str = "default") -> list[bytes]:
    return sorted(_raw(url).hkeys(_name(url, scope, key)))


META = [b"created_at", b"updated_at", b"value", b"version"]


def _old_record(url: str, key: str, fields: dict[str, bytes | str | float]) -> None:
    """A hash as releases before 0.2 wrote it (no native expiry: staging had lifted it)."""
    _raw(url).hset(_name(url, "default", key), mapping=fields)  # type: ignore[arg-type]


def _old_sequence(
    url: str,
    scope: str,
    name: str,
    events: list[tuple[int, int, bytes]],
    head: EventState,
    base: EventState | None = None,
) -> None:
    """Sequence `name` of `scope` as releases before 0.2 kept it: one hash of its events
    (seq, ms, data), its last seq, head and base (see the engine's module docstring)."""
    encoded = scope.encode()
    fields = {b"%d" % seq: b"%d %s" % (ms, data) for seq, ms, data in events}
    fields |= {b"seq": b"%d" % head[0], b"head": b"%d %d %s" % head}
    if base is not None:
        fields |= {b"bseq": b"%d" % base[0], b"base": b"%d %d %s" % base}
    prefix = support_redis.prefix_of(url).encode()
    _raw(url).hset(b"%s~e:%d:%s:%s" % (prefix, len(encoded), encoded, name.encode()),
                   mapping=fields)  # type: ignore[arg-type]  # fmt: skip


def test_large_values_kept_the_old_way_are_migrated_at_open(url: str) -> None:
    raw, prefix = _raw(url), support_redis.prefix_of(url)
    now = time.time()
    data = bytes(random.Random(7).randbytes(2500))
    manifest = Manifest("b1", len(data), 1000, 3, hashlib.blake2b(data, digest_size=16).hexdigest(),
                        False).pack()  # fmt: skip
    record = {"created_at": now, "updated_at": now, "version": 1}
    chunks = {f"#b1:{i}": data[i * 1000 : (i + 1) * 1000] for i in range(3)}
    staged = {"#b2:0": b"staged", "staging": "1"}  # another writer's, still at work
    # committed, with a staged chunk beside it (so no native expiry)
    _old_record(url, "big", {**record, "value": manifest, "expires_at": now + 600, "blob": "b1",
                             "chunks": 3, **chunks, **staged})  # fmt: skip
    _old_record(url, "only-staged", {"#b3:0": b"staged", "staging": "1"})  # no record: goes
    _old_record(url, "expired", {**record, "value": manifest, "expires_at": now - 1,
                                 "blob": "b9", "chunks": 3, **chunks})  # fmt: skip
    _old_record(url, "plain", {**record, "value": b"\x00\x00\x00plain"})
    raw.zadd(f"{prefix}~staged", {b"2:b3" + _name(url, "default", "only-staged"): now})
    with satchel.open(url) as store:
        assert store.get("big") == data
        with store.open_blob("big") as f:
            assert f.read() == data
        assert "expired" not in store and "only-staged" not in store
        assert sorted(store.keys()) == ["big", "plain"]
    # the old storage is gone; the record and its expiry are as they were
    assert _fields(url, "big") == sorted([*META, b"expires_at"])
    assert _fields(url, "expired") == sorted([*META, b"expires_at"])
    assert _fields(url, "plain") == META
    assert 590_000 < raw.pttl(_name(url, "default", "big")) <= 600_000
    assert not raw.exists(_name(url, "default", "only-staged"), f"{prefix}~staged")
    assert raw.hget(_name(url, "default\x1fb", "c/b1/00000002"), "value") == data[2000:]
    assert raw.get(f"{prefix}~layout") == LAYOUT
    backend = open_redis(url.split("?")[0], {"prefix": prefix})
    try:
        assert backend.legacy_blobs(time.time()) is None  # the marker: one GET
    finally:
        backend.close()
    with satchel.open(url) as store:  # and it reads the same after the migration
        assert store.get("big") == data
        store["big"] = b"small"
        assert store["big"] == b"small"


def test_a_new_store_is_marked_as_holding_no_old_storage(url: str) -> None:
    with satchel.open(url) as store:
        store.set("k", b"v")
        store.events("log").apply({"a": 1})
        assert store._shared.backend.legacy_sequences() is None
    assert _raw(url).get(f"{support_redis.prefix_of(url)}~layout") == LAYOUT
    assert _fields(url, "k") == META
    assert not any(b"~e:" in name for name in _names(url))


def test_record_scans_never_see_series_or_events(url: str, backend: RedisBackend) -> None:
    now = time.time()
    for scope in ("default", "s"):
        backend.apply(scope, [Put("rec", b"v")], now)
        backend.series_put(scope, "temps", [(1, b"a")])
        _old_sequence(url, scope, "log", [(1, 5, b"e")], (1, 5, b"head"))
    backend.drop_legacy_blobs()  # the marker: not a scope either
    backend.series_put("only-series", "temps", [(1, b"a")])
    _old_sequence(url, "only-events", "log", [(1, 5, b"e")], (1, 5, b"head"))
    assert backend.scopes(now) == ["default", "s"]
    assert [r.key for r in backend.scan("default", "", None, 100, now)] == ["rec"]
    assert backend.count("default", now) == 1 and backend.count("only-series", now) == 0
    backend.clear("s")
    assert backend.series_names("s") == ["temps"] and backend.series_count("s", "temps") == 1
    assert backend.legacy_states("s", "log") == ((1, 5, b"head"), None)
    assert backend.scopes(now) == ["default"]
    with satchel.open(url) as store:
        assert list(store.keys()) == ["rec"] and len(store) == 1


INT64 = [-(2**63), -(2**53) - 1, -(2**53), -1, 0, 1, 2**53, 2**53 + 1, 2**63 - 1]


def test_series_keep_the_whole_int64_range_exactly(url: str, backend: RedisBackend) -> None:
    points = [(t, b"v%d" % t) for t in INT64]
    backend.series_put("default", "s", random.Random(1).sample(points, len(points)))
    assert backend.series_range("default", "s", None, None, 100) == points
    assert backend.series_range("default", "s", None, None, 100, reverse=True) == points[::-1]
    assert backend.series_range("default", "s", -1, 2**53 + 1, 100) == points[3:7]
    assert backend.series_range("default", "s", -1, 2**53 + 1, 2, reverse=True) == points[5:7][::-1]
    assert backend.series_range("default", "s", 2**63 - 1, None, 9) == points[-1:]
    assert backend.series_range("default", "s", None, -(2**63), 9) == []
    assert backend.series_range("default", "s", None, None, 0) == []
    assert backend.series_range("default", "s", None, None, 3, values=False) == [
        (t, b"") for t, _ in points[:3]
    ]
    backend.series_put("default", "s", [(2**63 - 1, b""), (-(2**63), b"new\x00 {x}")])
    assert backend.series_range("default", "s", None, None, 100) == [
        (-(2**63), b"new\x00 {x}"),
        *points[1:-1],
        (2**63 - 1, b""),
    ]
    assert backend.series_count("default", "s") == len(INT64)
    assert backend.series_remove("default", "s", 2**53, None) == 3
    assert backend.series_remove("default", "s", None, -(2**53)) == 2
    assert backend.series_range("default", "s", None, None, 100) == points[2:6]
    assert backend.series_remove("default", "s", None, None) == 4
    assert backend.series_names("default") == []
    with pytest.raises(satchel.InvalidInput):
        backend.series_put("default", "s", [(2**63, b"")])


def test_series_and_sequence_names_with_braces_and_globs(url: str, backend: RedisBackend) -> None:
    names = ["{a}", "a}{b", "*", "x?[1]\\", "é\n", "{"]
    for scope in ("{t}", "t*"):
        for name in names:
            backend.series_put(scope, name, [(1, b"a"), (2, b"b")])
            _old_sequence(url, scope, name, [(2, 2, b"b")], (2, 2, b"h"), (1, 1, b"base"))
        assert backend.series_names(scope) == sorted(names)
        for name in names:
            assert backend.series_range(scope, name, 2, None, 9) == [(2, b"b")]
            assert backend.legacy_events(scope, name, 0, 9) == [(2, 2, b"b")]
    assert backend.series_names("t") == []
    assert backend.legacy_sequences() == sorted((s, n) for s in ("{t}", "t*") for n in names)


def test_series_put_of_ten_thousand_points_is_one_round_trip(
    private_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = open_redis(f"redis://:{PASSWORD}@127.0.0.1:{private_port}/0", {})
    try:
        backend.series_count("default", "warm")  # connect
        points = [(t * 1000, b"%d" % t) for t in range(10_000)]
        sent = _count_round_trips(monkeypatch)
        backend.series_put("default", "rt", points)
        assert sent[0] == 1
        monkeypatch.undo()
        assert backend.series_count("default", "rt") == 10_000
        assert backend.series_range("default", "rt", 5_000_000, None, 2) == points[5000:5002]
    finally:
        _raw_private = redis.Redis(port=private_port, password=PASSWORD)
        _raw_private.flushall()  # the private server of this module only
        _raw_private.close()
        backend.close()


def test_event_sequences_kept_the_old_way_are_migrated_at_open(url: str) -> None:
    raw, layout = _raw(url), f"{support_redis.prefix_of(url)}~layout"
    with satchel.open(url) as store:
        store.set("k", 1)
    raw.set(layout, BLOBS_MIGRATED)  # as code that still kept sequences in hashes left it
    typed = get_codec("typed")
    rows = [(n, 1000 + n, typed.encode([f"i{n}", "set", n])) for n in range(1, 7)]
    state = {n: typed.encode({f"i{i}": i for i in range(1, n + 1)}) for n in range(1, 7)}
    odd = "a}{b*\n"  # a name with braces, a glob and a newline, in a scope with a hash tag
    _old_sequence(url, "default", "log", rows[2:], (6, 1006, state[6]), (2, 1002, state[2]))
    _old_sequence(url, "{t}", odd, rows[:2], (2, 1002, state[2]))
    backend = open_redis(url.split("?")[0], {"prefix": support_redis.prefix_of(url)})
    try:
        assert backend.legacy_blobs(time.time()) is None  # the mark spares that scan only
        assert backend.legacy_sequences() == [("default", "log"), ("{t}", odd)]
        assert backend.legacy_states("default", "log") == (
            (6, 1006, state[6]), (2, 1002, state[2])
        )  # fmt: skip
        assert backend.legacy_events("default", "log", 0, 10) == rows[2:]
        assert backend.legacy_events("default", "log", 3, 2) == rows[3:5]
        assert backend.legacy_events("default", "log", 6, 10) == []
        assert backend.legacy_states("{t}", odd) == ((2, 1002, state[2]), None)
        assert backend.legacy_events("{t}", odd, 0, 1) == rows[:1]
        assert backend.legacy_states("default", "nope") == (None, None)
        assert backend.legacy_events("default", "nope", 0, 10) == []
    finally:
        backend.close()
    with satchel.open(url) as store:
        log = store.events("log")
        assert len(log) == 6 and log.current() == {f"i{n}": n for n in range(1, 7)}
        assert [e.seq for e in log.history()] == [3, 4, 5, 6]
        assert log.at(1003) == {"i1": 1, "i2": 2, "i3": 3}
        assert store.scope("{t}").events(odd).current() == {"i1": 1, "i2": 2}
        assert log.apply({"i7": 7})["i7"] == 7 and [e.seq for e in log.history()][-1] == 7
        backend = store._shared.backend
        assert backend.legacy_sequences() is None  # from the mark alone
        backend.drop_legacy_events()  # idempotent
        assert backend.legacy_sequences() is None
        assert backend.legacy_events("default", "log", 0, 10) == []  # gone: nothing to read
    assert raw.get(layout) == LAYOUT
    assert not any(b"~e:" in name for name in _names(url))


def test_the_layout_mark_says_what_is_migrated(url: str, backend: RedisBackend) -> None:
    raw, layout = _raw(url), f"{support_redis.prefix_of(url)}~layout"
    _old_sequence(url, "default", "log", [(1, 5, b"e")], (1, 5, b"head"))
    assert backend.legacy_blobs(time.time()) == []
    backend.drop_legacy_events()  # large values are not migrated yet: no mark
    assert raw.get(layout) is None and backend.legacy_sequences() == []
    backend.drop_legacy_blobs()
    assert raw.get(layout) == BLOBS_MIGRATED and backend.legacy_sequences() == []
    backend.drop_legacy_events()
    assert raw.get(layout) == LAYOUT and backend.legacy_sequences() is None
    backend.drop_legacy_blobs()  # never lowers the mark
    assert raw.get(layout) == LAYOUT and backend.legacy_blobs(time.time()) is None


def test_cluster_reloads_lost_scripts_for_the_new_primitives(
    cluster_url: str,
) -> None:
    raw = _raw(cluster_url)
    assert isinstance(raw, RedisCluster)
    backend = open_redis(
        cluster_url.split("?")[0], {"prefix": support_redis.prefix_of(cluster_url)}
    )
    try:
        _flush_scripts(raw)
        backend.series_put("default", "s", [(1, b"a")])
        _flush_scripts(raw)
        assert backend.legacy_blobs(time.time()) == []
        _flush_scripts(raw)
        backend.drop_legacy_blobs()
        _flush_scripts(raw)
        assert backend.apply("default", [Put("k", b"v")], time.time()) == 1
    finally:
        backend.close()
