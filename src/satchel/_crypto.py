"""Encryption at rest (AES-256-GCM) and compression of stored records.

A sealed record keeps its 3-byte header in the clear (so a reader knows what it holds)
and replaces the payload:

    header(version, codec, flags) | [key id (4) | nonce (12) | AES-GCM(inner) + tag (16)]
    inner = [algorithm (1) | size | compressed payload]   when flags has COMPRESSED
          = payload                                       otherwise

The header, the scope and the key are the associated data of the encryption, so a
ciphertext copied to another key or scope, or a header flipped, fails to decrypt
instead of returning the wrong value. The key id (4 bytes of a hash of the key) lets a
keyring pick the right key and lets rotation skip values already on the newest key.

Decompression is bounded by the size a record declares: ``size`` is the length of the
uncompressed payload, as its width (1 byte: 1, 2, 4 or 8) then the length, big-endian,
and a payload that would inflate past it is CorruptData, having taken no more memory
than the size.
Records written before the size existed (algorithm ``z`` or ``s``, no size) are read
with a cap, LEGACY_INFLATE_MAX (256 MiB): four times the largest chunk a large value's
manifest may claim, and far beyond what a value kept as one record usually holds
(``open_blob`` stores big ones in 1 MiB chunks), so a real old record reads whole,
while a crafted one takes at most the cap, not the GiBs a 32 KiB zstd or 1 MiB zlib
"bomb" inflates to. Raise it to read a bigger old record.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from ._codecs import HEADER_SIZE
from ._errors import CorruptData, DecryptionError, InvalidInput, InvalidInputType

ENCRYPTED = 0x01
COMPRESSED = 0x02
KNOWN_FLAGS = ENCRYPTED | COMPRESSED
KEY_ID_SIZE, NONCE_SIZE = 4, 12
_SEALED_MIN = KEY_ID_SIZE + NONCE_SIZE + 16  # and the AES-GCM tag: an empty value's size
SALT_SIZE = 16
# scrypt cost for passphrases, paid once per open: N = 2**17 with r = 8 takes 128 MiB
# (128 * r * N) and 0.55 s (one AMD EPYC server core), in line with current guidance
# for stored secrets. The cost is stored with the salt (Keyring.salt_record); a bare
# 16-byte salt, stored before that, was made for N = 2**15 (32 MiB, 0.14 s there) and
# is read so. A stored cost beyond SCRYPT_N is refused: a planted salt must not make
# every open take GiBs.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
OLD_SCRYPT_N = 2**15
_SALT_FORMAT = 1  # first byte of a salt stored with its cost: format, log2 N, salt

KeyMaterial = bytes | str
_ZLIB, _ZSTD = b"Z", b"S"  # followed by the uncompressed size
_OLD_ZLIB, _OLD_ZSTD = b"z", b"s"  # no size: read up to LEGACY_INFLATE_MAX
_SIZED, _UNSIZED = frozenset((_ZLIB, _ZSTD)), frozenset((_OLD_ZLIB, _OLD_ZSTD))
LEGACY_INFLATE_MAX = 256 << 20
_READ_CHUNK = 1 << 20  # a zstd frame that does not say its size is read this much at a time
_ZLIB_STEP = 4096  # compressed bytes inflated at a time
_per_thread = threading.local()  # zstd contexts: each may serve one thread at a time


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

    def __init__(
        self, material: KeyMaterial | Sequence[KeyMaterial], salt: bytes | None,
        plaintext_ok: bool = False,
    ) -> None:  # fmt: skip
        self.plaintext_ok = plaintext_ok
        given = [material] if isinstance(material, bytes | str) else list(material)
        if not given:
            raise InvalidInput("encryption_key is an empty list")
        keys = []
        for item in given:
            raw = _raw_key(item)
            if raw is None:
                if salt is None:
                    raise InvalidInput("a passphrase needs the store's salt")
                n, pure = self.read_salt(salt)
                raw = hashlib.scrypt(
                    str(item).encode(), salt=pure, n=n, r=SCRYPT_R, p=SCRYPT_P,
                    maxmem=128 * SCRYPT_R * n + (1 << 20), dklen=32,
                )  # fmt: skip
            keys.append(raw)
        self.current_id = key_id(keys[0])
        self._current = _aesgcm(keys[0])
        self._by_id = {key_id(k): _aesgcm(k) for k in reversed(keys)}  # first wins

    @staticmethod
    def salt_record(salt: bytes) -> bytes:
        """`salt` as a new store keeps it: with the scrypt cost of its passphrases."""
        return bytes((_SALT_FORMAT, SCRYPT_N.bit_length() - 1)) + salt

    @staticmethod
    def read_salt(stored: bytes) -> tuple[int, bytes]:
        """(scrypt N, salt) from what a store keeps. Raises CorruptData if it is no salt."""
        if len(stored) == SALT_SIZE:
            return OLD_SCRYPT_N, stored
        if len(stored) != 2 + SALT_SIZE or stored[0] != _SALT_FORMAT:
            raise CorruptData(
                f"not a salt: {len(stored)} bytes, where a salt has {SALT_SIZE} (or "
                f"{2 + SALT_SIZE} with its scrypt cost)"
            )
        if not OLD_SCRYPT_N <= 1 << stored[1] <= SCRYPT_N:
            raise CorruptData(f"the salt asks for scrypt N = 2**{stored[1]}, beyond 2**15-2**17")
        return 1 << stored[1], stored[2:]

    def refuse_plaintext(self) -> None:
        """Raise DecryptionError for something stored in the clear, unless `plaintext_ok`:
        whoever can write the engine's bytes could have planted it."""
        if not self.plaintext_ok:
            raise DecryptionError(
                "value is not encrypted, though this store has an encryption_key (written "
                "without the key, or planted); open with allow_plaintext=True to read it "
                "while migrating"
            )

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

        def compress(data: bytes) -> bytes:
            try:
                context = _per_thread.compressor
            except AttributeError:
                context = _per_thread.compressor = zstandard.ZstdCompressor(level=3)
            packed: bytes = context.compress(data)
            return packed

        return _ZSTD, compress
    raise InvalidInput(f"compress must be 'zstd', 'zlib' or None, not {name!r}")


