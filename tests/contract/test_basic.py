"""set / get / get_many / set_many / delete* / clear / pop / exists."""

from __future__ import annotations

import pytest

import satchel
from satchel import InvalidInput, KeyNotFound, UnsupportedValue

MISSING = object()


# -- set / get ---------------------------------------------------------------------------


def test_set_returns_true_for_new_key_and_false_on_overwrite(store):
    assert store.set("k", 1) is True
    assert store.set("k", 2) is False
    assert store.get("k") == 2


def test_set_after_delete_is_new_again(store):
    store.set("k", 1)
    store.delete("k")
    assert store.set("k", 2) is True
    assert store.get("k") == 2


def test_set_if_absent_writes_only_when_absent(store):
    assert store.set("k", "first", if_absent=True) is True
    assert store.set("k", "second", if_absent=True) is False
    assert store.get("k") == "first"
    assert store.info("k").version == 1


def test_set_if_absent_false_leaves_expiry_alone(store):
    store.set("k", "first", ttl=100)
    assert store.set("k", "second", ttl=5000, if_absent=True) is False
    remaining = store.ttl("k")
    assert remaining is not None and 90 < remaining <= 100


def test_get_missing_raises_key_not_found(store):
    with pytest.raises(KeyNotFound):
        store.get("nope")
    with pytest.raises(KeyError):
        store.get("nope")


def test_get_with_default(store):
    assert store.get("nope", "dflt") == "dflt"
    assert store.get("nope", None) is None
    marker = object()
    assert store.get("nope", marker) is marker
    store.set("k", 0)
    assert store.get("k", "dflt") == 0


def test_stored_none_is_a_value_not_a_missing_key(store):
    store.set("k", None)
    assert store.get("k") is None
    assert store.get("k", "dflt") is None
    assert store.exists("k") is True
    assert "k" in store
    assert len(store) == 1


def test_overwrite_replaces_value_and_type(store):
    store.set("k", [1, 2])
    store.set("k", "now a string")
    assert store.get("k") == "now a string"


# -- get_many / set_many -----------------------------------------------------------------


def test_get_many_keeps_request_order_and_leaves_out_missing(store):
    store.set_many({"a": 1, "b": 2, "c": 3})
    result = store.get_many(["c", "missing", "a", "b", "other"])
    assert isinstance(result, dict)
    assert list(result.items()) == [("c", 3), ("a", 1), ("b", 2)]


def test_get_many_empty(store):
    assert store.get_many([]) == {}
    store.set("a", 1)
    assert store.get_many(["x", "y"]) == {}


def test_get_many_rejects_invalid_key(store):
    store.set("a", 1)
    with pytest.raises(InvalidInput):
        store.get_many(["a", ""])
    with pytest.raises(satchel.InvalidInputType):
        store.get_many(["a", 3])


def test_set_many_mapping_returns_count(store):
    assert store.set_many({"a": 1, "b": "two", "c": [3]}) == 3
    assert store.get_many(["a", "b", "c"]) == {"a": 1, "b": "two", "c": [3]}


def test_set_many_accepts_pairs(store):
    assert store.set_many([("x", 1), ("y", 2)]) == 2
    assert store.get("x") == 1
    assert store.get("y") == 2


def test_set_many_overwrites_count_as_written(store):
    store.set("a", 0)
    assert store.set_many({"a": 1, "b": 2}) == 2
    assert store.get("a") == 1


def test_set_many_empty(store):
    assert store.set_many({}) == 0
    assert len(store) == 0


def test_set_many_if_absent_writes_only_absent_keys(store):
    store.set("a", "old")
    assert store.set_many({"a": "new", "b": "new"}, if_absent=True) == 1
    assert store.get("a") == "old"
    assert store.get("b") == "new"
    assert store.info("a").version == 1


def test_set_many_with_ttl_applies_to_every_key(store):
    store.set_many({"a": 1, "b": 2}, ttl=100)
    for key in ("a", "b"):
        remaining = store.ttl(key)
        assert remaining is not None and 90 < remaining <= 100


def test_set_many_one_unencodable_value_writes_nothing(store):
    store.set("a", "old")
    with pytest.raises(UnsupportedValue):
        store.set_many({"a": "new", "b": 2, "c": object(), "d": 4})
    assert store.get("a") == "old"
    assert store.info("a").version == 1
    assert list(store.keys()) == ["a"]


def test_set_many_unencodable_value_in_pairs_writes_nothing(store):
    with pytest.raises(UnsupportedValue):
        store.set_many([("a", 1), ("b", bytearray(b"x"))])
    assert len(store) == 0


