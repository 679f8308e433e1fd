"""Snapshot files: one per snapshot, written atomically (temporary file, fsync, rename,
fsync of the directory), checksummed like WAL records, and sealed with the manager's
data-encryption key like them when the store has a `Crypter` that encrypts."""
from __future__ import annotations

import os
import struct
import zlib

import msgpack

from ..messages import ConfState, Snapshot
from manager.encryption.aead import Crypter, DecryptError

from .wal import PLAINTEXT, fsync_dir

_MAGIC = b"SHOALSNAP1\n"
_HEADER = struct.Struct("<QI")
_SUFFIX = ".snap"
SNAPSHOT_AAD = b"shoal-snapshot"


class SnapshotError(Exception):
    pass


def snapshot_name(index: int, term: int) -> str:
    return f"{term:016x}-{index:016x}{_SUFFIX}"


class SnapshotStore:
    def __init__(self, directory: str, sync: bool = True, crypter: Crypter = PLAINTEXT):
        self.dir = directory
        self.sync = sync
        self.crypter = crypter
        os.makedirs(directory, exist_ok=True)

    def path(self, index: int, term: int) -> str:
        return os.path.join(self.dir, snapshot_name(index, term))

    def save(self, snap: Snapshot) -> str:
        payload = self.crypter.seal(msgpack.packb([snap.index, snap.term, list(snap.conf_state.voters),
                                                   list(snap.conf_state.learners), snap.data]), SNAPSHOT_AAD)
        final = self.path(snap.index, snap.term)
        tmp = final + ".tmp"
        with open(tmp, "wb") as f:
            f.write(_MAGIC + _HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
            f.flush()
            if self.sync:
                os.fsync(f.fileno())
        os.replace(tmp, final)
        if self.sync:
            fsync_dir(self.dir)
        return final

    def load(self, index: int, term: int) -> Snapshot:
        path = self.path(index, term)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise SnapshotError(f"snapshot {snapshot_name(index, term)}: missing") from None
        head = len(_MAGIC) + _HEADER.size
        if len(data) < head or not data.startswith(_MAGIC):
            raise SnapshotError(f"snapshot {snapshot_name(index, term)}: bad header")
        length, crc = _HEADER.unpack_from(data, len(_MAGIC))
        payload = data[head:]
        if len(payload) != length or zlib.crc32(payload) != crc:
            raise SnapshotError(f"snapshot {snapshot_name(index, term)}: checksum mismatch")
        try:
            payload = self.crypter.open(payload, SNAPSHOT_AAD)
        except DecryptError as exc:
            raise SnapshotError(f"snapshot {snapshot_name(index, term)}: cannot be decrypted: {exc}") from None
        try:
            s_index, s_term, voters, learners, body = msgpack.unpackb(payload)
            conf = ConfState.from_wire({"voters": voters, "learners": learners})
        except (ValueError, TypeError) as exc:
            raise SnapshotError(f"snapshot {snapshot_name(index, term)}: {exc}") from None
        if (s_index, s_term) != (index, term) or not isinstance(body, bytes):
            raise SnapshotError(f"snapshot {snapshot_name(index, term)}: contents do not match its name")
        return Snapshot(index, term, conf, body)

    def purge(self, keep: tuple[int, int]) -> list[str]:
        """Remove every snapshot file (and leftover temporary) except `keep`=(index, term)."""
        keep_name = snapshot_name(*keep)
        removed = []
        for name in sorted(os.listdir(self.dir)):
            if name != keep_name and (name.endswith(_SUFFIX) or name.endswith(_SUFFIX + ".tmp")):
                os.remove(os.path.join(self.dir, name))
                removed.append(name)
        if removed and self.sync:
            fsync_dir(self.dir)
        return removed