_SIZE_FORMS = {1: struct.Struct(">B"), 2: struct.Struct(">H"), 4: struct.Struct(">I"),
               8: struct.Struct(">Q")}  # fmt: skip


def _size(n: int) -> bytes:
    """`n` as a size field: its width, then `n` in that many bytes."""
    width = 1 if n < 1 << 8 else 2 if n < 1 << 16 else 4 if n < 1 << 32 else 8
    return bytes((width,)) + _SIZE_FORMS[width].pack(n)


def _decompress(inner: bytes) -> bytes:
    algorithm = inner[:1]
    if algorithm in _SIZED:
        form = _SIZE_FORMS.get(inner[1]) if len(inner) > 1 else None
        if form is None:
            raise CorruptData("compressed value is damaged: bad size field")
        (size,) = form.unpack_from(inner, 2)  # struct.error if cut short: damaged too
        inflate = _inflate if algorithm == _ZLIB else _unzstd
        data = inflate(inner[2 + form.size :], size, True)
        if len(data) != size:
            raise CorruptData(f"compressed value holds {len(data)} bytes, not the {size} declared")
        return data
    if algorithm in _UNSIZED:
        inflate = _inflate if algorithm == _OLD_ZLIB else _unzstd
        return inflate(inner[1:], LEGACY_INFLATE_MAX, False)
    raise CorruptData(f"unknown compression {algorithm!r}; written by a newer satchel?")


def _inflate(body: bytes, size: int, exact: bool) -> bytes:
    """zlib's output, stopped soon after `size` bytes: deflate inflates at most 1032-fold,
    so a body of _ZLIB_STEP bytes makes 4 MiB at most."""
    if len(body) <= _ZLIB_STEP:  # one call, as bounded
        data = zlib.decompress(body)
    elif exact:  # the size is known: zlib stops one byte past it
        inflater = zlib.decompressobj()
        data = inflater.decompress(body, size + 1)
        if not inflater.eof and len(data) <= size:
            raise CorruptData("compressed value is damaged: zlib stream cut short")
    else:  # an old record: fed a step at a time, stopped within 4 MiB of its cap
        inflater, chunks, total, view = zlib.decompressobj(), [], 0, memoryview(body)
        for start in range(0, len(view), _ZLIB_STEP):
            chunks.append(inflater.decompress(view[start : start + _ZLIB_STEP]))
            total += len(chunks[-1])
            if total > size:
                raise CorruptData(_past(size, exact))
            if inflater.eof:
                break
        else:
            raise CorruptData("compressed value is damaged: zlib stream cut short")
        data = b"".join(chunks)
    if len(data) > size:
        raise CorruptData(_past(size, exact))
    return data


def _unzstd(body: bytes, size: int, exact: bool) -> bytes:
    try:
        import zstandard
    except ImportError as exc:
        raise CorruptData("value is zstd-compressed: pip install 'satchel[zstd]'") from exc
    framed = zstandard.frame_content_size(body)  # -1: the frame does not say
    if framed > size or (exact and framed != size):
        raise CorruptData(_past(size, exact) if framed > size else "zstd frame size disagrees")
    try:
        context = _per_thread.decompressor  # made once: that takes longer than a small read
    except AttributeError:
        context = _per_thread.decompressor = zstandard.ZstdDecompressor()
    if framed >= 0:  # zstd allocates `framed` bytes and refuses a frame that inflates past it
        data: bytes = context.decompress(body)
        return data
    chunks, total = [], 0  # an old record written without the size: read in steps
    with context.stream_reader(body) as reader:
        while chunk := reader.read(_READ_CHUNK):
            total += len(chunk)
            if total > size:
                raise CorruptData(_past(size, exact))
            chunks.append(chunk)
    return b"".join(chunks)


def _past(size: int, exact: bool) -> str:
    if exact:
        return f"compressed value inflates past the {size} bytes it declares"
    return (
        f"compressed value (old format) inflates past LEGACY_INFLATE_MAX ({size} bytes); "
        "raise satchel._crypto.LEGACY_INFLATE_MAX to read it if it is genuine"
    )


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
            packed = algorithm + _size(len(inner)) + compress(inner)
            if len(packed) < len(inner):  # only when it pays
                flags, inner = COMPRESSED, packed
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
    if len(record) < HEADER_SIZE:
        raise CorruptData("stored bytes are not a satchel record (cut short)")
    flags = record[2]
    if flags & ~KNOWN_FLAGS:
        raise CorruptData(f"record has flags {flags:#04x} this satchel cannot read")
    if flags & ENCRYPTED and len(record) < HEADER_SIZE + _SEALED_MIN:
        raise DecryptionError("value cannot be decrypted: the stored bytes were cut short")
    header, inner = record[:HEADER_SIZE], record[HEADER_SIZE:]
    if flags & ENCRYPTED:
        if keyring is None:
            raise DecryptionError("value is encrypted; open the store with its encryption_key")
        inner = keyring.decrypt(inner, _aad(header, scope, key))
    elif keyring is not None:
        keyring.refuse_plaintext()
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
