"""The public names of satchel and the shape of its error hierarchy."""

from __future__ import annotations

import importlib
import inspect

import pytest

import satchel
import satchel._errors

PUBLIC = {
    "AccessDenied",
    "BackendError",
    "BackendUnavailable",
    "CorruptData",
    "DecryptionError",
    "IncompatibleDatabase",
    "InvalidInput",
    "InvalidInputType",
    "KeyInfo",
    "KeyNotFound",
    "QuotaExceeded",
    "ReadOnlyError",
    "SatchelError",
    "Store",
    "StoreClosed",
    "UnsupportedValue",
    "UserCodec",
    "ValueChanged",
    "open",
}


def _error_classes() -> list[type[BaseException]]:
    return [
        obj
        for _, obj in inspect.getmembers(satchel._errors, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == satchel._errors.__name__
    ]


def test_all_lists_exactly_the_public_names() -> None:
    assert set(satchel.__all__) == PUBLIC
    assert len(satchel.__all__) == len(PUBLIC)  # no duplicates


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_public_name_is_importable(name: str) -> None:
    module = importlib.import_module("satchel")
    assert getattr(module, name) is getattr(satchel, name)
    namespace: dict[str, object] = {}
    exec(f"from satchel import {name}", namespace)
    assert namespace[name] is getattr(satchel, name)


def test_star_import_gives_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from satchel import *", namespace)
    assert {name for name in namespace if name != "__builtins__"} == PUBLIC


def test_open_is_callable_and_store_is_a_class() -> None:
    assert callable(satchel.open)
    assert inspect.isclass(satchel.Store)
    assert inspect.isclass(satchel.KeyInfo)


def test_every_error_class_is_exported_and_listed() -> None:
    names = {cls.__name__ for cls in _error_classes()}
    assert names == set(satchel._errors.__all__)
    assert names <= PUBLIC
    for name in names:
        assert getattr(satchel, name) is getattr(satchel._errors, name)


def test_every_error_derives_from_satchel_error() -> None:
    classes = _error_classes()
    assert len(classes) >= 10
    for cls in classes:
        assert issubclass(cls, satchel.SatchelError), cls
        assert issubclass(cls, Exception), cls


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (satchel.KeyNotFound, KeyError),
        (satchel.InvalidInput, ValueError),
        (satchel.InvalidInputType, TypeError),
        (satchel.InvalidInputType, ValueError),
        (satchel.InvalidInputType, satchel.InvalidInput),
        (satchel.UnsupportedValue, TypeError),
        (satchel.BackendUnavailable, satchel.BackendError),
        (satchel.IncompatibleDatabase, satchel.BackendError),
    ],
)
def test_errors_are_also_what_python_users_catch(
    error: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(error, builtin)
    with pytest.raises(builtin):
        raise error("boom")


@pytest.mark.parametrize(
    "error",
    [satchel.CorruptData, satchel.StoreClosed, satchel.BackendError, satchel.SatchelError],
)
def test_errors_without_a_builtin_base_are_not_value_or_type_errors(
    error: type[Exception],
) -> None:
    assert not issubclass(error, (KeyError, ValueError, TypeError))


def test_unsupported_value_is_not_a_value_error() -> None:
    assert not issubclass(satchel.UnsupportedValue, ValueError)


def test_errors_module_docstring_draws_every_error_class() -> None:
    doc = satchel._errors.__doc__
    assert doc
    for cls in _error_classes():
        assert cls.__name__ in doc, cls.__name__


def test_error_message_names_key_scope_and_engine() -> None:
    error = satchel.KeyNotFound("key not found", key="user:1", scope="users", engine="memory://")
    text = str(error)
    assert "'user:1'" in text
    assert "'users'" in text
    assert "memory://" in text
    assert error.key == "user:1"
    assert error.scope == "users"
    assert error.engine == "memory://"
    assert str(satchel.CorruptData("plain")) == "plain"


def test_key_not_found_from_a_store_is_a_key_error() -> None:
    with satchel.open("memory://") as store:
        with pytest.raises(KeyError) as info:
            store["missing"]
        assert isinstance(info.value, satchel.KeyNotFound)
        assert "'missing'" in str(info.value)


def test_version_is_a_string() -> None:
    assert isinstance(satchel.__version__, str)
    assert satchel.__version__
