"""Data written by earlier code still opens: stores captured on disk / in the database by
tests/fixtures/existing_data/make_fixtures.py (see expected.json for the commit) are
restored into a fresh place on each engine and read back, value by value.

SQLite: the file is copied; files: the tree is untarred; PostgreSQL: the pg_dump is run
into a fresh schema (dropped after); Redis: every key is RESTOREd under a fresh prefix
(deleted after). PostgreSQL and Redis skip when unreachable, or fail under
SATCHEL_REQUIRE_SERVICES=1 (see conftest.require_service).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pytest
import redis

import satchel
import support_postgres
import support_redis
from satchel import _exchange as exchange

FIXTURES = Path(__file__).parent / "fixtures" / "existing_data"
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text())
ENGINES = list(EXPECTED["engines"])
SCOPES = [store["scope"] for store in EXPECTED["engines"][ENGINES[0]]["stores"]]
TIME_TOLERANCE = 0.001  # seconds: stored times read back to about a millisecond


@dataclass
class Restored:
    engine: str
    url: str
    spec: dict[str, Any]  # expected.json's entry for the engine
    stores: dict[str, satchel.Store]  # scope -> the store, opened as it was written

    def store(self, scope: str) -> tuple[satchel.Store, dict[str, Any]]:
        spec = next(s for s in self.spec["stores"] if s["scope"] == scope)
        return self.stores[scope], spec


def _read_gz(name: str) -> bytes:
    return gzip.decompress((FIXTURES / name).read_bytes())


def _restore_sqlite(spec: dict[str, Any], tmp: Path) -> str:
    path = tmp / "restored.db"
    path.write_bytes(_read_gz(spec["fixture"]))
    return f"sqlite:///{path}"


def _restore_files(spec: dict[str, Any], tmp: Path) -> str:
    with tarfile.open(fileobj=io.BytesIO(_read_gz(spec["fixture"]))) as tar:
        tar.extractall(tmp, filter="data")
    return f"file://{tmp / spec['root']}"


def _restore_postgres(spec: dict[str, Any], url: str) -> None:
    schema = dict(parse_qsl(urlsplit(url).query))["schema"]
    text = _read_gz(spec["fixture"]).decode()
    # psql meta-commands (\restrict, \unrestrict) are not SQL; the schema gets its new name
    text = "\n".join(line for line in text.splitlines() if not line.startswith("\\"))
    text = re.sub(rf"\b{re.escape(spec['schema'])}\b", schema, text)
    with psycopg.connect(support_postgres.BASE_URL) as conn:
        conn.execute(text)  # no parameters: one simple query of many statements


def _restore_redis(spec: dict[str, Any], url: str) -> None:
    dump = json.loads(_read_gz(spec["fixture"]))
    old = dump["prefix"].encode()
    new = support_redis.prefix_of(url).encode()
    client = support_redis.client_for(url)
    now_ms = int(time.time() * 1000)
    for entry in dump["keys"]:
        name = bytes.fromhex(entry["name"])
        assert name.startswith(old), name
        name = new + name[len(old) :]
        # A key whose expiry has passed (Redis would have dropped it) is restored without
        # a native expiry: satchel's own check of its expires_at must hide it.
        expires = entry["pexpiretime"] if entry["pexpiretime"] > now_ms else 0
        try:
            client.restore(name, expires, bytes.fromhex(entry["dump"]), absttl=bool(expires))
        except redis.ResponseError as exc:
            if "payload version" not in str(exc).lower():
                raise
            _rebuild_redis_key(client, name, entry, expires)  # an older Redis than the dump's


def _rebuild_redis_key(client: Any, name: bytes, entry: dict[str, Any], expires_ms: int) -> None:
    if entry["type"] == "hash":
        client.hset(name, mapping={bytes.fromhex(f): bytes.fromhex(v) for f, v in entry["fields"]})
    else:
        client.zadd(name, {bytes.fromhex(m): score for m, score in entry["members"]})
    if expires_ms:
        client.pexpireat(name, expires_ms)


def _open(url: str, spec: dict[str, Any]) -> satchel.Store:
    options = dict(spec["options"])
    if options.get("encryption_key"):
        options["encryption_key"] = EXPECTED["passphrase"]
    return satchel.open(url, scope=spec["scope"], **options)


@pytest.fixture(scope="module", params=ENGINES)
def restored(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Restored]:
    engine: str = request.param
    spec = EXPECTED["engines"][engine]
    tmp = tmp_path_factory.mktemp(f"existing-{engine}")
    cleanup = None
    if engine == "sqlite":
        url = _restore_sqlite(spec, tmp)
    elif engine == "files":
        url = _restore_files(spec, tmp)
    elif engine == "postgresql":
        url = support_postgres.fresh_url(tmp)  # skips (or fails in CI) if unreachable
        cleanup = support_postgres.drop
    elif engine == "redis":
        url = support_redis.fresh_url(tmp)
        cleanup = support_redis.drop
    else:
        raise AssertionError(f"no restore for engine {engine}")
    stores: dict[str, satchel.Store] = {}
    try:
        if engine == "postgresql":
            _restore_postgres(spec, url)
        elif engine == "redis":
            _restore_redis(spec, url)
        for store_spec in spec["stores"]:
            stores[store_spec["scope"]] = _open(url, store_spec)
        yield Restored(engine, url, spec, stores)
    finally:
        for store in stores.values():
            store.close()
        if cleanup is not None:
            cleanup(url)


def _same(actual: Any, expected_json: Any) -> bool:
    """Equal values of the same types (typed JSON tells tuple from list, 1 from 1.0...)."""
    return exchange.dumps(actual) == exchange.dumps(exchange.from_json(expected_json))


def _digest(value: Any) -> str:
    return hashlib.sha256(exchange.dumps(value).encode()).hexdigest()


def _moment(value: Any) -> float | None:
    return None if value is None else value.timestamp()


def _close(actual: float | None, expected: float | None) -> bool:
    if actual is None or expected is None:
        return actual is expected
    return abs(actual - expected) <= TIME_TOLERANCE


def test_scopes(restored: Restored) -> None:
    assert restored.stores["default"].scopes() == restored.spec["scopes"]


@pytest.mark.parametrize("scope", SCOPES)
def test_values(restored: Restored, scope: str) -> None:
    store, spec = restored.store(scope)
    assert spec["values"]
    for key, want in spec["values"].items():
        value = store.get(key)
        assert _same(value, want["value"]), (key, value)
        info = store.info(key)
        got = {
            "version": info.version,
            "created_at": _moment(info.created_at),
            "updated_at": _moment(info.updated_at),
            "expires_at": _moment(info.expires_at),
        }
        for field in ("created_at", "updated_at", "expires_at"):
            assert _close(got[field], want[field]), (key, field, got[field], want[field])
        assert got["version"] == want["version"], key
    got_many = store.get_many(list(spec["values"]))
    assert sorted(got_many) == sorted(spec["values"])


@pytest.mark.parametrize("scope", SCOPES)
def test_keys_and_expiry(restored: Restored, scope: str) -> None:
    store, spec = restored.store(scope)
    assert [k for k in store.keys("*") if not k.startswith("item:")] == spec["keys"]
    assert len(store) == spec["len"]
    for key in spec.get("absent", []):
        assert key not in store
        assert store.get(key, None) is None
        assert list(store.keys(key)) == []
        with pytest.raises(satchel.KeyNotFound):
            store.ttl(key)
    far = spec["values"].get("ttl:2100")
    if far is not None:
        assert _close(far["expires_at"], EXPECTED["year_2100"])
        assert _close(_moment(store.info("ttl:2100").expires_at), far["expires_at"])
        left = store.ttl("ttl:2100")
        assert left is not None and abs(left - (far["expires_at"] - time.time())) < 60
    prefix = spec.get("prefix")
    if prefix is not None:
        items = [list(kv) for kv in store.items(prefix["pattern"])]
        assert len(items) == prefix["count"]
        assert _same(items[0], prefix["first"]) and _same(items[-1], prefix["last"])
        assert _digest(items) == prefix["sha256"]


@pytest.mark.parametrize("scope", SCOPES)
def test_blobs(restored: Restored, scope: str) -> None:
    store, spec = restored.store(scope)
    for key, want in spec["blobs"].items():
        digest, size = hashlib.sha256(), 0
        with store.open_blob(key) as f:
            while piece := f.read(100_000):  # streamed, a chunk held at a time
                digest.update(piece)
                size += len(piece)
            assert (size, digest.hexdigest()) == (want["size"], want["sha256"]), key
            f.seek(max(0, want["size"] - 1000))  # a seek across chunks reads the right bytes
            tail = f.read()
        whole = store.get(key)
        assert hashlib.sha256(whole).hexdigest() == want["sha256"], key
        assert tail == whole[-1000:]
        assert store.info(key).size == want["info_size"], key
        assert -(-len(whole) // EXPECTED["chunk_size"]) == want["chunks"]


@pytest.mark.parametrize("scope", SCOPES)
def test_series(restored: Restored, scope: str) -> None:
    store, spec = restored.store(scope)
    assert store.series_names() == spec["series_names"]
    for name, want in spec["series"].items():
        series = store.series(name)
        points = [list(p) for p in series]
        assert len(points) == want["count"] == len(series), name
        assert _same(points[0], want["first"]) and _same(points[-1], want["last"])
        assert _same(list(series.first() or ()), want["first"])
        assert _same(list(series.last() or ()), want["last"])
        assert _digest(points) == want["sha256"], name
        start, stop = points[1][0], points[-2][0]
        assert [list(p) for p in series.range(start, stop)] == points[1:-2]


@pytest.mark.parametrize("scope", SCOPES)
def test_events(restored: Restored, scope: str) -> None:
    store, spec = restored.store(scope)
    assert store.event_names() == spec["event_names"]
    for name, want in spec["events"].items():
        ev = store.events(name)
        assert len(ev) == want["len"], name
        assert _same(ev.current(), want["current"]), name
        history = [list(e) for e in ev.history()]
        assert len(history) == len(want["history"])
        for event, expected in zip(history, want["history"], strict=True):
            assert _same(event, expected), (name, event)
        for ts, state in want["at"]:
            if state is None:  # compacted away: at() refuses
                with pytest.raises(satchel.InvalidInput):
                    ev.at(ts)
            else:
                assert _same(ev.at(ts), state), (name, ts)


def test_encrypted_needs_the_key(restored: Restored) -> None:
    with satchel.open(restored.url, scope="secret") as plain:
        assert list(plain.keys("*")) == restored.store("secret")[1]["keys"]
        with pytest.raises(satchel.DecryptionError):
            plain.get("secret:value")


def test_a_read_only_open_reads_large_values_it_cannot_migrate(tmp_path: Path) -> None:
    """A read-only open writes nothing, so the old chunks are read where they are."""
    spec = EXPECTED["engines"]["sqlite"]
    url = _restore_sqlite(spec, tmp_path)
    store_spec = next(s for s in spec["stores"] if s["scope"] == "default")
    with _open(url + "?mode=ro", store_spec) as store:
        for key, want in store_spec["blobs"].items():
            assert hashlib.sha256(store.get(key)).hexdigest() == want["sha256"], key
    with _open(url, store_spec) as store:  # a writable open migrates them
        for key, want in store_spec["blobs"].items():
            assert hashlib.sha256(store.get(key)).hexdigest() == want["sha256"], key
