"""The `satchel` command line.

The main flows run the real console script (`.venv/bin/satchel`) in subprocesses
against SQLite files in ``tmp_path`` (and PostgreSQL, Redis, plain files where
available); the many edge cases run in-process through click's CliRunner, which goes
through the same error handling (`_Group.main`). memory:// stores live in one process,
so they are tested in-process only, with a Store held open to keep the data alive.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import os
import pty
import select
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import satchel
import support_postgres
import support_redis
from satchel._blobs import CHUNK_SIZE
from satchel._cli import cli
from satchel._engines import ENGINES

SATCHEL = shutil.which("satchel", path=str(Path(sys.executable).parent))  # this venv's script

NOW = time.time()

# One value of every type the typed codec stores, with the edge cases of each.
EVERY_TYPE: dict[str, Any] = {
    "none": None,
    "true": True,
    "false": False,
    "int": -42,
    "int 2**53": 2**53,
    "int 2**53+1": 2**53 + 1,
    "int huge": -(10**80) + 7,
    "int beyond str limit": 7**6000,
    "float": 0.1,
    "float -0.0": -0.0,
    "float nan": math.nan,
    "float inf": math.inf,
    "float -inf": -math.inf,
    "float 1e300": 1e300,
    "str": 'héllo wörld 😀\n\t"quoted" \\',
    "str empty": "",
    "str lone surrogate": "a\ud800b",
    "str surrogate pair as two": "\ud83d\ude00",
    "str NUL": "a\x00b",
    "bytes": b"\x00\x01\xff binary",
    "bytes empty": b"",
    "list": [1, "two", [3.0, None]],
    "tuple": (1, (2, ("three",)), ()),
    "dict": {"name": "Ada", "nested": {"x": [1, 2]}},
    "dict dollar key": {"$tuple": [1, 2], "$set": "not a tag"},
    "dict non-str keys": {1: "one", (2, 3): "tuple", None: 0, 2.5: b"x", frozenset({1}): 1},
    "dict surrogate key": {"\udc80": 1},
    "set": {1, 2, 3},
    "set mixed": {1, "a", (2, 3), None},
    "frozenset": frozenset({"a", "b"}),
    "frozenset empty": frozenset(),
    "datetime naive": dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
    "datetime utc": dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC),
    "datetime +05:30": dt.datetime(2001, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5.5))),
    "date": dt.date(1999, 12, 31),
    "time": dt.time(1, 2, 3, 4),
    "time aware": dt.time(23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
    "timedelta": dt.timedelta(days=-1, seconds=5, microseconds=7),
    "decimal": decimal.Decimal("1.10"),
    "decimal nan": decimal.Decimal("NaN"),
    "decimal -0": decimal.Decimal("-0.000"),
    "decimal inf": decimal.Decimal("-Infinity"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "nested mix": {"when": [dt.date(2020, 1, 1), (uuid.UUID(int=1), {b"k": {1.5}})]},
}


def same(a: Any, b: Any) -> bool:
    """Equal with exactly the same types all the way down (nan == nan, -0.0 != 0.0)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if type(a) is decimal.Decimal:
        return str(a) == str(b)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if type(a) in (dt.datetime, dt.time):
        return a == b and a.utcoffset() == b.utcoffset()
    return bool(a == b)


# --- running it -----------------------------------------------------------------------


