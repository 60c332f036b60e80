"""Tenants of a satchel server: who a bearer token is, what it may touch, how much it holds.

The config file (TOML) looks like this; ``satchel token add|list|revoke`` writes it::

    [tenants.alice]
    prefix = "alice:"          # server-side scopes of this tenant start with it
    scopes = ["*"]             # glob patterns of the scope names it may use
    readonly = false
    admin = false              # may see every tenant's usage (/v1/tenants, the /ui page)
    quota_bytes = 104857600    # default 100 MiB: what storage takes (service.Costs)
    quota_keys = 1000000

    [[tokens]]
    id = "3f2a9c1b"
    tenant = "alice"
    sha256 = "<hex digest of the token>"

Only digests of tokens are kept; tokens are random 32-byte secrets, so a plain SHA-256
is enough, and lookups compare digests with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import re
import secrets
import threading
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import InvalidInput, SatchelError
from .._keys import RESERVED_SCOPE, check_scope, compile_pattern, kind_scope, split_kind

DEFAULT_QUOTA_BYTES = 100 * 1024 * 1024
DEFAULT_QUOTA_KEYS = 1_000_000
RECOUNT_EVERY = 300.0  # seconds: expired records leave the usage at the next recount
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
KINDS = frozenset({"b", "e"})  # kinds of scope a tenant's Store keeps beside its scopes (_keys)
log = logging.getLogger("satchel.server")


class ConfigUnreadable(SatchelError):
    """The server's config file is unreadable: every token is refused (503) until it is
    fixed, since the broken file may hold a revocation."""


@dataclass
class Tenant:
    """One tenant: its scope prefix, rights and quota."""

    name: str
    prefix: str
    scopes: list[str] = field(default_factory=lambda: ["*"])
    readonly: bool = False
    admin: bool = False
    quota_bytes: int = DEFAULT_QUOTA_BYTES
    quota_keys: int = DEFAULT_QUOTA_KEYS

    def __post_init__(self) -> None:
        kinds: dict[str, type] = {"prefix": str, "readonly": bool, "admin": bool,
                                  "quota_bytes": int, "quota_keys": int}  # fmt: skip
        for name, kind in kinds.items():
            value: Any = getattr(self, name)
            negative = type(value) is int and value < 0
            if type(value) is not kind or negative:
                raise InvalidInput(f"tenant {self.name!r}: {name} must be a {kind.__name__}"
                                   f"{' >= 0' if kind is int else ''}, not {value!r}")  # fmt: skip
        if not isinstance(self.scopes, list) or not all(isinstance(p, str) for p in self.scopes):
            raise InvalidInput(f"tenant {self.name!r}: scopes must be a list of glob patterns")
        for pattern in self.scopes:
            compile_pattern(pattern)  # a bad glob is an error now, not at the first request

    def allows(self, scope: str) -> bool:
        """True if this tenant may use `scope` (its own name, before the prefix)."""
        if scope == RESERVED_SCOPE:  # where a Store keeps its passphrase salt
            return True
        return any(compile_pattern(p).matches(scope) for p in self.scopes)

    def to_toml(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "scopes": self.scopes,
            "readonly": self.readonly,
            "admin": self.admin,
            "quota_bytes": self.quota_bytes,
            "quota_keys": self.quota_keys,
        }


@dataclass
class TokenEntry:
    """A token as the config keeps it: an id to name it by, its tenant, its digest."""

    id: str
    tenant: str
    sha256: str


_SHA256 = re.compile(r"[0-9a-f]{64}")


def digest(token: str) -> str:
    """The hex SHA-256 of `token`, as stored in the config."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: str) -> str:
    """Return `name` if it can name a tenant, else raise InvalidInput."""
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"a tenant name is 1-64 of A-Z a-z 0-9 _ . -, not {name!r}")
    return name


