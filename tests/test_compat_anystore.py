"""satchel.compat.anystore: anystore's documented examples, run on satchel (SQLite, memory,
and a directory path), plus what satchel does differently on purpose."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import satchel
from satchel._blobs import CHUNK_SIZE
from satchel.compat.anystore import AnyStore, DoesNotExist, _engine_url, get_store


@pytest.fixture(params=["sqlite", "memory", "directory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyStore]:
    uri = {
        "sqlite": f"sqlite:///{tmp_path}/any.db",
        "memory": f"memory://compat-any-{uuid.uuid4().hex}",
        "directory": str(tmp_path / "data"),
    }[request.param]
    if request.param == "directory":
        (tmp_path / "data").mkdir()
    with get_store(uri) as s:
        yield s


def test_basic_usage(store: AnyStore) -> None:
    store.put("key1", "my content")
    assert store.get("key1") == "my content"
    store.put("topic/maths", 100)
    store.put("topic/engineering", 200)
    assert list(store.iterate_keys(prefix="topic")) == ["topic/engineering", "topic/maths"]


def test_typing_of_values(store: AnyStore) -> None:
    store.put("foo", "bar")
    assert store.get("foo") == "bar"
    store.put("data", 1)
    assert store.get("data") == 1
    store.put("data", {"foo": "bar"})
    assert store.get("data")["foo"] == "bar"
    store.put("exact", ("a", 1, b"\x00"))  # satchel: the exact type, not a guess
    assert store.get("exact") == ("a", 1, b"\x00")


def test_write_and_read_data(store: AnyStore) -> None:
    data = b"line one\nline two\n" + b"x" * (2 * CHUNK_SIZE)
    store.put("key", "my content")
    with store.open("key", "wb") as fh:  # overwritten without warning
        fh.write(data)
    assert store.get("key") == data
    with store.open("key", "rb") as fh:
        assert fh.read() == data
    lines = list(store.stream("key"))
    assert lines[:2] == [b"line one\n", b"line two\n"]
    assert b"".join(lines) == data
    assert store.pop("key") == data
    assert not store.exists("key")


def test_delete_and_missing_data(store: AnyStore) -> None:
    store.put("key", "v")
    store.delete("key")
    with pytest.raises(DoesNotExist):
        store.get("key")
    try:
        data = store.get("key")
    except DoesNotExist:
        data = "__missing__"
    assert data == "__missing__"
    assert store.get("key", raise_on_nonexist=False) is None
    assert store.pop("key", raise_on_nonexist=False) is None
    with pytest.raises(DoesNotExist):
        store.delete("key")
    store.delete("key", ignore_errors=True)
    with pytest.raises(DoesNotExist):
        store.open("key", "rb")
    with pytest.raises(DoesNotExist):
        list(store.stream("key"))
    assert list(store.stream("key", raise_on_nonexist=False)) == []
    with pytest.raises(KeyError):  # DoesNotExist is a KeyNotFound, hence a KeyError
        store.info("key")
    assert issubclass(DoesNotExist, satchel.KeyNotFound)


def test_info(store: AnyStore) -> None:
    store.put("docs/readme.txt", b"hello")
    info = store.info("docs/readme.txt")
    assert info.size == 5
    assert info.name == "readme.txt" and info.key == "docs/readme.txt"
    assert info.created_at <= info.updated_at
    store.put("docs/readme.txt", b"hello again")
    again = store.info("docs/readme.txt")
    assert again.size == 11 and again.created_at == info.created_at
    assert again.updated_at >= info.updated_at


def test_iterate_keys_filters(store: AnyStore) -> None:
    for key in ("dataset1/a.pdf", "dataset1/b.txt", "dataset1/tmp/c.pdf", "dataset2/d.pdf",
                "odd*[key]"):  # fmt: skip
        store.put(key, 1)
    assert list(store.iterate_keys(prefix="dataset1", glob="*.pdf")) == [
        "dataset1/a.pdf", "dataset1/tmp/c.pdf"]  # fmt: skip
    assert list(store.iterate_keys(prefix="dataset1", exclude_prefix="dataset1/tmp")) == [
        "dataset1/a.pdf", "dataset1/b.txt"]  # fmt: skip
    assert list(store.iterate_keys(prefix="odd*[")) == ["odd*[key]"]  # literal prefix
    assert len(list(store.iterate_keys())) == 5


def test_uris_map_to_engines(tmp_path: Path) -> None:
    assert _engine_url("postgresql+psycopg://u@h/db") == "postgresql://u@h/db"
    assert _engine_url("Redis://h:6379/0") == "redis://h:6379/0"
    assert _engine_url(None) is None
    assert _engine_url(tmp_path / "kv") == (tmp_path / "kv").as_uri()
    (tmp_path / "kv").mkdir()
    with get_store(tmp_path / "kv") as store:
        store.put("a/b", "plain file")
        assert store.store.url.startswith("file://")
    with get_store((tmp_path / "kv").as_uri()) as again:
        assert again.get("a/b") == "plain file"
