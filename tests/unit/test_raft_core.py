"""Scripted scenarios for the pure Raft core (the simulation in tests/sim covers the rest)."""
from __future__ import annotations

import random
import time

import msgpack
import pytest

from manager.raft.core import (NotLeader, PersistedState, ProposalDropped, RaftConfig, RaftCore, Role,
                               initial_state)
from manager.raft.messages import (ConfChange, ConfChangeType, ConfState, Entry, HardState, Message,
                                   MsgType)
from manager.raft.storage.memory import MemoryStorage

ADD_VOTER, ADD_LEARNER, REMOVE = ConfChangeType.ADD_VOTER, ConfChangeType.ADD_LEARNER, ConfChangeType.REMOVE


class Net:
    """A synchronous cluster: Readys are persisted and their messages delivered in order."""

    def __init__(self, ids: list[str], seed: int = 0, **cfg):
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.stores: dict[str, MemoryStorage] = {}
        self.nodes: dict[str, RaftCore] = {}
        self.applied: dict[str, list[Entry]] = {}
        self.reads: dict[str, list] = {}
        self.cut: set[tuple[str, str]] = set()
        self.sent: list[Message] = []
        init = initial_state(ids)
        for i in ids:
            self.add(i, init)

    def add(self, nid: str, init: PersistedState | None = None) -> RaftCore:
        self.stores[nid] = MemoryStorage(init)
        self.applied[nid] = []
        self.reads[nid] = []
        return self.restart(nid)

    def restart(self, nid: str) -> RaftCore:
        node = RaftCore(RaftConfig(nid, **self.cfg), self.stores[nid].load(), random.Random(self.rng.random()))
        self.nodes[nid] = node
        self.applied[nid] = []
        return node

    def isolate(self, nid: str) -> None:
        for o in self.nodes:
            if o != nid:
                self.cut |= {(nid, o), (o, nid)}

    def heal(self) -> None:
        self.cut.clear()

    def pump(self, limit: int = 10000) -> None:
        for _ in range(limit):
            msgs = []
            for nid, n in list(self.nodes.items()):
                if n.has_ready():
                    rd = n.ready()
                    self.stores[nid].save(rd.hard_state, rd.entries, rd.snapshot)
                    msgs += rd.messages
                    self.applied[nid] += [e for e in rd.committed_entries if e.data]
                    self.reads[nid] += rd.read_states
                    n.advance(rd)
            if not msgs:
                if not any(n.has_ready() for n in self.nodes.values()):
                    return
                continue
            self.sent += msgs
            for m in msgs:
                if m.to in self.nodes and (m.frm, m.to) not in self.cut:
                    self.nodes[m.to].step(m)
        raise AssertionError("no quiescence")

    def tick(self, n: int = 1, only: list[str] | None = None) -> None:
        for _ in range(n):
            for nid, node in self.nodes.items():
                if only is None or nid in only:
                    node.tick()
            self.pump()

    def leader(self) -> RaftCore:
        leaders = [n for n in self.nodes.values() if n.role is Role.LEADER]
        assert len(leaders) == 1, [(n.id, n.role, n.term) for n in self.nodes.values()]
        return leaders[0]

    def elect(self, nid: str) -> RaftCore:
        self.nodes[nid].campaign()
        self.pump()
        assert self.nodes[nid].role is Role.LEADER
        return self.nodes[nid]

    def data(self, nid: str) -> list[bytes]:
        return [e.data for e in self.applied[nid] if e.type == 0]


def test_single_node_elects_itself_and_commits():
    net = Net(["a"])
    net.tick(25)
    a = net.leader()
    term, index = a.propose(b"x")
    net.pump()
    assert net.data("a") == [b"x"] and a.committed == index and a.term == term


def test_three_nodes_elect_one_leader_and_replicate():
    net = Net(["a", "b", "c"], seed=3)
    net.tick(30)
    lead = net.leader()
    for k in range(20):
        lead.propose(b"v%d" % k)
    net.pump()
    net.tick(2)
    want = [b"v%d" % k for k in range(20)]
    assert all(net.data(i) == want for i in "abc")


def test_ready_carries_vote_and_must_sync_before_messages():
    net = Net(["a", "b", "c"])
    a = net.nodes["a"]
    a.campaign()
    rd = a.ready()
    assert rd.hard_state is None and rd.messages  # pre-vote changes nothing durable
    assert {m.type for m in rd.messages} == {MsgType.PRE_VOTE}
    a.advance(rd)
    for m in rd.messages:
        net.nodes[m.to].step(m)
    b = net.nodes["b"]
    resp = b.ready()
    b.advance(resp)
    a.step(resp.messages[0])
    rd = a.ready()
    assert rd.hard_state == HardState(2, "a", 3) and rd.must_sync
    assert {m.type for m in rd.messages} == {MsgType.VOTE}
    a.advance(rd)
    b.step(next(m for m in rd.messages if m.to == "b"))
    rd = b.ready()
    # the granted vote is in the same Ready as the answer that depends on it
    assert rd.hard_state.vote == "a" and rd.must_sync
    assert rd.messages[0].type is MsgType.VOTE_RESP and not rd.messages[0].reject


