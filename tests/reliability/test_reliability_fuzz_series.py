"""Hostile input for time series and event sequences, on every engine (issue 11).

Operations with names, timestamps, values and changes of every shape (64-bit extremes
and one past them, floats, bools, None, str, lone surrogates, NUL, unknown ops, type
mismatches, unsupported objects) either succeed as a plain model says or raise a
documented input error and change nothing; the engine is compared with the model after
every operation. ``--long`` raises the number of examples tenfold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import satchel
from conftest import ENGINES
from satchel import InvalidInput, UnsupportedValue
from satchel._events import replay

EXAMPLES = 25
INT64 = 2**63
NAMES = ["s", "../s", "ü/ä", "x" * 1024]
BAD_NAMES = ["", "a\x00b", "\ud800", "x" * 1025, 7, None]
times = st.one_of(
    st.integers(-5, 5),
    st.sampled_from([-INT64, INT64 - 1, 2**53 + 1]),
    st.sampled_from([INT64, -INT64 - 1, 1.0, True, "1", None]),  # refused
)
values = st.one_of(
    st.none(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=5),
    st.binary(max_size=5), st.lists(st.integers(), max_size=3),
    st.sampled_from([object(), "\udcff", float("inf")]),
)  # fmt: skip
changes = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.one_of(
        values,
        st.tuples(st.sampled_from(["add", "sub", "mul", "max", "min", "append", "union"]),
                  st.one_of(st.integers(-3, 3), st.text(max_size=2), st.lists(st.integers()))),
        st.just(("delete",)), st.just(("frobnicate", 1)), st.just(("add",)),
    ),
    max_size=3,
)
operations = st.one_of(
    st.tuples(st.just("extend"), st.sampled_from(NAMES + BAD_NAMES),
              st.lists(st.tuples(times, values), max_size=4)),
    st.tuples(st.just("remove"), st.sampled_from(NAMES), st.one_of(st.none(), times),
              st.one_of(st.none(), times)),
    st.tuples(st.just("apply"), st.sampled_from(NAMES + BAD_NAMES), changes),
)  # fmt: skip
DOCUMENTED = (InvalidInput, UnsupportedValue)


def _in_range(t: Any) -> bool:
    return type(t) is int and -INT64 <= t < INT64


def _check(store: satchel.Store, series: dict[str, dict[int, Any]],
           states: dict[str, dict[Any, Any]]) -> None:  # fmt: skip
    assert store.series_names() == sorted(n for n, pts in series.items() if pts)
    for name, points in series.items():
        assert list(store.series(name).range()) == sorted(points.items())
    for name, state in states.items():
        assert store.events(name).current() == state


@pytest.mark.parametrize("name", list(ENGINES))
def test_hostile_series_and_events_keep_the_model(
    name: str, tmp_path: Path, long_run: bool
) -> None:
    engine = ENGINES[name]
    url = engine(tmp_path)
    root = satchel.open(url)
    runs = iter(range(10**9))

    @settings(max_examples=EXAMPLES * (10 if long_run else 1), deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(ops=st.lists(operations, min_size=1, max_size=8))
    def run(ops: list[tuple[Any, ...]]) -> None:
        store = root.scope(f"run-{next(runs)}")
        series: dict[str, dict[int, Any]] = {}
        states: dict[str, dict[Any, Any]] = {}
        for op in ops:
            try:
                if op[0] == "extend":
                    store.series(op[1]).extend(op[2])
                    series.setdefault(op[1], {}).update(op[2])
                elif op[0] == "remove":
                    store.series(op[1]).remove(op[2], op[3])
                    low = -INT64 if op[2] is None else op[2]
                    high = INT64 if op[3] is None else op[3]
                    kept = series.get(op[1], {})
                    series[op[1]] = {t: v for t, v in kept.items() if not low <= t < high}
                else:
                    new = store.events(op[1]).apply(op[2])
                    model = states.setdefault(op[1], {})
                    for item, change in op[2].items():
                        if isinstance(change, tuple):
                            replay(model, item, change[0], change[1] if len(change) > 1 else None)
                        else:
                            replay(model, item, "set", change)
                    assert new == model
            except DOCUMENTED as exc:
                # Refused: it must have been bad input, and nothing changed (checked below).
                assert isinstance(exc, satchel.SatchelError)
                if op[0] == "extend":
                    assert op[1] in BAD_NAMES or any(
                        not _in_range(t) or type(v) is object for t, v in op[2]), exc  # fmt: skip
            _check(store, series, states)

    try:
        run()
    finally:
        root.close()
        if engine.cleanup is not None:
            engine.cleanup(url)