def test_set_many_invalid_key_writes_nothing(store):
    store.set("a", "old")
    with pytest.raises(InvalidInput):
        store.set_many({"a": "new", "b": 2, "bad\x00key": 3})
    with pytest.raises(InvalidInput):
        store.set_many({"a": "new", "": 3})
    with pytest.raises(satchel.InvalidInputType):
        store.set_many([("a", "new"), (7, 3)])
    assert store.get("a") == "old"
    assert list(store.keys()) == ["a"]


def test_set_many_invalid_ttl_writes_nothing(store):
    with pytest.raises(InvalidInput):
        store.set_many({"a": 1, "b": 2}, ttl=-1)
    assert len(store) == 0


# -- delete / delete_many / delete_matching / clear --------------------------------------


def test_delete(store):
    store.set("k", 1)
    assert store.delete("k") is True
    assert store.delete("k") is False
    assert not store.exists("k")
    with pytest.raises(KeyNotFound):
        store.get("k")


def test_delete_missing_returns_false(store):
    assert store.delete("never") is False


def test_delete_many_counts_only_removed_keys(store):
    store.set_many({"a": 1, "b": 2, "c": 3})
    n = store.delete_many(["a", "missing", "c"])
    assert isinstance(n, int) and n == 2
    assert list(store.keys()) == ["b"]
    assert store.delete_many([]) == 0


def test_delete_many_invalid_key_deletes_nothing(store):
    store.set_many({"a": 1, "b": 2})
    with pytest.raises(InvalidInput):
        store.delete_many(["a", ""])
    with pytest.raises(satchel.InvalidInputType):
        store.delete_many(["a", None])
    assert list(store.keys()) == ["a", "b"]


def test_delete_matching(store):
    store.set_many({"user:1": 1, "user:2": 2, "users": 3, "other": 4})
    assert store.delete_matching("user:*") == 2
    assert list(store.keys()) == ["other", "users"]
    assert store.delete_matching("nothing*") == 0


def test_delete_matching_exact_key_is_not_a_prefix(store):
    store.set_many({"user": 1, "user1": 2, "superuser": 3})
    assert store.delete_matching("user") == 1
    assert list(store.keys()) == ["superuser", "user1"]


def test_clear_only_clears_its_scope(store):
    other = store.scope("other")
    store.set_many({"a": 1, "b": 2})
    other.set_many({"a": 10, "c": 30})
    assert store.clear() is None
    assert len(store) == 0
    assert list(store.keys()) == []
    assert other.get_many(["a", "c"]) == {"a": 10, "c": 30}
    assert store.scopes() == ["other"]


def test_clear_empty_scope(store):
    store.clear()
    assert len(store) == 0


# -- pop ---------------------------------------------------------------------------------


def test_pop_returns_value_and_removes_it(store):
    store.set("k", {"x": (1, 2)})
    assert store.pop("k") == {"x": (1, 2)}
    assert not store.exists("k")
    with pytest.raises(KeyNotFound):
        store.pop("k")


def test_pop_default(store):
    assert store.pop("nope", "dflt") == "dflt"
    assert store.pop("nope", None) is None
    store.set("k", 0)
    assert store.pop("k", "dflt") == 0
    assert store.pop("k", "dflt") == "dflt"


def test_pop_missing_raises_key_error(store):
    with pytest.raises(KeyError):
        store.pop("nope")


def test_pop_only_touches_its_key(store):
    store.set_many({"a": 1, "b": 2})
    store.pop("a")
    assert list(store.items()) == [("b", 2)]


# -- exists ------------------------------------------------------------------------------


def test_exists(store):
    assert store.exists("k") is False
    store.set("k", False)
    assert store.exists("k") is True
    store.delete("k")
    assert store.exists("k") is False


def test_exists_rejects_invalid_key(store):
    with pytest.raises(InvalidInput):
        store.exists("")
    with pytest.raises(satchel.InvalidInputType):
        store.exists(42)


# -- misc attributes ---------------------------------------------------------------------


def test_scope_name_and_url(store):
    assert store.scope_name == "default"
    assert isinstance(store.url, str) and store.url
    view = store.scope("other")
    assert view.scope_name == "other"
    assert view.url == store.url


def test_open_with_scope(make_store):
    s = make_store(scope="users")
    assert s.scope_name == "users"
    s.set("k", 1)
    assert s.scopes() == ["users"]


def test_second_store_on_same_data_sees_writes(store, open_store):
    other = open_store()
    store.set("k", "from first")
    assert other.get("k") == "from first"
    assert other.set("k", "from second") is False
    assert store.get("k") == "from second"
    assert store.info("k").version == 2
    other.delete("k")
    assert not store.exists("k")


def test_open_with_scope_sees_same_scope_data(store, open_store):
    store.scope("users").set("u1", "alice")
    users = open_store(scope="users")
    assert users.scope_name == "users"
    assert users.get("u1") == "alice"
    assert not store.exists("u1")