def test_leader_counts_itself_only_once_persisted():
    net = Net(["a"])
    a = net.elect("a")
    a.propose(b"x")
    rd = a.ready()
    assert [e.data for e in rd.entries] == [b"x"] and rd.committed_entries == []
    a.advance(rd)
    rd = a.ready()
    assert [e.data for e in rd.committed_entries] == [b"x"]


def test_batching_one_message_per_follower_per_ready():
    net = Net(["a", "b", "c"], max_msg_entries=1000)
    a = net.elect("a")
    net.pump()
    for k in range(300):
        a.propose(b"x%d" % k)
    rd = a.ready()
    apps = [m for m in rd.messages if m.type is MsgType.APP]
    assert len(apps) == 2 and all(len(m.entries) == 300 for m in apps)


def test_pipelining_respects_max_inflight():
    net = Net(["a", "b", "c"], max_msg_entries=2, max_inflight=3)
    a = net.elect("a")
    net.pump()
    for k in range(50):
        a.propose(b"x%d" % k)
    rd = a.ready()
    to_b = [m for m in rd.messages if m.type is MsgType.APP and m.to == "b"]
    assert len(to_b) == 3 and [len(m.entries) for m in to_b] == [2, 2, 2]
    a.advance(rd)
    for m in rd.messages:
        net.nodes[m.to].step(m)
    net.pump()
    assert a.committed == a.log.last_index()  # acks open the window until all is sent


def test_old_term_entry_not_committed_by_replica_count_alone():
    # Figure 8 of the Raft paper: an entry of an earlier term stored on a majority is not
    # committed by counting replicas, only once an entry of the leader's term is.
    net = Net(["a", "b", "c"])
    a = net.elect("a")
    net.pump()
    n = a.log.last_index()
    # a leader of term 5 whose log ends with an uncommitted term-2 entry at n+1
    a.propose(b"t2")
    rd = a.ready()
    net.stores["a"].save(rd.hard_state, rd.entries)
    a.advance(rd)
    st = net.stores["a"].load()
    core = RaftCore(RaftConfig("a"), PersistedState(HardState(4, None, st.hard_state.commit), st.snapshot,
                                                    st.entries), random.Random(1))
    core.campaign(transfer=True)
    for v in ("b", "c"):
        core.step(Message(MsgType.VOTE_RESP, "a", v, core.term))
    assert core.role is Role.LEADER and core.term == 5
    rd = core.ready()
    core.advance(rd)
    # b acknowledges the old entry but not the no-op: nothing new may commit
    core.step(Message(MsgType.APP_RESP, "a", "b", core.term, index=n + 1))
    assert core.committed == n
    core.step(Message(MsgType.APP_RESP, "a", "b", core.term, index=n + 2))
    assert core.committed == n + 2


def test_follower_commits_only_entries_the_append_verified():
    # b holds two stale entries of term 2 after the founding ones; the term-3 leader's
    # append matches only up to index 3, so its commit index 5 covers nothing more of b's.
    boot = initial_state(["a", "b", "c"])
    stale = [Entry(2, 4, 0, b"stale4"), Entry(2, 5, 0, b"stale5")]
    b = RaftCore(RaftConfig("b"), PersistedState(HardState(2, None, 3), boot.snapshot, boot.entries + stale),
                 random.Random(0))
    b.step(Message(MsgType.APP, "b", "a", 3, log_term=1, index=3, commit=5))
    assert b.committed == 3
    b.step(Message(MsgType.HEARTBEAT, "b", "a", 3, commit=3))
    assert b.committed == 3
    b.step(Message(MsgType.APP, "b", "a", 3, log_term=1, index=3, entries=[Entry(3, 4, 0, b"new")], commit=5))
    assert b.committed == 4 and b.log.last_index() == 4 and b.log.term(4) == 3


def test_pre_vote_keeps_a_returning_node_from_disrupting():
    net = Net(["a", "b", "c"])
    a = net.elect("a")
    net.pump()
    net.isolate("c")
    net.tick(60, only=["c"])
    c = net.nodes["c"]
    assert c.term == a.term  # pre-votes failed, no term inflation
    net.heal()
    net.tick(5)
    assert net.leader() is a and a.term == c.term


def test_check_quorum_deposes_a_cut_off_leader():
    net = Net(["a", "b", "c"])
    a = net.elect("a")
    net.pump()
    net.isolate("a")
    net.tick(25)
    assert a.role is Role.FOLLOWER
    leaders = [n for n in net.nodes.values() if n.role is Role.LEADER]
    assert len(leaders) == 1 and leaders[0].id != "a"