def run(
    *args: str, url: str | None = None, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run the installed console script; `url` becomes $SATCHEL_URL."""
    assert SATCHEL is not None, "the satchel console script is not installed"
    env = {k: v for k, v in os.environ.items() if k != "SATCHEL_URL"}
    if url is not None:
        env["SATCHEL_URL"] = url
    return subprocess.run(
        [SATCHEL, *args], input=stdin, capture_output=True, env=env, timeout=timeout
    )


def invoke(*args: str, url: str | None = None, stdin: bytes | str | None = None) -> Result:
    """Run the CLI in this process (click's CliRunner)."""
    env = {"SATCHEL_URL": url} if url is not None else {}
    return CliRunner().invoke(cli, list(args), input=stdin, env=env)


def one_error_line(stderr: str | bytes) -> str:
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("satchel: error: "), text
    return lines[0]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store.db"


@pytest.fixture
def store(url: str) -> Iterator[satchel.Store]:
    with satchel.open(url) as opened:
        yield opened


@pytest.fixture
def memory_url() -> Iterator[str]:
    """A memory:// store kept alive (memory stores vanish when the last open closes)."""
    name = f"memory://cli-{uuid.uuid4().hex}"
    with satchel.open(name):
        yield name


# --- the console script: main flows ---------------------------------------------------


def test_console_script_set_get_and_listings(url: str, tmp_path: Path) -> None:
    assert run("set", "greeting", "hello world", url=url).stdout == b"created\n"
    assert run("set", "greeting", "hi", url=url).stdout == b"updated\n"
    assert run("set", "user:1", '{"name": "Ada", "tags": ["x"]}', "--json", url=url).returncode == 0
    (tmp_path / "blob").write_bytes(b"\x00\xffraw")
    assert run("set", "blob", "--file", str(tmp_path / "blob"), url=url).returncode == 0
    assert run("set", "piped", "-", url=url, stdin=b"from\nstdin").returncode == 0

    assert run("get", "greeting", url=url).stdout == b"hi\n"
    assert run("get", "blob", url=url).stdout == b"\x00\xffraw"  # raw bytes to a pipe
    assert run("get", "piped", url=url).stdout == b"from\nstdin"
    assert json.loads(run("get", "user:1", url=url).stdout) == {"name": "Ada", "tags": ["x"]}
    assert run("get", "blob", "--json", url=url).stdout == b'{"$bytes":"AP9yYXc="}\n'
    assert run("keys", url=url).stdout == b"blob\ngreeting\npiped\nuser:1\n"
    assert run("keys", "user:*", url=url).stdout == b"user:1\n"
    assert run("items", "g*", url=url).stdout == b'greeting\t"hi"\n'

    info = json.loads(run("info", "greeting", "--json", url=url).stdout)
    assert (info["key"], info["version"], info["expires_at"]) == ("greeting", 2, None)
    with satchel.open(url) as store:
        assert store.get("user:1") == {"name": "Ada", "tags": ["x"]}
        assert store.get("blob") == b"\x00\xffraw"
        assert store.get("piped") == b"from\nstdin"
        assert store.info("greeting").checksum == info["checksum"]

    assert run("--scope", "other", "set", "k", "v", url=url).returncode == 0
    assert run("scopes", url=url).stdout == b"default\nother\n"
    assert run("del", "greeting", "blob", url=url).stdout == b"2\n"
    assert run("count", url=url).stdout == b"2\n"


def test_console_script_errors_are_one_line_with_documented_exit_codes(url: str) -> None:
    missing = run("get", "nope", url=url)
    assert (missing.returncode, missing.stdout) == (1, b"")
    assert "key not found" in one_error_line(missing.stderr)
    assert "'nope'" in missing.stderr.decode()

    bad_json = run("set", "k", "{not json", "--json", url=url)
    assert bad_json.returncode == 2
    assert "bad JSON value" in one_error_line(bad_json.stderr)

    unknown = run("--url", "nosuch://x", "get", "k")
    assert unknown.returncode == 2
    assert "unknown engine" in one_error_line(unknown.stderr)

    usage = run("get", url=url)  # a missing argument is a click usage error, also one line
    assert usage.returncode == 2
    assert "Missing argument 'KEY'" in one_error_line(usage.stderr)


@pytest.mark.parametrize(
    "server",
    [
        "postgresql://postgres:s3cr3t-pw@127.0.0.1:1/x",
        "redis://:s3cr3t-pw@127.0.0.1:1/0",
    ],
)
def test_console_script_unreachable_server_exit_3_without_password(server: str) -> None:
    result = run("--url", server, "get", "k")
    assert result.returncode == 3
    line = one_error_line(result.stderr)
    assert "s3cr3t-pw" not in line and "***" in line
    assert result.stdout == b""

    debug = run("--debug", "--url", server, "keys")  # a traceback, still no password
    assert debug.returncode == 3
    assert b"Traceback" in debug.stderr and b"s3cr3t-pw" not in debug.stderr
    assert debug.stderr.decode().splitlines()[-1].startswith("satchel: error: ")

    copy = run("copy", server, "memory://")
    assert copy.returncode == 3 and b"s3cr3t-pw" not in copy.stderr + copy.stdout


def test_export_import_round_trips_every_type_with_expiry(
    url: str, store: satchel.Store, tmp_path: Path
) -> None:
    store.set_many(EVERY_TYPE)
    store.set("expiring", ("soon", 1), ttl=1000)
    store.set("expiring later", {"x"}, ttl=5000.5)
    store.scope("elsewhere").set("ignored", 1)  # export works on one scope

    exported = run("export", url=url)
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.decode("utf-8").splitlines()  # valid UTF-8 despite surrogates
    assert len(lines) == len(EVERY_TYPE) + 2
    first = json.loads(lines[0])
    assert list(first) == ["key", "expires_at", "created_at", "updated_at", "version", "value"]
    by_key = {json.loads(line)["key"]: json.loads(line) for line in lines}
    assert by_key["expiring"]["value"] == {"$tuple": ["soon", 1]}
    deadline = dt.datetime.fromisoformat(by_key["expiring"]["expires_at"]).timestamp()
    assert deadline == pytest.approx(store.info("expiring").expires_at.timestamp(), abs=1e-5)

    dump = tmp_path / "dump.jsonl"
    dump.write_bytes(exported.stdout)
    target = f"sqlite:///{tmp_path}/target.db"
    imported = run("--scope", "copied", "import", str(dump), url=target)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(f"imported {len(lines)} keys".encode())

    with satchel.open(target, scope="copied") as copy:
        assert list(copy.keys()) == list(store.keys())
        for key, value in EVERY_TYPE.items():
            assert same(copy.get(key), value), key
        for key in ("expiring", "expiring later"):
            original = store.info(key).expires_at
            assert original is not None
            copied = copy.info(key).expires_at
            assert copied is not None
            assert abs((copied - original).total_seconds()) < 0.1
        assert copy.ttl("none") is None


def _fill_for_copy(store: satchel.Store, count: int, distinct_ttls: int) -> dict[str, Any]:
    """Values of a few types; a third forever, a third with one shared TTL (one set_many),
    and `distinct_ttls` keys each with a TTL of its own."""
    values: dict[str, Any] = {}
    for i in range(count):
        kind = i % 4
        values[f"k{i:07d}"] = (
            i if kind == 0 else f"v{i}" if kind == 1 else (i, b"\x00%d" % i) if kind == 2 else None
        )
    keys = list(values)
    plain = keys[: count // 3]
    shared = keys[count // 3 : count - distinct_ttls]
    store.set_many({k: values[k] for k in plain})
    store.set_many({k: values[k] for k in shared}, ttl=3600)
    for offset, key in enumerate(keys[count - distinct_ttls :]):
        store.set(key, values[key], ttl=100 + offset * 0.37)
    return values


def _check_copy(source: satchel.Store, copy: satchel.Store, values: dict[str, Any]) -> None:
    """Every value is there with its exact type, and every expiry within 0.1 s."""
    copied = dict(copy.items())
    assert list(copied) == list(values)
    for key, value in values.items():
        assert same(copied[key], value), key
    for key in values:
        want, got = source.info(key).expires_at, copy.info(key).expires_at
        if want is None:
            assert got is None, key
        else:
            assert got is not None, key
            assert abs((got - want).total_seconds()) < 0.1, key


def test_copy_100k_keys_sqlite_to_sqlite_keeps_values_and_ttl(
    url: str, store: satchel.Store, tmp_path: Path
) -> None:
    values = _fill_for_copy(store, 100_000, distinct_ttls=2000)
    target = f"sqlite:///{tmp_path}/target.db"
    started = time.perf_counter()
    result = run("copy", url, target)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    summary = result.stdout.decode()
    assert summary.startswith("copied 100000 of 100000 keys, ")
    assert " bytes (" in summary and " read, in " in summary and " s (sqlite:///" in summary
    assert result.stderr == b""  # no progress bar when stderr is not a terminal
    assert elapsed < 20
    with satchel.open(target) as copy:
        _check_copy(store, copy, values)


def test_copy_skip_existing_resumes(url: str, store: satchel.Store, tmp_path: Path) -> None:
    store.set_many({f"k{i}": i for i in range(1200)})
    target = f"sqlite:///{tmp_path}/target.db"
    with satchel.open(target) as copy:
        copy.set_many({f"k{i}": "already" for i in range(0, 1200, 3)})  # "half done"
        result = run("copy", url, target, "--skip-existing")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(b"copied 800 of 1200 keys")
        assert b"skipped 400 already there" in result.stdout
        assert copy.get("k0") == "already" and copy.get("k1") == 1 and len(copy) == 1200


@pytest.mark.parametrize("engine", ["postgres", "redis"])
def test_copy_sqlite_to_server_and_back(
    engine: str, url: str, store: satchel.Store, tmp_path: Path
) -> None:
    support = support_postgres if engine == "postgres" else support_redis
    server = support.fresh_url(tmp_path)
    try:
        values = _fill_for_copy(store, 1000, distinct_ttls=100)
        result = run("copy", url, server, "--scope", "default")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(b"copied 1000 of 1000 keys")
        with satchel.open(server) as copy:
            _check_copy(store, copy, values)
        back = f"sqlite:///{tmp_path}/back.db"
        assert invoke("copy", server, back).exit_code == 0
        with satchel.open(back) as copy:
            _check_copy(store, copy, values)
    finally:
        support.drop(server)


@pytest.mark.skipif("file" not in ENGINES, reason="the files engine is not in this tree")
def test_copy_sqlite_to_files_and_back(url: str, store: satchel.Store, tmp_path: Path) -> None:
    values = _fill_for_copy(store, 600, distinct_ttls=50)
    store.set("odd/../key name", "x")
    values["odd/../key name"] = "x"
    values = dict(sorted(values.items()))
    files = f"file://{tmp_path}/kv"
    result = run("copy", url, files)
    assert result.returncode == 0, result.stderr
    with satchel.open(files) as copy:
        _check_copy(store, copy, values)
    back = f"sqlite:///{tmp_path}/back.db"
    assert invoke("copy", files, back).exit_code == 0
    with satchel.open(back) as copy:
        _check_copy(store, copy, values)


def _in_terminal(args: Sequence[str], url: str) -> str:
    """Run the console script on a pseudo-terminal 120x30; return what it showed."""
    import fcntl
    import struct
    import termios

    assert SATCHEL is not None
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("SATCHEL_URL", "NO_COLOR")}
    env.update(SATCHEL_URL=url, TERM="xterm-256color", COLUMNS="120")
    proc = subprocess.Popen([SATCHEL, *args], stdout=secondary, stderr=secondary, env=env)
    os.close(secondary)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.1)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(main)
    assert proc.wait(timeout=10) == 0
    return b"".join(chunks).decode("utf-8", "replace")


def test_terminal_gets_a_table_and_a_progress_bar(
    url: str, store: satchel.Store, tmp_path: Path
) -> None:
    store.set_many({"[bold]literal[/bold]": 1, "user:1": "Ada", "user:2": (1, 2)})
    shown = _in_terminal(["items"], url)
    assert "key" in shown and "value" in shown and "─" in shown  # a rich table
    assert "[bold]literal[/bold]" in shown  # keys are text, never markup
    assert '{"$tuple":[1,2]}' in shown and "3 items" in shown

    shown = _in_terminal(["copy", url, f"sqlite:///{tmp_path}/copy.db"], url)
    assert "copying" in shown and "3/3" in shown  # the progress bar, finished
    assert "copied 3 of 3 keys" in shown


def test_terminal_get_shows_bytes_as_typed_json(url: str, store: satchel.Store) -> None:
    store.set_many({"blob": b"\x1b[31m", "when": dt.date(2024, 1, 2)})
    shown = _in_terminal(["get", "blob"], url)
    assert '{"$bytes":"G1szMW0="}' in shown and "use --raw" in shown  # no raw escape codes
    assert '{"$date":"2024-01-02"}' in _in_terminal(["get", "when"], url)


def test_broken_pipe_ends_quietly(url: str, store: satchel.Store) -> None:
    store.set_many({f"key-{i:06d}": i for i in range(20_000)})  # more than a pipe buffer
    assert SATCHEL is not None
    env = {**os.environ, "SATCHEL_URL": url}
    proc = subprocess.Popen(
        [SATCHEL, "keys"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"key-000000\n"
    proc.stdout.close()  # like `satchel keys | head -1`
    assert proc.wait(timeout=30) == 141
    assert proc.stderr.read() == b""


# --- in-process: every command and its edge cases -----------------------------------


def test_get_output_forms(url: str, store: satchel.Store) -> None:
    store.set_many({"s": "text", "b": b"\x00bin", "d": {"a": (1,)}, "lone": "x\udc80"})
    assert invoke("get", "s", url=url).stdout == "text\n"
    assert invoke("get", "s", "--json", url=url).stdout == '"text"\n'
    assert invoke("get", "s", "--raw", url=url).stdout == "text"
    assert invoke("get", "b", "--raw", url=url).stdout_bytes == b"\x00bin"
    assert invoke("get", "d", url=url).stdout == '{"a":{"$tuple":[1]}}\n'
    assert invoke("get", "lone", url=url).stdout == "x\\udc80\n"  # printable, no crash
    assert invoke("get", "lone", "--json", url=url).stdout == '{"$str":["x",56448]}\n'
    raw_dict = invoke("get", "d", "--raw", url=url)
    assert raw_dict.exit_code == 2 and "--raw prints str or bytes" in raw_dict.stderr
    both = invoke("get", "s", "--json", "--raw", url=url)
    assert both.exit_code == 2 and "not both" in one_error_line(both.stderr)


def test_set_value_sources_and_flags(url: str, store: satchel.Store, tmp_path: Path) -> None:
    assert invoke("set", "k", "-", url=url, stdin=b"\xff\x00").exit_code == 0
    assert store.get("k") == b"\xff\x00"
    assert invoke("set", "j", "-", "--json", url=url, stdin=b'{"$set": [1, 2]}').exit_code == 0
    assert store.get("j") == {1, 2}
    assert invoke("set", "n", "12", "--json", url=url).exit_code == 0
    assert store.get("n") == 12
    assert invoke("set", "t", "12", url=url).exit_code == 0
    assert store.get("t") == "12"  # without --json a VALUE is a string
    (tmp_path / "v.json").write_text('[1, {"$date": "2024-01-31"}]')
    assert invoke("set", "f", "--file", str(tmp_path / "v.json"), "--json", url=url).exit_code == 0
    assert store.get("f") == [1, dt.date(2024, 1, 31)]

    kept = invoke("set", "n", "13", "--if-absent", url=url)
    assert (kept.exit_code, kept.stdout) == (0, "not written: the key has a value\n")
    assert store.get("n") == 12
    assert invoke("set", "new", "x", "--if-absent", "--ttl", "60", url=url).stdout == "created\n"
    ttl = store.ttl("new")
    assert ttl is not None and 59 < ttl <= 60

    for args, message in [
        (["set", "k"], "missing VALUE"),
        (["set", "k", "v", "--file", str(tmp_path / "v.json")], "not both"),
        (["set", "k", "v", "--ttl", "0"], "ttl must be more than 0"),
        (["set", "k", "v", "--ttl", "soon"], "'soon' is not a valid float"),
        (["set", "", "v"], "key"),
        (["set", "k", '{"$date": "tomorrow"}', "--json"], "$date: not an ISO 8601 date"),
        (["set", "k", '[{"$set": [[1]]}]', "--json"], "[0].$set: set items must be hashable"),
        (["set", "k", "--file", str(tmp_path / "missing")], "No such file"),
    ]:
        result = invoke(*args, url=url)
        assert result.exit_code == 2, (args, result.output)
        assert message in one_error_line(result.stderr), (args, result.stderr)
    bad_utf8 = invoke("set", "k", "-", "--json", url=url, stdin=b"\xff")
    assert bad_utf8.exit_code == 2 and "not UTF-8" in bad_utf8.stderr
    assert store.get("k") == b"\xff\x00"  # nothing was written by the failures


def test_del_incr_touch_ttl_exists_pop_count(url: str, store: satchel.Store) -> None:
    store.set_many({"a": 1, "b": 2, "c": "three", "tmp:1": 1, "tmp:2": 2})
    assert invoke("del", "a", "nope", url=url).stdout == "1\n"
    none = invoke("del", "x", "y", url=url)
    assert none.exit_code == 1 and "none of the keys" in one_error_line(none.stderr)
    assert invoke("del", "a", url=url).exit_code == 1
    assert invoke("delete-matching", "tmp:*", url=url).stdout == "2\n"

    assert invoke("incr", "b", url=url).stdout == "3\n"
    assert invoke("incr", "b", "-10", url=url).stdout == "-7\n"
    assert invoke("incr", "fresh", "5", url=url).stdout == "5\n"
    not_int = invoke("incr", "c", url=url)
    assert not_int.exit_code == 2 and "cannot increment a str" in one_error_line(not_int.stderr)
    assert invoke("incr", "b", "1.5", url=url).exit_code == 2

    assert invoke("ttl", "b", url=url).stdout == "never\n"
    assert invoke("touch", "b", "100", url=url).exit_code == 0
    assert 99 < float(invoke("ttl", "b", url=url).stdout) <= 100
    assert invoke("touch", "b", "none", url=url).exit_code == 0
    assert store.ttl("b") is None
    assert invoke("touch", "b", "later", url=url).exit_code == 2
    assert invoke("touch", "gone", "5", url=url).exit_code == 1
    assert invoke("ttl", "gone", url=url).exit_code == 1

    assert (
        invoke("exists", "b", url=url).exit_code,
        invoke("exists", "zz", url=url).exit_code,
    ) == (
        0,
        1,
    )
    assert invoke("exists", "zz", url=url).stdout == "false\n"
    assert invoke("count", url=url).stdout == "3\n"
    assert invoke("pop", "c", url=url).stdout == "three\n"
    assert "c" not in store
    assert invoke("pop", "c", url=url).exit_code == 1


def test_listings_json_and_info(url: str, store: satchel.Store) -> None:
    store.set_many({"line\nbreak": b"x", "plain": [1, 2]})
    store.set("later", 1, ttl=50)
    keys = invoke("keys", "--json", url=url).stdout.splitlines()
    assert [json.loads(k) for k in keys] == ["later", "line\nbreak", "plain"]
    items = [json.loads(line) for line in invoke("items", "--json", url=url).stdout.splitlines()]
    assert items[1] == {"key": "line\nbreak", "value": {"$bytes": "eA=="}}
    plain_info = invoke("info", "later", url=url).stdout.splitlines()
    fields = dict(line.split("\t") for line in plain_info)
    assert fields["version"] == "1" and fields["scope"] == "default"
    expires = dt.datetime.fromisoformat(fields["expires_at"]).timestamp()
    assert expires == pytest.approx(time.time() + 50, abs=2)
    assert invoke("info", "plain", url=url).stdout.count("expires_at\tnever") == 1
    assert invoke("info", "nope", url=url).exit_code == 1
    bad_pattern = invoke("keys", "a\\", url=url)  # a trailing lone backslash
    assert bad_pattern.exit_code == 2 and "lone backslash" in one_error_line(bad_pattern.stderr)
    assert invoke("scopes", "--json", url=url).stdout == '"default"\n'


def test_clear_needs_yes_and_keeps_other_scopes(url: str, store: satchel.Store) -> None:
    store.set("a", 1)
    store.scope("other").set("b", 2)
    refused = invoke("clear", url=url)
    assert refused.exit_code == 2 and "--yes" in one_error_line(refused.stderr)
    assert store.get("a") == 1
    cleared = invoke("clear", "--yes", url=url)
    assert cleared.exit_code == 0 and "cleared scope 'default'" in cleared.stdout
    assert len(store) == 0 and store.scope("other").get("b") == 2


def test_serve_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    result = invoke("serve", "--config", str(tmp_path / "server.toml"))
    assert result.exit_code == 2 and "satchel token add" in one_error_line(result.stderr)


def test_help_lists_every_command_with_examples() -> None:
    top = invoke("--help")
    assert top.exit_code == 0 and "Examples:" in top.stdout and "Exit codes" in top.stdout
    for name in cli.commands:
        if name == "serve":
            continue
        result = invoke(name, "--help")
        assert result.exit_code == 0, name
        assert "Examples:" in result.stdout and "  satchel " in result.stdout, name
    assert invoke("--version").stdout.startswith("satchel, version ")


def test_unexpected_errors_are_one_line_unless_debug(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: satchel.Store, key: str, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(satchel.Store, "get", broken)
    monkeypatch.setattr(satchel.Store, "open_blob", broken)
    plain = invoke("get", "k", url=url)
    assert plain.exit_code == 3
    assert "unexpected RuntimeError: boom" in one_error_line(plain.stderr)
    debug = invoke("--debug", "get", "k", url=url)
    assert debug.exit_code == 3 and "Traceback" in debug.stderr and "in broken" in debug.stderr


def test_get_json_and_set_json_round_trip_every_type(url: str, store: satchel.Store) -> None:
    store.set_many(EVERY_TYPE)
    for key, value in EVERY_TYPE.items():
        shown = invoke("get", key, "--json", url=url)
        assert shown.exit_code == 0, key
        copied = invoke("set", f"copy of {key}", shown.stdout, "--json", url=url)
        assert copied.exit_code == 0, (key, copied.stderr)
        assert same(store.get(f"copy of {key}"), value), key
    assert invoke("set", "schema", '{"$schema": "x"}', "--json", url=url).exit_code == 0
    assert store.get("schema") == {"$schema": "x"}  # an unknown $-key is data, not a tag


def test_no_command_shows_help() -> None:
    result = invoke()
    assert result.exit_code == 2 and "Commands:" in result.stderr


def test_reading_a_missing_sqlite_file_does_not_create_it(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    for args in (["export"], ["copy", f"sqlite:///{missing}", f"sqlite:///{tmp_path}/b.db"]):
        result = invoke(*args, url=f"sqlite:///{missing}")
        assert result.exit_code == 3, args
        assert "typo.db" in one_error_line(result.stderr)
        assert not missing.exists()


# --- import: validation and batches ---------------------------------------------------


def _line(key: str, value: Any = 1, **fields: Any) -> str:
    return json.dumps({"key": key, "value": value, **fields})


def test_import_stops_at_a_bad_line_with_its_number(url: str, store: satchel.Store) -> None:
    good = [_line(f"k{i}", i) for i in range(1, 6)]
    for bad, message in [
        ("{oops", "not JSON"),
        ('["key", "value"]', "needs a JSON object, not a list"),
        (_line("x", extra=1), "unknown field(s) 'extra'"),
        (json.dumps({"value": 1}), 'missing field "key"'),
        (_line("", 1), "key"),
        (_line("x", {"$uuid": "nope"}), "value.$uuid: not a UUID"),
        (_line("x", expires_at="2030-01-01T00:00:00"), "needs a UTC offset"),
        (_line("x", version=0), '"version" needs an integer >= 1'),
    ]:
        store.clear()
        text = "\n".join([*good[:3], "", bad, *good[3:]]) + "\n"
        result = invoke("import", url=url, stdin=text)
        assert result.exit_code == 2, bad
        line = one_error_line(result.stderr)
        assert line.startswith("satchel: error: line 5: ") and message in line, line
        assert "(imported before it: 3 keys; nothing from line 5 on)" in line
        assert sorted(store.keys()) == ["k1", "k2", "k3"]  # everything before, nothing after
    store.clear()
    far = _line("far", 1, expires_at="9000-01-01T00:00:00+00:00")  # beyond the store's max ttl
    text = "\n".join([*good[:3], far, *good[3:]])
    result = invoke("import", url=url, stdin=text)
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert "lines 1-6: ttl must be" in line
    # set_many takes one ttl, so a batch is written as one call per expiry: the keys
    # without one went in before the far one failed, and the message says so
    assert "(imported before the error: 5 keys; nothing after line 6)" in line
    assert len(store) == 5
    not_utf8 = invoke("import", url=url, stdin=b'{"key": "\xff", "value": 1}\n')
    assert not_utf8.exit_code == 2 and "line 1" in not_utf8.stderr


def test_import_expiry_duplicates_skip_existing_and_items_json(
    url: str, store: satchel.Store
) -> None:
    soon = dt.datetime.fromtimestamp(time.time() + 100, dt.UTC).isoformat()
    past = dt.datetime.fromtimestamp(time.time() - 100, dt.UTC).isoformat()
    lines = [
        _line("dup", "first", expires_at=soon),
        _line("gone", 1, expires_at=past),
        _line("unix", 1, expires_at=time.time() + 200),
        _line("dup", "last"),  # a later line for a key wins, whatever its expiry
        _line("there", "imported"),
    ]
    store.set("there", "before")
    result = invoke("import", "--skip-existing", url=url, stdin="\n".join(lines))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("imported 2 keys in ")
    assert "skipped 1 already there, 1 expired" in result.stdout
    assert store.get("dup") == "last" and store.ttl("dup") is None
    assert "gone" not in store and store.get("there") == "before"
    ttl = store.ttl("unix")
    assert ttl is not None and 190 < ttl <= 200

    store.set_many({"a": (1, b"2"), "b": {3}})
    exported = invoke("items", "--json", url=url).stdout
    other = f"{url}-other"
    assert invoke("import", url=other, stdin=exported).exit_code == 0
    with satchel.open(other) as copy:
        assert same(copy.get("a"), (1, b"2")) and same(copy.get("b"), {3})


def test_import_many_batches(url: str, store: satchel.Store) -> None:
    text = "".join(
        _line(f"k{i:05d}", [i], expires_at=time.time() + 1000 + i) + "\n" for i in range(1234)
    )
    result = invoke("import", url=url, stdin=text)
    assert result.exit_code == 0 and result.stdout.startswith("imported 1234 keys")
    assert len(store) == 1234 and store.get("k01233") == [1233]
    ttl = store.ttl("k00010")
    assert ttl is not None and 1005 < ttl <= 1010


# --- copy: in-process edge cases and memory:// ---------------------------------------


def test_copy_between_memory_and_sqlite(url: str, store: satchel.Store, memory_url: str) -> None:
    store.set_many(EVERY_TYPE)
    store.set("expiring", 1, ttl=500)
    assert invoke("copy", url, memory_url).exit_code == 0
    with satchel.open(memory_url) as memory:
        assert len(memory) == len(EVERY_TYPE) + 1
        memory.set("only in memory", 1)
        ttl = memory.ttl("expiring")
        assert ttl is not None and 499 < ttl <= 500
    back = f"{url}-back"
    result = invoke("copy", memory_url, back, "--pattern", "only *")
    assert result.exit_code == 0 and result.stdout.startswith("copied 1 of 1 keys")
    assert invoke("copy", memory_url, back).exit_code == 0
    with satchel.open(back) as copy:
        for key, value in EVERY_TYPE.items():
            assert same(copy.get(key), value), key


def test_copy_scope_pattern_and_refusals(url: str, store: satchel.Store) -> None:
    store.scope("users").set_many({"user:1": 1, "user:2": 2, "admin": 3})
    target = f"{url}-target"
    result = invoke("--scope", "users", "copy", url, target, "--pattern", "user:*")
    assert result.exit_code == 0 and "scope 'users'" in result.stdout
    with satchel.open(target, scope="users") as copy:
        assert list(copy.keys()) == ["user:1", "user:2"]
    assert invoke("copy", url, target, "--scope", "nobody").stdout.startswith("copied 0 of 0")
    same_store = invoke("copy", url, url)
    assert same_store.exit_code == 2 and "same store" in same_store.stderr
    bad = invoke("copy", url, "nosuch://x")
    assert bad.exit_code == 2 and "unknown engine" in one_error_line(bad.stderr)


def test_copy_streams_large_values(url: str, store: satchel.Store, tmp_path: Path) -> None:
    big = os.urandom(3 * CHUNK_SIZE + 7)
    with store.open_blob("big", "wb", ttl=600) as f:
        f.write(big)
    store.set("small", b"x")
    target = f"file://{tmp_path}/kv"
    result = invoke("copy", url, target)
    assert result.exit_code == 0, result.output
    with satchel.open(target) as copy:
        assert copy.get("big") == big and copy.get("small") == b"x"
        assert copy.info("big").checksum == store.info("big").checksum
        ttl = copy.ttl("big")
        assert ttl is not None and 590 < ttl <= 600
    assert invoke("copy", url, target, "--skip-existing").exit_code == 0


def test_set_file_and_get_stream_large_values(
    url: str, store: satchel.Store, tmp_path: Path
) -> None:
    big = os.urandom(2 * CHUNK_SIZE + 99)
    (tmp_path / "in.bin").write_bytes(big)
    created = run("set", "big", "--file", str(tmp_path / "in.bin"), url=url)
    assert created.returncode == 0 and created.stdout == b"created\n", created.stderr
    assert store.get("big") == big
    assert run("get", "big", url=url).stdout == big
    again = run("set", "big", "-", "--ttl", "60", url=url, stdin=big[:10])
    assert again.stdout == b"updated\n" and store.get("big") == big[:10]
    assert store.ttl("big") is not None
    store.set("text", "hello")
    assert run("get", "text", url=url).stdout == b"hello\n"
