"""What a key, a scope and a pattern may be, and how glob patterns match.

Keys and scopes are non-empty `str` of any Unicode but NUL and lone surrogates (both
cannot be stored by every engine), at most 1024 (keys) or 255 (scopes) UTF-8 bytes; a
scope also holds no U+001F (KIND_MARK, which names satchel's own scopes).
Keys sort by code point, which is also the byte order of their UTF-8 form, so every
engine that compares bytes sorts them the same way.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from time import time
from typing import TYPE_CHECKING

from ._errors import InvalidInput, InvalidInputType

if TYPE_CHECKING:
    from ._backends.base import Backend

MAX_KEY_BYTES = 1024
MAX_SCOPE_BYTES = 255


def _check_name(name: object, what: str, limit: int) -> str:
    try:
        return _check(name, what, limit)
    except InvalidInput as exc:
        if isinstance(name, str):  # say which one, for errors raised from a batch
            setattr(exc, what, name)
        raise


def _check(name: object, what: str, limit: int) -> str:
    if type(name) is not str:
        if not isinstance(name, str):
            raise InvalidInputType(f"{what} must be a str, not {type(name).__name__}")
        name = str.__str__(name)  # a StrEnum member or other str subclass: its text
    # Fast path: an ASCII name of at most `limit` chars is that many bytes.
    if name.isascii() and 0 < len(name) <= limit and "\x00" not in name:
        return name
    if not name:
        raise InvalidInput(f"{what} must not be empty")
    if "\x00" in name:
        raise InvalidInput(f"{what} {name!r} contains a NUL character")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} {name!r} contains a lone surrogate") from None
    if size > limit:
        raise InvalidInput(f"{what} is {size} UTF-8 bytes long; the limit is {limit}")
    return name


def check_key(key: object) -> str:
    """Return `key` if it is a valid key, else raise InvalidInput / InvalidInputType."""
    if type(key) is str and key.isascii() and 0 < len(key) <= MAX_KEY_BYTES and "\x00" not in key:
        return key
    return _check_name(key, "key", MAX_KEY_BYTES)


# Where satchel keeps its own records (the salt of a passphrase) in any engine; users
# cannot name it, and Store.scopes() does not list it.
RESERVED_SCOPE = "__satchel__"
# Joins a scope and a kind ("b": the chunks of its large values, "e": its event sequences,
# "s": its time series on an engine without native series) into the scope where that
# kind keeps its records. No scope name holds it, so no user scope can be one.
KIND_MARK = "\x1f"


def kind_scope(scope: str, kind: str) -> str:
    """The scope where kind `kind` of `scope` keeps its records."""
    return f"{scope}{KIND_MARK}{kind}"


def split_kind(name: str) -> tuple[str, str] | None:
    """(scope, kind) if `name` is a kind scope (see `kind_scope`), else None."""
    scope, mark, kind = name.rpartition(KIND_MARK)
    return (scope, kind) if mark else None


def name_key(name: str) -> str:
    """The key of the head record of `name` (a sequence or a series) in its kind scope:
    a digest in braces, so a name may be long or hold braces, and a Redis Cluster keeps
    every ``{digest}/...`` record of that name in one hash slot."""
    return "{" + hashlib.blake2b(name.encode(), digest_size=16).hexdigest() + "}"


def head_keys(backend: Backend, scope: str, page: int = 1000) -> list[str]:
    """The head keys (see `name_key`) among the records of kind scope `scope`, skipping
    over each name's other records (``{digest}/...``) a page at a time."""
    heads: list[str] = []
    after = None
    while found := backend.scan(scope, "", after, page, time(), values=False):
        heads += [r.key for r in found if "/" not in r.key]
        last = found[-1].key
        if len(found) < page and "/" not in last:
            break
        after = last.partition("/")[0] + "~"  # past "{digest}/...": "~" sorts after "/"
    return heads