def test_votes_ignored_while_in_lease():
    net = Net(["a", "b", "c"])
    a = net.elect("a")
    net.pump()
    b = net.nodes["b"]
    b.step(Message(MsgType.VOTE, "b", "c", a.term + 5, log_term=a.log.last_term(), index=a.log.last_index()))
    assert b.term == a.term and b.vote != "c"


def test_read_index_on_leader_and_follower():
    net = Net(["a", "b", "c"])
    a = net.elect("a")
    a.read_index(b"early")  # before the no-op commits: held back
    assert not a.read_states
    net.pump()
    assert [r.context for r in net.reads["a"]] == [b"early"]
    a.propose(b"w")
    net.pump()
    a.read_index(b"r1")
    rd = a.ready()
    assert not rd.read_states and any(m.type is MsgType.HEARTBEAT and m.context == b"r1" for m in rd.messages)
    a.advance(rd)
    for m in rd.messages:
        net.nodes[m.to].step(m)
    net.pump()
    r = net.reads["a"][-1]
    assert r.context == b"r1" and r.index == a.committed
    net.nodes["b"].read_index(b"r2")
    net.pump()
    assert net.reads["b"][-1].context == b"r2" and net.reads["b"][-1].index == a.committed


def test_read_index_without_quorum_is_never_answered():
    net = Net(["a", "b", "c"])
    a = net.elect("a")
    net.pump()
    net.isolate("a")
    a.read_index(b"r")
    net.pump()
    assert net.reads["a"] == []


def test_leadership_transfer():
    net = Net(["a", "b", "c"])
    a = net.elect("a")
    a.propose(b"x")
    net.pump()
    a.transfer_leadership("c")
    with pytest.raises(ProposalDropped):
        a.propose(b"y")
    net.pump()
    assert net.nodes["c"].role is Role.LEADER and a.role is Role.FOLLOWER
    with pytest.raises(ValueError, match="^target"):
        net.nodes["c"].transfer_leadership("zz")
    net.nodes["a"].transfer_leadership("b")  # forwarded by a follower
    net.pump()
    assert net.nodes["b"].role is Role.LEADER


def test_add_learner_catch_up_promote_and_remove():
    net = Net(["a", "b", "c"])
    a = net.elect("a")
    for k in range(10):
        a.propose(b"x%d" % k)
    net.pump()
    a.propose_conf_change(ConfChange(ADD_LEARNER, "d"))
    net.add("d")
    with pytest.raises(ProposalDropped, match="pending"):
        a.propose_conf_change(ConfChange(ADD_VOTER, "d"))
    net.pump()
    net.tick(2)
    d = net.nodes["d"]
    assert d.conf_state == ConfState(("a", "b", "c"), ("d",))
    assert net.data("d") == net.data("a")
    d.tick()
    for _ in range(40):
        d.tick()
    assert d.role is Role.FOLLOWER  # learners never campaign
    a.propose_conf_change(ConfChange(ADD_VOTER, "d"))
    net.pump()
    assert a.conf_state.voters == ("a", "b", "c", "d")
    with pytest.raises(ValueError, match="^node_id"):
        a.propose_conf_change(ConfChange(ADD_VOTER, "d"))
    a.propose_conf_change(ConfChange(REMOVE, "b"))
    net.pump()
    assert a.conf_state.voters == ("a", "c", "d")
    # with b gone, a and one more voter are a quorum of three
    net.isolate("b")
    net.isolate("c")
    a.propose(b"after")
    net.pump()
    net.cut -= {("a", "d"), ("d", "a")}
    net.pump()
    net.tick(2)
    assert net.data("d")[-1] == b"after"


def test_leader_removing_itself_hands_over():
    net = Net(["a", "b", "c"])
    a = net.elect("a")
    net.pump()
    a.propose_conf_change(ConfChange(REMOVE, "a"))
    net.pump()
    net.tick(3)
    assert a.role is Role.FOLLOWER
    new = net.leader()
    assert new.id in ("b", "c") and new.conf_state.voters == ("b", "c")
    for _ in range(50):
        a.tick()
    assert a.role is Role.FOLLOWER  # not a member: never campaigns


def test_lagging_follower_gets_snapshot_after_compaction():
    net = Net(["a", "b", "c"])
    a = net.elect("a")
    net.pump()
    net.isolate("c")
    for k in range(30):
        a.propose(b"x%d" % k)
        net.pump()
    snap = a.create_snapshot(a.applied, b"image")
    net.stores["a"].save_snapshot(snap)
    a.compact(snap.index)
    assert a.log.first_index() == snap.index + 1
    net.heal()
    net.tick(3)
    c = net.nodes["c"]
    assert c.log.snapshot.index == snap.index and c.log.snapshot.data == b"image"
    assert c.committed == a.committed
    assert any(m.type is MsgType.SNAP for m in net.sent)


