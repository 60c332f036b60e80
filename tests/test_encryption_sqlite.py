"""Encryption on the embedded default, looked at through the database file itself."""

from __future__ import annotations

import os
import sqlite3

import satchel

SECRET = b"PLAINTEXT-canary-9e27c1"


def _file_bytes(path) -> bytes:
    data = b""
    for suffix in ("", "-wal"):
        if os.path.exists(f"{path}{suffix}"):
            with open(f"{path}{suffix}", "rb") as f:
                data += f.read()
    return data


def test_database_file_never_holds_the_plaintext(tmp_path):
    path = tmp_path / "enc.db"
    with satchel.open(path, encryption_key=os.urandom(32), compress="zstd") as store:
        store.set("bytes", SECRET)
        store.set("str", SECRET.decode())
        store.set("nested", {"deep": [SECRET, (SECRET.decode(),)]})
        store.set_many({f"k{i}": SECRET * 50 for i in range(100)})  # compressed too
    assert SECRET not in _file_bytes(path)
    with satchel.open(path) as plain:  # control: a plain store does leave it readable
        plain.set("control", SECRET)
    assert SECRET in _file_bytes(path)


def test_rotation_of_100000_values_keeps_every_value(tmp_path):
    path = tmp_path / "rotate.db"
    old, new = os.urandom(32), os.urandom(32)
    values = {f"key:{i:06d}": (i, f"value {i}") for i in range(100_000)}
    with satchel.open(path, encryption_key=old) as store:
        for start in range(0, len(values), 10_000):
            store.set_many(dict(list(values.items())[start : start + 10_000]))
    with satchel.open(path, encryption_key=[new, old]) as store:
        assert store.rotate_encryption() == 100_000
    with satchel.open(path, encryption_key=new) as store:
        assert dict(store.items()) == values


def test_readonly_opens_the_file_read_only(tmp_path):
    path = tmp_path / "ro.db"
    with satchel.open(path) as store:
        store.set("k", 1)
    os.chmod(path, 0o444)
    try:
        with satchel.open(path, readonly=True) as store:
            assert store.get("k") == 1
        # The connection really is read-only, not just guarded by the Store.
        with satchel.open(path, readonly=True) as store:
            db = store._shared.backend._backend._db
            try:
                db.execute("DELETE FROM satchel_kv")
                raise AssertionError("a read-only connection accepted a write")
            except sqlite3.OperationalError as exc:
                assert "readonly" in str(exc)
    finally:
        os.chmod(path, 0o644)


def test_readonly_on_a_missing_file_is_a_clear_error(tmp_path):
    try:
        satchel.open(tmp_path / "missing.db", readonly=True)
    except satchel.SatchelError as exc:
        assert "missing.db" in str(exc)
    else:
        raise AssertionError("opened a missing file read-only")


_ROTATE_CHILD = """
import sys, time, satchel
path, new, old = sys.argv[1], bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])

def progress(checked, rewritten):
    print(checked, rewritten, flush=True)
    if rewritten:
        time.sleep(60)  # killed here, in the middle of the rotation

with satchel.open(path, encryption_key=[new, old]) as store:
    store.rotate_encryption(progress=progress)
"""


def test_rotation_killed_midway_resumes_and_loses_nothing(tmp_path):
    import signal
    import subprocess
    import sys

    path = tmp_path / "killed.db"
    old, new = os.urandom(32), os.urandom(32)
    values = {f"key:{i:05d}": i for i in range(1_500)}
    points = {t: str(t) for t in range(3_000)}
    with satchel.open(path, encryption_key=old) as store:
        store.set_many(values)
        store.series("s").extend(points)
        for i in range(50):
            store.events("e").apply({"n": i})
        state = store.events("e").current()
    child = subprocess.Popen(
        [sys.executable, "-c", _ROTATE_CHILD, str(path), new.hex(), old.hex()],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    _checked, rewritten = map(int, child.stdout.readline().split())
    assert 0 < rewritten < len(values)  # killed part way through
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    with satchel.open(path, encryption_key=[new, old]) as store:
        assert store.rotate_encryption() == len(values) + len(points) + 50 + 1 - rewritten
    with satchel.open(path, encryption_key=new) as store:  # the old key is gone
        assert dict(store.items()) == values
        assert dict(store.series("s").range()) == points
        assert store.events("e").current() == state
        assert len(list(store.events("e").history())) == 50
