"""The parts of an engine URL that must never be shown: its password."""

from __future__ import annotations

from urllib.parse import unquote


def _userinfo(url: str) -> tuple[int, int] | None:
    """Where the password of `url` starts and ends, or None if it has none.

    Done by hand, not with urlsplit: a password may hold characters ("/", "#", "[")
    that make a URL parser fail or cut it short, and it must never be shown anyway.
    """
    start = url.find("://")
    at = url.rfind("@")
    if start < 0 or at < start:
        return None
    colon = url.find(":", start + 3, at)
    return None if colon < 0 else (colon + 1, at)


def redact(url: str) -> str:
    """`url` with any password replaced by ``***``."""
    span = _userinfo(url)
    return url if span is None else f"{url[: span[0]]}***{url[span[1] :]}"


def password(url: str) -> str | None:
    """The password in `url` as written (percent-encoded or not), or None."""
    span = _userinfo(url)
    return None if span is None else unquote(url[span[0] : span[1]])
