"""Event sequences on every engine."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import satchel
from satchel import InvalidInput
from satchel._backends.base import Delete, Put
from satchel._events import KIND, PAGE_EVENTS, replay
from satchel._keys import kind_scope, name_key


def test_apply_and_current(store):
    cart = store.events("cart:42")
    assert cart.current() == {}
    assert len(cart) == 0
    state = cart.apply({"count": ("add", 1), "name": "x", "old": ("delete",)})
    assert state == {"count": 1, "name": "x"}
    assert cart.apply({"count": ("add", 2), "tags": ("union", {"a"})}) == {
        "count": 3, "name": "x", "tags": {"a"}}  # fmt: skip
    assert cart.current() == {"count": 3, "name": "x", "tags": {"a"}}
    assert len(cart) == 5
    assert store.event_names() == ["cart:42"]


def test_every_op(store):
    ev = store.events("ops")
    ev.apply({"n": 10, "l": [1], "s": {1}, "d": {"a": 1}, "t": ("set", (1, 2))})
    state = ev.apply({
        "n": ("sub", 3), "l": ("append", 2), "s": ("union", [2, 3]), "d": ("merge", {"b": 2}),
        "m": ("max", 5), "k": ("min", -1), "x": ("mul", 4),
    })  # fmt: skip
    assert state == {"n": 7, "l": [1, 2], "s": {1, 2, 3}, "d": {"a": 1, "b": 2},
                     "t": (1, 2), "m": 5, "k": -1, "x": 0}  # fmt: skip
    state = ev.apply({"n": ("mul", 2), "l": ("extend", [3, 4]), "s": ("difference", {1}),
                      "m": ("max", 3), "k": ("min", -7)})  # fmt: skip
    assert state["n"] == 14 and state["l"] == [1, 2, 3, 4] and state["s"] == {2, 3}
    assert state["m"] == 5 and state["k"] == -7
    assert ev.current() == state


@pytest.mark.parametrize(
    "change",
    [
        {"name": ("add", 1)},  # add to a str
        {"count": ("append", 1)},  # append to an int
        {"count": ("frobnicate", 1)},  # unknown op
        {"count": ("add",)},  # missing operand
        {"count": ("delete", 1)},
        {"ok": ("add", 1), "name": ("sub", 1)},  # one bad change spoils the batch
        {"count": ("add", "1")},
        {"count": ("add", True)},
    ],
)
def test_bad_changes_record_nothing(store, change):
    ev = store.events("e")
    ev.apply({"name": "x", "count": 1})
    with pytest.raises(InvalidInput) as caught:
        ev.apply(change)
    assert isinstance(caught.value, ValueError)
    assert ev.current() == {"name": "x", "count": 1}
    assert len(ev) == 2
    assert len(list(ev.history())) == 2


def test_unstorable_value_records_nothing(store):
    ev = store.events("e")
    with pytest.raises(TypeError):
        ev.apply({"x": object()})
    assert len(ev) == 0 and store.event_names() == []


def test_history_and_at(store):
    ev = store.events("h")
    ev.apply({"a": 1})
    time.sleep(0.01)
    ev.apply({"a": ("add", 1), "b": "x"})
    time.sleep(0.01)
    ev.apply({"b": ("delete",)})
    events = list(ev.history())
    assert [(e.seq, e.item, e.op, e.value) for e in events] == [
        (1, "a", "set", 1), (2, "a", "add", 1), (3, "b", "set", "x"), (4, "b", "delete", None)]
    first, second, _, last = (e.timestamp_ms for e in events)
    assert first < second < last
    assert ev.at(first - 1) == {}
    assert ev.at(first) == {"a": 1}
    assert ev.at(second) == {"a": 2, "b": "x"}
    assert ev.at(last) == {"a": 2}
    assert [e.seq for e in ev.history(start=second)] == [2, 3, 4]
    assert [e.seq for e in ev.history(stop=second)] == [1]


def test_same_millisecond_events_keep_their_order(store):
    ev = store.events("fast")
    for i in range(50):
        ev.apply({"l": ("append", i)})
    events = list(ev.history())
    assert [e.seq for e in events] == list(range(1, 51))
    assert [e.value for e in events] == list(range(50))
    stamps = [e.timestamp_ms for e in events]
    assert stamps == sorted(stamps)
    assert ev.current() == {"l": list(range(50))}


def test_compact(store):
    ev = store.events("c")
    for i in range(5):
        ev.apply({"n": ("add", 1), f"k{i}": i})
        time.sleep(0.005)
    events = list(ev.history())
    cut = events[6].timestamp_ms  # in the 4th apply
    assert ev.compact(before=cut) == 6
    assert ev.current() == {"n": 5, "k0": 0, "k1": 1, "k2": 2, "k3": 3, "k4": 4}
    assert [e.seq for e in ev.history()] == [7, 8, 9, 10]
    assert ev.at(cut) == {"n": 4, "k0": 0, "k1": 1, "k2": 2, "k3": 3}
    with pytest.raises(InvalidInput, match="compacted"):
        ev.at(events[0].timestamp_ms - 1)
    assert ev.compact() == 4
    assert list(ev.history()) == []
    assert ev.current()["n"] == 5
    assert ev.compact() == 0
    ev.apply({"n": ("add", 1)})
    assert ev.current()["n"] == 6
    assert len(ev) == 11
    assert ev.at(int(time.time() * 1000) + 1000)["n"] == 6


def test_delete_and_names(store):
    store.events("b:1").apply({"x": 1})
    store.events("a:1").apply({"x": 1})
    store.set("a:1", "plain key")
    assert store.event_names() == ["a:1", "b:1"]
    assert store.event_names("a*") == ["a:1"]
    assert store.events("a:1").delete() is True
    assert store.events("a:1").delete() is False
    assert store.event_names() == ["b:1"]
    assert store.get("a:1") == "plain key"
    ev = store.events("a:1")
    assert ev.current() == {} and len(ev) == 0
    ev.apply({"y": 2})
    assert [e.seq for e in ev.history()] == [1]
    other = store.scope("other")
    assert other.event_names() == []
    assert other.events("b:1").current() == {}


def test_encrypted_events(make_store):
    secret = make_store(encryption_key=bytes(range(32)))
    ev = secret.events("e")
    ev.apply({"a": ("add", 2)})
    ev.apply({"a": ("add", 3)})
    assert ev.current() == {"a": 5}
    assert [e.value for e in ev.history()] == [2, 3]


def _adder(url: str, name: str, rounds: int) -> None:
    with satchel.open(url) as store:
        ev = store.events(name)
        for _ in range(rounds):
            ev.apply({"n": ("add", 1), "seen": ("append", 1)})


def test_concurrent_apply_from_processes(engine, store_url, store):
    if not engine.shared:
        pytest.skip(f"{engine.name}: separate opens share no data")
    workers, rounds = 4, 25
    # memory:// lives in one process: its writers are threads.
    make: Any = threading.Thread if not engine.persistent else (
        multiprocessing.get_context("spawn").Process)  # fmt: skip
    procs = [make(target=_adder, args=(store_url, "shared", rounds)) for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert getattr(p, "exitcode", 0) == 0 and not p.is_alive()
    ev = store.events("shared")
    total = workers * rounds
    assert ev.current() == {"n": total, "seen": [1] * total}
    events = list(ev.history())
    assert [e.seq for e in events] == list(range(1, 2 * total + 1))
    assert [e.timestamp_ms for e in events] == sorted(e.timestamp_ms for e in events)


_ops = st.one_of(
    st.tuples(st.just("add"), st.integers(-5, 5)),
    st.tuples(st.just("max"), st.integers(-5, 5)),
    st.tuples(st.just("delete")),
    st.integers(-5, 5),
)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=st.lists(st.dictionaries(st.sampled_from("abc"), _ops, max_size=3), max_size=8),
       cut=st.integers(0, 8))  # fmt: skip
def test_at_matches_a_replay_by_hand(store, batches, cut):
    ev = store.events("model")
    ev.delete()
    stamps = []
    for batch in batches:
        ev.apply(batch)
        stamps.append(max((e.timestamp_ms for e in ev.history()), default=0))
    events = list(ev.history())
    for t in {*stamps, *(e.timestamp_ms for e in events[:cut])}:
        model: dict[str, Any] = {}
        for e in events:
            if e.timestamp_ms <= t:
                replay(model, e.item, e.op, e.value)
        assert ev.at(t) == model
    if events:
        final: dict[str, Any] = {}
        for e in events:
            replay(final, e.item, e.op, e.value)
        assert ev.current() == final


def test_stale_compaction_after_delete_is_ignored(store):
    ev = store.events("e")
    ev.apply({"a": 1})
    ev.apply({"a": ("add", 1)})
    backend, scope = store._shared.backend, kind_scope(store.scope_name, KIND)
    head_key = name_key("e")
    old_generation = msgpack.unpackb(backend.get(scope, head_key, time.time()).value)[1]
    ev.delete()
    ev.apply({"b": 1})
    # what a compaction computed before the delete writes after it: a base of the old life
    stale = msgpack.packb([old_generation, 2, int(time.time() * 1000), b"never read"])
    backend.apply(scope, [Put(f"{head_key}/base", stale)], time.time())
    assert ev.current() == {"b": 1}
    assert [e.seq for e in ev.history()] == [1]
    assert ev.at(int(time.time() * 1000) + 1000) == {"b": 1}
    assert ev.compact() == 1 and ev.current() == {"b": 1}


def test_difference_and_union_on_a_missing_item_give_a_set(store):
    state = store.events("s").apply({"d": ("difference", [1]), "u": ("union", [1])})
    assert state == {"d": set(), "u": {1}}
    assert type(state["d"]) is set and type(state["u"]) is set


def test_bad_times_are_input_errors(store):
    ev = store.events("t")
    ev.apply({"a": 1})
    for call in (lambda: list(ev.history(start="x")), lambda: ev.compact("x"),
                 lambda: ev.at(1.5), lambda: list(ev.history(stop=True))):  # fmt: skip
        with pytest.raises(InvalidInput) as caught:
            call()
        assert isinstance(caught.value, TypeError) and "'t'" in str(caught.value)
    assert len(ev) == 1


def test_json_codec_needs_str_items(make_store):
    plain = make_store(codec="json", scope="json-events")
    ev = plain.events("j")
    with pytest.raises(InvalidInput, match="str"):
        ev.apply({1: ("add", 1)})
    assert ev.apply({"1": ("add", 1)}) == {"1": 1}
    assert ev.current() == ev.at(int(time.time() * 1000) + 1000) == {"1": 1}


def test_a_lost_page_of_events_is_corrupt_data_not_a_retry_loop(store):
    ev = store.events("e")
    ev.apply({f"n{i}": i for i in range(PAGE_EVENTS)})  # a page of its own
    for i in range(3):
        ev.apply({"n": i})
    backend, scope = store._shared.backend, kind_scope(store.scope_name, KIND)
    head_key = name_key("e")
    generation = msgpack.unpackb(backend.get(scope, head_key, time.time()).value)[1]
    page = f"{head_key}/{generation}/{PAGE_EVENTS:016d}"
    assert backend.apply(scope, [Delete(page)], time.time()) == 1
    for call in (lambda: ev.at(2**62), ev.compact, lambda: list(ev.history())):
        with pytest.raises(satchel.CorruptData):
            call()
    assert ev.current()["n"] == 2  # the head alone still reads


def test_clear_leaves_event_sequences_alone(store):
    store.set("k", 1)
    store.events("e").apply({"a": 1})
    store.clear()  # keys only, as README says
    assert store.get("k", None) is None and store.events("e").current() == {"a": 1}
    assert store.event_names() == ["e"]


def test_events_fill_pages_and_read_back_across_them(store):
    ev = store.events("long")
    model: dict[str, Any] = {}
    stamps = []
    for i in range(3 * PAGE_EVENTS + 5):
        changes = {"n": ("add", 1)} if i % 7 else {f"k{i}": i, "n": ("add", 1)}
        for item, change in changes.items():
            replay(model, item, *(change if isinstance(change, tuple) else ("set", change)))
        ev.apply(changes)
        stamps.append((int(time.time() * 1000), dict(model)))
    assert ev.current() == model and len(ev) == len(list(ev.history()))
    seqs = [e.seq for e in ev.history()]
    assert seqs == list(range(1, len(seqs) + 1))
    events = list(ev.history())
    for ts, _ in stamps[PAGE_EVENTS - 2 : PAGE_EVENTS + 3]:  # around the first page's end
        expected: dict[str, Any] = {}
        for e in events:
            if e.timestamp_ms <= ts:
                replay(expected, e.item, e.op, e.value)
        assert ev.at(ts) == expected
    before = stamps[2 * PAGE_EVENTS][0]
    folded = ev.compact(before=before)
    assert folded == sum(e.timestamp_ms < before for e in events) and ev.current() == model
    assert [e.seq for e in ev.history()] == seqs[folded:]
    assert ev.compact() == len(seqs) - folded and list(ev.history()) == []
    assert ev.apply({"n": ("add", 1)})["n"] == model["n"] + 1


def test_a_page_under_a_forged_key_is_corrupt_data(store):
    ev = store.events("e")
    ev.apply({f"n{i}": i for i in range(PAGE_EVENTS)})
    backend, scope = store._shared.backend, kind_scope(store.scope_name, KIND)
    head_key = name_key("e")
    generation = msgpack.unpackb(backend.get(scope, head_key, time.time()).value)[1]
    forged = Put(f"{head_key}/{generation}/000000000000000x", msgpack.packb([[]]))
    backend.apply(scope, [forged], time.time())
    with pytest.raises(satchel.CorruptData):
        list(ev.history())
    assert ev.current() == {f"n{i}": i for i in range(PAGE_EVENTS)}
