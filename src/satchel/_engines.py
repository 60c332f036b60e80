"""Which engine a URL names, and how it is opened."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from ._backends.base import Backend
from ._backends.urls import redact
from ._errors import BackendError, InvalidInput, InvalidInputType

DEFAULT_FILE_NAME = "satchel.db"


def default_path() -> Path:
    """Where ``satchel.open()`` keeps data without a URL: the user data directory."""
    import platformdirs

    return Path(platformdirs.user_data_dir("satchel", appauthor=False)) / DEFAULT_FILE_NAME


def _path_of(url: str) -> str:
    """The path part: sqlite:///rel.db -> "rel.db"; sqlite:////abs.db -> "/abs.db"."""
    return unquote(url.split("://", 1)[1].removeprefix("/"))


def _sqlite(url: str, options: dict[str, Any]) -> Backend:
    from ._backends.sqlite import SQLiteBackend

    location = _path_of(url) if "://" in url else url
    if not location:
        raise InvalidInput("a sqlite URL needs a path: sqlite:///relative.db or sqlite:////abs.db")
    timeout = options.pop("timeout", 30.0)
    try:
        timeout = float(timeout)
    except (TypeError, ValueError):
        raise InvalidInput(f"timeout must be a number of seconds, not {timeout!r}") from None
    durability = str(options.pop("durability", "normal"))
    mode = str(options.pop("mode", "rw"))
    _no_more(options, "sqlite")
    return SQLiteBackend(location, durability=durability, timeout=timeout, mode=mode)


def _file(url: str, options: dict[str, Any]) -> Backend:
    """``file:///abs/dir`` (RFC 8089: an empty host) or ``file://relative/dir`` (to the
    working directory; a host name is not supported). ``~`` expands to the home directory."""
    from ._backends.files import FilesBackend

    location = unquote(url.split("://", 1)[1])
    if not location:
        raise InvalidInput("a file URL needs a directory: file:///abs/dir or file://relative/dir")
    durability = str(options.pop("durability", "normal"))
    _no_more(options, "file")
    return FilesBackend(location, durability=durability)


def _memory(url: str, options: dict[str, Any]) -> Backend:
    from ._backends.memory import MemoryBackend

    _no_more(options, "memory")
    return MemoryBackend(_path_of(url))


def _redis(url: str, options: dict[str, Any]) -> Backend:
    try:
        from ._backends.redis import open_redis
    except ImportError as exc:
        raise _missing_extra("redis", exc) from exc
    return open_redis(url, options)


def _postgres(url: str, options: dict[str, Any]) -> Backend:
    try:
        from ._backends.postgres import open_postgres
    except ImportError as exc:
        raise _missing_extra("postgres", exc) from exc
    return open_postgres(url, options)


def _http(url: str, options: dict[str, Any]) -> Backend:
    try:
        from ._backends.http import open_http
    except ImportError as exc:
        raise _missing_extra("server", exc) from exc
    return open_http(url, options)


def _missing_extra(extra: str, exc: ImportError) -> BackendError:
    return BackendError(
        f"the {extra} engine needs its driver ({exc.name}): pip install 'satchel[{extra}]'"
    )


def _no_more(options: dict[str, Any], engine: str) -> None:
    if options:
        raise InvalidInput(
            f"unknown option(s) for the {engine} engine: {', '.join(sorted(options))}"
        )


# scheme -> factory(url without its query, options from the query and keywords)
ENGINES: dict[str, Callable[[str, dict[str, Any]], Backend]] = {
    "sqlite": _sqlite,
    "memory": _memory,
    "file": _file,
    "redis": _redis,
    "rediss": _redis,
    "redis+cluster": _redis,
    "postgresql": _postgres,
    "postgres": _postgres,
    "http": _http,
    "https": _http,
}


def connect(url: str | os.PathLike[str] | None, options: dict[str, Any]) -> Backend:
    """Open the engine `url` names. A plain path (no ``scheme://``) is a SQLite file.

    Raises InvalidInput for an unknown scheme or option, BackendError if the engine fails.
    ``options["readonly"]`` opens a SQLite file read-only; other engines ignore it (the
    Store refuses writes for every engine).
    """
    if options.pop("readonly", False):
        options = {**options, "mode": "ro"}  # only the sqlite factory reads "mode"
    if url is None:
        url = os.environ.get("SATCHEL_URL") or None
    if url is None:
        path = default_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return _sqlite(str(path), options)
    if isinstance(url, os.PathLike):
        return _sqlite(os.fspath(url), options)
    if not isinstance(url, str):
        raise InvalidInputType(f"url must be a str or a path, not {type(url).__name__}")
    if "://" not in url:
        return _sqlite(url, options)
    scheme, rest = url.split("://", 1)
    factory = ENGINES.get(scheme.lower())
    if factory is None:
        known = ", ".join(f"{name}://" for name in ENGINES)
        raise InvalidInput(f"unknown engine in {redact(url)!r}; this satchel knows {known}")
    location, _, query = rest.partition("?")
    merged = dict(parse_qsl(query, keep_blank_values=True))
    merged.update(options)
    if factory is not _sqlite and options.get("mode") == "ro":
        del merged["mode"]
    return factory(f"{scheme.lower()}://{location}", merged)
