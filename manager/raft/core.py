"""Raft consensus as a pure, deterministic state machine.

No sockets, clocks or files: the runner feeds it `tick()`, `step(message)` and the
proposal calls, and drains its outputs through `ready()` / `advance()` as in etcd's raft
library. All randomness comes from the `random.Random` passed in, and iteration never
depends on set or hash order, so a seed replays exactly.

The runner loop (the durability contract)
------------------------------------------
    while True:
        feed inputs: core.tick(), core.step(Message.from_wire(...)), core.propose(...)
        if core.has_ready():
            rd = core.ready()
            1. persist rd.snapshot (if any), then rd.hard_state and rd.entries, and fsync
               when rd.must_sync. An entry at index i replaces every stored entry >= i;
               a snapshot replaces the whole stored log.
            2. only now send rd.messages: a vote, an acknowledgement or an append may
               promise exactly what step 1 made durable; sending earlier can lose an
               acknowledged write or let a node vote twice in one term after a crash.
               Exception: when rd.send_first is set (a leader's Ready with no new term or
               vote), the messages may go out before step 1, so the followers write the new
               entries while the leader does (thesis §10.2.1): a leader promises nothing
               about its own log in them, and counts itself towards a commit only for
               entries it has persisted (after `advance`).
            3. apply rd.snapshot (if any) to the state machine, then rd.committed_entries
               in order (entries with empty data are leader no-ops: skip them); answer
               rd.read_states once the state machine has applied their index.
            4. core.advance(rd)
Steps 1 to 4 for one Ready finish before `ready()` is called again; inputs may be fed
meanwhile (they go into the next Ready).

Linearizable reads (ReadIndex, thesis §6.4)
--------------------------------------------
`read_index(ctx)` on the leader records the commit index, then confirms leadership with
a round of heartbeats carrying `ctx`; when a quorum answers, `ReadState(index, ctx)` comes
out in a Ready and the read may be served once the state machine has applied `index`.
A new leader holds reads back until an entry of its own term commits (its commit index
is not known to be current before). On a follower the request is forwarded to the leader
and the answer comes back the same way. No clock-based lease is used, so a read is
linearizable even with clock drift. A read is silently dropped when leadership changes or
messages are lost: the caller must time out and retry.

Membership
----------
Single-server changes (add voter, add learner, remove; ADD_VOTER on a learner promotes
it). A node uses the newest configuration entry in its log, committed or not; a leader
accepts a new change only once every earlier one is committed and an entry of its own
term is committed (the fix to the single-server bug from the Raft mailing list). A leader
that removes itself keeps leading until the change commits, then hands over with TimeoutNow.
"""
from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Sequence

from .conf import check_change
from .log import LogError, RaftLog
from .messages import (CAMPAIGN_TRANSFER, ENTRY_CONF, ENTRY_NORMAL, ConfChange, ConfChangeType, ConfState,
                       Entry, HardState, Message, MsgType, ReadState, Snapshot)
from .progress import PROBE, REPLICATE, SNAPSHOT, STATE_NAMES, Progress


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class NotLeader(Exception):
    """The call needs the leader; `leader` is the one this node knows of, if any."""

    def __init__(self, leader: str | None):
        self.leader = leader
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")


class ProposalDropped(Exception):
    """The leader cannot take the proposal now (e.g. a leadership transfer is running)."""