def test_restart_recovers_term_vote_and_log():
    net = Net(["a", "b", "c"])
    a = net.elect("a")
    for k in range(5):
        a.propose(b"x%d" % k)
    net.pump()
    term, last = net.nodes["b"].term, net.nodes["b"].log.last_index()
    b = net.restart("b")
    assert (b.term, b.log.last_index(), b.vote) == (term, last, "a")
    net.tick(3)
    assert net.data("b")[-1] == b"x4"


def test_messages_breaking_invariants_are_ignored_not_fatal():
    net = Net(["a", "b", "c"])
    a = net.elect("a")
    for k in range(5):
        a.propose(b"x%d" % k)
    net.pump()
    net.tick(1)
    b = net.nodes["b"]
    committed = b.committed
    # a forged leader in the same term rewrites committed entries
    b.step(Message(MsgType.APP, "b", "zz", b.term, log_term=1, index=1,
                   entries=[Entry(b.term, 2, 0, b"evil")], commit=2))
    assert b.committed == committed and b.log.term(2) == 1
    # acks for entries the leader never had
    a.step(Message(MsgType.APP_RESP, "a", "b", a.term, index=10 ** 6))
    assert a.protocol_errors == 1 and a.committed == committed


def test_proposals_need_the_leader():
    net = Net(["a", "b", "c"])
    a = net.elect("a")
    net.pump()
    with pytest.raises(NotLeader) as ei:
        net.nodes["b"].propose(b"x")
    assert ei.value.leader == "a"
    with pytest.raises(ValueError, match="^data"):
        a.propose(b"")


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="^election_ticks"):
        RaftCore(RaftConfig("a", election_ticks=1, heartbeat_ticks=1), PersistedState(), random.Random())
    with pytest.raises(ValueError, match="^voters"):
        initial_state([])


def test_same_seed_same_behaviour():
    def run(seed):
        net = Net(["a", "b", "c", "d", "e"], seed=seed)
        net.tick(40)
        return [(m.type, m.frm, m.to, m.term) for m in net.sent]
    assert run(5) == run(5)
    assert run(5) != run(6)


def test_in_process_throughput_with_batching():
    # The core must not be the bottleneck of the >= 12,000 writes/s target: three nodes in
    # one process, every message through msgpack, 1,000 proposals in flight.
    net = Net(["a", "b", "c"], max_msg_entries=1000)
    a = net.elect("a")
    net.pump()
    nodes, stores = net.nodes, net.stores
    applied = 0
    total = 30_000
    start = time.perf_counter()
    for _ in range(total // 1000):
        a.propose_batch([b"v" * 100] * 1000)
        while True:
            msgs = []
            for nid, n in nodes.items():
                if n.has_ready():
                    rd = n.ready()
                    stores[nid].save(rd.hard_state, rd.entries, rd.snapshot)
                    msgs += rd.messages
                    if nid == "a":
                        applied += len(rd.committed_entries)
                    n.advance(rd)
            if not msgs and not any(n.has_ready() for n in nodes.values()):
                break
            for m in msgs:
                nodes[m.to].step(Message.from_wire(msgpack.unpackb(msgpack.packb(m.to_wire()))))
    rate = applied / (time.perf_counter() - start)
    assert applied == total
    assert rate > 12_000, f"{rate:.0f} committed proposals/s"


def test_send_first_only_for_a_leader_without_new_term_or_vote():
    net = Net(["a", "b", "c"])
    a = net.nodes["a"]
    a.campaign()  # pre-vote, then the vote: these must be durable before they are sent
    rd = a.ready()
    assert not rd.send_first
    a.advance(rd)
    for m in rd.messages:
        net.nodes[m.to].step(m)
    net.pump()
    assert a.role is Role.LEADER
    a.propose(b"x")
    rd = a.ready()
    assert rd.send_first and rd.entries and {m.type for m in rd.messages} == {MsgType.APP}
    a.advance(rd)
    b = net.nodes["b"]
    for m in rd.messages:
        if m.to == "b":
            b.step(m)
    rd = b.ready()  # a follower's acknowledgement promises what it persists
    assert not rd.send_first and rd.messages[0].type is MsgType.APP_RESP


def test_report_connected_sends_a_heartbeat_at_once():
    net = Net(["a", "b", "c"])
    a = net.elect("a")
    net.pump()
    a.report_connected("b")
    rd = a.ready()
    assert [(m.type, m.to) for m in rd.messages] == [(MsgType.HEARTBEAT, "b")]
    a.advance(rd)
    b = net.nodes["b"]
    b.report_connected("a")  # only a leader does something
    assert not b.has_ready()
