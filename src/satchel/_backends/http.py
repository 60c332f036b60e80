"""``http://`` and ``https://``: a satchel server (``satchel serve``) as an engine.

Each primitive is one HTTP call (batches included) over a pooled httpx client; reads
are retried on a connection failure, writes never (they might have landed). Records
travel as the bytes this client's Store made, so values come back with their types.

    store = satchel.open("http://127.0.0.1:8470", token="...", scope="app")

The token may also be given as ``?token=`` in the URL or in ``$SATCHEL_TOKEN``; it never
appears in messages.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx

from .._errors import (
    AccessDenied,
    BackendError,
    BackendUnavailable,
    CorruptData,
    InvalidInput,
    KeyNotFound,
    QuotaExceeded,
    ReadOnlyError,
    ValueChanged,
)
from .base import Backend, Change, Delete, Expect, Put, Record, SeriesEngine

READ_RETRIES = 2
SCAN_PAGE = 1000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _record(item: dict[str, Any]) -> Record:
    value = item.get("value")
    return Record(
        item["key"],
        b"" if value is None else base64.b64decode(value),
        item["created_at"],
        item["updated_at"],
        item["expires_at"],
        item["version"],
    )


def _change(change: Change, now: float) -> dict[str, Any]:
    """`change` as /v1/apply takes it (defaults left out: batches are large)."""
    out: dict[str, Any] = {"op": "delete", "key": change.key}
    if isinstance(change, Delete):
        return out
    if isinstance(change, Put):
        out["op"], out["value"] = "put", _b64(change.value)
        if change.if_absent:
            out["if_absent"] = True
    else:
        out["op"] = "touch"
    if change.expires_at is not None:
        out["expires_in"] = change.expires_at - now
    return out


class HTTPBackend(Backend, SeriesEngine):
    """A satchel server reached over HTTP with a bearer token."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        self.engine = base_url
        self._options: dict[str, Any] = {
            "base_url": base_url,
            "headers": {"Authorization": f"Bearer {token}"},
            "timeout": timeout,
            "limits": httpx.Limits(max_connections=64, max_keepalive_connections=32),
        }
        self._client = httpx.Client(**self._options)
        self._pid = os.getpid()
        self._closed = False

    def _http(self) -> httpx.Client:
        """The client; a forked child gets its own (the parent's sockets are not its own)."""
        if self._pid != os.getpid() and not self._closed:
            self._client = httpx.Client(**self._options)
            self._pid = os.getpid()
        return self._client

    # -- the one choke point ----------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException as exc:
            raise BackendUnavailable(f"the server timed out: {exc}", engine=self.engine) from exc
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"cannot reach the server: {exc}", engine=self.engine) from exc
        except RuntimeError as exc:  # a request on a closed client
            raise BackendUnavailable(str(exc), engine=self.engine) from exc

    def _call(self, method: str, path: str, *, read: bool = False, **kwargs: Any) -> Any:
        """Send one request; return its JSON (None for 204), or raise mapped."""
        attempts = 1 + (READ_RETRIES if read else 0)
        for attempt in range(attempts):
            try:
                with self._errors():
                    response = self._http().request(method, path, **kwargs)
                break
            except BackendUnavailable:
                if attempt + 1 == attempts:
                    raise
                time.sleep(0.05 * (attempt + 1))
        if response.status_code >= 400:
            self._raise(response)
        if response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError as exc:  # not a satchel server (a proxy's page, another service)
            raise BackendError("the server's answer is not JSON: is this a satchel server?",
                               engine=self.engine) from exc  # fmt: skip

    def _raise(self, response: httpx.Response) -> NoReturn:
        status = response.status_code
        try:
            detail = response.json()["error"]
            code, message = str(detail["code"]), str(detail["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "", response.text[:200] or response.reason_phrase
        where = {"engine": self.engine}
        if status == 409 and code == "value_changed":
            raise ValueChanged(message, **where)
        if status == 404:
            raise KeyNotFound(message, **where)
        if status == 422 and code == "corrupt":
            raise CorruptData(message, **where)
        if status in (400, 422):
            raise InvalidInput(message, **where)
        if status == 403 and code == "read_only":
            raise ReadOnlyError(message, **where)
        if status in (401, 403):
            raise AccessDenied(f"HTTP {status}: {message}", **where)
        if status == 413 and code == "over_quota":
            raise QuotaExceeded(message, **where)
        if status == 413:
            raise InvalidInput(f"the request is larger than the server accepts: {message}",
                               **where)  # fmt: skip
        if status in (408, 502, 504) or (status == 503 and code != "backend"):
            raise BackendUnavailable(f"HTTP {status}: {message}", **where)
        raise BackendError(f"HTTP {status}: {message}", **where)

    def _post(self, path: str, body: dict[str, Any], *, read: bool = False) -> Any:
        return self._call("POST", path, json=body, read=read)

    # -- records ----------------------------------------------------------------------

    def get_many(self, scope: str, keys: Sequence[str], now: float) -> dict[str, Record]:
        if not keys:
            return {}
        found = self._post("/v1/get", {"scope": scope, "keys": list(keys)}, read=True)
        return {item["key"]: _record(item) for item in found["records"]}

    def apply(
        self, scope: str, changes: Sequence[Change], now: float, expect: Sequence[Expect] = ()
    ) -> int | None:
        if not changes and not expect:
            return 0
        body = {
            "scope": scope,
            "changes": [_change(c, now) for c in changes],
            "expect": [{"key": e.key, "version": e.version, "created_at": e.created_at}
                       for e in expect],
        }  # fmt: skip
        count = self._post("/v1/apply", body)["count"]
        return None if count is None else int(count)

    def scan(
        self,
        scope: str,
        prefix: str,
        after: str | None,
        limit: int,
        now: float,
        values: bool = True,
    ) -> list[Record]:
        found: list[Record] = []
        while len(found) < limit:
            want = min(limit - len(found), SCAN_PAGE)
            body = {"scope": scope, "prefix": prefix, "after": after, "limit": want}
            page = self._post("/v1/scan", {**body, "values": values}, read=True)
            found.extend(_record(item) for item in page["records"])
            if not page["more"] and len(page["records"]) < want:
                break
            if not page["records"]:
                break
            after = found[-1].key
        return found

    def count(self, scope: str, now: float) -> int:
        return int(self._post("/v1/count", {"scope": scope}, read=True)["count"])

    def scopes(self, now: float) -> list[str]:
        # kind scopes too, as every engine lists them: the Store's `collect` looks there
        found = self._call("GET", "/v1/scopes", params={"kinds": "true"}, read=True)
        return list(found["scopes"])

    def clear(self, scope: str) -> None:
        self._post("/v1/clear", {"scope": scope})

    def purge_expired(self, now: float, limit: int) -> int:
        return 0  # the server sweeps its engine itself; expired records are invisible

    def close(self) -> None:
        self._closed = True
        if self._pid == os.getpid():
            self._client.close()

    # -- series, events ---------------------------------------------------------------

    def series_put(self, scope: str, name: str, points: Sequence[tuple[int, bytes]]) -> None:
        encoded = [{"t": t, "value": _b64(v)} for t, v in points]
        body = {"scope": scope, "name": name, "points": encoded}
        self._post("/v1/series/put", body)

    def series_range(
        self,
        scope: str,
        name: str,
        start: int | None,
        stop: int | None,
        limit: int,
        *,
        reverse: bool = False,
        values: bool = True,
    ) -> list[tuple[int, bytes]]:
        body = {"scope": scope, "name": name, "start": start, "stop": stop, "limit": limit,
                "reverse": reverse, "values": values}  # fmt: skip
        points = self._post("/v1/series/range", body, read=True)["points"]
        return [(int(p["t"]), base64.b64decode(p["value"])) for p in points]

    def series_remove(self, scope: str, name: str, start: int | None, stop: int | None) -> int:
        body = {"scope": scope, "name": name, "start": start, "stop": stop}
        return int(self._post("/v1/series/remove", body)["count"])

    def series_count(self, scope: str, name: str) -> int:
        body = {"scope": scope, "name": name}
        return int(self._post("/v1/series/count", body, read=True)["count"])

    def series_names(self, scope: str) -> list[str]:
        return list(self._post("/v1/series/names", {"scope": scope}, read=True)["names"])

    def series_reseal(
        self, scope: str, name: str, points: Sequence[tuple[int, bytes, bytes]]
    ) -> int:
        if not points:
            return 0
        encoded = [{"t": t, "old": _b64(old), "new": _b64(new)} for t, old, new in points]
        body = {"scope": scope, "name": name, "points": encoded}
        return int(self._post("/v1/series/reseal", body)["count"])


def open_http(url: str, options: dict[str, Any]) -> HTTPBackend:
    """The engine for ``http(s)://host:port[/path]``; options: token (required), timeout."""
    token = options.pop("token", None) or os.environ.get("SATCHEL_TOKEN")
    timeout = options.pop("timeout", 30.0)
    if options:
        raise InvalidInput(f"unknown option(s) for the http engine: {', '.join(sorted(options))}")
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        raise InvalidInput("the port of an http URL must be a number up to 65535") from None
    if not parts.hostname:
        raise InvalidInput("an http URL needs a host: http://127.0.0.1:8470")
    if not isinstance(token, str) or not token:
        raise InvalidInput("the http engine needs token=... (or ?token= in the URL, or "
                           "$SATCHEL_TOKEN)")  # fmt: skip
    try:
        timeout = float(timeout)
    except (TypeError, ValueError):
        raise InvalidInput(f"timeout must be a number of seconds, not {timeout!r}") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    base = f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"
    return HTTPBackend(base, token, timeout=timeout)
