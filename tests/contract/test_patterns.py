"""Glob patterns, key order, and lazy iteration."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from satchel import InvalidInput, InvalidInputType


def _keys(store, pattern):
    return list(store.keys(pattern))


def _fill(store, keys):
    store.set_many({k: k for k in keys})


# -- exact keys and SQL LIKE / regex metacharacters -------------------------------------


def test_pattern_without_wildcard_is_exact_not_substring(store):
    _fill(store, ["user", "user1", "superuser", "a_user", "User"])
    assert _keys(store, "user") == ["user"]
    assert _keys(store, "use") == []


def test_percent_is_literal(store):
    _fill(store, ["a%c", "abc", "a%", "a", "ab%c"])
    assert _keys(store, "a%c") == ["a%c"]
    assert _keys(store, "a%") == ["a%"]
    assert _keys(store, "%") == []
    assert _keys(store, "*%*") == ["a%", "a%c", "ab%c"]


def test_underscore_is_literal(store):
    _fill(store, ["a_c", "abc", "a_", "ab", "a__"])
    assert _keys(store, "a_c") == ["a_c"]
    assert _keys(store, "a_") == ["a_"]
    assert _keys(store, "a_*") == ["a_", "a__", "a_c"]
    assert _keys(store, "_") == []


@pytest.mark.parametrize(
    ("key", "other"),
    [
        ("a.c", "abc"),
        ("a+", "aa"),
        ("(a)", "a"),
        ("a$", "a"),
        ("^a", "a"),
        ("a|b", "a"),
        ("a{2}", "aa"),
        ("!a", "a"),
        ("a]", "a"),
        ("a^b", "ab"),
        ("a'b", "ab"),
        ('a"b', "ab"),
    ],
)
def test_regex_and_quote_characters_are_literal(store, key, other):
    _fill(store, [key, other])
    assert _keys(store, key) == [key]


def test_pattern_is_case_sensitive(store):
    _fill(store, ["abc", "ABC", "Abc"])
    assert _keys(store, "abc") == ["abc"]
    assert _keys(store, "a*") == ["abc"]
    assert _keys(store, "A*") == ["ABC", "Abc"]


# -- wildcards ---------------------------------------------------------------------------


def test_star_matches_any_run_including_empty(store):
    _fill(store, ["a", "ab", "abc", "b", "ba", "cab"])
    assert _keys(store, "a*") == ["a", "ab", "abc"]
    assert _keys(store, "*b") == ["ab", "b", "cab"]
    assert _keys(store, "*b*") == ["ab", "abc", "b", "ba", "cab"]
    assert _keys(store, "a*c") == ["abc"]
    assert _keys(store, "*") == ["a", "ab", "abc", "b", "ba", "cab"]
    assert _keys(store, "**") == _keys(store, "*")


def test_star_crosses_slashes_and_newlines(store):
    _fill(store, ["a/b/c", "a\nb", "a\r\nb", "x"])
    assert _keys(store, "a*") == ["a\nb", "a\r\nb", "a/b/c"]
    assert _keys(store, "*b") == ["a\nb", "a\r\nb"]
    assert _keys(store, "a*c") == ["a/b/c"]


def test_question_mark_matches_exactly_one_character(store):
    _fill(store, ["a", "ab", "aé", "a😀", "a\n", "abc", "a😀b"])
    assert _keys(store, "a?") == sorted(["ab", "aé", "a😀", "a\n"])
    assert _keys(store, "a??") == ["abc", "a😀b"]
    assert _keys(store, "?") == ["a"]
    assert _keys(store, "a?b") == ["a😀b"]


def test_bracket_set(store):
    _fill(store, ["xa", "xb", "xc", "xd", "x", "xab"])
    assert _keys(store, "x[abc]") == ["xa", "xb", "xc"]
    assert _keys(store, "x[ad]") == ["xa", "xd"]
    assert _keys(store, "x[a]*") == ["xa", "xab"]


def test_bracket_negation(store):
    _fill(store, ["xa", "xb", "xc", "x", "xab"])
    assert _keys(store, "x[!a]") == ["xb", "xc"]
    assert _keys(store, "x[^a]") == ["xb", "xc"]
    assert _keys(store, "x[!ab]") == ["xc"]


def test_bracket_range(store):
    _fill(store, ["k0", "k5", "k9", "ka", "kz", "kA", "k-"])
    assert _keys(store, "k[0-9]") == ["k0", "k5", "k9"]
    assert _keys(store, "k[a-z]") == ["ka", "kz"]
    assert _keys(store, "k[!0-9]") == ["k-", "kA", "ka", "kz"]
    assert _keys(store, "k[0-4a-c]") == ["k0", "ka"]


def test_bracket_with_unicode(store):
    _fill(store, ["xé", "xe", "x😀"])
    assert _keys(store, "x[é😀]") == ["xé", "x😀"]


def test_unclosed_bracket_is_literal(store):
    _fill(store, ["a[b", "a[", "ab", "a[bc"])
    assert _keys(store, "a[b") == ["a[b"]
    assert _keys(store, "a[") == ["a["]
    assert _keys(store, "a[*") == ["a[", "a[b", "a[bc"]


def test_backslash_escapes(store):
    _fill(store, ["a*b", "axb", "a?b", "a[b]", "ab", "a\\b", "a\\xb", "a"])
    assert _keys(store, r"a\*b") == ["a*b"]
    assert _keys(store, r"a\?b") == ["a?b"]
    assert _keys(store, r"a\[b]") == ["a[b]"]
    assert _keys(store, r"a\\b") == ["a\\b"]
    assert _keys(store, r"a\\*") == ["a\\b", "a\\xb"]
    assert _keys(store, r"\a") == ["a"]


def test_escaped_wildcard_with_wildcards(store):
    _fill(store, ["x*1", "x*2", "xy1", "x*"])
    assert _keys(store, r"x\**") == ["x*", "x*1", "x*2"]
    assert _keys(store, r"x\*?") == ["x*1", "x*2"]


@pytest.mark.parametrize("pattern", ["", "a\\", "\\"], ids=repr)
def test_invalid_pattern(store, pattern):
    store.set("a", 1)
    with pytest.raises(InvalidInput):
        list(store.keys(pattern))
    with pytest.raises(InvalidInput):
        store.delete_matching(pattern)
    assert store.exists("a")


@pytest.mark.parametrize("pattern", [None, 1, b"a*", ["a"]], ids=repr)
def test_pattern_must_be_str(store, pattern):
    store.set("a", 1)
    with pytest.raises(InvalidInputType):
        list(store.keys(pattern))
    with pytest.raises(InvalidInputType):
        store.delete_matching(pattern)
    assert store.exists("a")


def test_items_and_values_use_patterns(store):
    store.set_many({"p:2": 2, "p:1": 1, "q:1": 10, "p%": 99})
    assert list(store.items("p:*")) == [("p:1", 1), ("p:2", 2)]
    assert list(store.values("p:*")) == [1, 2]
    assert list(store.items("p%")) == [("p%", 99)]


def test_delete_matching_uses_glob_semantics(store):
    _fill(store, ["a%", "ab", "a_", "a*", "a", "x"])
    assert store.delete_matching("a%") == 1
    assert store.delete_matching("a_") == 1
    assert store.delete_matching(r"a\*") == 1
    assert list(store.keys()) == ["a", "ab", "x"]
    assert store.delete_matching("a?") == 1
    assert list(store.keys()) == ["a", "x"]


def test_patterns_stay_in_their_scope(store):
    store.set("user:1", 1)
    store.scope("other").set_many({"user:2": 2, "user:3": 3})
    assert _keys(store, "user:*") == ["user:1"]
    assert store.delete_matching("user:*") == 1
    assert list(store.scope("other").keys("user:*")) == ["user:2", "user:3"]


# -- order -------------------------------------------------------------------------------


def test_keys_sorted_by_code_point(store):
    keys = ["b", "a", "B", "é", "😀", "\uffff", "z", "a\n", "a b", "ab", "A", "~", "\u00ff", "1"]
    _fill(store, keys)
    expected = sorted(keys)  # Python str order == code point order
    assert list(store.keys()) == expected
    assert list(store) == expected
    assert [k for k, _ in store.items()] == expected
    assert list(store.values()) == expected  # each value is its key


def test_supplementary_plane_sorts_after_bmp(store):
    # UTF-16 order would put U+1F600 (surrogate pair D83D..) before U+FFFF; code point
    # order puts it after.
    _fill(store, ["\U0001f600", "\uffff", "\ue000"])
    assert list(store.keys()) == ["\ue000", "\uffff", "\U0001f600"]


# -- laziness ----------------------------------------------------------------------------


def test_keys_items_values_are_lazy_iterators(store):
    store.set("a", 1)
    for it in (store.keys(), store.items(), store.values(), iter(store)):
        assert isinstance(it, Iterator)
        assert iter(it) is it


def test_keys_over_many_pages_with_pattern(store):
    wanted = [f"p:{i:05d}" for i in range(2500)]
    store.set_many({k: i for i, k in enumerate(wanted)})
    store.set_many({f"q:{i:05d}": i for i in range(600)})
    store.set_many({f"o:{i:05d}": i for i in range(600)})
    it = store.keys("p:*")
    assert next(it) == "p:00000"
    rest = list(it)
    assert ["p:00000", *rest] == wanted
    assert list(store.values("p:*")) == list(range(2500))
    assert sum(1 for _ in store.keys("*")) == 3700
    assert list(store.keys("p:0249?")) == [f"p:0249{i}" for i in range(10)]


def test_interleaved_iterators(store):
    store.set_many({f"a:{i:04d}": i for i in range(1500)})
    store.set_many({f"b:{i:04d}": i for i in range(1500)})
    ia, ib = store.keys("a:*"), store.keys("b:*")
    got_a, got_b = [], []
    for _ in range(1500):
        got_a.append(next(ia))
        got_b.append(next(ib))
    assert got_a == [f"a:{i:04d}" for i in range(1500)]
    assert got_b == [f"b:{i:04d}" for i in range(1500)]
    assert next(ia, None) is None
    assert next(ib, None) is None


def test_writes_during_iteration_do_not_break_it(store):
    wanted = [f"p:{i:05d}" for i in range(2500)]
    store.set_many({k: 0 for k in wanted})
    it = store.keys("p:*")
    seen = [next(it) for _ in range(1000)]
    # writes outside the pattern and overwrites of keys already seen
    store.set_many({f"q:{i}": i for i in range(100)})
    store.set("p:00000", 1)
    store.incr("p:00001")
    seen.extend(it)
    assert seen == wanted
