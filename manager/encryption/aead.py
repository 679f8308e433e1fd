"""Sealing storage payloads (WAL records, snapshots) with a data-encryption key.

A sealed payload is `0xC1 | version | key id (8) | nonce (12) | AES-256-GCM ciphertext+tag`.
0xC1 is the one byte msgpack never uses, so a sealed payload can never be mistaken for a
plaintext one (storage written before encryption existed stays readable while it migrates).
The key id says which key sealed it, so a rotation in progress (two keys) needs no guessing,
and a payload sealed with a key this node does not hold is reported as such.

Nonces are random (96 bits): safe for far more records than one key ever seals, since every
key rotation (autolock on, unlock key rotated) starts a fresh key.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field
from functools import cached_property

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MARK = 0xC1
VERSION = 1
KEY_BYTES = 32
_HEAD = struct.Struct("<BB8s12s")  # mark, version, key id, nonce
_TAG_BYTES = 16


class DecryptError(ValueError):
    """A payload that passed its checksum cannot be opened: wrong key, or altered on disk.
    Never a torn write (the checksum catches those), so it must never be silently dropped."""


@dataclass(frozen=True)
class DataKey:
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ValueError(f"data key: must be {KEY_BYTES} bytes, got {len(self.secret)}")

    @classmethod
    def new(cls) -> DataKey:
        return cls(os.urandom(KEY_BYTES))

    @cached_property
    def key_id(self) -> bytes:
        """Names the key in sealed payloads without revealing anything about it."""
        return hashlib.sha256(b"shoal-dek-id\0" + self.secret).digest()[:8]

    @cached_property
    def aead(self) -> AESGCM:
        return AESGCM(self.secret)  # made once: every WAL record uses it

    def tls_password(self) -> bytes:
        """The passphrase of the node's TLS key while autolock is on (derived, so the DEK
        itself is used for one purpose only)."""
        return hmac.new(self.secret, b"shoal-tls-key-password", hashlib.sha256).hexdigest().encode()


@dataclass(frozen=True)
class Crypter:
    """Seals with `current` (None: writes plaintext, as storage without encryption does) and
    opens payloads sealed by `current` or any of `others` (a key rotation in progress)."""
    current: DataKey | None = None
    others: tuple[DataKey, ...] = ()
    plaintext_ok: bool = True  # accept payloads written in the clear (storage being migrated)

    @property
    def encrypts(self) -> bool:
        return self.current is not None

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        if self.current is None:
            return plaintext
        head = _HEAD.pack(MARK, VERSION, self.current.key_id, os.urandom(12))
        return head + self.current.aead.encrypt(head[-12:], plaintext, aad + head[:10])

    def open(self, payload: bytes, aad: bytes) -> bytes:
        if not is_sealed(payload):
            if not self.plaintext_ok:
                raise DecryptError("not encrypted, but this storage is (refusing plaintext)")
            return payload
        if len(payload) < _HEAD.size + _TAG_BYTES:
            raise DecryptError("sealed payload too short")
        _, version, key_id, nonce = _HEAD.unpack_from(payload)
        if version != VERSION:
            raise DecryptError(f"unknown encryption version {version}")
        key = next((k for k in (self.current, *self.others) if k is not None and k.key_id == key_id), None)
        if key is None:
            raise DecryptError(f"sealed with key {key_id.hex()}, which this node does not hold")
        try:
            return key.aead.decrypt(nonce, payload[_HEAD.size:], aad + payload[:10])
        except InvalidTag:
            raise DecryptError(f"authentication failed with key {key_id.hex()} (altered on disk)") from None


def is_sealed(payload: bytes) -> bool:
    return len(payload) > 0 and payload[0] == MARK
