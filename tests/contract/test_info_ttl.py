"""info(), touch(), ttl() and ttl validation."""

from __future__ import annotations

import math
import string
import time
from datetime import UTC, datetime, timedelta

import pytest

import satchel
from satchel import InvalidInput, InvalidInputType, KeyNotFound


def _is_utc(dt):
    return isinstance(dt, datetime) and dt.tzinfo is not None and dt.utcoffset() == timedelta(0)


def _near_now(dt, slack=5.0):
    return abs((dt - datetime.now(UTC)).total_seconds()) < slack


# -- info --------------------------------------------------------------------------------


def test_info_fields_for_new_key(store):
    store.scope("sc").set("k", b"12345")
    info = store.scope("sc").info("k")
    assert isinstance(info, satchel.KeyInfo)
    assert info.key == "k"
    assert info.scope == "sc"
    assert info.size == 5
    assert info.version == 1
    assert info.expires_at is None
    assert _is_utc(info.created_at) and _near_now(info.created_at)
    assert _is_utc(info.updated_at) and _near_now(info.updated_at)
    assert info.updated_at >= info.created_at
    assert isinstance(info.checksum, str) and info.checksum
    assert all(c in string.hexdigits for c in info.checksum)


def test_info_size_is_payload_length(store):
    store.set("b", b"\x00" * 1000)
    assert store.info("b").size == 1000
    store.set("b", b"")
    assert store.info("b").size == 0
    store.set("s", "héllo😀")
    assert store.info("s").size == len("héllo😀".encode())


def test_info_overwrite_keeps_created_at_and_advances_updated_at(store):
    store.set("k", 1)
    first = store.info("k")
    time.sleep(0.02)
    store.set("k", 2)
    second = store.info("k")
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    assert second.version == 2
    time.sleep(0.02)
    store.set_many({"k": 3})
    third = store.info("k")
    assert third.created_at == first.created_at
    assert third.updated_at > second.updated_at
    assert third.version == 3


def test_info_version_counts_every_kind_of_write(store):
    store.set("k", 1)  # 1
    store.set("k", 2)  # 2
    store.incr("k")  # 3
    store.compare_and_set("k", 3, 10)  # 4
    store.update("k", lambda v: v + 1)  # 5
    store.set_many({"k": 0})  # 6
    store[("k")] = 7  # 7
    assert store.info("k").version == 7


def test_info_version_restarts_after_delete(store):
    store.set("k", 1)
    store.set("k", 2)
    created = store.info("k").created_at
    store.delete("k")
    time.sleep(0.02)
    store.set("k", 3)
    info = store.info("k")
    assert info.version == 1
    assert info.created_at > created


def test_info_checksum_depends_on_value_only(store):
    store.set("a", {"x": [1, 2, 3]})
    store.set("b", {"x": [1, 2, 3]})
    store.set("c", {"x": [1, 2, 4]})
    assert store.info("a").checksum == store.info("b").checksum
    assert store.info("a").checksum != store.info("c").checksum
    before = store.info("a").checksum
    store.set("a", "changed")
    assert store.info("a").checksum != before
    store.set("a", {"x": [1, 2, 3]})
    assert store.info("a").checksum == before


def test_info_expires_at(store):
    store.set("k", 1, ttl=100)
    info = store.info("k")
    assert _is_utc(info.expires_at)
    expected = datetime.now(UTC) + timedelta(seconds=100)
    assert abs((info.expires_at - expected).total_seconds()) < 5


def test_info_missing_key(store):
    with pytest.raises(KeyNotFound):
        store.info("nope")


# -- ttl / touch -------------------------------------------------------------------------


def test_ttl_none_without_expiry(store):
    store.set("k", 1)
    assert store.ttl("k") is None


def test_ttl_seconds_remaining(store):
    store.set("k", 1, ttl=100)
    remaining = store.ttl("k")
    assert isinstance(remaining, float)
    assert 90 < remaining <= 100


def test_ttl_float_and_timedelta(store):
    store.set("f", 1, ttl=50.5)
    store.set("td", 1, ttl=timedelta(minutes=2))
    assert 45 < store.ttl("f") <= 50.5
    assert 110 < store.ttl("td") <= 120


