"""Every error satchel raises.

    SatchelError
    ├── KeyNotFound (KeyError)          the key has no live value
    ├── InvalidInput (ValueError)       a bad key, scope, pattern, ttl or option
    │   └── InvalidInputType (TypeError)    ... of the wrong type (a key that is an int)
    ├── UnsupportedValue (TypeError)    the codec cannot store this value; nothing was written
    ├── CorruptData                     stored bytes cannot be read back (bad header, newer
    │                                   format, unknown codec, pickle not enabled)
    ├── DecryptionError                 no key, the wrong key, or a tampered encrypted value
    ├── ReadOnlyError                   a write to a store opened with readonly=True
    ├── StoreClosed                     the store was closed
    ├── ValueChanged                    a large value was replaced or deleted while read
    ├── QuotaExceeded                   a write would pass a quota; nothing was written
    └── BackendError                    the engine failed
        ├── BackendUnavailable          cannot reach the engine, or it went away
        ├── AccessDenied                a satchel server refused the token or the scope
        └── IncompatibleDatabase        not a satchel database, or written by a newer satchel

Messages name the key, scope and engine where they are known, and never a password.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "BackendError",
    "BackendUnavailable",
    "CorruptData",
    "DecryptionError",
    "IncompatibleDatabase",
    "InvalidInput",
    "InvalidInputType",
    "KeyNotFound",
    "QuotaExceeded",
    "ReadOnlyError",
    "SatchelError",
    "StoreClosed",
    "UnsupportedValue",
    "ValueChanged",
]


class SatchelError(Exception):
    """Root of every error satchel raises.

    `key`, `scope` and `engine` hold what the error is about, where known.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        scope: str | None = None,
        engine: str | None = None,
    ) -> None:
        self.message = message
        self.key = key
        self.scope = scope
        self.engine = engine
        super().__init__(message)

    def __str__(self) -> str:
        where = []
        if self.key is not None:
            where.append(f"key {_short(self.key)}")
        if self.scope is not None:
            where.append(f"scope {_short(self.scope)}")
        if self.engine is not None:
            where.append(f"engine {self.engine}")
        return f"{self.message} ({', '.join(where)})" if where else self.message


def _short(name: str) -> str:
    text = repr(name)
    return text if len(text) <= 80 else f"{text[:60]}...{text[-15:]}"


class KeyNotFound(SatchelError, KeyError):
    """The key has no live value (it was never set, was deleted, or expired)."""

    def __str__(self) -> str:  # KeyError would show repr(args[0])
        return SatchelError.__str__(self)


class InvalidInput(SatchelError, ValueError):
    """A key, scope, pattern, ttl or option is not acceptable; nothing was written."""


class InvalidInputType(InvalidInput, TypeError):
    """A key, scope, pattern, ttl or option has the wrong type; nothing was written."""


class UnsupportedValue(SatchelError, TypeError):
    """The codec cannot encode this value; nothing was written."""


class CorruptData(SatchelError):
    """Stored bytes cannot be decoded: damaged, from a newer satchel, or a codec not enabled."""


class DecryptionError(SatchelError):
    """An encrypted value cannot be read: no key given, the wrong key, or it was changed."""


class ReadOnlyError(SatchelError):
    """The store was opened with ``readonly=True``; nothing was written."""


class StoreClosed(SatchelError):
    """The store (or the connection it shares) was closed."""


class ValueChanged(SatchelError):
    """A large value (blob) was replaced, deleted or expired while it was being read.

    What was read so far belongs to the old value; open it again to read the new one.
    """


class QuotaExceeded(SatchelError):
    """A write would take a tenant (satchel server) or a plugin (Dify adapter) past its
    quota of bytes or keys; nothing was written."""


class BackendError(SatchelError):
    """The storage engine reported a failure."""


class BackendUnavailable(BackendError):
    """The engine cannot be reached, or the connection was lost."""


class AccessDenied(BackendError):
    """A satchel server refused the token (HTTP 401) or the scope (HTTP 403)."""


class IncompatibleDatabase(BackendError):
    """The target is not a satchel database, or was written by a newer satchel."""
