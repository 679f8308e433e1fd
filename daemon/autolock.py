"""A manager node's encryption at rest (Swarm's autolock): its data-encryption key file,
whether it is locked, and following the cluster's unlock key.

Every manager seals its Raft WAL and snapshots with a data-encryption key (DEK). While the
cluster's spec says `EncryptionConfig.AutoLockManagers`, the DEK is stored wrapped by the
unlock key (which is replicated in the cluster object, never stored on a manager's disk) and
the node's TLS private key is encrypted too; a restarted manager then cannot read its state
or talk to the cluster until `shoal swarm unlock` gives it the key.

Turning autolock on, or rotating the unlock key, also rotates the DEK: the old one lay on
disk unwrapped (or under a key that may have leaked), so everything is rewritten under a new
one. The steps are ordered so that a crash at any point leaves a manager that still opens:
1. key file: DEK + PendingDEK, both wrapped by the new unlock key;
2. the Raft storage rewritten under PendingDEK (an atomic directory swap);
3. the TLS key re-encrypted under PendingDEK, then the key file with PendingDEK as the DEK.
A manager that starts with a PendingDEK finishes steps 2 and 3 before Raft starts.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from manager.ca import storage as ca_storage
from manager.encryption import DataKey, KeyFile, RaftKeys, parse_unlock_key
from manager.raft.storage.disk import DiskStorage

if TYPE_CHECKING:
    from manager.manager import Manager

log = logging.getLogger("shoal.autolock")
KEYS_FILE = "raft-keys.json"


@dataclass
class Autolock:
    swarm_dir: Path
    raft_dir: Path
    keys: RaftKeys | None = field(default=None, repr=False)  # None: locked, or not a manager

    @property
    def file(self) -> KeyFile:
        return KeyFile(self.swarm_dir / KEYS_FILE)

    @property
    def certs_dir(self) -> Path:
        return self.swarm_dir / "certs"

    # --- state --------------------------------------------------------------------------------

    def locked(self) -> bool:
        """A manager whose DEK is wrapped and was not unlocked by this process."""
        return self.keys is None and self.file.exists() and self.file.is_locked()

    def create(self, kek: bytes | None) -> RaftKeys:
        """`swarm init`: fresh keys, wrapped at once when it is `--autolock`."""
        self.keys = RaftKeys.new(kek)
        self.file.save(self.keys)
        return self.keys

    def open(self) -> RaftKeys:
        """The keys of a manager that is not locked, made when it has none: a new manager
        (joined or promoted), or Raft state written before encryption existed, which is then
        migrated like a rotation from "no key"."""
        if self.keys is None:
            if self.file.exists():
                self.keys = self.file.load(None)
            else:
                self.keys = RaftKeys(None, DataKey.new()) if _has_state(self.raft_dir) else RaftKeys.new()
                self.file.save(self.keys)
        return self.keys

    def unlock(self, key_text: str) -> RaftKeys:
        """InvalidUnlockKey (naming the reason) when the key is malformed or does not fit."""
        self.keys = self.file.load(parse_unlock_key(key_text))
        return self.keys

    def forget(self) -> None:
        self.keys = None

    # --- the TLS key's passwords (daemon/certs.KeyPasswords) -----------------------------------

    def tls_password(self) -> bytes | None:
        return self.keys.tls_password() if self.keys else None

    def tls_passwords(self) -> tuple[bytes, ...]:
        return self.keys.tls_passwords() if self.keys else ()

    # --- transitions ----------------------------------------------------------------------------

    def finish_rotation(self) -> None:
        """Before Raft starts: complete a rotation (or migration) a crash interrupted."""
        keys = self.open()
        if keys.pending is None:
            return
        if os.path.isdir(self.raft_dir):
            storage = DiskStorage(str(self.raft_dir), crypter=keys.crypter())
            try:
                storage.rekey(keys.crypter())
            finally:
                storage.close()
        self._commit(keys)
        log.info("finished a data key rotation interrupted by a restart")

    async def follow(self, manager: Manager) -> None:
        """One step of following the cluster's autolock setting and unlock key."""
        cluster = manager.cluster
        keys = self.keys
        if cluster is None or keys is None:
            return
        want: bytes | None = None
        if cluster.spec.encryption_config.auto_lock_managers:
            text = cluster.unlock_key()
            if not text:
                return  # written together with the spec; not there yet is not a state we act on
            want = parse_unlock_key(text)
        if want is None:
            if keys.kek is not None:
                # Off: the same DEK, stored plainly (as Swarm does); the TLS key decrypted first,
                # so that a crash in between leaves a locked manager whose key still works. A
                # pending DEK (its rewrite failed) is kept: the next start finishes it.
                plain = RaftKeys(keys.dek, keys.pending, None)
                self._rewrite_tls(keys, plain)
                self.file.save(plain)
                self.keys = plain
                log.info("autolock off: the data key is stored unwrapped")
            return
        if want == keys.kek and keys.pending is None:
            return
        # Retrying after a failed rewrite: keep its pending DEK (never stored unwrapped; the TLS
        # key may already be under it), so no key that something was written with is dropped.
        pending = keys.pending if keys.pending is not None and keys.kek is not None else DataKey.new()
        rotating = RaftKeys(keys.dek, pending, want)
        self.file.save(rotating)
        self.keys = rotating
        await manager.raft.rekey(rotating.crypter())
        self._commit(rotating)
        log.info("autolock on: Raft state and TLS key re-encrypted under a new data key, wrapped by the unlock key")

    def _commit(self, rotating: RaftKeys) -> None:
        """Step 3: the TLS key under the new DEK, then the key file without the old one.
        Synchronous, so no other writer of the TLS key runs in between."""
        done = RaftKeys(rotating.pending, None, rotating.kek)
        self._rewrite_tls(rotating, done)
        self.file.save(done)
        self.keys = done

    def _rewrite_tls(self, old: RaftKeys, new: RaftKeys) -> None:
        if not (self.certs_dir / ca_storage.NODE_FILE).exists():
            return
        creds = ca_storage.load_node_credentials(self.certs_dir, old.tls_passwords() + new.tls_passwords())
        ca_storage.save_node_credentials(self.certs_dir, creds.key, creds.cert, creds.ca_certs, new.tls_password())

    def drop(self) -> None:
        """Demotion: workers are never locked. The TLS key is stored plainly again and the key
        file removed (the Raft state it sealed is deleted by the caller)."""
        if self.keys is not None:
            self._rewrite_tls(self.keys, RaftKeys(None))
        self.file.remove()
        self.keys = None


def _has_state(raft_dir: Path) -> bool:
    wal = raft_dir / "wal"
    return wal.is_dir() and any(name.endswith(".wal") and (wal / name).stat().st_size > 0 for name in os.listdir(wal))
