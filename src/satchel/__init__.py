"""satchel: simple persistent key-value storage for Python programs.

>>> import satchel
>>> store = satchel.open()                  # $SATCHEL_URL, else SQLite in the user data dir
>>> store.set("visits", 1)
>>> store.incr("visits")
2
"""

from ._codecs import UserCodec
from ._core import KeyInfo
from ._errors import (
    AccessDenied,
    BackendError,
    BackendUnavailable,
    CorruptData,
    DecryptionError,
    IncompatibleDatabase,
    InvalidInput,
    InvalidInputType,
    KeyNotFound,
    QuotaExceeded,
    ReadOnlyError,
    SatchelError,
    StoreClosed,
    UnsupportedValue,
    ValueChanged,
)
from ._store import Store, open

__all__ = [
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
]
__version__ = "0.1.0"
