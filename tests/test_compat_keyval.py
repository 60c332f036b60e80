"""satchel.compat.keyval: django-keyval's documented examples, run on satchel.

Every example of the django-keyval description runs on SQLite and memory, then the
details it documents (set's return value, KeyError, ignore_keyerror, flush_all on the
class and on an instance, NameError after disconnect) and what satchel keeps on purpose
(types kept; no pickle unless asked for).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import pytest

import satchel
from satchel.compat.keyval import SCOPE_PREFIX, Disconnected, KeyVal


@pytest.fixture(autouse=True)
def _private_default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's data dir: the default store is a file in tmp_path."""
    monkeypatch.setenv("SATCHEL_URL", f"sqlite:///{tmp_path}/default.db")


@pytest.fixture(params=["sqlite", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/keyval.db"
    return f"memory://compat-keyval-{uuid.uuid4().hex}"


@pytest.fixture
def base(url: str) -> Iterator[satchel.Store]:
    """A plain Store on the same data (it also keeps memory:// data alive between opens)."""
    with satchel.open(url) as s:
        yield s


@pytest.fixture
def connect(url: str, base: satchel.Store) -> Iterator[Callable[[str], KeyVal]]:
    """connect(name) -> KeyVal on `url`; every one is disconnected at teardown."""
    made: list[KeyVal] = []

    def make(name: str) -> KeyVal:
        kv = KeyVal(name, url)
        made.append(kv)
        return kv

    yield make
    for kv in made:
        kv.disconnect()


# -- the documented examples ------------------------------------------------------------------


def test_typical_usage(connect: Callable[[str], KeyVal]) -> None:
    kv = connect("store_name_1")
    key1, value1, key2 = "key1", {"n": 1}, "key1"
    kv.set(key1, value1)
    value2 = kv.get(key2)
    assert value2 == value1
    kv.disconnect()  # prevents further access
    with pytest.raises(NameError):
        kv.get(key2)


def test_connect_is_the_constructor(url: str, base: satchel.Store) -> None:
    kv = KeyVal.connect("store_name", url)
    kv.set("k", 1)
    other = KeyVal("store_name", url)
    assert other.get("k") == 1
    assert isinstance(kv, KeyVal)
    kv.disconnect("store_name")  # the documented form names the store
    other.disconnect()


def test_set_returns_whether_the_key_was_new(connect: Callable[[str], KeyVal]) -> None:
    kv = connect("s")
    assert kv.set("key", "value") is True
    assert kv.set("key", "other") is False  # silently overwritten
    assert kv.get("key") == "other"


def test_get_raises_for_a_missing_key(connect: Callable[[str], KeyVal]) -> None:
    kv = connect("s")
    with pytest.raises(KeyError):
        kv.get("missing")
    with pytest.raises(satchel.KeyNotFound):
        kv.get("missing")


def test_get_default(connect: Callable[[str], KeyVal]) -> None:
    kv = connect("s")
    assert kv.get_default("missing", "default_value") == "default_value"
    assert kv.get_default("missing") is None
    kv.set("k", 0)
    assert kv.get_default("k", "default_value") == 0


def test_pop_and_pop_default(connect: Callable[[str], KeyVal]) -> None:
    kv = connect("s")
    kv.set("k", [1, 2])
    assert kv.pop("k") == [1, 2]
    assert kv.exists("k") is False
    with pytest.raises(KeyError):
        kv.pop("k")
    assert kv.pop_default("k", "default_value") == "default_value"
    kv.set("k", "v")
    assert kv.pop_default("k", "default_value") == "v"
    assert kv.pop_default("k") is None


def test_exists(connect: Callable[[str], KeyVal]) -> None:
    kv = connect("s")
    assert not kv.exists("key")
    kv.set("key", None)  # a None value exists
    assert kv.exists("key")


def test_delete(connect: Callable[[str], KeyVal]) -> None:
    kv = connect("s")
    kv.set("key", 1)
    assert kv.delete("key") is True
    with pytest.raises(KeyError):
        kv.delete("key")
    deleted = kv.delete("key", ignore_keyerror=True)
    assert deleted is False
    kv.set("key", 1)
    assert kv.delete("key", ignore_keyerror=True) is True


def test_flush_deletes_one_store_name(connect: Callable[[str], KeyVal]) -> None:
    kv, other = connect("one"), connect("two")
    kv.set("a", 1)
    kv.set("b", 2)
    other.set("a", "kept")
    kv.flush()
    assert not kv.exists("a") and not kv.exists("b")
    assert other.get("a") == "kept"
    kv.flush()  # no error when the store name is empty


def test_flush_all_on_the_class(url: str, connect: Callable[[str], KeyVal]) -> None:
    kv, other = connect("one"), connect("two")
    kv.set("a", 1)
    other.set("a", 2)
    KeyVal.flush_all(url)
    assert not kv.exists("a")
    assert not other.exists("a")


def test_flush_all_on_the_default_store() -> None:
    kv = KeyVal("default_one")
    kv.set("a", 1)
    KeyVal.flush_all()
    assert not kv.exists("a")
    kv.disconnect()


def test_flush_all_on_an_instance_even_after_disconnect(
    url: str, connect: Callable[[str], KeyVal], base: satchel.Store
) -> None:
    kv, other = connect("one"), connect("two")
    kv.set("a", 1)
    other.set("a", 2)
    kv.flush_all()
    assert not other.exists("a")
    other.set("a", 3)
    kv.disconnect()
    kv.flush_all()  # the one method that works after disconnect
    assert not other.exists("a")


def test_flush_all_leaves_other_satchel_data_alone(
    connect: Callable[[str], KeyVal], base: satchel.Store
) -> None:
    base.set("not keyval", 1)
    base.scope("app").set("k", 2)
    connect("kv").set("k", 3)
    connect("kv").flush_all()
    assert base.get("not keyval") == 1
    assert base.scope("app").get("k") == 2
    assert base.scopes() == ["app", "default"]


def test_several_stores_connected_at_once(connect: Callable[[str], KeyVal]) -> None:
    first, second = connect("package_a"), connect("package_b")
    first.set("setting", "a")
    second.set("setting", "b")
    assert first.get("setting") == "a"
    assert second.get("setting") == "b"


@pytest.mark.parametrize(
    "call",
    [
        lambda kv: kv.set("k", 1),
        lambda kv: kv.get("k"),
        lambda kv: kv.get_default("k", 0),
        lambda kv: kv.pop("k"),
        lambda kv: kv.pop_default("k", 0),
        lambda kv: kv.exists("k"),
        lambda kv: kv.delete("k", ignore_keyerror=True),
        lambda kv: kv.flush(),
    ],
    ids=["set", "get", "get_default", "pop", "pop_default", "exists", "delete", "flush"],
)
def test_every_use_after_disconnect_is_a_name_error(
    connect: Callable[[str], KeyVal], call: Callable[[KeyVal], object]
) -> None:
    kv = connect("s")
    kv.set("k", 1)
    kv.disconnect()
    with pytest.raises(NameError) as info:
        call(kv)
    assert isinstance(info.value, Disconnected)
    assert isinstance(info.value, satchel.StoreClosed)
    assert "disconnected" in str(info.value)
    kv.disconnect()  # again: harmless


def test_disconnect_with_another_name_is_refused(connect: Callable[[str], KeyVal]) -> None:
    kv = connect("s")
    with pytest.raises(ValueError):
        kv.disconnect("other")
    assert kv.set("k", 1) is True  # still connected


def test_reconnect_after_disconnect(url: str, base: satchel.Store) -> None:
    kv = KeyVal("s", url)
    kv.set("k", "kept")
    kv.disconnect()
    again = KeyVal.connect("s", url)
    assert again.get("k") == "kept"
    again.disconnect()


# -- where the data lives ---------------------------------------------------------------------


def test_backed_by_the_default_store(tmp_path: Path) -> None:
    kv = KeyVal("settings")
    kv.set("theme", "dark")
    kv.disconnect()
    with satchel.open(f"sqlite:///{tmp_path}/default.db") as plain:
        assert plain.scope(SCOPE_PREFIX + "settings").get("theme") == "dark"


def test_a_given_store_is_shared_and_left_open(base: satchel.Store) -> None:
    kv = KeyVal("s", store=base)
    kv.set("k", 1)
    assert base.scope("keyval:s").get("k") == 1
    kv.disconnect()
    assert base.scope("keyval:s").get("k") == 1  # still open
    with pytest.raises(TypeError):
        KeyVal("s", "memory://", store=base)


def test_store_names_are_any_string(connect: Callable[[str], KeyVal]) -> None:
    for name in ["", "with space", "ünïcode/ and : colons", "x" * 248]:
        kv = connect(name)
        kv.set("k", name)
        assert kv.get("k") == name
    with pytest.raises(ValueError):
        KeyVal("x" * 249)
    with pytest.raises(TypeError):
        KeyVal(42)  # type: ignore[arg-type]


# -- satchel's behaviour, on purpose ----------------------------------------------------------


def test_values_keep_their_types(connect: Callable[[str], KeyVal]) -> None:
    kv = connect("s")
    value = {"when": dt.date(2024, 1, 2), "pair": (1, "a"), "set": frozenset({1})}
    kv.set("v", value)
    assert kv.get("v") == value
    assert type(kv.pop("v")["pair"]) is tuple


def test_arbitrary_objects_need_the_pickle_codec(url: str, base: satchel.Store) -> None:
    kv = KeyVal("s", url)
    with pytest.raises(TypeError):
        kv.set("f", Fraction(1, 3))
    assert not kv.exists("f")
    kv.disconnect()
    pickled = KeyVal("s", url, codec="pickle")
    pickled.set("f", Fraction(1, 3))
    assert pickled.get("f") == Fraction(1, 3)
    pickled.disconnect()


def test_keys_follow_satchel_rules(connect: Callable[[str], KeyVal]) -> None:
    kv = connect("s")
    with pytest.raises(ValueError):
        kv.set("", 1)
    with pytest.raises(TypeError):
        kv.set(1, 1)  # type: ignore[arg-type]
    kv.set("any key: with % and _ and *", 1)
    assert kv.get("any key: with % and _ and *") == 1
