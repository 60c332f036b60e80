"""Shared fixtures: every contract test runs once per engine in ENGINES.

Adding an engine is one entry in ENGINES: a factory that gets the test's private
``tmp_path`` and returns the URL of an empty, isolated store (a fresh database file,
a fresh Redis database or key prefix, a fresh PostgreSQL schema, ...).

A factory for an engine that needs a running service (Redis, PostgreSQL, a satchel
server) calls ``require_service(name, reason)`` when the service cannot be reached:
that skips the test, unless ``SATCHEL_REQUIRE_SERVICES=1`` is set (as in CI), where a
missing service is a failure, never a silent skip.

Fixtures:

    engine        the Engine under test (parametrised; ids are the ENGINES keys)
    store_url     the URL of a fresh, empty store on that engine
    store         an open Store (scope "default") on store_url
    make_store    make_store(**options) -> another Store opened on store_url with
                  options (codec=..., scope=...). On an engine whose opens share no
                  data (Engine.shared False) this is a separate, empty store.
    open_store    open_store(**options) -> another Store on the SAME underlying data as
                  `store` (a second connection to the same SQLite file, a second open
                  of the same memory://name). On an engine whose opens share no data
                  it returns a scope view of `store` when that is equivalent, and
                  skips the test otherwise (e.g. another codec on the same data).

Every Store opened through these fixtures is closed at teardown.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

import satchel
import support_postgres
import support_redis
import support_server

__all__ = ["ENGINES", "Engine", "require_service"]


def require_service(name: str, reason: str) -> NoReturn:
    """Skip the current test because service `name` is unavailable.

    With SATCHEL_REQUIRE_SERVICES=1 in the environment this fails the test instead:
    a CI job that is meant to test an engine must not turn green by skipping it.
    """
    message = f"{name} is not available: {reason}"
    if os.environ.get("SATCHEL_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (SATCHEL_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


@dataclass(frozen=True)
class Engine:
    """One engine of the contract suite.

    url:        factory(tmp_path) -> URL of an empty, isolated store. It may call
                require_service() when its service is unreachable.
    shared:     two satchel.open(url) calls, both open, see the same data.
    persistent: the data outlives closing every Store that has it open.
    """

    name: str
    url: Callable[[Path], str]
    shared: bool = True
    persistent: bool = True
    cleanup: Callable[[str], None] | None = None  # removes what url() made, given the URL

    def __call__(self, tmp_path: Path) -> str:
        return self.url(tmp_path)


def _memory_url(tmp_path: Path) -> str:
    # memory://name is shared by every open of that name while one is open; a unique
    # name keeps tests apart and lets open_store() reach the same records.
    return f"memory://contract-{uuid.uuid4().hex}"


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/contract.db"


def _files_url(tmp_path: Path) -> str:
    return f"file://{tmp_path}/files-store"  # tmp_path is absolute: file:///tmp/...


ENGINES: dict[str, Engine] = {
    "memory": Engine("memory", _memory_url, persistent=False),
    "sqlite": Engine("sqlite", _sqlite_url),
    "files": Engine("files", _files_url),
    "postgres": Engine("postgres", support_postgres.fresh_url, cleanup=support_postgres.drop),
    "redis": Engine("redis", support_redis.fresh_url, cleanup=support_redis.drop),
    "redis-cluster": Engine(
        "redis-cluster", support_redis.fresh_cluster_url, cleanup=support_redis.drop
    ),
    # a new tenant of one satchel server per session (SQLite behind it): see support_server
    "http": Engine("http", support_server.fresh_url),
}


@pytest.fixture(params=list(ENGINES), ids=list(ENGINES))
def engine(request: pytest.FixtureRequest) -> Engine:
    return ENGINES[request.param]


@pytest.fixture
def store_url(engine: Engine, tmp_path: Path) -> Iterator[str]:
    url = engine(tmp_path)
    yield url
    if engine.cleanup is not None:
        engine.cleanup(url)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the long variants of the reliability suite (more rounds, more data)",
    )


@pytest.fixture
def long_run(request: pytest.FixtureRequest) -> bool:
    """True under ``pytest --long``: reliability tests then run their long variants."""
    return bool(request.config.getoption("--long"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    support_redis.stop_cluster()  # the test Redis Cluster, if one was started
    support_server.stop_session_server()  # the test satchel server, if one was started


@pytest.fixture
def _opened() -> Iterator[list[satchel.Store]]:
    """Every Store a fixture opened; closed (idempotently) at teardown."""
    opened: list[satchel.Store] = []
    yield opened
    errors: list[BaseException] = []
    for s in reversed(opened):
        try:
            s.close()
        except Exception as exc:  # close() must be idempotent; report, don't mask
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def store(store_url: str, _opened: list[satchel.Store]) -> satchel.Store:
    s = satchel.open(store_url)
    _opened.append(s)
    return s


@pytest.fixture
def make_store(store_url: str, _opened: list[satchel.Store]) -> Callable[..., satchel.Store]:
    def make(**options: Any) -> satchel.Store:
        s = satchel.open(store_url, **options)
        _opened.append(s)
        return s

    return make


@pytest.fixture
def open_store(
    engine: Engine,
    store: satchel.Store,
    store_url: str,
    _opened: list[satchel.Store],
) -> Callable[..., satchel.Store]:
    def open_(**options: Any) -> satchel.Store:
        if engine.shared:
            s = satchel.open(store_url, **options)
            _opened.append(s)
            return s
        scope = options.pop("scope", store.scope_name)
        if options:
            pytest.skip(
                f"{engine.name}: separate Store instances share no data, "
                f"cannot open the same data with {sorted(options)}"
            )
        return store.scope(scope)

    return open_
