"""Key and scope validation, glob patterns, and the prefix range bound."""

from __future__ import annotations

import fnmatch
import time
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import satchel
from satchel._backends.base import prefix_upper_bound
from satchel._keys import (
    MAX_KEY_BYTES,
    MAX_SCOPE_BYTES,
    check_key,
    check_scope,
    compile_pattern,
)

# --- check_key / check_scope ------------------------------------------------------------------


def test_limits() -> None:
    assert MAX_KEY_BYTES == 1024
    assert MAX_SCOPE_BYTES == 255


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "x" * 1024,
        "é" * 512,  # 2 bytes each: exactly 1024
        "€" * 341 + "a",  # 3 bytes each: 1023 + 1
        "😀" * 256,  # 4 bytes each
        "%_*?[]\\/.. \n\t",
        "\U0010ffff",
        "\ud7ff\ue000",
    ],
    ids=repr,
)
def test_valid_keys(key: str) -> None:
    assert check_key(key) is key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "x" * 1025,
        "é" * 512 + "a",  # 1025 bytes in 513 characters
        "€" * 342,  # 1026 bytes in 342 characters
        "😀" * 256 + "a",
        "😀" * 257,
        "a\x00b",
        "\x00",
        "x" * 1023 + "\x00",
        "\ud800",
        "ok\udfffok",
        "é" * 10 + "\ud83d",
    ],
    ids=lambda k: repr(k)[:40],
)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(satchel.InvalidInput) as info:
        check_key(key)
    assert not isinstance(info.value, satchel.InvalidInputType)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "scope",
    ["a", "s" * 255, "é" * 127 + "a", "😀" * 63 + "abc", "default"],
    ids=lambda s: repr(s)[:40],
)
def test_valid_scopes(scope: str) -> None:
    assert check_scope(scope) is scope


@pytest.mark.parametrize(
    "scope",
    ["", "s" * 256, "é" * 128, "😀" * 64, "a\x00", "\udc00"],
    ids=lambda s: repr(s)[:40],
)
def test_invalid_scopes(scope: str) -> None:
    with pytest.raises(satchel.InvalidInput):
        check_scope(scope)


def test_a_key_that_is_a_valid_scope_length_is_checked_against_its_own_limit() -> None:
    name = "k" * 300
    assert check_key(name) == name
    with pytest.raises(satchel.InvalidInput):
        check_scope(name)


@pytest.mark.parametrize("name", [1, 1.5, None, b"key", bytearray(b"k"), ["k"], ("k",), object()])
@pytest.mark.parametrize("check", [check_key, check_scope])
def test_non_str_names_are_invalid_input_type(name: Any, check: Any) -> None:
    with pytest.raises(satchel.InvalidInputType) as info:
        check(name)
    error = info.value
    assert isinstance(error, TypeError)
    assert isinstance(error, ValueError)
    assert isinstance(error, satchel.InvalidInput)
    assert isinstance(error, satchel.SatchelError)


def test_invalid_key_error_names_the_key() -> None:
    with pytest.raises(satchel.InvalidInput) as info:
        check_key("bad\x00key")
    assert info.value.key == "bad\x00key"
    with pytest.raises(satchel.InvalidInput) as info:
        check_scope("bad\x00scope")
    assert info.value.scope == "bad\x00scope"


@given(st.text(st.characters(exclude_categories=()), max_size=300))
def test_check_key_agrees_with_the_rule(key: str) -> None:
    try:
        size = len(key.encode("utf-8"))
        valid = 0 < size <= MAX_KEY_BYTES and "\x00" not in key
    except UnicodeEncodeError:
        valid = False
    if valid:
        assert check_key(key) == key
    else:
        with pytest.raises(satchel.InvalidInput):
            check_key(key)


# --- compile_pattern ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "prefix", "exact", "has_regex"),
    [
        ("user:*", "user:", False, False),
        ("*", "", False, False),
        ("user:42", "user:42", True, False),
        ("a%b_c", "a%b_c", True, False),
        ("user:?", "user:", False, True),
        ("user:*:name", "user:", False, True),
        ("[ab]c", "", False, True),
        (r"a\*b", "a*b", True, False),
        (r"a\*b*", "a*b", False, False),
        (r"a\[x]*", "a[x]", False, False),
        (r"\\", "\\", True, False),
        ("a[b", "a[b", True, False),  # unclosed bracket: a literal "["
        ("a[b*", "a[b", False, False),
        ("x**", "x", False, True),
    ],
)
def test_pattern_prefix_and_kind(pattern: str, prefix: str, exact: bool, has_regex: bool) -> None:
    compiled = compile_pattern(pattern)
    assert compiled.prefix == prefix
    assert compiled.exact is exact
    assert (compiled.regex is not None) is has_regex


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("user:*", ["user:", "user:1", "user:a/b\nc"], ["user", "xuser:1", "User:1"]),
        ("user:42", ["user:42"], ["user:421", "user:4", "xuser:42"]),
        ("a%b_c", ["a%b_c"], ["aXbYc", "a%bxc"]),
        ("?", ["a", "\n", "😀"], ["", "ab"]),
        ("*:name", [":name", "a:b:name"], ["a:names"]),
        ("[abc]x", ["ax", "cx"], ["dx", "x", "abx"]),
        ("[a-c]", ["a", "b", "c"], ["d", "-", "A"]),
        ("[!a-c]", ["d", "-", "\n"], ["a", "b", "", "dd"]),
        ("[^a-c]", ["d", "^"], ["a", "c"]),
        ("[]a]", ["]", "a"], ["b"]),
        ("[!]a]", ["b"], ["]", "a"]),
        ("[a-]", ["a", "-"], ["b"]),
        ("[-a]", ["a", "-"], ["b"]),
        ("[*?]", ["*", "?"], ["a"]),
        (r"[\]]", ["]"], ["\\"]),
        (r"[a\-z]", ["a", "-", "z"], ["b"]),
        (r"\*", ["*"], ["a", "\\*"]),
        (r"\?x", ["?x"], ["ax"]),
        (r"a\\*", ["a\\", "a\\bc"], ["a", "ab"]),
        ("a[b", ["a[b"], ["ab"]),
        ("[", ["["], ["a"]),
        ("a[", ["a["], ["a"]),
        ("[é-ü]", ["é", "ö"], ["e", "ÿ"]),
        ("😀*", ["😀", "😀x"], ["x😀"]),
        (".*", [".*", ".*x"], ["a"]),  # regex characters are literal
        ("(a|b)", ["(a|b)"], ["a"]),
        ("a+", ["a+"], ["aa"]),
    ],
)
def test_pattern_matches(pattern: str, matching: list[str], not_matching: list[str]) -> None:
    compiled = compile_pattern(pattern)
    for key in matching:
        assert compiled.matches(key), (pattern, key)
    for key in not_matching:
        assert not compiled.matches(key), (pattern, key)