@dataclass
class RaftConfig:
    id: str
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_msg_entries: int = 512
    max_msg_bytes: int = 1 << 20
    max_inflight: int = 256
    # A snapshot not acknowledged after this many ticks is sent again.
    snapshot_retry_ticks: int = 0  # 0: 4 election timeouts
    # Log compaction: snapshot once this many entries are applied past the last snapshot,
    # keeping `snapshot_keep` entries before it for followers that are only a little behind.
    snapshot_entries: int = 10000
    snapshot_keep: int = 500

    def validate(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("id: must be a non-empty string")
        if self.heartbeat_ticks < 1:
            raise ValueError("heartbeat_ticks: must be at least 1")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("election_ticks: must be greater than heartbeat_ticks")
        for name in ("max_msg_entries", "max_inflight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        for name in ("max_msg_bytes", "snapshot_retry_ticks", "snapshot_entries", "snapshot_keep"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must not be negative")


@dataclass
class PersistedState:
    """What a node reads back from its storage when it starts."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot = field(default_factory=Snapshot)
    entries: list[Entry] = field(default_factory=list)


def initial_state(voters: Sequence[str]) -> PersistedState:
    """The state every founding member of a new cluster starts from (persist it first).

    The membership is spelled out as configuration entries in term 1, so a member added
    later rebuilds it from the log like everything else.
    """
    if not voters or len(set(voters)) != len(voters):
        raise ValueError("voters: must be a non-empty list of distinct ids")
    ents = [Entry(1, i + 1, ENTRY_CONF, ConfChange(ConfChangeType.ADD_VOTER, v).encode())
            for i, v in enumerate(sorted(voters))]
    return PersistedState(HardState(1, None, len(ents)), Snapshot(), ents)


@dataclass(frozen=True, slots=True)
class SoftState:
    lead: str | None
    role: Role


@dataclass(slots=True)
class Ready:
    soft_state: SoftState | None
    hard_state: HardState | None
    snapshot: Snapshot | None
    entries: list[Entry]
    messages: list[Message]
    committed_entries: list[Entry]
    read_states: list[ReadState]
    must_sync: bool
    # The messages may be sent before the Ready is persisted (see the runner loop above).
    send_first: bool = False


class _PendingRead:
    __slots__ = ("index", "requester", "acks")

    def __init__(self, index: int, requester: str | None):
        self.index = index
        self.requester = requester
        self.acks: set[str] = set()


class RaftCore:
    def __init__(self, config: RaftConfig, state: PersistedState, rng: random.Random):
        config.validate()
        self.cfg = config
        self.id = config.id
        self.rng = rng
        hs = state.hard_state
        self.log = RaftLog(state.snapshot, state.entries, hs.commit)
        self.term = max(hs.term, self.log.last_term())
        self.vote: str | None = hs.vote if hs.term == self.term else None
        self.lead: str | None = None
        self.role = Role.FOLLOWER
        self.prs: dict[str, Progress] = {}
        self.votes: dict[str, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self._reset_randomized_timeout()
        self.lead_transferee: str | None = None
        self.term_start_index = 0
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self._reads: dict[bytes, _PendingRead] = {}
        self._reads_waiting: list[tuple[bytes, str | None]] = []
        self._bcast_entries = False
        self._bcast_commit = False
        self._prev_hs = HardState(self.term, self.vote, self.log.committed)
        self._prev_soft = SoftState(None, Role.FOLLOWER)
        # Messages that broke a Raft invariant (a bug or a hostile peer); they are ignored.
        self.protocol_errors = 0

    # ================================================================ queries
    @property
    def conf_state(self) -> ConfState:
        return self.log.conf.current

    @property
    def committed(self) -> int:
        return self.log.committed

    @property
    def applied(self) -> int:
        return self.log.applied

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def promotable(self) -> bool:
        return self.id in self.log.conf.current.voters and self.log.pending_snapshot is None

    def progress(self, peer: str) -> Progress | None:
        return self.prs.get(peer)

    def status(self) -> dict:
        cs = self.conf_state
        out = {"id": self.id, "role": self.role.value, "term": self.term, "vote": self.vote,
               "lead": self.lead, "committed": self.log.committed, "applied": self.log.applied,
               "last_index": self.log.last_index(), "first_index": self.log.first_index(),
               "snapshot_index": self.log.snapshot.index, "voters": list(cs.voters),
               "learners": list(cs.learners), "lead_transferee": self.lead_transferee}
        if self.role is Role.LEADER:
            out["progress"] = {p: {"match": pr.match, "next": pr.next, "state": STATE_NAMES[pr.state],
                                   "recent_active": pr.recent_active} for p, pr in self.prs.items()}
        return out

    # ================================================================ inputs
    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self.election_elapsed += 1
            if self.election_elapsed >= self.randomized_timeout and self.promotable():
                self.election_elapsed = 0
                self.campaign()

    def campaign(self, transfer: bool = False) -> None:
        """Start an election now (pre-vote first unless it is a leadership transfer)."""
        if self.role is Role.LEADER or not self.promotable():
            return
        if self.cfg.pre_vote and not transfer:
            self._become_pre_candidate()
            self._request_votes(MsgType.PRE_VOTE, self.term + 1, b"")
        else:
            self._become_candidate()
            self._request_votes(MsgType.VOTE, self.term, CAMPAIGN_TRANSFER if transfer else b"")

    def _request_votes(self, vote_type: MsgType, term: int, ctx: bytes) -> None:
        self.votes[self.id] = True
        if self._tally() is True:  # a single voter wins at once
            self._won_votes()
            return
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for v in self.log.conf.current.voters:
            if v != self.id:
                self.msgs.append(Message(vote_type, v, self.id, term, log_term=last_term,
                                         index=last_index, context=ctx))

    def _won_votes(self) -> None:
        if self.role is Role.PRE_CANDIDATE:
            self._become_candidate()
            self._request_votes(MsgType.VOTE, self.term, b"")
        else:
            self._become_leader()

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append a command; returns (term, index). It is applied at that index only if the
        entry applied there carries the same term."""
        return self.propose_batch([data])

    def propose_batch(self, datas: Sequence[bytes]) -> tuple[int, int]:
        """Append several commands in one go; returns (term, index of the first)."""
        self._check_can_propose()
        if not datas:
            raise ValueError("datas: must not be empty")
        for d in datas:
            if not isinstance(d, bytes) or not d:
                raise ValueError("data: must be non-empty bytes (empty entries are leader no-ops)")
        first = self.log.last_index() + 1
        term = self.term
        self._append_own([Entry(term, first + i, ENTRY_NORMAL, d) for i, d in enumerate(datas)])
        return term, first

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        """Propose one membership change; returns (term, index)."""
        self._check_can_propose()
        log = self.log
        if log.conf.last_change_index > log.committed:
            raise ProposalDropped("a configuration change is still pending")
        if log.term(log.committed) != self.term:
            raise ProposalDropped("no entry of the current term is committed yet")
        check_change(log.conf.current, cc)
        index = log.last_index() + 1
        self._append_own([Entry(self.term, index, ENTRY_CONF, cc.encode())])
        return self.term, index

    def transfer_leadership(self, target: str) -> None:
        """Hand leadership to `target` (forwarded to the leader when called on a follower)."""
        if self.role is not Role.LEADER:
            if self.lead is None:
                raise NotLeader(None)
            self.msgs.append(Message(MsgType.TRANSFER_LEADER, self.lead, self.id, self.term,
                                     context=target.encode()))
            return
        if target not in self.log.conf.current.voters:
            raise ValueError(f"target: {target} is not a voter")
        self._start_transfer(target)

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point; answered by a ReadState with this context."""
        if not isinstance(context, bytes) or not context:
            raise ValueError("context: must be non-empty bytes")
        if self.role is Role.LEADER:
            self._leader_read(context, None)
        elif self.lead is not None:
            self.msgs.append(Message(MsgType.READ_INDEX, self.lead, self.id, self.term, context=context))
        else:
            raise NotLeader(None)

    def report_snapshot_failed(self, peer: str) -> None:
        """The runner could not deliver a snapshot: retry it right away."""
        pr = self.prs.get(peer)
        if pr is not None and pr.state == SNAPSHOT:
            pr.pending_snapshot = 0
            pr.become_probe()

    def report_unreachable(self, peer: str) -> None:
        """The runner lost the connection to `peer`: stop streaming to it blindly."""
        pr = self.prs.get(peer)
        if pr is not None and pr.state == REPLICATE:
            pr.become_probe()

    def report_connected(self, peer: str) -> None:
        """The runner (re)connected to `peer`: a leader sends it a heartbeat now rather than at
        the next heartbeat tick, so a restarted follower hears from it (and is sent what it
        lacks, on its answer) without waiting."""
        pr = self.prs.get(peer)
        if self.role is Role.LEADER and pr is not None:
            self._send(MsgType.HEARTBEAT, peer, commit=min(pr.match, self.log.committed))

    def create_snapshot(self, index: int, data: bytes) -> Snapshot:
        """Snapshot of the state machine after applying `index` (<= applied); it becomes the
        snapshot sent to lagging followers. Persist it, then call `compact`."""
        log = self.log
        if index > log.applied:
            raise ValueError(f"index: {index} is beyond the applied index {log.applied}")
        if index <= log.snapshot.index:
            raise ValueError(f"index: {index} is not after the current snapshot {log.snapshot.index}")
        term = log.term(index)
        if term is None:
            raise ValueError(f"index: {index} is compacted")
        snap = Snapshot(index, term, log.conf.at(index), data)
        log.set_snapshot(snap)
        return snap

    def compact(self, index: int | None = None) -> None:
        """Forget the log up to `index` (<= the snapshot index); by default up to
        `snapshot_keep` entries before the snapshot, which lets slightly lagging followers
        catch up without a whole snapshot."""
        if index is None:
            index = self.log.snapshot.index - self.cfg.snapshot_keep
        self.log.compact(index)

    def should_snapshot(self) -> bool:
        """Whether `snapshot_entries` entries were applied since the last snapshot."""
        n = self.cfg.snapshot_entries
        return n > 0 and self.log.applied - self.log.snapshot.index >= n

    # ================================================================ step
    def step(self, m: Message) -> None:
        if m.to != self.id:
            return  # misrouted
        if m.term > self.term:
            if m.type is MsgType.VOTE or m.type is MsgType.PRE_VOTE:
                in_lease = (self.cfg.check_quorum and self.lead is not None
                            and self.election_elapsed < self.cfg.election_ticks)
                if in_lease and m.context != CAMPAIGN_TRANSFER:
                    # We heard from a live leader recently: a candidate cut off for a
                    # while must not depose it.
                    return
            if m.type is MsgType.PRE_VOTE or (m.type is MsgType.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never change terms
            elif m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if m.type in (MsgType.APP, MsgType.HEARTBEAT):
                # A stale leader (e.g. back from a partition, whose votes we ignore under
                # check-quorum) learns the newer term from this and steps down.
                self._send(MsgType.APP_RESP, m.frm)
            elif m.type is MsgType.PRE_VOTE:
                self._send(MsgType.PRE_VOTE_RESP, m.frm, reject=True)
            return

        t = m.type
        if t is MsgType.VOTE or t is MsgType.PRE_VOTE:
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (self.vote == m.frm
                    or (self.vote is None and self.lead is None)
                    or (m.type is MsgType.PRE_VOTE and m.term > self.term))
        resp = MsgType.VOTE_RESP if m.type is MsgType.VOTE else MsgType.PRE_VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self.msgs.append(Message(resp, m.frm, self.id, m.term))
            if m.type is MsgType.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(resp, m.frm, reject=True)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MsgType.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif t is MsgType.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif t is MsgType.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif t is MsgType.TIMEOUT_NOW:
            self.campaign(transfer=True)
        elif t is MsgType.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))
        elif t is MsgType.TRANSFER_LEADER and self.lead is not None:
            self.msgs.append(Message(MsgType.TRANSFER_LEADER, self.lead, self.id, self.term,
                                     context=m.context))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
        elif (t is MsgType.VOTE_RESP and self.role is Role.CANDIDATE) or \
                (t is MsgType.PRE_VOTE_RESP and self.role is Role.PRE_CANDIDATE):
            if m.frm not in self.votes:
                self.votes[m.frm] = not m.reject
            result = self._tally()
            if result is True:
                self._won_votes()
            elif result is False:
                self._become_follower(self.term, None)

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t is MsgType.APP_RESP:
            self._handle_append_response(m)
        elif t is MsgType.HEARTBEAT_RESP:
            self._handle_heartbeat_response(m)
        elif t is MsgType.READ_INDEX:
            if self.log.conf.current.is_member(m.frm) or m.frm in self.prs:
                self._leader_read(m.context, m.frm)
        elif t is MsgType.TRANSFER_LEADER:
            target = m.context.decode(errors="replace")
            if target in self.log.conf.current.voters and target != self.id:
                self._start_transfer(target)

    # ---------------------------------------------------------------- follower side
    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self._send(MsgType.APP_RESP, m.frm, index=log.committed)
            return
        try:
            last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        except LogError:
            self.protocol_errors += 1  # would rewrite committed entries
            return
        if last_new is not None:
            self._send(MsgType.APP_RESP, m.frm, index=last_new)
            return
        hint_index, hint_term = log.find_conflict_by_term(min(m.index, log.last_index()), m.log_term)
        self._send(MsgType.APP_RESP, m.frm, index=m.index, reject=True, reject_hint=hint_index,
                   log_term=hint_term)

    def _handle_heartbeat(self, m: Message) -> None:
        log = self.log
        log.commit_to(min(m.commit, log.last_index()))
        self._send(MsgType.HEARTBEAT_RESP, m.frm, context=m.context)

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        assert snap is not None
        log = self.log
        if snap.index <= log.committed:
            self._send(MsgType.APP_RESP, m.frm, index=log.committed)
            return
        if log.match_term(snap.index, snap.term):
            log.commit_to(snap.index)  # we already have that prefix: fast-forward only
            self._send(MsgType.APP_RESP, m.frm, index=log.committed)
            return
        log.restore(snap)
        self._send(MsgType.APP_RESP, m.frm, index=log.last_index())

    # ---------------------------------------------------------------- leader side
    def _handle_append_response(self, m: Message) -> None:
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        log = self.log
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                hint, _ = log.find_conflict_by_term(min(hint, log.last_index()), m.log_term)
            if pr.maybe_decr_to(m.index, hint):
                if pr.state == REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm, pr, True)
            return
        if m.index > log.last_index():
            self.protocol_errors += 1  # acknowledges entries we never had
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            if pr.state == REPLICATE:
                pr.free_to(m.index)
            return
        if pr.state == PROBE:
            pr.become_replicate()
        elif pr.state == SNAPSHOT:
            if pr.match + 1 >= log.first_index():
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.free_to(m.index)
        if self._maybe_commit():
            self._bcast_commit = True
            if self.role is not Role.LEADER:
                return  # we committed our own removal and stepped down
        elif was_paused:
            self._send_append(m.frm, pr, True)
        while self._send_append(m.frm, pr, False):
            pass
        if m.frm == self.lead_transferee and pr.match == log.last_index():
            self._send(MsgType.TIMEOUT_NOW, m.frm)

    def _handle_heartbeat_response(self, m: Message) -> None:
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state == REPLICATE and len(pr.inflights) >= pr.max_inflight:
            pr.inflights.popleft()  # an ack may have been lost: let one more through
        if pr.match < self.log.last_index():
            self._send_append(m.frm, pr, True)
        if m.context:
            self._ack_read(m.context, m.frm)

    def _send_append(self, to: str, pr: Progress, send_if_empty: bool) -> bool:
        if pr.is_paused():
            return False
        log = self.log
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None or pr.next < log.first_index():
            return self._send_snapshot(to, pr)
        ents = log.slice(pr.next, self.cfg.max_msg_entries, self.cfg.max_msg_bytes) \
            if pr.next <= log.last_index() else []
        if not ents and not send_if_empty:
            return False
        self.msgs.append(Message(MsgType.APP, to, self.id, self.term, log_term=prev_term, index=prev,
                                 entries=ents, commit=log.committed))
        if ents:
            pr.sent(ents[-1].index)
        elif pr.state == PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: str, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        snap = self.log.snapshot
        self.msgs.append(Message(MsgType.SNAP, to, self.id, self.term, snapshot=snap))
        pr.become_snapshot(snap.index)
        return True

    def _bcast_heartbeat(self, context: bytes = b"") -> None:
        committed = self.log.committed
        for peer, pr in self.prs.items():
            self.msgs.append(Message(MsgType.HEARTBEAT, peer, self.id, self.term,
                                     commit=min(pr.match, committed), context=context))

    def _flush(self) -> None:
        """Send the entries and commit index accumulated since the last Ready, one batch
        per follower rather than one message per proposal."""
        commit = self._bcast_commit
        self._bcast_entries = self._bcast_commit = False
        if self.role is not Role.LEADER:
            return
        for peer, pr in self.prs.items():
            sent = False
            while self._send_append(peer, pr, False):
                sent = True
            if commit and not sent:
                self._send_append(peer, pr, True)

    def _self_match(self) -> int:
        return self.log.stabled

    def _maybe_commit(self) -> bool:
        voters = self.log.conf.current.voters
        matches = []
        for v in voters:
            if v == self.id:
                matches.append(self._self_match())
            else:
                pr = self.prs.get(v)
                matches.append(pr.match if pr is not None else 0)
        matches.sort(reverse=True)
        mci = matches[len(matches) // 2]
        log = self.log
        if mci <= log.committed or log.term(mci) != self.term:
            return False  # §5.4.2: only entries of the current term commit by counting
        log.commit_to(mci)
        self._on_commit()
        return True

    def _on_commit(self) -> None:
        log = self.log
        if self._reads_waiting and log.term(log.committed) == self.term:
            waiting, self._reads_waiting = self._reads_waiting, []
            for ctx, requester in waiting:
                self._leader_read(ctx, requester)
        conf = log.conf
        if self.id not in conf.current.voters and conf.last_change_index <= log.committed:
            self._step_down_removed()

    def _step_down_removed(self) -> None:
        # We are no longer a voter and that is committed: hand over to the most up-to-date
        # voter so the cluster does not wait for an election timeout.
        best, best_match = None, -1
        for v in self.log.conf.current.voters:
            pr = self.prs.get(v)
            if pr is not None and pr.match > best_match:
                best, best_match = v, pr.match
        if best is not None and best_match == self.log.last_index():
            self._send(MsgType.TIMEOUT_NOW, best)
        self._become_follower(self.term, None)

    def _append_own(self, ents: list[Entry]) -> None:
        log = self.log
        before = log.conf.current
        log.append(ents)
        after = log.conf.current
        if after is not before:
            self._sync_progress(after)
        self._bcast_entries = True
        if self._maybe_commit():  # a removal can shrink the quorum
            self._bcast_commit = True

    def _sync_progress(self, cs: ConfState) -> None:
        nxt = self.log.last_index() + 1
        for nid in cs.voters + cs.learners:
            if nid != self.id and nid not in self.prs:
                self.prs[nid] = Progress(nxt, self.cfg.max_inflight)
        for nid in list(self.prs):
            if not cs.is_member(nid):
                del self.prs[nid]
                if self.lead_transferee == nid:
                    self.lead_transferee = None

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                if not self._quorum_active():
                    self._become_follower(self.term, None)
                    return
                for pr in self.prs.values():
                    pr.recent_active = False
            self.lead_transferee = None  # a transfer must finish within one election timeout
        retry = self.cfg.snapshot_retry_ticks or 4 * self.cfg.election_ticks
        for pr in self.prs.values():
            if pr.state == SNAPSHOT:
                pr.snapshot_elapsed += 1
                if pr.snapshot_elapsed >= retry:
                    pr.become_probe()
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            ctx = next(reversed(self._reads)) if self._reads else b""
            self._bcast_heartbeat(ctx)

    def _quorum_active(self) -> bool:
        voters = self.log.conf.current.voters
        active = sum(1 for v in voters
                     if v == self.id or (v in self.prs and self.prs[v].recent_active))
        return active > len(voters) // 2

    def _start_transfer(self, target: str) -> None:
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        self.election_elapsed = 0
        pr = self.prs.get(target)
        if pr is None:
            self.lead_transferee = None
            return
        if pr.match == self.log.last_index():
            self._send(MsgType.TIMEOUT_NOW, target)
        else:
            self._send_append(target, pr, True)

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead)
        if self.lead_transferee is not None:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")

    # ---------------------------------------------------------------- reads
    def _leader_read(self, ctx: bytes, requester: str | None) -> None:
        log = self.log
        if log.conf.current.voters == (self.id,):
            self._deliver_read(log.committed, ctx, requester)
        elif log.term(log.committed) != self.term:
            self._reads_waiting.append((ctx, requester))
        elif ctx not in self._reads:
            self._reads[ctx] = _PendingRead(log.committed, requester)
            self._bcast_heartbeat(ctx)

    def _ack_read(self, ctx: bytes, frm: str) -> None:
        rd = self._reads.get(ctx)
        if rd is None:
            return
        rd.acks.add(frm)
        voters = self.log.conf.current.voters
        n = sum(1 for v in voters if v == self.id or v in rd.acks)
        if n <= len(voters) // 2:
            return
        # Leadership was confirmed after every earlier request was made: release them too.
        while self._reads:
            key = next(iter(self._reads))
            done = self._reads.pop(key)
            self._deliver_read(done.index, key, done.requester)
            if key == ctx:
                break

    def _deliver_read(self, index: int, ctx: bytes, requester: str | None) -> None:
        if requester is None or requester == self.id:
            self.read_states.append(ReadState(index, ctx))
        else:
            self._send(MsgType.READ_INDEX_RESP, requester, index=index, context=ctx)

    # ---------------------------------------------------------------- role changes
    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.lead = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.lead_transferee = None
        self.votes = {}
        self.prs = {}
        self._reads = {}
        self._reads_waiting = []
        self._bcast_entries = self._bcast_commit = False

    def _reset_randomized_timeout(self) -> None:
        et = self.cfg.election_ticks
        self.randomized_timeout = et + self.rng.randrange(et)

    def _become_follower(self, term: int, lead: str | None) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def _become_pre_candidate(self) -> None:
        # Neither term nor vote change: a pre-vote disturbs nobody if it fails.
        self.votes = {}
        self.lead = None
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.lead = self.id
        self._sync_progress(self.log.conf.current)
        # The no-op commits everything of earlier terms (§5.4.2) and unlocks reads and
        # configuration changes once it commits.
        index = self.log.last_index() + 1
        self.term_start_index = index
        self._append_own([Entry(self.term, index, ENTRY_NORMAL, b"")])

    def _tally(self) -> bool | None:
        """True: won; False: lost; None: undecided."""
        voters = self.log.conf.current.voters
        granted = rejected = 0
        for v in voters:
            g = self.votes.get(v)
            if g is True:
                granted += 1
            elif g is False:
                rejected += 1
        q = len(voters) // 2 + 1
        if granted >= q:
            return True
        if rejected > len(voters) - q:
            return False
        return None

    def _send(self, t: MsgType, to: str, **kw) -> None:
        self.msgs.append(Message(t, to, self.id, self.term, **kw))

    # ================================================================ output
    def has_ready(self) -> bool:
        log = self.log
        return bool(self.msgs or self.read_states or self._bcast_entries or self._bcast_commit
                    or log.stabled < log.last_index() or log.pending_snapshot is not None
                    or log.has_next_committed()
                    or self._prev_hs.term != self.term or self._prev_hs.vote != self.vote
                    or self._prev_hs.commit != log.committed
                    or self._prev_soft.lead != self.lead or self._prev_soft.role is not self.role)

    def ready(self) -> Ready:
        if self._bcast_entries or self._bcast_commit:
            self._flush()
        log = self.log
        hs = None
        prev = self._prev_hs
        must_sync = False
        # A leader's appends, heartbeats and commit indexes promise nothing about its own log;
        # only a new term or vote (which its messages carry) must be durable before they go.
        send_first = self.role is Role.LEADER and prev.term == self.term and prev.vote == self.vote
        if prev.term != self.term or prev.vote != self.vote or prev.commit != log.committed:
            hs = HardState(self.term, self.vote, log.committed)
            must_sync = prev.term != self.term or prev.vote != self.vote
            self._prev_hs = hs
        soft = None
        if self._prev_soft.lead != self.lead or self._prev_soft.role is not self.role:
            soft = SoftState(self.lead, self.role)
            self._prev_soft = soft
        snap = log.pending_snapshot
        log.pending_snapshot = None
        entries = log.unstable_entries()
        committed = log.next_committed()
        if committed:
            log.applying = committed[-1].index
        msgs, self.msgs = self.msgs, []
        reads, self.read_states = self.read_states, []
        return Ready(soft, hs, snap, entries, msgs, committed, reads,
                     must_sync or bool(entries) or snap is not None, send_first and snap is None)

    def advance(self, rd: Ready) -> None:
        log = self.log
        if rd.snapshot is not None and rd.snapshot.index > log.applied:
            log.applied = rd.snapshot.index
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied = max(log.applied, rd.committed_entries[-1].index)
        if self.role is Role.LEADER and rd.entries and self._maybe_commit():
            self._bcast_commit = True
