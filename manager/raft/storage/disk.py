"""A node's Raft storage on disk: the WAL in `<dir>/wal`, snapshots in `<dir>/snap`.

Same contract as `MemoryStorage`; the WAL is the source of truth and names the snapshot to
load, so a snapshot file written just before a crash, with no WAL record yet, is ignored.

Both are sealed with the `Crypter` given (a manager's data-encryption key). `rekey` rewrites
the whole storage under a new key: into `<dir>.rekey-new`, then swapped in by two renames;
opening finishes or discards a swap a crash interrupted, so the storage is always the old
copy or the new one, whole.
"""
from __future__ import annotations

import os
import shutil

from manager.encryption.aead import Crypter

from ..core import PersistedState
from ..messages import Entry, HardState, Snapshot
from .memory import StorageError, StoredLog
from .snapshot import SnapshotError, SnapshotStore
from .wal import PLAINTEXT, SEGMENT_BYTES, WAL, OpenReport, SnapshotRef, WALError, fsync_dir

REKEY_NEW = ".rekey-new"
REKEY_OLD = ".rekey-old"


class DiskStorage:
    def __init__(self, directory: str, segment_bytes: int = SEGMENT_BYTES, sync: bool = True,
                 crypter: Crypter = PLAINTEXT):
        """Open (or create) the storage and replay it; the result is in `self.state`."""
        self.dir = directory
        self.segment_bytes = segment_bytes
        self.sync = sync
        self.crypter = crypter
        finish_swap(directory)
        self._open()

    def _open(self) -> None:
        self.snaps = SnapshotStore(os.path.join(self.dir, "snap"), self.sync, self.crypter)
        self.report: OpenReport
        try:
            self.wal, records, self.report = WAL.open(os.path.join(self.dir, "wal"), self.segment_bytes, self.sync,
                                                      self.crypter)
        except WALError as exc:
            raise StorageError(f"raft WAL: {exc}") from None
        stored = StoredLog()
        for rec in records:
            snap = None
            if rec.snapshot is not None and rec.snapshot.index > 0:
                # Only the meta matters while replaying; the data is loaded once at the end.
                snap = Snapshot(rec.snapshot.index, rec.snapshot.term)
            stored.apply(rec.hard_state, rec.entries, snap, reset=bool(rec.snapshot and rec.snapshot.reset))
        meta = stored.snapshot
        if meta.index > 0:
            try:
                stored.snapshot = self.snaps.load(meta.index, meta.term)
            except SnapshotError as exc:
                raise StorageError(str(exc)) from None
        self.state: PersistedState = stored.state()
        self.snaps.purge((meta.index, meta.term))

    @property
    def is_empty(self) -> bool:
        st = self.state
        return st.hard_state == HardState() and st.snapshot.index == 0 and not st.entries

    def bootstrap(self, initial: PersistedState) -> None:
        """Write the founding state of a new cluster (see `core.initial_state`)."""
        if not self.is_empty:
            raise StorageError(f"{self.dir}: already holds Raft state")
        self.wal.append(initial.hard_state, initial.entries, sync=True)
        self.state = initial

    def save(self, hard_state: HardState | None, entries: list[Entry],
             snapshot: Snapshot | None = None, sync: bool = True) -> None:
        """Persist a Ready (`sync=rd.must_sync`); a snapshot from the leader replaces the log."""
        ref = None
        if snapshot is not None:
            self.snaps.save(snapshot)
            ref = SnapshotRef(snapshot.index, snapshot.term, True)
        self.wal.append(hard_state, entries, ref, sync=sync or snapshot is not None)
        if snapshot is not None:
            self._release(snapshot)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """A snapshot taken locally: write it, record it, then drop what it covers."""
        self.snaps.save(snapshot)
        self.wal.append(None, [], SnapshotRef(snapshot.index, snapshot.term, False), sync=True)
        self._release(snapshot)

    def _release(self, snapshot: Snapshot) -> None:
        self.wal.release_to(snapshot.index)
        self.snaps.purge((snapshot.index, snapshot.term))

    def rekey(self, crypter: Crypter) -> PersistedState:
        """Rewrite everything durable (hard state, snapshot, entries) sealed under `crypter`'s
        key, and keep writing with it. Not concurrent with saves: the caller serialises.
        The files of the old copy are deleted, not shredded (see README: what is covered)."""
        self.wal.close()
        # Read back with every key either crypter knows: the storage may hold payloads of
        # the old key, of the new one (a rotation a crash interrupted) and, when migrating,
        # plaintext.
        known = tuple(k for k in (self.crypter.current, *self.crypter.others, *crypter.others) if k is not None)
        reader = Crypter(crypter.current, known, crypter.plaintext_ok or self.crypter.plaintext_ok)
        try:
            old = DiskStorage(self.dir, self.segment_bytes, self.sync, reader)
            state = old.state
            old.close()
            write_storage(self.dir + REKEY_NEW, state, crypter, self.segment_bytes)
        except BaseException:
            # e.g. a full disk: the original is intact; keep using it with the old key.
            shutil.rmtree(self.dir + REKEY_NEW, ignore_errors=True)
            self._open()
            raise
        swap_in(self.dir)
        self.crypter = crypter
        self._open()
        if self.state != state:  # never expected: the rewrite must keep the state exactly
            raise StorageError(f"{self.dir}: rewritten storage does not match the original")
        return self.state

    def close(self) -> None:
        self.wal.close()


def write_storage(directory: str, state: PersistedState, crypter: Crypter, segment_bytes: int = 64 << 20) -> None:
    """A fresh storage at `directory` holding exactly `state`, durable when this returns."""
    shutil.rmtree(directory, ignore_errors=True)
    fresh = DiskStorage(directory, segment_bytes, True, crypter)
    snap = state.snapshot
    if snap.index > 0:
        fresh.snaps.save(snap)
        fresh.wal.append(None, [], SnapshotRef(snap.index, snap.term, True), sync=True)
    fresh.wal.append(state.hard_state, list(state.entries), sync=True)
    fresh.close()
    fsync_dir(directory)
    fsync_dir(os.path.dirname(os.path.abspath(directory)))


def swap_in(directory: str) -> None:
    """Replace `directory` by the complete copy at `directory + REKEY_NEW`."""
    parent = os.path.dirname(os.path.abspath(directory))
    os.rename(directory, directory + REKEY_OLD)
    os.rename(directory + REKEY_NEW, directory)
    fsync_dir(parent)
    shutil.rmtree(directory + REKEY_OLD)
    fsync_dir(parent)


def finish_swap(directory: str) -> None:
    """After a crash during `swap_in` or `write_storage`: keep whichever copy is whole."""
    new, old = directory + REKEY_NEW, directory + REKEY_OLD
    if not os.path.isdir(new) and not os.path.isdir(old):
        return
    if os.path.isdir(new):
        if not os.path.exists(directory) and os.path.isdir(old):
            os.rename(new, directory)  # between the two renames: the new copy was complete
        else:
            shutil.rmtree(new)  # the copy was being written: the original is intact
    if os.path.isdir(old):
        if os.path.exists(directory):
            shutil.rmtree(old)
        else:
            os.rename(old, directory)  # not reachable by swap_in's order; never lose a copy
    fsync_dir(os.path.dirname(os.path.abspath(directory)))


def remove_storage(directory: str) -> None:
    """Delete a node's Raft storage and any copy a rewrite left behind."""
    for path in (directory, directory + REKEY_NEW, directory + REKEY_OLD):
        shutil.rmtree(path, ignore_errors=True)
