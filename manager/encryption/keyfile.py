"""A manager's data-encryption keys on disk (`<state>/swarm/raft-keys.json`, mode 0600).

The DEK is stored as is while autolock is off, or wrapped (AES-256-GCM) by a key derived
from the unlock key while it is on: then nothing on disk opens the Raft state or the TLS key
without the unlock key, which lives only in the replicated cluster object and in people's
password managers. The file is replaced atomically, so a crash leaves the old or the new keys.

`PendingDEK` marks a key rotation in progress: storage is being rewritten under it, and both
keys open payloads until the rotation finishes (see daemon/autolock.py). `DEK` null means
storage written before encryption existed, being migrated.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from manager.ca.storage import write_atomic

from .aead import Crypter, DataKey
from .unlockkey import InvalidUnlockKey

FILE_VERSION = 1


class KeyFileError(Exception):
    """The key file is unreadable or malformed (not a wrong key: that is InvalidUnlockKey)."""


@dataclass(frozen=True)
class RaftKeys:
    """A manager's keys, unlocked (in memory only)."""
    dek: DataKey | None
    pending: DataKey | None = None
    kek: bytes | None = field(default=None, repr=False)  # the unlock key's secret while autolock is on

    @classmethod
    def new(cls, kek: bytes | None = None) -> RaftKeys:
        return cls(DataKey.new(), None, kek)

    @property
    def writing(self) -> DataKey | None:
        """The key new data is sealed with: the pending one once a rotation started."""
        return self.pending or self.dek

    def crypter(self) -> Crypter:
        others = (self.dek,) if self.pending is not None and self.dek is not None else ()
        return Crypter(current=self.writing, others=others, plaintext_ok=self.dek is None)

    def tls_password(self) -> bytes | None:
        """The TLS key is encrypted only while autolock is on: with autolock off the DEK that
        would protect it lies next to it."""
        return self.writing.tls_password() if self.kek is not None and self.writing else None

    def tls_passwords(self) -> tuple[bytes, ...]:
        """Every passphrase the TLS key may be under (a crash can leave it one rotation behind)."""
        return tuple(k.tls_password() for k in (self.pending, self.dek) if k is not None)


class KeyFile:
    def __init__(self, path: Path):
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists()

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise KeyFileError(f"{self.path}: missing") from None
        except (OSError, ValueError) as exc:
            raise KeyFileError(f"{self.path}: unreadable ({exc})") from None
        if not isinstance(data, dict) or data.get("Version") != FILE_VERSION or not isinstance(data.get("Locked"), bool):
            raise KeyFileError(f"{self.path}: not a version {FILE_VERSION} key file")
        return data

    def is_locked(self) -> bool:
        """True when the DEK is wrapped by the unlock key: the manager cannot start without it."""
        return self._read()["Locked"]

    def load(self, kek: bytes | None = None) -> RaftKeys:
        """The keys, unwrapped with `kek` when the file is locked (InvalidUnlockKey if it does not fit)."""
        data = self._read()
        if data["Locked"] and kek is None:
            raise InvalidUnlockKey("this manager is locked: give the swarm's unlock key")
        use = kek if data["Locked"] else None
        return RaftKeys(self._key(data, "DEK", use), self._key(data, "PendingDEK", use), use)

    def _key(self, data: dict, name: str, kek: bytes | None) -> DataKey | None:
        raw = data.get(name)
        if raw is None:
            return None
        try:
            blob = base64.b64decode(raw, validate=True)
        except (TypeError, ValueError):
            raise KeyFileError(f"{self.path}: {name}: not base64") from None
        if kek is not None:
            try:
                blob = AESGCM(_wrapping_key(kek)).decrypt(blob[:12], blob[12:], b"shoal-raft-keys:" + name.encode())
            except (InvalidTag, ValueError):
                raise InvalidUnlockKey("this key does not unlock this manager (a wrong key, or a key rotated "
                                       "while this manager was down: try the previous one)") from None
        try:
            return DataKey(blob)
        except ValueError as exc:
            raise KeyFileError(f"{self.path}: {name}: {exc}") from None

    def save(self, keys: RaftKeys) -> None:
        data = {"Version": FILE_VERSION, "Locked": keys.kek is not None,
                "DEK": self._blob(keys.dek, "DEK", keys.kek), "PendingDEK": self._blob(keys.pending, "PendingDEK", keys.kek)}
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(data).encode(), 0o600)

    @staticmethod
    def _blob(key: DataKey | None, name: str, kek: bytes | None) -> str | None:
        if key is None:
            return None
        raw = key.secret
        if kek is not None:
            nonce = os.urandom(12)
            raw = nonce + AESGCM(_wrapping_key(kek)).encrypt(nonce, raw, b"shoal-raft-keys:" + name.encode())
        return base64.b64encode(raw).decode()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _wrapping_key(kek: bytes) -> bytes:
    # Domain separation: the unlock key is used for wrapping DEKs and nothing else.
    return hmac.new(kek, b"shoal-raft-dek-wrap", hashlib.sha256).digest()