def test_patterns_are_case_sensitive() -> None:
    assert not compile_pattern("ABC").matches("abc")
    assert not compile_pattern("A*").matches("abc")
    assert not compile_pattern("[A-C]").matches("b")


@pytest.mark.parametrize("pattern", ["[z-a]", "x[b-a]*", "[!9-0]", r"[\z-a]", "", "abc\\", "*\\"])
def test_malformed_patterns_are_invalid_input(pattern: str) -> None:
    with pytest.raises(satchel.InvalidInput):
        compile_pattern(pattern)


@pytest.mark.parametrize("pattern", [None, 1, b"user:*", ["*"]])
def test_non_str_pattern_is_invalid_input_type(pattern: Any) -> None:
    with pytest.raises(satchel.InvalidInputType):
        compile_pattern(pattern)


# --- prefix_upper_bound ---------------------------------------------------------------------

BOUNDARY = "\x00\x01az\x7f\x80\uffff\ud7fe\ud7ff\ue000\ue001\U00010000\U0010fffe\U0010ffff"
boundary_text = st.text(st.sampled_from(BOUNDARY), max_size=5)
valid_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=5)


def test_prefix_upper_bound_examples() -> None:
    assert prefix_upper_bound("") is None
    assert prefix_upper_bound("user:") == "user;"
    assert prefix_upper_bound("a\ud7ff") == "a\ue000"  # skips the surrogates
    assert prefix_upper_bound("a\U0010ffff") == "b"
    assert prefix_upper_bound("\U0010ffff\U0010ffff") is None


@settings(max_examples=500)
@given(prefix=boundary_text | valid_text, tail=boundary_text | valid_text, other=boundary_text)
@example(prefix="\ud7ff", tail="", other="\ue000")
@example(prefix="\U0010ffff", tail="", other="\U0010ffff\x00")
@example(prefix="a\U0010ffff", tail="", other="b")
def test_prefix_upper_bound_is_exact(prefix: str, tail: str, other: str) -> None:
    bound = prefix_upper_bound(prefix)
    for s in (prefix + tail, other, prefix[:-1] + other, tail):
        in_range = prefix <= s and (bound is None or s < bound)
        assert s.startswith(prefix) == in_range, (prefix, s, bound)
    if bound is not None:
        assert all(not 0xD800 <= ord(c) <= 0xDFFF for c in bound)
        assert not bound.startswith(prefix)


# --- compile_pattern against fnmatch ----------------------------------------------------------

pattern_alphabet = st.sampled_from("ab-[]!*?")
key_alphabet = st.sampled_from("ab-[]!*?\n")


@settings(max_examples=1000)
@given(st.text(pattern_alphabet, min_size=1, max_size=8), st.text(key_alphabet, max_size=6))
@example("[!]a]", "b")
@example("[a-]", "-")
@example("[]-a]", "]")
@example("*", "a\nb")
def test_matches_agrees_with_fnmatchcase(pattern: str, key: str) -> None:
    try:
        compiled = compile_pattern(pattern)
    except satchel.InvalidInput as exc:  # satchel rejects reversed ranges, fnmatch drops them
        assert "reversed range" in str(exc)
        assume(False)
        raise
    assert compiled.matches(key) == fnmatch.fnmatchcase(key, pattern), (pattern, key)
    if compiled.matches(key):
        assert key.startswith(compiled.prefix)
    if compiled.exact:
        assert compiled.matches(key) == (key == compiled.prefix)


@given(st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=10))
def test_an_escaped_key_matches_exactly_itself(key: str) -> None:
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in key)
    compiled = compile_pattern(escaped)
    assert compiled.exact
    assert compiled.prefix == key
    assert compiled.matches(key)
    assert not compiled.matches(key + "x")


def test_many_stars_match_in_linear_time() -> None:
    """`*a*a*...!` against a long key backtracks for minutes as a naive regex (ReDoS)."""
    pattern = compile_pattern("*a" * 12 + "!")
    started = time.perf_counter()
    assert not pattern.matches("a" * 1000)
    assert compile_pattern("*a" * 12 + "*").matches("a" * 1000)
    assert time.perf_counter() - started < 0.5


@given(
    st.lists(st.sampled_from(["a", "b", "*", "?", "[ab]", "[!a]", "**"]), min_size=1, max_size=8),
    st.text(alphabet="ab", min_size=1, max_size=10),
)
def test_glob_matches_like_fnmatchcase(pieces: list[str], key: str) -> None:
    pattern = "".join(pieces)
    assert compile_pattern(pattern).matches(key) == fnmatch.fnmatchcase(key, pattern)
