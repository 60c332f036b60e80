"""What a key and a scope may be, and how scopes isolate data."""

from __future__ import annotations

import enum

import pytest

from satchel import InvalidInput, InvalidInputType

ODD_KEYS = [
    "😀",
    "a😀b",
    "line\nbreak",
    "cr\r\nlf",
    "tab\there",
    " leading space",
    "trailing space ",
    " ",
    "..",
    ".",
    "../../etc/passwd",
    "/",
    "a/b/c",
    "/abs",
    "C:\\windows",
    "%",
    "_",
    "*",
    "?",
    "[",
    "]",
    "a%_*?[]",
    "'; DROP TABLE x; --",
    "\u200b",
    "é",
    "e\u0301",  # not normalised: a different key than "é"
    "\U0010ffff",
    "\x7f",
    "\x01",
    "NUL-free",
]


@pytest.mark.parametrize("key", ODD_KEYS, ids=repr)
def test_odd_keys_round_trip(store, key):
    assert store.set(key, key) is True
    assert store.get(key) == key
    assert store.exists(key)
    assert key in store
    assert list(store.keys()) == [key]
    assert store.get_many([key]) == {key: key}
    assert store.info(key).key == key
    assert store.delete(key) is True
    assert not store.exists(key)


def test_odd_keys_are_distinct(store):
    store.set_many({k: i for i, k in enumerate(ODD_KEYS)})
    assert len(store) == len(ODD_KEYS)
    assert list(store.keys()) == sorted(ODD_KEYS)
    assert store.get_many(ODD_KEYS) == {k: i for i, k in enumerate(ODD_KEYS)}
    assert store.get("é") != store.get("e\u0301")


@pytest.mark.parametrize(
    "key",
    ["a" * 1024, "é" * 512, "😀" * 256, "a" * 1020 + "😀"],
    ids=["1024-ascii", "1024-2byte", "1024-4byte", "1020+4"],
)
def test_key_of_1024_utf8_bytes_is_accepted(store, key):
    assert len(key.encode()) == 1024
    store.set(key, 1)
    assert store.get(key) == 1
    assert list(store.keys()) == [key]


@pytest.mark.parametrize(
    "key",
    ["a" * 1025, "é" * 512 + "a", "😀" * 256 + "a", "a" * 1021 + "😀"],
    ids=["1025-ascii", "1025-2byte", "1025-4byte", "1021+4"],
)
def test_key_over_1024_utf8_bytes_is_rejected(store, key):
    assert len(key.encode()) > 1024
    with pytest.raises(InvalidInput) as exc_info:
        store.set(key, 1)
    assert not isinstance(exc_info.value, TypeError)
    assert len(store) == 0


BAD_KEYS = ["", "a\x00b", "\x00", "\ud800", "a\udfffb", "a" * 1025]
BAD_KEY_TYPES = [None, 1, 1.5, b"key", ("k",), ["k"]]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_invalid_keys_are_rejected_everywhere(store, key):
    store.set("ok", 1)
    calls = [
        lambda: store.set(key, 1),
        lambda: store.set(key, 1, if_absent=True),
        lambda: store.get(key),
        lambda: store.get(key, None),
        lambda: store.delete(key),
        lambda: store.exists(key),
        lambda: store.incr(key),
        lambda: store.pop(key, None),
        lambda: store.compare_and_set(key, None, 1),
        lambda: store.update(key, lambda v: v, default=1),
        lambda: store.info(key),
        lambda: store.ttl(key),
        lambda: store.touch(key, 10),
        lambda: store.__setitem__(key, 1),
        lambda: store.__getitem__(key),
        lambda: store.__delitem__(key),
    ]
    for call in calls:
        with pytest.raises(InvalidInput) as exc_info:
            call()
        assert isinstance(exc_info.value, ValueError)
    assert list(store.keys()) == ["ok"]


@pytest.mark.parametrize("key", BAD_KEY_TYPES, ids=repr)
def test_non_str_keys_are_type_errors(store, key):
    calls = [
        lambda: store.set(key, 1),
        lambda: store.get(key),
        lambda: store.get(key, None),
        lambda: store.delete(key),
        lambda: store.exists(key),
        lambda: store.incr(key),
        lambda: store.pop(key, None),
        lambda: store.info(key),
        lambda: store.__setitem__(key, 1),
    ]
    for call in calls:
        with pytest.raises(InvalidInputType) as exc_info:
            call()
        assert isinstance(exc_info.value, TypeError)
        assert isinstance(exc_info.value, ValueError)
    assert len(store) == 0


