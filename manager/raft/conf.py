"""Membership: applying single-server changes and tracking the configuration along the log.

A node uses the latest configuration entry in its log, committed or not (Raft thesis §4.1),
so the configuration must follow the log: it is rolled back when a conflicting suffix is
truncated and folded into a base when the log is compacted.
"""
from __future__ import annotations

from .messages import ENTRY_CONF, ConfChange, ConfChangeType, ConfState, Entry


def apply_change(cs: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after `cc`; an inapplicable change leaves it as it is.

    Total on purpose: every node replays the same entries and must reach the same result
    even for a change that `check_change` would have refused.
    """
    voters, learners = set(cs.voters), set(cs.learners)
    nid = cc.node_id
    if cc.type == ConfChangeType.ADD_VOTER:
        learners.discard(nid)
        voters.add(nid)
    elif cc.type == ConfChangeType.ADD_LEARNER:
        if nid in voters:
            return cs
        learners.add(nid)
    elif cc.type == ConfChangeType.REMOVE:
        if nid in voters and len(voters) == 1:
            return cs
        voters.discard(nid)
        learners.discard(nid)
    return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))


def check_change(cs: ConfState, cc: ConfChange) -> None:
    """Raise ValueError naming the reason if `cc` is not a sensible change of `cs`."""
    nid = cc.node_id
    if cc.type == ConfChangeType.ADD_VOTER and nid in cs.voters:
        raise ValueError(f"node_id: {nid} is already a voter")
    if cc.type == ConfChangeType.ADD_LEARNER and cs.is_member(nid):
        raise ValueError(f"node_id: {nid} is already a member")
    if cc.type == ConfChangeType.REMOVE:
        if not cs.is_member(nid):
            raise ValueError(f"node_id: {nid} is not a member")
        if cs.voters == (nid,):
            raise ValueError(f"node_id: {nid} is the last voter")


def conf_of_entry(cs: ConfState, e: Entry) -> ConfState:
    try:
        cc = ConfChange.decode(e.data)
    except ValueError:
        return cs  # a garbled change is a no-op on every node alike
    return apply_change(cs, cc)


class ConfHistory:
    """The configuration at every index from `base_index` to the end of the log."""

    __slots__ = ("base", "base_index", "changes")

    def __init__(self, base: ConfState, base_index: int):
        self.base = base
        self.base_index = base_index
        self.changes: list[tuple[int, ConfState]] = []

    @property
    def current(self) -> ConfState:
        return self.changes[-1][1] if self.changes else self.base

    @property
    def last_change_index(self) -> int:
        """Index of the newest configuration entry (or the base), to gate new changes."""
        return self.changes[-1][0] if self.changes else self.base_index

    def on_append(self, entries: list[Entry]) -> None:
        for e in entries:
            if e.type == ENTRY_CONF:
                self.changes.append((e.index, conf_of_entry(self.current, e)))

    def truncate_from(self, index: int) -> None:
        changes = self.changes
        while changes and changes[-1][0] >= index:
            changes.pop()

    def at(self, index: int) -> ConfState:
        cs = self.base
        for i, c in self.changes:
            if i > index:
                break
            cs = c
        return cs

    def compact_to(self, index: int) -> None:
        if index <= self.base_index:
            return
        self.base = self.at(index)
        self.base_index = index
        self.changes = [(i, c) for i, c in self.changes if i > index]

    def reset(self, base: ConfState, base_index: int) -> None:
        self.base = base
        self.base_index = base_index
        self.changes = []
