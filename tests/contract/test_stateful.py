"""Random operation sequences on every engine, checked against a plain-dict model.

Hypothesis state machines cannot take pytest fixtures, so the test below takes the
parametrised `engine` fixture (one run per entry of conftest.ENGINES) and builds a
machine class whose stores are opened on that engine, one fresh store per example.
"""

from __future__ import annotations

import itertools
import math
import re

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import satchel
from satchel import KeyNotFound, UnsupportedValue

# Small alphabets, so that keys collide and patterns match often. Keys include the SQL
# LIKE and glob metacharacters; as keys they are plain characters.
KEYS = ["a", "b", "ab", "ba", "a%", "a_", "a*", "é\n"]
PATTERNS = [
    "*",
    "a*",
    "*b",
    "?b",
    "a?",
    "?",
    "??",
    "[ab]*",
    "[!a]*",
    "*a*",
    "a",
    "ab",
    "a%",
    "a_",
    "%",
    "_b",
    r"a\*",
    r"a\%",
    "a?b",
    "é\n",
    "[é]?",
    "é*",
    "a*b",
]
SCOPES = ["s1", "s1:a"]

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.lists(st.integers(-3, 3), max_size=3),
    st.tuples(st.integers(0, 2), st.text(max_size=2)),
)
keys = st.sampled_from(KEYS)
key_lists = st.lists(keys, unique=True, max_size=5)
patterns = st.sampled_from(PATTERNS)
deltas = st.one_of(st.integers(-3, 3), st.integers(-(2**70), 2**70))


