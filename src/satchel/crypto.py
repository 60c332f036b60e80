"""Encryption at rest (AES-256-GCM) and compression of stored records.

A sealed record keeps its 3-byte header in the clear (so a reader knows what it holds)
and replaces the payload:

    header(version, codec, flags) | [key id (4) | nonce (12) | AES-GCM(inner) + tag (16)]
    inner = [algorithm (1) | compressed payload]   when flags has COMPRESSED
          = payload                                otherwise

The header, the scope and the key are the associated data of the encryption, so a
ciphertext copied to another key or scope, or a header flipped, fails to decrypt
instead of returning the wrong value. The key id (4 bytes of a hash of the key) lets a
keyring pick the right key and lets rotation skip values already on the newest key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from .codecs import HEADER_SIZE
from .errors import CorruptData, DecryptionError, InvalidInput, InvalidInputType

ENCRYPTED = 0x01
COMPRESSED = 0x02
KNOWN_FLAGS = ENCRYPTED | COMPRESSED
KEY_ID_SIZE, NONCE_SIZE = 4, 12
SALT_SIZE = 16
# scrypt cost for passphrases: about 0.1 s and 32 MiB once per open.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1

KeyMaterial = bytes | str
_ZLIB, _ZSTD = b"z", b"s"


def _aesgcm(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise InvalidInput(
            "encryption needs the cryptography package: pip install 'satchel[crypto]'"
        ) from exc
    return AESGCM(key)


def key_id(key: bytes) -> bytes:
    """The 4-byte id stored with each value encrypted by `key`."""
    return hashlib.blake2b(key, digest_size=KEY_ID_SIZE, person=b"satchel-kid").digest()


def needs_salt(material: KeyMaterial | Sequence[KeyMaterial]) -> bool:
    """True if any key given is a passphrase (it needs the store's salt)."""
    keys = [material] if isinstance(material, bytes | str) else list(material)
    return any(_raw_key(k) is None for k in keys)


def _raw_key(material: object) -> bytes | None:
    """A 32-byte key from bytes or base64 text; None for a passphrase."""
    if isinstance(material, bytes):
        if len(material) != 32:
            raise InvalidInput(f"an encryption key of bytes must be 32 bytes, not {len(material)}")
        return material
    if not isinstance(material, str):
        raise InvalidInputType(
            f"encryption_key must be bytes, str or a list of them, not {type(material).__name__}"
        )
    if not material:
        raise InvalidInput("encryption_key must not be empty")
    try:
        decoded = base64.b64decode(material.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == 32 else None


class Keyring:
    """Encrypts with the first key, decrypts with any of them.

    Keys are 32 raw bytes, their base64 text, or a passphrase (derived with scrypt and
    the store's salt). `plaintext_ok`: records that are not encrypted are read as they
    are (for a migration to encryption); by default they raise DecryptionError.
    """

    plaintext_ok = False

    def __init__(self, material: KeyMaterial | Sequence[KeyMaterial], salt: bytes | None) -> None:
        given = [material] if isinstance(material, bytes | str) else list(material)
        if not given:
            raise InvalidInput("encryption_key is an empty list")
        keys = []
        for item in given:
            raw = _raw_key(item)
            if raw is None:
                if salt is None:
                    raise InvalidInput("a passphrase needs the store's salt")
                raw = hashlib.scrypt(
                    str(item).encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                    maxmem=64 * 1024 * 1024, dklen=32,
                )  # fmt: skip
            keys.append(raw)
        self.current_id = key_id(keys[0])
        self._current = _aesgcm(keys[0])
        self._by_id = {key_id(k): _aesgcm(k) for k in reversed(keys)}  # first wins

    def encrypt(self, plain: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return self.current_id + nonce + bytes(self._current.encrypt(nonce, plain, aad))

    def decrypt(self, sealed: bytes, aad: bytes) -> bytes:
        kid, nonce = sealed[:KEY_ID_SIZE], sealed[KEY_ID_SIZE : KEY_ID_SIZE + NONCE_SIZE]
        cipher = self._by_id.get(kid)
        if cipher is None:
            raise DecryptionError("value was encrypted with a key this store was not given")
        from cryptography.exceptions import InvalidTag

        try:
            return bytes(cipher.decrypt(nonce, sealed[KEY_ID_SIZE + NONCE_SIZE :], aad))
        except InvalidTag:
            raise DecryptionError(
                "value cannot be decrypted: wrong key, or the stored bytes were changed"
            ) from None


def _compressor(name: str) -> tuple[bytes, Callable[[bytes], bytes]]:
    if name == "zlib":
        return _ZLIB, lambda data: zlib.compress(data, 6)
    if name == "zstd":
        try:
            import zstandard
        except ImportError as exc:
            raise InvalidInput("zstd compression needs: pip install 'satchel[zstd]'") from exc
        return _ZSTD, zstandard.ZstdCompressor(level=3).compress
    raise InvalidInput(f"compress must be 'zstd', 'zlib' or None, not {name!r}")


def _decompress(inner: bytes) -> bytes:
    algorithm, body = inner[:1], inner[1:]
    if algorithm == _ZLIB:
        return zlib.decompress(body)
    if algorithm == _ZSTD:
        try:
            import zstandard
        except ImportError as exc:
            raise CorruptData("value is zstd-compressed: pip install 'satchel[zstd]'") from exc
        return zstandard.ZstdDecompressor().decompress(body)
    raise CorruptData(f"unknown compression {algorithm!r}; written by a newer satchel?")


def _aad(header: bytes, scope: str, key: str) -> bytes:
    return header + scope.encode() + b"\x00" + key.encode()


class Sealer:
    """Compresses and/or encrypts records on the way to the engine, and back."""

    def __init__(self, keyring: Keyring | None, compress: str | None, compress_min: int) -> None:
        self.keyring = keyring
        self._compress = None if compress is None else _compressor(compress)
        self._compress_min = compress_min

    def seal(self, record: bytes, scope: str, key: str) -> bytes:
        """`record` (header + payload, flags 0) compressed and/or encrypted."""
        flags, inner = 0, record[HEADER_SIZE:]
        if self._compress is not None and len(inner) >= self._compress_min:
            algorithm, compress = self._compress
            packed = compress(inner)
            if len(packed) + 1 < len(inner):  # only when it pays
                flags, inner = COMPRESSED, algorithm + packed
        if self.keyring is not None:
            flags |= ENCRYPTED
        if not flags:
            return record
        header = record[:2] + bytes((flags,))
        if self.keyring is not None:
            inner = self.keyring.encrypt(inner, _aad(header, scope, key))
        return header + inner


def unseal(record: bytes, keyring: Keyring | None, scope: str, key: str) -> bytes:
    """A record with flags 0, decrypted and decompressed. Raises DecryptionError/CorruptData,
    also for a record that is not encrypted when `keyring` is given (unless the keyring
    has `plaintext_ok`)."""
    flags = record[2]
    if flags & ~KNOWN_FLAGS:
        raise CorruptData(f"record has flags {flags:#04x} this satchel cannot read")
    header, inner = record[:HEADER_SIZE], record[HEADER_SIZE:]
    if flags & ENCRYPTED:
        if keyring is None:
            raise DecryptionError("value is encrypted; open the store with its encryption_key")
        inner = keyring.decrypt(inner, _aad(header, scope, key))
    elif keyring is not None and not keyring.plaintext_ok:
        # Whoever can write the engine's bytes could plant this: never take it as genuine.
        raise DecryptionError(
            "value is not encrypted, though this store has an encryption_key (written "
            "without the key, or planted); open with allow_plaintext=True to read it "
            "while migrating"
        )
    if flags & COMPRESSED:
        try:
            inner = _decompress(inner)
        except CorruptData:
            raise
        except Exception as exc:  # zlib.error, zstd.ZstdError: damaged data
            raise CorruptData(f"compressed value is damaged: {exc}") from exc
    return header[:2] + b"\x00" + inner


def is_current(record: bytes, keyring: Keyring) -> bool:
    """True if `record` is encrypted with the keyring's first key."""
    return bool(record[2] & ENCRYPTED) and record[HEADER_SIZE : HEADER_SIZE + KEY_ID_SIZE] == (
        keyring.current_id
    )
