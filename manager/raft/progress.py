"""The leader's view of one follower's log (after etcd's tracker.Progress).

PROBE: one AppendEntries at a time until the follower's match index is found.
REPLICATE: entries are streamed optimistically, at most `max_inflight` unacknowledged messages.
SNAPSHOT: a snapshot is on its way; nothing else is sent until it is acknowledged or retried.
"""
from __future__ import annotations

from collections import deque

PROBE = 0
REPLICATE = 1
SNAPSHOT = 2
STATE_NAMES = {PROBE: "probe", REPLICATE: "replicate", SNAPSHOT: "snapshot"}


class Progress:
    __slots__ = ("match", "next", "state", "probe_sent", "pending_snapshot", "snapshot_elapsed",
                 "recent_active", "inflights", "max_inflight")

    def __init__(self, next_index: int, max_inflight: int):
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_elapsed = 0
        # A fresh follower counts as active so that check-quorum does not depose a new leader
        # before anyone could answer.
        self.recent_active = True
        self.inflights: deque[int] = deque()  # last index of each unacknowledged message
        self.max_inflight = max_inflight

    def become_probe(self) -> None:
        if self.state == SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = PROBE
        self.pending_snapshot = 0
        self.probe_sent = False
        self.inflights.clear()

    def become_replicate(self) -> None:
        self.state = REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflights.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_elapsed = 0
        self.probe_sent = False
        self.inflights.clear()

    def is_paused(self) -> bool:
        if self.state == REPLICATE:
            return len(self.inflights) >= self.max_inflight
        if self.state == PROBE:
            return self.probe_sent
        return True

    def maybe_update(self, n: int) -> bool:
        """Acknowledgement up to `n`; True if the match index moved."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = n + 1
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append after `rejected`; False when it is stale."""
        if self.state == REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent(self, last_index: int) -> None:
        """Bookkeeping after sending an append whose last entry is `last_index`."""
        if self.state == REPLICATE:
            self.next = last_index + 1
            self.inflights.append(last_index)
        elif self.state == PROBE:
            self.probe_sent = True

    def free_to(self, index: int) -> None:
        inflights = self.inflights
        while inflights and inflights[0] <= index:
            inflights.popleft()
