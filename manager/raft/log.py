"""The in-memory Raft log of one node, with its persistence and apply cursors.

Indexes, all inclusive:  offset-1 <= snapshot.index <= applied <= applying
                         <= committed <= last_index,  stabled <= last_index.
`entries[0]` has index `offset`; `prev_term` is the term at `offset - 1`. Entries from
`offset` up to `snapshot.index` are kept after a compaction so that a follower slightly
behind can still be served from the log instead of a whole snapshot.
`stabled` is the last index known durable; entries after it go into the next Ready.
"""
from __future__ import annotations

from .conf import ConfHistory
from .messages import Entry, Snapshot


class LogError(ValueError):
    pass


class RaftLog:
    __slots__ = ("entries", "offset", "prev_term", "snapshot", "committed", "stabled",
                 "applied", "applying", "pending_snapshot", "conf")

    def __init__(self, snapshot: Snapshot, entries: list[Entry], commit: int):
        expect = snapshot.index + 1
        for i, e in enumerate(entries):
            if e.index != expect + i:
                raise LogError(f"entries[{i}].index: expected {expect + i}, got {e.index}")
        self.snapshot = snapshot
        self.offset = snapshot.index + 1
        self.prev_term = snapshot.term
        self.entries: list[Entry] = list(entries)
        self.stabled = self.last_index()
        # A commit index beyond the durable log means the hard state outran the entries
        # (should not happen with atomic batches); clamping keeps the node correct.
        self.committed = min(max(commit, snapshot.index), self.last_index())
        self.applied = snapshot.index
        self.applying = snapshot.index
        self.pending_snapshot: Snapshot | None = None
        self.conf = ConfHistory(snapshot.conf_state, snapshot.index)
        self.conf.on_append(self.entries)

    # -- queries ---------------------------------------------------------------------
    def first_index(self) -> int:
        return self.offset

    def last_index(self) -> int:
        return self.offset + len(self.entries) - 1

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.prev_term

    def term(self, i: int) -> int | None:
        """Term of entry `i`, or None when it is compacted away or beyond the end."""
        j = i - self.offset
        if j >= 0:
            return self.entries[j].term if j < len(self.entries) else None
        return self.prev_term if j == -1 else None

    def match_term(self, i: int, t: int) -> bool:
        return self.term(i) == t

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at (last_index, last_term) is at least as up to date (§5.4.1)."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def slice(self, lo: int, max_entries: int, max_bytes: int) -> list[Entry]:
        """Up to `max_entries` entries from `lo` (>= offset), cut at `max_bytes` of data but
        never empty when an entry exists."""
        start = lo - self.offset
        ents = self.entries[start:start + max_entries]
        if max_bytes and len(ents) > 1:
            size = 0
            for n, e in enumerate(ents):
                size += len(e.data)
                if size > max_bytes and n > 0:
                    return ents[:n]
        return ents

    def unstable_entries(self) -> list[Entry]:
        return self.entries[self.stabled + 1 - self.offset:]

    def has_next_committed(self) -> bool:
        return min(self.committed, self.stabled) > self.applying

    def next_committed(self) -> list[Entry]:
        """Committed and durable entries not handed out for applying yet."""
        hi = min(self.committed, self.stabled)
        if hi <= self.applying:
            return []
        return self.entries[self.applying + 1 - self.offset:hi + 1 - self.offset]

    def find_conflict(self, ents: list[Entry]) -> int:
        """Index of the first entry of `ents` missing or different here, 0 if none."""
        last = ents[-1]
        if self.term(last.index) == last.term:
            return 0  # log matching: the whole batch is already here
        for e in ents:
            if self.term(e.index) != e.term:
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest i <= index whose term is <= `term`, with that term (0 if compacted)."""
        while True:
            t = self.term(index)
            if t is None:
                return index, 0
            if t <= term:
                return index, t
            index -= 1

    # -- changes -----------------------------------------------------------------------
    def append(self, ents: list[Entry]) -> None:
        first = ents[0].index
        last = self.last_index()
        if first > last + 1 or first <= self.committed:
            raise LogError(f"append at {first}: log ends at {last}, committed {self.committed}")
        if first <= last:
            del self.entries[first - self.offset:]
            self.conf.truncate_from(first)
            if self.stabled >= first:
                self.stabled = first - 1
        self.entries.extend(ents)
        self.conf.on_append(ents)

    def maybe_append(self, index: int, log_term: int, commit: int, ents: list[Entry]) -> int | None:
        """Follower side of AppendEntries; the new last verified index, or None on mismatch."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        if ents:
            ci = self.find_conflict(ents)
            if ci:
                self.append(ents[ci - index - 1:])
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, i: int) -> bool:
        if i > self.committed:
            if i > self.last_index():
                raise LogError(f"commit {i} beyond last index {self.last_index()}")
            self.committed = i
            return True
        return False

    def stable_to(self, index: int, term: int) -> None:
        # The entry may have been replaced between Ready and Advance: only a durable copy of
        # the same entry counts.
        if index > self.stabled and self.term(index) == term:
            self.stabled = index

    def restore(self, snap: Snapshot) -> None:
        """Replace the whole log with a snapshot received from the leader."""
        self.entries = []
        self.offset = snap.index + 1
        self.prev_term = snap.term
        self.snapshot = snap
        self.committed = snap.index
        self.stabled = snap.index
        self.applying = snap.index
        self.pending_snapshot = snap
        self.conf.reset(snap.conf_state, snap.index)

    def set_snapshot(self, snap: Snapshot) -> None:
        """Record a locally taken snapshot (to send to followers); the log is unchanged."""
        if snap.index > self.snapshot.index:
            self.snapshot = snap

    def compact(self, index: int) -> None:
        """Drop entries up to `index` (<= snapshot.index, which is <= applied)."""
        if index < self.offset:
            return
        if index > self.snapshot.index:
            raise LogError(f"compact to {index}: beyond snapshot index {self.snapshot.index}")
        term = self.term(index)
        assert term is not None
        del self.entries[:index + 1 - self.offset]
        self.offset = index + 1
        self.prev_term = term
        self.conf.compact_to(index)
