"""Versions restart at 1 when a key is deleted and set again: compare-and-set must
still never match a life of the key the caller did not see."""

from __future__ import annotations

import pytest

from satchel import InvalidInput


def test_compare_and_set_with_info_refuses_a_recreated_key(store):
    store.set("k", "old")
    seen = store.info("k")
    store.delete("k")
    store.set("k", "new")
    assert store.info("k").version == seen.version  # same number, another life
    assert store.compare_and_set("k", seen, "stale write") is False
    assert store.get("k") == "new"
    assert store.compare_and_set("k", store.info("k"), "fresh") is True
    assert store.get("k") == "fresh"


def test_compare_and_set_with_info_of_another_key_is_refused(store):
    store.set("a", 1)
    store.set("b", 2)
    with pytest.raises(InvalidInput):
        store.compare_and_set("b", store.info("a"), 3)
    with pytest.raises(InvalidInput):
        store.scope("other").compare_and_set("a", store.info("a"), 3)
    assert store.get("b") == 2


def test_update_never_writes_over_a_recreated_key(store):
    store.set("k", 1)
    seen = []

    def bump(value):
        if not seen:  # between update's read and its write, the key gets a new life
            store.delete("k")
            store.set("k", 100)
        seen.append(value)
        return value + 1

    assert store.update("k", bump) == 101
    assert seen == [1, 100]
    assert store.get("k") == 101
