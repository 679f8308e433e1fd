"""Sealing secret data for the replicated store.

A secret's bytes are sealed with the cluster's secrets key (AES-256-GCM, the secret's id as
associated data, so a sealed value cannot be moved to another secret) before they are
proposed: the Raft log, snapshots and every manager's store hold only the sealed form. The key
itself lives in the cluster object, which is what autolock's encryption at rest protects.
Pure functions: the caller passes the key and the randomness source.
"""
from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class SealError(ValueError):
    pass


def new_key() -> str:
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def _aead(key: str) -> AESGCM:
    raw = base64.b64decode(key)
    if len(raw) != KEY_BYTES:
        raise SealError("secrets key: not a 32-byte key")
    return AESGCM(raw)


def seal(key: str, secret_id: str, data: bytes, nonce: bytes | None = None) -> str:
    nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
    return base64.b64encode(nonce + _aead(key).encrypt(nonce, data, secret_id.encode())).decode("ascii")


def unseal(key: str, secret_id: str, sealed: str) -> bytes:
    try:
        raw = base64.b64decode(sealed, validate=True)
    except ValueError:
        raise SealError(f"secret {secret_id}: sealed data is not base64") from None
    if len(raw) < NONCE_BYTES + 16:
        raise SealError(f"secret {secret_id}: sealed data is too short")
    try:
        return _aead(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], secret_id.encode())
    except InvalidTag:
        raise SealError(f"secret {secret_id}: sealed data does not open with the cluster's key") from None