def test_str_subclass_key_is_stored_under_its_text(store):
    class Color(enum.StrEnum):
        RED = "red"

    assert store.set(Color.RED, 1) is True
    assert store.get("red") == 1
    assert store.incr(Color.RED) == 2
    assert [type(k) for k in store] == [str]
    assert list(store.keys(Color.RED)) == ["red"]


@pytest.mark.parametrize("key", BAD_KEYS + BAD_KEY_TYPES, ids=repr)
def test_contains_is_false_for_invalid_keys(store, key):
    store.set("ok", 1)
    assert (key in store) is False


# -- scopes ------------------------------------------------------------------------------


def test_scope_is_isolated_from_key_prefixes(store):
    x = store.scope("x")
    xa = store.scope("x:a")
    x.set("a:b", "in x")
    xa.set("b", "in x:a")
    assert x.get("a:b") == "in x"
    assert xa.get("b") == "in x:a"
    assert not x.exists("b")
    assert not xa.exists("a:b")
    assert list(x.keys()) == ["a:b"]
    assert list(xa.keys()) == ["b"]
    assert list(x.keys("a:*")) == ["a:b"]
    assert len(x) == 1 and len(xa) == 1


def test_same_key_in_two_scopes(store):
    one, two = store.scope("one"), store.scope("two")
    one.set("k", 1)
    two.set("k", 2)
    assert one.get("k") == 1
    assert two.get("k") == 2
    assert not store.exists("k")
    assert one.delete("k") is True
    assert two.get("k") == 2
    assert one.incr("k") == 1
    assert two.get("k") == 2
    assert two.info("k").scope == "two"
    assert one.info("k").scope == "one"


@pytest.mark.parametrize(("a", "b"), [("a%", "ab"), ("a_", "ab"), ("a*", "ab"), ("a", "a ")])
def test_scope_names_are_literal(store, a, b):
    sa, sb = store.scope(a), store.scope(b)
    sa.set("k", "A")
    sb.set("k", "B")
    sb.set("only_b", 1)
    assert list(sa.keys()) == ["k"]
    assert sa.get("k") == "A"
    sa.clear()
    assert sb.get("k") == "B"
    assert len(sb) == 2
    sa.set("k", "A")
    assert sa.delete_matching("*") == 1
    assert len(sb) == 2


def test_scopes_lists_scopes_with_live_keys_sorted(store):
    assert store.scopes() == []
    store.scope("b").set("k", 1)
    store.scope("a:b").set("k", 1)
    store.set("k", 1)
    store.scope("é").set("k", 1)
    store.scope("😀").set("k", 1)
    expected = sorted(["b", "a:b", "default", "é", "😀"])
    assert store.scopes() == expected
    assert store.scope("zzz").scopes() == expected
    store.scope("b").delete("k")
    expected.remove("b")
    assert store.scopes() == expected
    store.clear()
    expected.remove("default")
    assert store.scopes() == expected


def test_scope_views_share_data(store):
    store.scope("s").set("k", 1)
    assert store.scope("s").get("k") == 1
    assert store.scope("s").scope("t").scope_name == "t"
    assert store.scope("s").scope("default").get("k", None) is None


@pytest.mark.parametrize(
    "scope", ["x" * 255, "é" * 127 + "x", "a b", "a/b", "..", "%", "_", "*", "s\nt"], ids=repr
)
def test_valid_scope_names(store, scope):
    s = store.scope(scope)
    assert s.scope_name == scope
    s.set("k", 1)
    assert s.get("k") == 1
    assert store.scopes() == [scope]
    assert s.info("k").scope == scope


@pytest.mark.parametrize("scope", ["", "x" * 256, "é" * 128, "a\x00", "\ud800"], ids=repr)
def test_invalid_scope_names(store, make_store, scope):
    with pytest.raises(InvalidInput):
        store.scope(scope).set("k", 1)
    with pytest.raises(InvalidInput):
        make_store(scope=scope).set("k", 1)
    assert store.scopes() == []


@pytest.mark.parametrize("scope", [None, 1, b"s"], ids=repr)
def test_scope_name_must_be_str(store, scope):
    with pytest.raises(InvalidInputType):
        store.scope(scope).set("k", 1)
    assert store.scopes() == []
