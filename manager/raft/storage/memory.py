"""What a node has made durable, with the semantics the core's Ready asks for.

`StoredLog` folds persistence batches in order; the WAL replays its records through it on
start, and `MemoryStorage` (the simulation's disk) keeps one directly. Rules:
- an entry at index i replaces every stored entry >= i;
- an installed snapshot (`reset=True`) replaces the whole log;
- a local snapshot only makes the entries up to its index unnecessary.
"""
from __future__ import annotations

from ..core import PersistedState
from ..messages import Entry, HardState, Snapshot


class StorageError(Exception):
    """Stored state is unusable (a gap in the log, a missing snapshot...)."""


class StoredLog:
    __slots__ = ("hard_state", "snapshot", "entries", "offset")

    def __init__(self, state: PersistedState | None = None):
        state = state or PersistedState()
        self.hard_state = state.hard_state
        self.snapshot = state.snapshot
        self.entries: list[Entry] = list(state.entries)
        self.offset = self.entries[0].index if self.entries else state.snapshot.index + 1

    def apply(self, hard_state: HardState | None, entries: list[Entry],
              snapshot: Snapshot | None = None, reset: bool = False) -> None:
        """One batch; `snapshot` first (replacing the log when `reset`), then the entries."""
        if snapshot is not None:
            if reset:
                self.entries = []
                self.offset = snapshot.index + 1
            if snapshot.index >= self.snapshot.index:
                self.snapshot = snapshot
        if entries:
            self._append(entries)
        if hard_state is not None:
            self.hard_state = hard_state

    def _append(self, ents: list[Entry]) -> None:
        first = ents[0].index
        stored = self.entries
        last = self.offset + len(stored) - 1
        if not stored or first < self.offset:
            # Replaying after old segments were removed may start mid-log; `state()` checks
            # that the snapshot covers whatever came before.
            self.entries = list(ents)
            self.offset = first
            return
        if first > last + 1:
            raise StorageError(f"log gap: entry {first} appended after {last}")
        del stored[first - self.offset:]
        stored.extend(ents)

    def last_index(self) -> int:
        return self.offset + len(self.entries) - 1 if self.entries else self.snapshot.index

    def state(self) -> PersistedState:
        snap = self.snapshot
        ents = self.entries
        if ents:
            start = snap.index + 1 - self.offset
            if start < 0:
                raise StorageError(f"log gap: entries start at {self.offset}, snapshot at {snap.index}")
            ents = ents[start:]
        return PersistedState(self.hard_state, snap, list(ents))


class MemoryStorage:
    """Durable state kept in memory: survives a simulated crash, not the process."""

    def __init__(self, initial: PersistedState | None = None):
        self.log = StoredLog(initial)

    def save(self, hard_state: HardState | None, entries: list[Entry],
             snapshot: Snapshot | None = None) -> None:
        """Persist a Ready: its snapshot (installed from the leader) replaces the log."""
        self.log.apply(hard_state, entries, snapshot, reset=snapshot is not None)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """A snapshot taken locally; entries up to its index may be discarded."""
        self.log.apply(None, [], snapshot, reset=False)
        drop = snapshot.index + 1 - self.log.offset
        if drop > 0:
            del self.log.entries[:drop]
            self.log.offset = snapshot.index + 1

    def load(self) -> PersistedState:
        return self.log.state()
