"""An expired value is absent for every operation, before anything purges it."""

from __future__ import annotations

import time

import pytest

from satchel import KeyNotFound

SHORT = 0.05  # seconds; the fixture sleeps a little longer


@pytest.fixture
def expired(store):
    """`store` with "gone" (41, expired), "gone2" (expired) and "kept" (long ttl)."""
    store.set("gone", 41, ttl=SHORT)
    store.set_many({"gone2": "x"}, ttl=SHORT)
    store.set("kept", "here", ttl=600)
    time.sleep(SHORT + 0.05)
    return store


def test_get(expired):
    with pytest.raises(KeyNotFound):
        expired.get("gone")
    assert expired.get("gone", "dflt") == "dflt"
    assert expired.get("kept") == "here"


def test_get_many(expired):
    assert expired.get_many(["gone", "kept", "gone2"]) == {"kept": "here"}


def test_exists_and_contains(expired):
    assert expired.exists("gone") is False
    assert "gone" not in expired
    assert expired.exists("kept") is True


def test_dict_protocol(expired):
    with pytest.raises(KeyNotFound):
        expired["gone"]
    with pytest.raises(KeyNotFound):
        del expired["gone"]


def test_keys_items_values(expired):
    assert list(expired.keys()) == ["kept"]
    assert list(expired.keys("gone*")) == []
    assert list(expired.keys("gone")) == []
    assert list(expired.items()) == [("kept", "here")]
    assert list(expired.values()) == ["here"]
    assert list(expired) == ["kept"]


def test_len(expired):
    assert len(expired) == 1


def test_scopes(store):
    store.scope("only_expired").set("k", 1, ttl=SHORT)
    store.scope("live").set("k", 1)
    store.scope("mixed").set_many({"a": 1}, ttl=SHORT)
    store.scope("mixed").set("b", 1)
    time.sleep(SHORT + 0.05)
    assert store.scopes() == ["live", "mixed"]


def test_set_returns_true_as_for_a_new_key(expired):
    assert expired.set("gone", 1) is True
    assert expired.get("gone") == 1
    assert expired.ttl("gone") is None
    assert expired.info("gone").version == 1


def test_set_if_absent_takes_the_free_key(expired):
    assert expired.set("gone", "new", if_absent=True) is True
    assert expired.get("gone") == "new"
    assert expired.ttl("gone") is None
    assert expired.set("kept", "new", if_absent=True) is False


def test_set_many_if_absent_takes_free_keys(expired):
    assert expired.set_many({"gone": 1, "gone2": 2, "kept": 3}, if_absent=True) == 2
    assert expired.get_many(["gone", "gone2", "kept"]) == {
        "gone": 1,
        "gone2": 2,
        "kept": "here",
    }


def test_incr_restarts_at_zero(expired):
    assert expired.incr("gone") == 1
    assert expired.get("gone") == 1
    assert expired.ttl("gone") is None
    assert expired.info("gone").version == 1


def test_compare_and_set(expired):
    assert expired.compare_and_set("gone", 1, "x") is False
    assert not expired.exists("gone")
    assert expired.compare_and_set("gone", None, "x") is True
    assert expired.get("gone") == "x"
    assert expired.info("gone").version == 1


def test_update(expired):
    with pytest.raises(KeyNotFound):
        expired.update("gone", lambda v: v + 1)
    assert expired.update("gone", lambda v: v + 1, default=0) == 1


def test_pop(expired):
    with pytest.raises(KeyNotFound):
        expired.pop("gone")
    assert expired.pop("gone", "dflt") == "dflt"


def test_delete(expired):
    assert expired.delete("gone") is False
    assert expired.delete_many(["gone", "gone2", "kept"]) == 1
    assert len(expired) == 0


def test_delete_matching(expired):
    assert expired.delete_matching("*") == 1
    assert len(expired) == 0


def test_info_and_ttl(expired):
    with pytest.raises(KeyNotFound):
        expired.info("gone")
    with pytest.raises(KeyNotFound):
        expired.ttl("gone")


def test_touch_does_not_resurrect(expired):
    assert expired.touch("gone", 600) is False
    assert not expired.exists("gone")
    with pytest.raises(KeyNotFound):
        expired.get("gone")


def test_expiry_is_per_scope(store):
    store.scope("a").set("k", 1, ttl=SHORT)
    store.scope("b").set("k", 2)
    time.sleep(SHORT + 0.05)
    assert not store.scope("a").exists("k")
    assert store.scope("b").get("k") == 2


def test_second_store_sees_expiry(store, open_store):
    other = open_store()
    store.set("k", 1, ttl=SHORT)
    time.sleep(SHORT + 0.05)
    assert not other.exists("k")
    assert other.set("k", 2, if_absent=True) is True