def test_ttl_missing_key(store):
    with pytest.raises(KeyNotFound):
        store.ttl("nope")


def test_set_without_ttl_removes_previous_expiry(store):
    # A plain set replaces the whole record, like Redis SET: the new value has no expiry.
    store.set("k", 1, ttl=100)
    store.set("k", 2)
    assert store.ttl("k") is None


def test_set_with_new_ttl_replaces_expiry(store):
    store.set("k", 1, ttl=100)
    store.set("k", 2, ttl=1000)
    assert 990 < store.ttl("k") <= 1000


def test_touch_sets_changes_and_removes_expiry(store):
    store.set("k", 1)
    assert store.touch("k", 100) is True
    assert 90 < store.ttl("k") <= 100
    assert store.touch("k", timedelta(seconds=500)) is True
    assert 490 < store.ttl("k") <= 500
    assert store.touch("k", None) is True
    assert store.ttl("k") is None
    assert store.info("k").expires_at is None
    assert store.get("k") == 1


def test_touch_missing_key(store):
    assert store.touch("nope", 10) is False
    assert not store.exists("nope")


def test_touch_keeps_version_and_updated_at(store):
    store.set("k", 1)
    before = store.info("k")
    time.sleep(0.02)
    store.touch("k", 100)
    after = store.info("k")
    assert after.version == before.version
    assert after.updated_at == before.updated_at
    assert after.created_at == before.created_at


def test_short_ttl_value_lives_then_expires(store):
    store.set("k", "v", ttl=0.3)
    assert store.get("k") == "v"
    time.sleep(0.4)
    assert not store.exists("k")
    with pytest.raises(KeyNotFound):
        store.get("k")


# -- invalid ttl -------------------------------------------------------------------------

BAD_TTL_VALUES = [
    0,
    0.0,
    -1,
    -0.5,
    math.nan,
    math.inf,
    -math.inf,
    timedelta(0),
    timedelta(seconds=-1),
]
BAD_TTL_TYPES = [True, False, "10", b"10", [10], object()]


def _assert_value_error(exc):
    assert isinstance(exc, InvalidInput)
    assert isinstance(exc, ValueError)
    assert not isinstance(exc, TypeError), "a bad ttl value is not a type error"


@pytest.mark.parametrize("ttl", BAD_TTL_VALUES, ids=repr)
def test_invalid_ttl_value(store, ttl):
    store.set("k", "old", ttl=100)
    with pytest.raises(InvalidInput) as e1:
        store.set("k", "new", ttl=ttl)
    _assert_value_error(e1.value)
    with pytest.raises(InvalidInput) as e2:
        store.set("fresh", "new", ttl=ttl)
    _assert_value_error(e2.value)
    with pytest.raises(InvalidInput):
        store.set_many({"a": 1}, ttl=ttl)
    with pytest.raises(InvalidInput):
        store.touch("k", ttl)
    with pytest.raises(InvalidInput):
        store.compare_and_set("k", 1, "new", ttl=ttl)
    assert store.get("k") == "old"
    assert 90 < store.ttl("k") <= 100
    assert store.info("k").version == 1
    assert list(store.keys()) == ["k"]


@pytest.mark.parametrize("ttl", BAD_TTL_TYPES, ids=repr)
def test_invalid_ttl_type(store, ttl):
    store.set("k", "old", ttl=100)
    with pytest.raises(InvalidInputType) as e1:
        store.set("k", "new", ttl=ttl)
    assert isinstance(e1.value, TypeError)
    with pytest.raises(InvalidInputType):
        store.set("fresh", "new", ttl=ttl)
    with pytest.raises(InvalidInputType):
        store.set_many({"a": 1}, ttl=ttl)
    with pytest.raises(InvalidInputType):
        store.touch("k", ttl)
    with pytest.raises(InvalidInputType):
        store.compare_and_set("k", 1, "new", ttl=ttl)
    assert store.get("k") == "old"
    assert 90 < store.ttl("k") <= 100
    assert list(store.keys()) == ["k"]