def glob_to_regex(pattern):
    """Reference glob: * ? [abc] [a-z] [!x] [^x], backslash escapes, unclosed [ literal."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "*":
            out.append(".*")
            i += 1
        elif c == "?":
            out.append(".")
            i += 1
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:  # unclosed: a literal "["
                out.append(re.escape("["))
                i += 1
                continue
            body = pattern[i + 1 : j]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            body = body.replace("\\", "\\\\").replace("]", "\\]").replace("^", "\\^")
            out.append(f"[{'^' if negate else ''}{body}]")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def glob_match(pattern, key):
    return glob_to_regex(pattern).fullmatch(key) is not None


def strict_eq(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(strict_eq, a, b))
    return a == b


def is_int(value):
    return type(value) is int


class StoreModel(RuleBasedStateMachine):
    """Subclassed per engine with `new_store` set to a factory of fresh, empty stores."""

    new_store = None

    @initialize()
    def open_store(self):
        self.root = type(self).new_store()
        self.views = {name: self.root.scope(name) for name in SCOPES}
        # model: scope -> key -> [value, version]
        self.model = {name: {} for name in SCOPES}
        self.current = SCOPES[0]

    def teardown(self):
        root = getattr(self, "root", None)
        if root is not None:
            root.close()

    @property
    def store(self):
        return self.views[self.current]

    @property
    def data(self):
        return self.model[self.current]

    def _write(self, key, value):
        old = self.data.get(key)
        self.data[key] = [value, 1 if old is None else old[1] + 1]

    # -- rules -------------------------------------------------------------------------

    @rule(index=st.integers(0, len(SCOPES) - 1))
    def switch_scope(self, index):
        self.current = SCOPES[index]

    @rule(key=keys, value=values)
    def set(self, key, value):
        new = key not in self.data
        assert self.store.set(key, value) is new
        self._write(key, value)

    @rule(key=keys, value=values)
    def set_if_absent(self, key, value):
        new = key not in self.data
        assert self.store.set(key, value, if_absent=True) is new
        if new:
            self._write(key, value)

    @rule(key=keys, value=values)
    def setitem(self, key, value):
        self.store[key] = value
        self._write(key, value)

    @rule(key=keys)
    def get(self, key):
        if key in self.data:
            assert strict_eq(self.store.get(key), self.data[key][0])
            assert strict_eq(self.store[key], self.data[key][0])
        else:
            with pytest.raises(KeyNotFound):
                self.store.get(key)
            assert self.store.get(key, "default") == "default"

    @rule(request=key_lists)
    def get_many(self, request):
        got = self.store.get_many(request)
        expected = [(k, self.data[k][0]) for k in request if k in self.data]
        assert list(got) == [k for k, _ in expected]
        for k, v in expected:
            assert strict_eq(got[k], v)

    @rule(
        mapping=st.dictionaries(keys, values, max_size=5),
        if_absent=st.booleans(),
    )
    def set_many(self, mapping, if_absent):
        written = [k for k in mapping if not (if_absent and k in self.data)]
        assert self.store.set_many(mapping, if_absent=if_absent) == len(written)
        for k in written:
            self._write(k, mapping[k])

    @rule(key=keys)
    def delete(self, key):
        assert self.store.delete(key) is (key in self.data)
        self.data.pop(key, None)

    @rule(request=key_lists)
    def delete_many(self, request):
        live = [k for k in request if k in self.data]
        assert self.store.delete_many(request) == len(live)
        for k in live:
            del self.data[k]

    @rule(pattern=patterns)
    def delete_matching(self, pattern):
        live = [k for k in self.data if glob_match(pattern, k)]
        assert self.store.delete_matching(pattern) == len(live)
        for k in live:
            del self.data[k]

    @rule()
    def clear(self):
        self.store.clear()
        self.data.clear()

    @rule(key=keys, delta=deltas)
    def incr(self, key, delta):
        if key not in self.data:
            assert self.store.incr(key, delta) == delta
            self._write(key, delta)
        elif is_int(self.data[key][0]):
            expected = self.data[key][0] + delta
            assert self.store.incr(key, delta) == expected
            self._write(key, expected)
        else:
            with pytest.raises(UnsupportedValue):
                self.store.incr(key, delta)

    @rule(key=keys, with_default=st.booleans())
    def pop(self, key, with_default):
        if key in self.data:
            value = self.data.pop(key)[0]
            assert strict_eq(self.store.pop(key), value)
        elif with_default:
            assert self.store.pop(key, "default") == "default"
        else:
            with pytest.raises(KeyNotFound):
                self.store.pop(key)

    @rule(key=keys, choice=st.sampled_from(["none", "current", "stale", "future"]), value=values)
    def compare_and_set(self, key, choice, value):
        current = self.data[key][1] if key in self.data else None
        expected_version = {
            "none": None,
            "current": current,
            "stale": None if current is None else current - 1,
            "future": 1 if current is None else current + 1,
        }[choice]
        if expected_version == 0:
            expected_version = None
        ok = expected_version == current
        assert self.store.compare_and_set(key, expected_version, value) is ok
        if ok:
            self._write(key, value)

    @rule(key=keys, use_default=st.booleans())
    def update(self, key, use_default):
        kwargs = {"default": 0} if use_default else {}
        if key in self.data or use_default:
            old = self.data[key][0] if key in self.data else 0
            assert strict_eq(self.store.update(key, lambda v: [v], **kwargs), [old])
            self._write(key, [old])
        else:
            with pytest.raises(KeyNotFound):
                self.store.update(key, lambda v: [v], **kwargs)

    @rule(key=keys)
    def info_version(self, key):
        if key in self.data:
            info = self.store.info(key)
            assert info.version == self.data[key][1]
            assert info.key == key and info.scope == self.current
        else:
            with pytest.raises(KeyNotFound):
                self.store.info(key)

    @rule(key=keys)
    def exists(self, key):
        assert self.store.exists(key) is (key in self.data)
        assert (key in self.store) is (key in self.data)

    @rule(pattern=patterns)
    def keys_matching(self, pattern):
        expected = sorted(k for k in self.data if glob_match(pattern, k))
        assert list(self.store.keys(pattern)) == expected

    @rule(pattern=patterns)
    def items_matching(self, pattern):
        expected = sorted((k, v) for k, (v, _) in self.data.items() if glob_match(pattern, k))
        got = list(self.store.items(pattern))
        assert [k for k, _ in got] == [k for k, _ in expected]
        for (_, g), (_, e) in zip(got, expected, strict=True):
            assert strict_eq(g, e)

    @precondition(lambda self: hasattr(self, "model"))
    @invariant()
    def sizes_and_scopes(self):
        assert len(self.store) == len(self.data)
        assert list(self.store) == sorted(self.data)
        assert self.root.scopes() == sorted(s for s in SCOPES if self.model[s])


def test_store_matches_dict_model(engine, tmp_path):
    urls = [engine(tmp_path)]  # may skip (or fail) when the engine's service is unavailable
    counter = itertools.count()

    def new_store():
        path = tmp_path / f"example-{next(counter)}"
        path.mkdir()
        urls.append(engine(path))
        store = satchel.open(urls[-1], scope=SCOPES[0])
        for name in SCOPES:  # engines on a shared service may hand out used namespaces
            store.scope(name).clear()
        return store

    machine = type(
        f"StoreModel_{engine.name}", (StoreModel,), {"new_store": staticmethod(new_store)}
    )
    try:
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=100,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                database=None,
            ),
        )
    finally:
        if engine.cleanup is not None:
            for url in urls:
                engine.cleanup(url)


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("a*", "a\nb", True),
        ("a?", "ab", True),
        ("a", "ab", False),
        ("a%", "ab", False),
        ("a_", "ab", False),
        (r"a\*", "a*", True),
        (r"a\*", "ab", False),
        ("[!a]*", "ba", True),
        ("[!a]*", "ab", False),
        ("a[", "a[", True),
        ("?", "é", True),
    ],
)
def test_reference_glob(store, pattern, key, expected):
    """The model's own matcher, so a model bug cannot hide an engine bug."""
    assert glob_match(pattern, key) is expected
    store.set(key, 1)
    assert (list(store.keys(pattern)) == [key]) is expected
