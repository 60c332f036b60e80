"""satchel.compat.dff: DataFlux Func's documented DFF.STORE examples, run on satchel.

Each documented example runs on SQLite and memory; then the conventions DataFlux Func
has (default scope, ``expires``/``expire``, ``mget`` Nones, ``*``/``?`` patterns) and the
differences satchel keeps on purpose (types kept, expired keys free for ``not_exists``,
no substring matches).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

import satchel
from satchel.compat import dff as DFF
from satchel.compat.dff import DFFStore

SHORT = 0.05  # seconds to live; tests sleep a little longer


@pytest.fixture(autouse=True)
def _private_default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Never touch the user's data dir: the default store is a file in tmp_path."""
    monkeypatch.setenv("SATCHEL_URL", f"sqlite:///{tmp_path}/default.db")
    DFF.STORE.close()
    yield
    DFF.STORE.close()


@pytest.fixture(params=["sqlite", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/dff.db"
    return f"memory://compat-dff-{uuid.uuid4().hex}"


@pytest.fixture
def base(url: str) -> Iterator[satchel.Store]:
    """A plain satchel Store on the same data as `store`, to look behind the adapter."""
    with satchel.open(url) as s:
        yield s


@pytest.fixture
def store(url: str, base: satchel.Store) -> Iterator[DFFStore]:
    """DFF.STORE's twin on `url` (its own connection; `base` keeps memory:// data alive)."""
    s = DFFStore(url)
    yield s
    s.close()


# -- the documented examples ------------------------------------------------------------------


def test_set_and_get(store: DFFStore) -> None:
    store.set("user:user-001", {"name": "User A"}, scope="users")
    assert store.get("user:user-001", scope="users") == {"name": "User A"}


def test_mset(store: DFFStore) -> None:
    data = {"user:user-001": {"name": "User A"}, "user:user-002": {"name": "User B"}}
    store.mset(data, scope="users")
    assert store.getall(scope="users") == data


def test_keys(store: DFFStore) -> None:
    store.set("user:user-001", {"name": "User A"}, scope="users")
    store.set("user:user-002", {"name": "User B"}, scope="users")
    assert store.keys("user:user-*", scope="users") == ["user:user-001", "user:user-002"]


def test_keys_without_scope_uses_the_same_default_as_set(store: DFFStore) -> None:
    # The documented keys() example leaves scope out; it then reads the script's scope.
    store.set("user:user-001", {"name": "User A"})
    store.set("user:user-002", {"name": "User B"})
    assert store.keys("user:user-*") == ["user:user-001", "user:user-002"]
    assert store.keys("user:user-*", scope="users") == []


def test_mget(store: DFFStore) -> None:
    store.set("user:user-001", {"name": "User A"}, scope="users")
    store.set("user:user-002", {"name": "User B"}, scope="users")
    assert store.mget(["user:user-001", "user:user-002"], scope="users") == {
        "user:user-001": {"name": "User A"},
        "user:user-002": {"name": "User B"},
    }


def test_getall(store: DFFStore) -> None:
    store.set("user:user-001", {"name": "User A"}, scope="users")
    store.set("user:user-002", {"name": "User B"}, scope="users")
    assert store.getall(scope="users") == {
        "user:user-001": {"name": "User A"},
        "user:user-002": {"name": "User B"},
    }


def test_get_pattern(store: DFFStore) -> None:
    store.set("user:user-001", {"name": "User A"}, scope="users")
    store.set("user:user-002", {"name": "User B"}, scope="users")
    assert store.get_pattern("*-001", scope="users") == {"user:user-001": {"name": "User A"}}


def test_delete(store: DFFStore) -> None:
    store.set("user:user-001", {"name": "User A"}, scope="users")
    assert store.delete("user:user-001", scope="users") is True
    assert store.get("user:user-001", scope="users") is None
    assert store.delete("user:user-001", scope="users") is False


def test_delete_pattern(store: DFFStore) -> None:
    store.set("user:user-001", {"name": "User A"}, scope="users")
    store.set("user:user-002", {"name": "User B"}, scope="users")
    assert store.delete_pattern("*:user-001", scope="users") == 1
    assert store.keys(scope="users") == ["user:user-002"]


def test_the_module_store_is_dff_store(tmp_path: Path) -> None:
    """``from satchel.compat import dff as DFF`` then the documented ``DFF.STORE`` calls."""
    DFF.STORE.set("user:user-001", {"name": "User A"}, scope="users")
    assert DFF.STORE.get("user:user-001", scope="users") == {"name": "User A"}
    DFF.STORE.close()  # the next call opens the default store again: the data persisted
    assert DFF.STORE.getall(scope="users") == {"user:user-001": {"name": "User A"}}
    with satchel.open(f"sqlite:///{tmp_path}/default.db", scope="users") as plain:
        assert plain.get("user:user-001") == {"name": "User A"}


# -- DataFlux Func's conventions --------------------------------------------------------------


def test_get_returns_none_for_a_missing_key(store: DFFStore) -> None:
    assert store.get("nope", scope="users") is None
    assert store("nope", scope="users") is None
    store.set("k", 1, scope="users")
    assert store("k", scope="users") == 1  # DFF.STORE(key) is get(key)


def test_mget_gives_none_for_missing_keys_and_takes_one_key(store: DFFStore) -> None:
    store.set("a", 1)
    assert store.mget(["b", "a"]) == {"b": None, "a": 1}
    assert store.mget("a") == {"a": 1}
    assert store.mget([]) == {}


def test_scopes_are_namespaces(store: DFFStore) -> None:
    store.set("k", "in a", scope="a")
    store.set("k", "in b", scope="b")
    assert store.get("k", scope="a") == "in a"
    assert store.get("k", scope="b") == "in b"
    store.delete_pattern(scope="a")
    assert store.getall(scope="a") == {}
    assert store.getall(scope="b") == {"k": "in b"}


def test_default_scope_is_the_calling_module(store: DFFStore, base: satchel.Store) -> None:
    store.set("greeting", "hi")
    assert base.scope(__name__).get("greeting") == "hi"
    assert store.getall() == {"greeting": "hi"}
    assert store.getall(scope=__name__) == {"greeting": "hi"}


def test_default_scope_can_be_chosen(url: str, base: satchel.Store) -> None:
    store = DFFStore(store=base, scope="jobs")
    store.set("k", 1)
    assert base.scope("jobs").get("k") == 1
    store.close()  # a given store is not ours to close
    assert base.scope("jobs").get("k") == 1


def test_default_scope_of_scripts_and_imported_modules(tmp_path: Path) -> None:
    """``python job.py`` and ``python -m job`` write scope "job"; a module it imports, its name."""
    (tmp_path / "tasks.py").write_text(
        "from satchel.compat import dff as DFF\ndef run():\n    DFF.STORE.set('from_tasks', 1)\n"
    )
    (tmp_path / "job.py").write_text(
        "import sys\n"
        "from satchel.compat import dff as DFF\n"
        "import tasks\n"
        "DFF.STORE.set(sys.argv[1], 1)\n"
        "tasks.run()\n"
        "DFF.STORE.close()\n"
    )
    db = tmp_path / "scripts.db"
    env = {**os.environ, "SATCHEL_URL": f"sqlite:///{db}"}
    for command in (["job.py", "as_file"], ["-m", "job", "as_module"]):
        subprocess.run([sys.executable, *command], cwd=tmp_path, env=env, check=True, timeout=60)
    with satchel.open(f"sqlite:///{db}") as plain:
        assert plain.scopes() == ["job", "tasks"]
        assert sorted(plain.scope("job").keys()) == ["as_file", "as_module"]
        assert list(plain.scope("tasks").keys()) == ["from_tasks"]


@pytest.mark.parametrize("argument", ["expires", "expire"])
def test_expires_or_expire_in_seconds(store: DFFStore, argument: str) -> None:
    store.set("short", 1, **{argument: SHORT})
    store.mset({"short2": 2}, **{argument: SHORT})
    store.set("long", 3, **{argument: 600})
    assert store.mget(["short", "short2", "long"]) == {"short": 1, "short2": 2, "long": 3}
    time.sleep(SHORT + 0.05)
    assert store.mget(["short", "short2", "long"]) == {"short": None, "short2": None, "long": 3}
    assert store.keys() == ["long"]


def test_expires_zero_or_none_means_never(store: DFFStore, base: satchel.Store) -> None:
    store.set("a", 1, expires=0)
    store.set("b", 1, expires=None, expire=None)
    store.set("c", 1, expires=0, expire=600)  # DFF: `expires or expire`
    view = base.scope(__name__)
    assert view.ttl("a") is None
    assert view.ttl("b") is None
    assert 590 < (view.ttl("c") or 0) <= 600


def test_not_exists(store: DFFStore) -> None:
    assert store.set("k", "first", not_exists=True) is True
    assert store.set("k", "second", not_exists=True) is False
    assert store.get("k") == "first"
    assert store.mset({"k": "third", "new": 1}, not_exists=True) == 1
    assert store.getall() == {"k": "first", "new": 1}


def test_star_and_question_mark_are_the_wildcards(store: DFFStore) -> None:
    keys = ["a1", "a22", "a[1]", "a[1]x", "a\\b", "a%b", "a_b", "axb"]
    store.mset(dict.fromkeys(keys, 0))
    assert store.keys("a?") == ["a1"]
    assert store.keys("a[1]*") == ["a[1]", "a[1]x"]  # "[" is a plain character in DFF
    assert store.keys("a\\*") == ["a\\b"]  # and so is a backslash
    assert store.keys("a%b") == ["a%b"]  # % and _ are not SQL wildcards here
    assert store.keys("a_b") == ["a_b"]
    assert store.get_pattern("a?b") == {"a%b": 0, "a\\b": 0, "a_b": 0, "axb": 0}
    assert store.delete_pattern("a[1]") == 1
    assert store.keys("a[1]*") == ["a[1]x"]


def test_bad_input_is_a_satchel_error(store: DFFStore) -> None:
    with pytest.raises(satchel.InvalidInput):
        store.set("", 1)
    with pytest.raises(satchel.InvalidInputType):
        store.get(42)  # type: ignore[arg-type]
    with pytest.raises(satchel.InvalidInput):
        store.set("k", 1, scope="x" * 300)
    with pytest.raises(satchel.UnsupportedValue):
        store.set("k", object())
    assert store.getall() == {}


# -- satchel's behaviour, on purpose ----------------------------------------------------------


def test_values_keep_their_types(store: DFFStore) -> None:
    # DataFlux Func stores JSON: tuples would come back as lists, datetimes not at all.
    value = {
        "point": (1, 2),
        "when": dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC),
        "tags": {"a", "b"},
        "raw": b"\x00\xff",
        "price": Decimal("9.99"),
        1: "int key",
    }
    store.set("v", value)
    got = store.get("v")
    assert got == value
    assert type(got["point"]) is tuple
    assert store.mget(["v"])["v"] == value
    assert store.getall()["v"] == value


def test_an_expired_key_is_free_for_not_exists(store: DFFStore) -> None:
    store.set("lock", "old", expires=SHORT)
    time.sleep(SHORT + 0.05)
    assert store.set("lock", "new", not_exists=True) is True
    assert store.get("lock") == "new"
    store.mset({"lock2": "old"}, expires=SHORT)
    time.sleep(SHORT + 0.05)
    assert store.mset({"lock2": "new"}, not_exists=True) == 1
    assert store.get("lock2") == "new"


def test_a_pattern_without_star_is_one_exact_key(store: DFFStore) -> None:
    store.set("user:user-001", 1)
    store.set("user", 2)
    assert store.keys("user") == ["user"]
    assert store.keys("user-001") == []
    assert store.get_pattern("user-001") == {}
    assert store.delete_pattern("user:") == 0
    assert store.delete_pattern("user") == 1
    assert store.keys() == ["user:user-001"]


def test_data_is_plain_satchel_data(store: DFFStore, base: satchel.Store) -> None:
    store.set("user:user-001", {"name": "User A"}, scope="users")
    assert base.scope("users").get("user:user-001") == {"name": "User A"}
    base.scope("users").set("user:user-002", ("from", "satchel"))
    assert store.get("user:user-002", scope="users") == ("from", "satchel")