def check_scope(scope: object) -> str:
    """Return `scope` if it is a valid scope name, else raise InvalidInput / InvalidInputType."""
    name = _check_name(scope, "scope", MAX_SCOPE_BYTES)
    if name == RESERVED_SCOPE:
        raise InvalidInput(f"scope {RESERVED_SCOPE!r} is reserved for satchel itself")
    if KIND_MARK in name:
        raise InvalidInput(f"scope {name!r} holds U+001F, which satchel keeps for itself")
    return name


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled glob: `*`, `?`, `[abc]`, `[a-z]`, `[!abc]`, and backslash escapes.

    `prefix` is the literal text before the first wildcard (an engine serves it with a
    range scan); `exact` is True when the pattern has no wildcard at all (then it names
    one key, `prefix`); `regex` is None when `prefix` alone decides a match.
    """

    text: str
    prefix: str
    exact: bool
    regex: re.Pattern[str] | None

    def matches(self, key: str) -> bool:
        """True if `key` matches the whole pattern."""
        if self.regex is None:
            return key == self.prefix if self.exact else key.startswith(self.prefix)
        return self.regex.fullmatch(key) is not None


def escape_glob(literal: str) -> str:
    """A glob pattern matching exactly the text `literal` (wildcards escaped)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in literal)


def compile_pattern(pattern: object) -> Pattern:
    """Compile a glob pattern; raise InvalidInput for an empty or malformed one."""
    if not isinstance(pattern, str):
        raise InvalidInputType(f"pattern must be a str, not {type(pattern).__name__}")
    return _compile(str.__str__(pattern))


@lru_cache(maxsize=256)
def _compile(text: str) -> Pattern:
    if not text:
        raise InvalidInput("pattern must not be empty")
    parts: list[str] = []  # regex pieces
    prefix: list[str] = []
    literal_so_far = True
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 == n:
                raise InvalidInput(f"pattern {text!r} ends with a lone backslash")
            literal = text[i + 1]
            i += 2
        elif c == "*" or c == "?":
            parts.append(_STAR if c == "*" else ".")
            literal_so_far = False
            i += 1
            continue
        elif c == "[":
            cls = _char_class(text, i)
            if cls is None:  # an unclosed bracket is a literal "["
                literal = c
                i += 1
            else:
                regex, i = cls
                parts.append(regex)
                literal_so_far = False
                continue
        else:
            literal = c
            i += 1
        parts.append(re.escape(literal))
        if literal_so_far:
            prefix.append(literal)
    head = "".join(prefix)
    if literal_so_far:
        return Pattern(text, head, True, None)
    if parts[len(prefix) :] == [_STAR]:
        return Pattern(text, head, False, None)
    return Pattern(text, head, False, re.compile(_linear_regex(parts), re.DOTALL))


_STAR = "*"  # a `*` among regex pieces (a literal "*" is escaped, so never equal)


def _linear_regex(parts: list[str]) -> str:
    """The regex for glob pieces, in time linear in key x pattern length.

    A plain ``.*`` per star backtracks polynomially (``*a*a*a*a!`` against a long key
    takes minutes). Each run of fixed-width pieces between two stars is matched at its
    leftmost place instead, in an atomic group that is never re-entered: for fixed-width
    runs the leftmost place is always a right choice, so the match is the same.
    """
    runs: list[list[str]] = [[]]
    for piece in parts:
        if piece == _STAR:
            runs.append([])
        else:
            runs[-1].append(piece)
    if len(runs) == 1:
        return "".join(runs[0])
    head, *middle, tail = runs
    pieces = ["".join(head)]
    pieces += [f"(?>.*?{''.join(run)})" for run in middle if run]
    pieces.append(".*" + "".join(tail))
    return "".join(pieces)


def _char_class(text: str, start: int) -> tuple[str, int] | None:
    """Parse `[...]` at `start`; return (regex, index after it), or None if unclosed."""
    i = start + 1
    negate = i < len(text) and text[i] in "!^"
    if negate:
        i += 1
    items: list[str] = []
    first = True
    while i < len(text):
        c = text[i]
        if c == "]" and not first:
            body = "".join(items)
            return (f"[^{body}]" if negate else f"[{body}]"), i + 1
        first = False
        if c == "\\" and i + 1 < len(text):
            c = text[i + 1]
            i += 1
        i += 1
        if i + 1 < len(text) and text[i] == "-" and text[i + 1] != "]":
            end = text[i + 1]
            if end == "\\" and i + 2 < len(text):
                end = text[i + 2]
                i += 1
            i += 2
            if end < c:
                raise InvalidInput(f"pattern {text!r} has a reversed range {c}-{end}")
            items.append(f"{re.escape(c)}-{re.escape(end)}")
        else:
            items.append(re.escape(c))
    return None
