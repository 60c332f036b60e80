"""The `satchel` command line: the Store API in a shell, plus export, import and copy.

Each command wraps one Store method with the same name and options (`set` is
Store.set with ``--ttl`` and ``--if-absent``, `del` is Store.delete/delete_many, ...).
This module holds no storage rule: it parses arguments, calls the Store, prints the
result, and turns an error into one line on stderr and an exit code:

    0 ok · 1 key not found · 2 usage error (bad option, value, key, URL or input line)
    · 3 the engine failed (cannot connect, unreadable data, anything unexpected)

Output: tables (rich) when stdout is a terminal, plain lines when it is not. Values
that are not strings print as typed JSON (`satchel._exchange`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import IO, Any

import click

from . import __version__
from . import open as open_store
from ._backends.urls import password, redact
from ._core import KeyInfo
from ._errors import InvalidInput, KeyNotFound, SatchelError, UnsupportedValue
from ._exchange import (
    BadLine,
    BadTypedJSON,
    Tally,
    copy,
    dumps,
    export_lines,
    import_lines,
    loads,
)
from ._store import Store

OK, NOT_FOUND, USAGE, FAILED = 0, 1, 2, 3
BROKEN_PIPE = 141  # what a shell reports for a writer killed by SIGPIPE
INTERRUPTED = 130
BATCH = 500  # lines written to stdout at a time
SKIPS_SHOWN = 20  # errors of values an export leaves out, shown one by one
TABLE_ROWS = 1000  # a terminal table is printed in parts of this many rows
CELL_CHARS = 200  # longer values are cut short in tables


@dataclass
class _State:
    """What the group options chose, shared with every command and the error handler."""

    url: str | None = None
    scope: str = "default"
    debug: bool = False
    secrets: list[str] = field(default_factory=list)

    def remember(self, url: str | None) -> str | None:
        """Note the password in `url` so that no message ever shows it."""
        secret = None if url is None else password(url)
        if secret:
            self.secrets.append(secret)
        return url

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


class CliError(click.ClickException):
    """A usage error the command found: one line, exit code 2."""

    exit_code = USAGE


class ExportIncomplete(click.ClickException):
    """An export that had to leave values out (each reported already): exit code 3."""

    exit_code = FAILED


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, KeyNotFound):
        return NOT_FOUND
    if isinstance(exc, InvalidInput | UnsupportedValue):
        return USAGE
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    if isinstance(exc, click.Abort):
        return INTERRUPTED
    return FAILED


def _message(exc: BaseException) -> str:
    if isinstance(exc, click.UsageError):
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        return f"{exc.format_message()}{hint}"
    if isinstance(exc, click.ClickException):
        return exc.format_message()
    if isinstance(exc, click.Abort):
        return "interrupted"
    if isinstance(exc, SatchelError):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {exc} (--debug shows the traceback)"


class _Group(click.Group):
    """A click group whose errors are one line on stderr and an exit code, even when
    called in-process (click's CliRunner), never a traceback unless ``--debug``."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> int:
        state = extra.setdefault("obj", _State())
        try:
            extra["windows_expand_args"] = windows_expand_args
            result = super().main(
                args, prog_name or "satchel", complete_var, standalone_mode=False, **extra
            )
            code = result if type(result) is int else OK
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            code = USAGE
        except Exception as exc:
            code = _exit_code(exc)
            if state.debug and not isinstance(exc, click.ClickException):
                click.echo(state.scrub("".join(traceback.format_exception(exc))), err=True)
            text = " ".join(state.scrub(_message(exc)).split())  # one line, always
            click.echo(f"satchel: error: {text}", err=True)
        if standalone_mode:
            sys.exit(code)
        return code

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # `satchel keys | head`: the reader has what it wanted
            with contextlib.suppress(OSError, ValueError, AttributeError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(BROKEN_PIPE) from None


# --- output ---------------------------------------------------------------------------


def _tty(stream: IO[Any]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _write(data: bytes) -> None:
    """Write bytes to stdout exactly (after any text already written)."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _safe(text: str) -> str:
    """`text` printable as UTF-8: a lone surrogate shows as \\udxxx."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _lines(lines: Iterable[str]) -> None:
    """Write each line plus a newline, in chunks (an export can be long)."""
    chunk: list[bytes] = []
    for line in lines:
        chunk.append(line.encode("utf-8", "backslashreplace") + b"\n")
        if len(chunk) == BATCH:
            _write(b"".join(chunk))
            chunk = []
    if chunk:
        _write(b"".join(chunk))


def _brief(value: Any) -> str:
    """How a value shows in a table cell or a plain line: strings as they are, others JSON."""
    text = value if type(value) is str else dumps(value)
    text = _safe(text)
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], noun: str | None) -> None:
    """Print rows as a rich table (in parts, so a long listing starts at once)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=sys.stdout, highlight=False)
    count = 0
    part: list[Sequence[str]] = []

    def flush() -> None:
        first = count == len(part)  # later parts continue the first one's columns
        table = Table(*headers, box=box.SIMPLE_HEAD, show_header=first, show_edge=False)
        for row in part:
            table.add_row(*(Text(cell) for cell in row))  # Text: no [markup] in keys
        console.print(table)
        part.clear()

    for row in rows:
        part.append(row)
        count += 1
        if len(part) == TABLE_ROWS:
            flush()
    if part:
        flush()
    if noun is not None:
        console.print(f"{count} {noun}{'' if count == 1 else 's'}", style="dim")


def _listing(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    noun: str | None,
    plain: Callable[..., str],
) -> None:
    if _tty(sys.stdout):
        _table(headers, rows, noun)
    else:
        _lines(plain(*row) for row in rows)


def _json(value: Any, terminal: bool) -> str:
    """Typed JSON on one line; indented on a terminal when one line would be long."""
    text = dumps(value)
    return dumps(value, indent=2) if terminal and len(text) > 80 else text


def _show(value: Any, as_json: bool, raw: bool) -> None:
    """Print a value the way `get` does."""
    terminal = _tty(sys.stdout)
    kind = type(value)
    if raw:
        if kind is bytes:
            _write(value)
        elif kind is str:
            _write(value.encode("utf-8", "surrogatepass"))
        else:
            raise CliError(f"--raw prints str or bytes values; this one is a {kind.__name__}")
    elif as_json:
        _lines([_json(value, terminal)])
    elif kind is str:
        _lines([value])
    elif kind is bytes and not terminal:
        _write(value)
    else:
        _lines([_json(value, terminal)])
        if kind is bytes:
            click.echo("(a bytes value, shown as typed JSON; pipe it or use --raw)", err=True)


def _size(count: int) -> str:
    """``1457306 bytes (1.5 MB)``."""
    amount, unit = float(count), "bytes"
    for bigger in ("kB", "MB", "GB", "TB"):
        if amount < 1000:
            break
        amount, unit = amount / 1000, bigger
    return f"{count} bytes" if unit == "bytes" else f"{count} bytes ({amount:.1f} {unit})"


# --- the group --------------------------------------------------------------------------

EPILOG = """\b
Examples:
  satchel --url sqlite:///app.db set greeting hello
  satchel --url sqlite:///app.db get greeting
  export SATCHEL_URL=sqlite:///app.db
  satchel set user:1 '{"name": "Ada", "langs": ["en"]}' --json --ttl 3600
  satchel --scope sessions keys 'user:*'
  satchel export > dump.jsonl && satchel --url redis://localhost/0 import < dump.jsonl
  satchel copy sqlite:///app.db postgresql://localhost/app --skip-existing

\b
Exit codes: 0 ok, 1 key not found, 2 usage error, 3 backend or connection error.
Values print as typed JSON where plain JSON cannot hold their type, e.g.
{"$tuple": [1, 2]}, {"$bytes": "aGk="}, {"$datetime": "2024-05-01T12:00:00+00:00"}.
"""


@click.group(
    "satchel",
    cls=_Group,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--url",
    envvar="SATCHEL_URL",
    metavar="URL",
    help="The store: sqlite:///app.db, memory://name, postgresql://..., redis://... "
    "[default: $SATCHEL_URL, else satchel.db in the user data directory]",
)
@click.option(
    "--scope", default="default", show_default=True, metavar="NAME", help="The scope to work in."
)
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.version_option(__version__, "-V", "--version", prog_name="satchel")
@click.pass_context
def cli(ctx: click.Context, url: str | None, scope: str, debug: bool) -> None:
    """Keep values under keys, from the shell: the satchel Store API, one command per
    method, plus export, import and copy between engines."""
    state = ctx.ensure_object(_State)
    state.url, state.scope, state.debug = state.remember(url), scope, debug


def main() -> None:
    """The console script."""
    cli.main(prog_name="satchel")


def _open(url: str | None = None, scope: str | None = None, readonly: bool = False) -> Store:
    """Open the store the options name; it is closed when the command ends."""
    ctx = click.get_current_context()
    state = ctx.find_object(_State)
    assert state is not None
    url = url if url is not None else state.url
    store = open_store(url, scope=scope or state.scope, readonly=readonly)
    ctx.call_on_close(store.close)
    return store


# --- reading --------------------------------------------------------------------------

JSON_OUT = click.option("--json", "as_json", is_flag=True, help="Print JSON (typed JSON).")


@cli.command("get")
@click.argument("key")
@JSON_OUT
@click.option("--raw", is_flag=True, help="Print a str or bytes value as raw bytes, no newline.")
def get_cmd(key: str, as_json: bool, raw: bool) -> None:
    """Print the value of KEY.

    Store.get; exit 1 if KEY has no value. Strings print as they are, bytes raw when
    stdout is not a terminal, anything else as typed JSON.

    \b
    Examples:
      satchel get greeting
      satchel get avatar > avatar.png
      satchel get user:1 --json | jq .name
    """
    if as_json and raw:
        raise click.UsageError("give --json or --raw, not both")
    store = _open()
    if not as_json and (raw or not _tty(sys.stdout)):
        try:  # a bytes value of any size goes out a chunk at a time
            reader = store.open_blob(key)
        except UnsupportedValue:
            pass  # not bytes: printed below
        else:
            sys.stdout.flush()
            with reader:
                shutil.copyfileobj(reader, sys.stdout.buffer, 1 << 20)
            sys.stdout.buffer.flush()
            return
    _show(store.get(key), as_json, raw)


@cli.command("keys")
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True, help="One JSON string per line.")
def keys_cmd(pattern: str, as_json: bool) -> None:
    """List the keys matching a pattern.

    Store.keys: sorted keys matching the glob PATTERN: * any run of characters, ? one,
    [abc] a set, \\ escapes; default *.

    \b
    Examples:
      satchel keys
      satchel keys 'user:*'
      satchel keys --json | jq -r .
    """
    keys = _open().keys(pattern)
    if as_json:
        _lines(dumps(key) for key in keys)
    else:
        _listing(("key",), ((_safe(key),) for key in keys), "key", str)


@cli.command("items")
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True, help='Lines of {"key": ..., "value": ...}.')
def items_cmd(pattern: str, as_json: bool) -> None:
    """List keys and values matching a pattern.

    Store.items, sorted by key. Piped, each line is KEY, a tab, and the value as typed JSON.

    \b
    Examples:
      satchel items 'user:*'
      satchel items --json > some.jsonl    # `satchel import` reads this too
    """
    items = _open().items(pattern)
    if as_json:
        _lines(dumps({"key": key, "value": value}) for key, value in items)
    elif _tty(sys.stdout):
        _table(("key", "value"), ((_safe(k), _brief(v)) for k, v in items), "item")
    else:
        _lines(f"{key}\t{dumps(value)}" for key, value in items)


def _info_fields(info: KeyInfo) -> list[tuple[str, Any]]:
    return [
        ("key", info.key),
        ("scope", info.scope),
        ("size", info.size),
        ("created_at", info.created_at),
        ("updated_at", info.updated_at),
        ("expires_at", info.expires_at),
        ("version", info.version),
        ("checksum", info.checksum),
    ]


def _field_text(value: Any) -> str:
    if value is None:
        return "never"
    return _safe(value.isoformat() if hasattr(value, "isoformat") else str(value))


@cli.command("info")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info_cmd(key: str, as_json: bool) -> None:
    """Show the metadata of KEY.

    Store.info: size, created/updated/expiry times, version, checksum.

    \b
    Examples:
      satchel info user:1
      satchel info user:1 --json | jq .version
    """
    fields = _info_fields(_open().info(key))
    if as_json:
        data = {
            name: value.isoformat() if hasattr(value, "isoformat") else value
            for name, value in fields
        }
        _lines([dumps(data)])
    else:
        rows = [(name, _field_text(value)) for name, value in fields]
        _listing(("field", "value"), rows, None, lambda name, text: f"{name}\t{text}")


@cli.command("ttl")
@click.argument("key")
def ttl_cmd(key: str) -> None:
    """Print the seconds until KEY expires.

    Store.ttl; prints "never" if KEY does not expire, exit 1 if it has no value.

    \b
    Examples:
      satchel ttl session:42
    """
    seconds = _open().ttl(key)
    _lines(["never" if seconds is None else f"{seconds:.3f}"])


@cli.command("exists")
@click.argument("key")
def exists_cmd(key: str) -> None:
    """Exit 0 if KEY has a value, 1 if not.

    Store.exists; also prints true or false.

    \b
    Examples:
      satchel exists lock || satchel set lock me --if-absent
    """
    found = _open().exists(key)
    _lines(["true" if found else "false"])
    if not found:
        raise click.exceptions.Exit(NOT_FOUND)


@cli.command("count")
def count_cmd() -> None:
    """Print how many keys the scope holds.

    len(store).

    \b
    Examples:
      satchel --scope sessions count
    """
    _lines([str(len(_open()))])


@cli.command("scopes")
@click.option("--json", "as_json", is_flag=True, help="One JSON string per line.")
def scopes_cmd(as_json: bool) -> None:
    """List the scopes that hold keys.

    Store.scopes: the scopes with at least one live key, sorted.

    \b
    Examples:
      satchel scopes
    """
    scopes = _open().scopes()
    if as_json:
        _lines(dumps(scope) for scope in scopes)
    else:
        _listing(("scope",), [(_safe(scope),) for scope in scopes], "scope", str)


@cli.command("pop")
@click.argument("key")
@JSON_OUT
@click.option("--raw", is_flag=True, help="Print a str or bytes value as raw bytes, no newline.")
def pop_cmd(key: str, as_json: bool, raw: bool) -> None:
    """Delete KEY and print its value.

    Store.pop, atomic; prints like get; exit 1 if KEY has no value.

    \b
    Examples:
      satchel pop job:next
    """
    if as_json and raw:
        raise click.UsageError("give --json or --raw, not both")
    _show(_open().pop(key), as_json, raw)


# --- writing --------------------------------------------------------------------------


@cli.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("key")
@click.argument("value", required=False)
@click.option("--ttl", type=float, metavar="SECONDS", help="Expire the value after SECONDS.")
@click.option("--if-absent", is_flag=True, help="Write only if KEY has no value.")
@click.option("--json", "as_json", is_flag=True, help="VALUE (or the input) is typed JSON.")
@click.option(
    "--file", "source", type=click.File("rb"), metavar="PATH", help="Read the value from a file."
)
def set_cmd(
    key: str,
    value: str | None,
    ttl: float | None,
    if_absent: bool,
    as_json: bool,
    source: IO[bytes] | None,
) -> None:
    """Store a value under KEY.

    Store.set; prints created, updated, or (with --if-absent) not written. VALUE is
    stored as a string; with --json it is parsed as (typed) JSON; with --file PATH, or
    VALUE "-" (standard input), the bytes are stored as bytes (or parsed, with --json).

    \b
    Examples:
      satchel set greeting 'hello world'
      satchel set retries 3 --json
      satchel set offset -5 --json          # use -- before a value like --ttl
      satchel set user:1 '{"name": "Ada", "tags": {"$set": ["x"]}}' --json
      satchel set avatar --file avatar.png
      curl -s https://example.org | satchel set page - --ttl 600
      satchel set lock "$HOSTNAME" --if-absent --ttl 30
    """
    data: str | bytes
    if source is not None and value is not None:
        raise click.UsageError("give VALUE or --file, not both")
    if not as_json and not if_absent and (source is not None or value == "-"):
        _lines([_stream_in(key, source or sys.stdin.buffer, ttl)])
        return
    if source is not None:
        data = source.read()
    elif value is None:
        raise click.UsageError("missing VALUE (or --file PATH, or - to read standard input)")
    elif value == "-":
        data = sys.stdin.buffer.read()
    else:
        data = value
    stored: Any = data
    if as_json:
        try:
            text = data.decode("utf-8") if isinstance(data, bytes) else data
            stored = loads(text)
        except UnicodeDecodeError as exc:
            raise CliError(f"the JSON input is not UTF-8: {exc}") from None
        except BadTypedJSON as exc:
            raise CliError(f"bad JSON value: {exc}") from None
    new = _open().set(key, stored, ttl=ttl, if_absent=if_absent)
    _lines(["created" if new else "not written: the key has a value" if if_absent else "updated"])


def _stream_in(key: str, source: IO[bytes], ttl: float | None) -> str:
    """Store the bytes of `source` under `key` a chunk at a time; "created" or "updated"."""
    store = _open()
    existed = store.exists(key)
    with store.open_blob(key, "wb", ttl=ttl) as target:
        shutil.copyfileobj(source, target, 1 << 20)
    return "updated" if existed else "created"


@cli.command("del")
@click.argument("keys", nargs=-1, required=True)
def del_cmd(keys: tuple[str, ...]) -> None:
    """Delete keys; print how many had a value.

    Store.delete / Store.delete_many; exit 1 if none of KEYS had a value.

    \b
    Examples:
      satchel del session:42
      satchel del a b c
    """
    store = _open()
    if len(keys) == 1:
        if not store.delete(keys[0]):
            raise KeyNotFound(
                "key not found", key=keys[0], scope=store.scope_name, engine=store.url
            )
        deleted = 1
    else:
        deleted = store.delete_many(keys)
        if not deleted:
            raise KeyNotFound(
                "none of the keys has a value", scope=store.scope_name, engine=store.url
            )
    _lines([str(deleted)])


@cli.command("delete-matching")
@click.argument("pattern")
def delete_matching_cmd(pattern: str) -> None:
    """Delete the keys matching a pattern.

    Store.delete_matching; prints how many were deleted.

    \b
    Examples:
      satchel delete-matching 'cache:*'
    """
    _lines([str(_open().delete_matching(pattern))])


@cli.command("incr", context_settings={"ignore_unknown_options": True})
@click.argument("key")
@click.argument("delta", type=int, default=1)
def incr_cmd(key: str, delta: int) -> None:
    """Add to the integer under KEY; print the result.

    Store.incr: adds DELTA (default 1, may be negative) atomically; a missing key
    counts as 0, the expiry is kept.

    \b
    Examples:
      satchel incr visits
      satchel incr stock:42 -3
    """
    _lines([str(_open().incr(key, delta))])


@cli.command("touch")
@click.argument("key")
@click.argument("ttl", metavar="SECONDS|none")
def touch_cmd(key: str, ttl: str) -> None:
    """Set or remove the expiry of KEY.

    Store.touch: KEY expires SECONDS from now, or never with "none"; exit 1 if KEY
    has no value.

    \b
    Examples:
      satchel touch session:42 3600
      satchel touch session:42 none
    """
    seconds: float | None = None
    if ttl.lower() not in ("none", "never"):
        try:
            seconds = float(ttl)
        except ValueError:
            raise click.BadParameter(
                f"{ttl!r} is neither seconds nor none", param_hint="TTL"
            ) from None
    store = _open()
    if not store.touch(key, seconds):
        raise KeyNotFound("key not found", key=key, scope=store.scope_name, engine=store.url)


@cli.command("clear")
@click.option("--yes", is_flag=True, help="Really delete every key of the scope.")
def clear_cmd(yes: bool) -> None:
    """Delete every key of the scope (needs --yes).

    Store.clear; other scopes are untouched. Refuses to run without --yes.

    \b
    Examples:
      satchel --scope cache clear --yes
    """
    store = _open()
    where = f"scope {store.scope_name!r} of {store.url}"
    if not yes:
        raise CliError(f"clear deletes every key in {where}; run it again with --yes")
    store.clear()
    _lines([f"cleared {_safe(where)}"])


# --- export, import, copy -------------------------------------------------------------


@cli.command("export")
@click.argument("pattern", default="*")
def export_cmd(pattern: str) -> None:
    """Write keys, values and expiry as JSON Lines.

    The keys matching PATTERN (default *), one line per key: {"key", "expires_at"
    (absolute, UTC, or null), "created_at", "updated_at", "version", "value" (typed
    JSON)}. `satchel import` reads it back; every value type the typed codec stores
    survives the round trip. A value that cannot be read (damaged) or written as typed
    JSON is left out with an error naming its key; every other key is still exported,
    then the command exits 3.

    \b
    Examples:
      satchel export > dump.jsonl
      satchel --scope users export 'user:*' | gzip > users.jsonl.gz
    """
    state = click.get_current_context().find_object(_State)
    assert state is not None
    store = _open(readonly=True)
    skipped: list[SatchelError] = []

    def skip(exc: SatchelError) -> None:
        skipped.append(exc)
        if len(skipped) <= SKIPS_SHOWN:
            text = " ".join(state.scrub(str(exc)).split())
            click.echo(f"satchel: error: not exported: {_safe(text)}", err=True)

    _lines(export_lines(store, pattern, skip))
    if skipped:
        raise ExportIncomplete(f"{len(skipped)} key(s) not exported (see above); the rest were")


@cli.command("import")
@click.argument("source", type=click.File("rb"), default="-", metavar="[FILE]")
@click.option("--skip-existing", is_flag=True, help="Leave keys that have a value alone.")
def import_cmd(source: IO[bytes], skip_existing: bool) -> None:
    """Read JSON Lines from `satchel export`.

    Reads FILE (default: standard input). Lines are checked one by one and written in
    batches of 500 (each batch of lines sharing an expiry is one atomic set_many).
    Values that expired since the export are not written. A bad line stops the import
    with its line number: every line before it is imported, nothing from it on.

    \b
    Examples:
      satchel --url sqlite:///new.db import < dump.jsonl
      gunzip -c users.jsonl.gz | satchel --scope users import --skip-existing
    """
    store = _open()
    started = perf_counter()
    try:
        tally = import_lines(store, source, skip_existing)
    except BadLine as exc:
        raise CliError(str(exc)) from None
    _lines([f"imported {_summary(tally, perf_counter() - started)}"])


def _summary(tally: Tally, seconds: float, copied: bool = False) -> str:
    if copied:
        text = f"{tally.written} of {tally.read} keys, {_size(tally.size)} read, in {seconds:.2f} s"
    else:
        text = f"{tally.written} keys in {seconds:.2f} s"
    skipped = []
    if tally.existing:
        skipped.append(f"{tally.existing} already there")
    if tally.expired:
        skipped.append(f"{tally.expired} expired")
    return f"{text}; skipped {', '.join(skipped)}" if skipped else text


@cli.command("copy")
@click.argument("src_url")
@click.argument("dst_url")
@click.option(
    "--scope", metavar="NAME", help="The scope to copy [default: the --scope before the command]."
)
@click.option(
    "--pattern", default="*", show_default=True, metavar="GLOB", help="Copy only keys matching it."
)
@click.option("--skip-existing", is_flag=True, help="Leave keys the destination has alone.")
@click.pass_obj
def copy_cmd(
    state: _State,
    src_url: str,
    dst_url: str,
    scope: str | None,
    pattern: str,
    skip_existing: bool,
) -> None:
    """Copy keys between two stores (any engines).

    Copies keys, values and expiry from SRC_URL to DST_URL in batches of 500. With
    --skip-existing an interrupted copy can be run again and continues where it stopped.
    Prints a progress bar on a terminal, then a summary: keys, bytes, seconds.

    \b
    Examples:
      satchel copy sqlite:///app.db postgresql://db.local/app
      satchel copy redis://localhost/0 sqlite:///backup.db --scope sessions
      satchel copy sqlite:///a.db sqlite:///b.db --pattern 'user:*' --skip-existing
    """
    state.remember(src_url)
    state.remember(dst_url)
    scope = scope or state.scope
    if src_url == dst_url and not src_url.startswith("memory://"):
        raise CliError("SRC_URL and DST_URL are the same store")
    src = _open(src_url, scope, readonly=True)  # a mistyped SQLite path is an error
    dst = _open(dst_url, scope)
    started = perf_counter()
    with _Progress(src, pattern) as progress:
        tally = copy(src, dst, pattern, skip_existing, progress.advance)
    summary = _summary(tally, perf_counter() - started, copied=True)
    route = f"{redact(src_url)} -> {redact(dst_url)}, scope {scope!r}"
    _lines([_safe(f"copied {summary} ({route})")])


class _Progress:
    """A rich progress bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, store: Store, pattern: str) -> None:
        self.bar: Any = None
        if _tty(sys.stderr):
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            total = len(store) if pattern == "*" else sum(1 for _ in store.keys(pattern))
            self.bar = Progress(
                TextColumn("copying"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("keys"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(file=sys.stderr),
            )
            self.task = self.bar.add_task("copy", total=total)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def advance(self, count: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, count)


def _server_commands() -> None:
    from .server.cli import register  # `serve` and `token`: the server package owns them

    register(cli)


_server_commands()