@dataclass
class Config:
    """Tenants and tokens, as read from (and written to) the config file."""

    tenants: dict[str, Tenant] = field(default_factory=dict)
    tokens: list[TokenEntry] = field(default_factory=list)
    unreadable: bool = False  # a stand-in for a file that could not be read: no token works

    @classmethod
    def broken(cls, path: Path, exc: Exception) -> Config:
        """The config a running server uses while `path` is unreadable (`exc` says why):
        it refuses every token, rather than keep serving ones the file may revoke."""
        log.error("server config %s is unreadable, so every token is refused until it is "
                  "fixed: %s", path, exc)  # fmt: skip
        return cls(unreadable=True)

    @classmethod
    def load(cls, path: Path) -> Config:
        """Read `path`; a missing file is an empty config. Raises InvalidInput if bad."""
        if not path.exists():
            return cls()
        try:
            data = tomllib.loads(path.read_text("utf-8"))
            tenants = {
                check_name(name): Tenant(name=name, **values)
                for name, values in data.get("tenants", {}).items()
            }
            tokens = [TokenEntry(**entry) for entry in data.get("tokens", [])]
            config = cls(tenants, tokens)
            config.validate()
        except (tomllib.TOMLDecodeError, TypeError, AttributeError, InvalidInput) as exc:
            raise InvalidInput(f"bad server config {path}: {exc}") from exc
        return config

    def validate(self) -> None:
        """Raise InvalidInput if two tenants' prefixes overlap or a token has no tenant."""
        prefixes = sorted((t.prefix, t.name) for t in self.tenants.values() if not t.admin)
        for (a, name_a), (b, name_b) in itertools.pairwise(prefixes):
            if b.startswith(a):
                raise InvalidInput(f"tenants {name_a!r} and {name_b!r} have nesting prefixes")
        for prefix, name in prefixes:  # the server's own records live there
            if RESERVED_SCOPE.startswith(prefix):
                raise InvalidInput(f"tenant {name!r}: prefix {prefix!r} reaches the reserved "
                                   f"scope {RESERVED_SCOPE!r}")  # fmt: skip
        for entry in self.tokens:
            if entry.tenant not in self.tenants:
                raise InvalidInput(f"token {entry.id} names unknown tenant {entry.tenant!r}")
            if not (isinstance(entry.sha256, str) and _SHA256.fullmatch(entry.sha256)):
                raise InvalidInput(f"token {entry.id}: sha256 must be 64 lowercase hex digits")

    def save(self, path: Path) -> None:
        """Write the config to `path` (owner-only permissions), atomically."""
        lines = []
        for tenant in self.tenants.values():
            lines.append(f"[tenants.{tenant.name}]")
            lines.extend(f"{k} = {_toml(v)}" for k, v in tenant.to_toml().items())
            lines.append("")
        for entry in self.tokens:
            lines.append("[[tokens]]")
            lines.extend(f"{k} = {_toml(v)}" for k, v in vars(entry).items())
            lines.append("")
        tmp = path.with_name(path.name + ".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text("\n".join(lines), "utf-8")
        tmp.replace(path)

    def add_token(self, tenant: Tenant) -> str:
        """Create a token for `tenant` (added if new); return the token (shown once)."""
        if tenant.name not in self.tenants:
            self.tenants[tenant.name] = tenant
            self.validate()
        token = secrets.token_urlsafe(32)
        self.tokens.append(TokenEntry(secrets.token_hex(4), tenant.name, digest(token)))
        return token

    def revoke(self, what: str) -> int:
        """Remove the token with id `what`, or every token of tenant `what`; return how many."""
        kept = [t for t in self.tokens if what not in (t.id, t.tenant)]
        removed = len(self.tokens) - len(kept)
        self.tokens = kept
        return removed

    def tenant_for(self, token: str) -> Tenant | None:
        """The tenant whose token this is, or None. Checks every entry in constant time.
        Raises ConfigUnreadable if this config stands for an unreadable file."""
        if self.unreadable:
            raise ConfigUnreadable("server configuration is unreadable")
        wanted = digest(token)
        found = None
        for entry in self.tokens:
            if hmac.compare_digest(entry.sha256, wanted):
                found = self.tenants.get(entry.tenant)
        return found


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    text = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)
    return f'"{text}"'


def full_scope(tenant: Tenant, scope: object) -> str:
    """The server-side name of `scope` for `tenant`. Raises InvalidInput for a bad name,
    PermissionError for a scope the tenant may not use.

    A kind scope of one of its scopes (``kind_scope(scope, kind)``: where a Store keeps
    the chunks of its large values, "b", and its event sequences, "e") is the tenant's
    too: ``kind_scope(prefix + scope, kind)``.
    """
    if isinstance(scope, str) and (parts := split_kind(scope)) is not None:
        base, kind = parts
        if kind in KINDS:
            name = check_scope(base)  # never the reserved scope, nor a kind of a kind
            if not tenant.allows(name):
                raise PermissionError(f"tenant {tenant.name!r} may not use scope {name!r}")
            return kind_scope(tenant.prefix + name, kind)
    name = RESERVED_SCOPE if scope == RESERVED_SCOPE else check_scope(scope)
    if not tenant.allows(name):
        raise PermissionError(f"tenant {tenant.name!r} may not use scope {name!r}")
    return tenant.prefix + name


def own_scopes(tenant: Tenant, names: Iterable[str], kinds: bool = False) -> list[str]:
    """The tenant's scope names among server-side `names`, prefix removed; its kind scopes
    (a Store's own records, not scopes of their own) only with `kinds`."""
    p = tenant.prefix
    own = (n[len(p) :] for n in names if n.startswith(p) and len(n) > len(p))
    return sorted(n for n in own if kinds or split_kind(n) is None)


@dataclass
class Usage:
    """Bytes (as service.Costs charges them) and live keys a tenant holds, as last counted."""

    bytes: int = 0
    keys: int = 0
    counted_at: float = 0.0


class Accounts:
    """Per-tenant usage, counted by `recount` and kept up to date by writes.

    Writes of one tenant go through `lock(tenant)`, so a quota check and the write it
    allows cannot interleave with another write of that tenant (in this process: run
    one server process per store).
    """

    def __init__(self, recount: Callable[[Tenant], Usage]) -> None:
        self._recount = recount
        self._usage: dict[str, Usage] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, tenant: Tenant) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(tenant.name, threading.Lock())

    def usage(self, tenant: Tenant) -> Usage:
        """The tenant's usage; recounted when stale. Call with the tenant's lock held."""
        found = self._usage.get(tenant.name)
        if found is None or time.time() - found.counted_at > RECOUNT_EVERY:
            found = self._usage[tenant.name] = self._recount(tenant)
        return found

    def forget(self, tenant: Tenant | str) -> None:
        """Drop the tenant's count (after a clear): the next use recounts."""
        self._usage.pop(tenant if isinstance(tenant, str) else tenant.name, None)
