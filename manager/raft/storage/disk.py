"""A node's Raft storage on disk: the WAL in `<dir>/wal`, snapshots in `<dir>/snap`.

Same contract as `MemoryStorage`; the WAL is the source of truth and names the snapshot to
load, so a snapshot file written just before a crash, with no WAL record yet, is ignored.
"""
from __future__ import annotations

import os

from ..core import PersistedState
from ..messages import Entry, HardState, Snapshot
from .memory import StorageError, StoredLog
from .snapshot import SnapshotError, SnapshotStore
from .wal import SEGMENT_BYTES, WAL, OpenReport, SnapshotRef


class DiskStorage:
    def __init__(self, directory: str, segment_bytes: int = SEGMENT_BYTES, sync: bool = True):
        """Open (or create) the storage and replay it; the result is in `self.state`."""
        self.dir = directory
        self.snaps = SnapshotStore(os.path.join(directory, "snap"), sync)
        self.report: OpenReport
        self.wal, records, self.report = WAL.open(os.path.join(directory, "wal"), segment_bytes, sync)
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

    def close(self) -> None:
        self.wal.close()
