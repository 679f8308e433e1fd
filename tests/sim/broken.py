"""Deliberately broken Raft variants: the simulation must catch every one of them.

Each is a way real implementations have gone wrong; if the checker let one pass, the
passing runs of the real core would prove little.
"""
from __future__ import annotations

from manager.raft.core import RaftCore
from manager.raft.messages import HardState, Message, MsgType
from manager.raft.storage.memory import MemoryStorage


class VoteTwice(RaftCore):
    """Grants every vote request, even after voting for someone else in the same term."""

    def _handle_vote_request(self, m: Message) -> None:
        resp = MsgType.VOTE_RESP if m.type is MsgType.VOTE else MsgType.PRE_VOTE_RESP
        self.msgs.append(Message(resp, m.frm, self.id, m.term))
        if m.type is MsgType.VOTE:
            self.vote = m.frm


class IgnoreLogUpToDate(RaftCore):
    """Votes without checking that the candidate's log is at least as up to date (§5.4.1)."""

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (self.vote == m.frm or (self.vote is None and self.lead is None)
                    or (m.type is MsgType.PRE_VOTE and m.term > self.term))
        resp = MsgType.VOTE_RESP if m.type is MsgType.VOTE else MsgType.PRE_VOTE_RESP
        if can_vote:
            self.msgs.append(Message(resp, m.frm, self.id, m.term))
            if m.type is MsgType.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(resp, m.frm, reject=True)


class LeaseFreeRead(RaftCore):
    """Answers reads from its own commit index without confirming it still leads."""

    def _leader_read(self, ctx: bytes, requester: str | None) -> None:
        self._deliver_read(self.log.committed, ctx, requester)


class HeartbeatFullCommit(RaftCore):
    """Heartbeats carry the leader's whole commit index, not what the follower matched, so
    a follower commits entries of its own that the leader never verified."""

    def _bcast_heartbeat(self, context: bytes = b"") -> None:
        for peer in self.prs:
            self.msgs.append(Message(MsgType.HEARTBEAT, peer, self.id, self.term,
                                     commit=self.log.committed, context=context))


class ConcurrentConfChanges(RaftCore):
    """Accepts a membership change while the previous one is still uncommitted."""

    def propose_conf_change(self, cc):
        from manager.raft.conf import check_change
        from manager.raft.messages import ENTRY_CONF, Entry
        self._check_can_propose()
        check_change(self.log.conf.current, cc)
        index = self.log.last_index() + 1
        self._append_own([Entry(self.term, index, ENTRY_CONF, cc.encode())])
        return self.term, index


class ForgetVote(MemoryStorage):
    """Storage that does not keep the vote: a restarted node may vote again in that term."""

    def save(self, hard_state, entries, snapshot=None) -> None:
        if hard_state is not None:
            hard_state = HardState(hard_state.term, None, hard_state.commit)
        super().save(hard_state, entries, snapshot)


# name -> keyword arguments for Sim (core_cls, storage_cls), SimParams overrides ("params")
# and the cluster size that shows the bug soonest ("nodes")
VARIANTS: dict[str, dict] = {
    "vote-twice": {"core_cls": VoteTwice, "params": {"pre_vote": False}},
    "ignore-log-up-to-date": {"core_cls": IgnoreLogUpToDate},
    "lease-free-read": {"core_cls": LeaseFreeRead},
    "forget-vote": {"storage_cls": ForgetVote},
    "send-before-persist": {"params": {"send_before_persist": True}},
    "heartbeat-full-commit": {"core_cls": HeartbeatFullCommit},
    "concurrent-conf-changes": {"core_cls": ConcurrentConfChanges, "nodes": 5},
}
