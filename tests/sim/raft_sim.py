"""Deterministic simulation of a Raft cluster under faults, checking safety after every step.

One seed fixes everything: message delays, loss, duplication and reordering, symmetric and
one-way partitions, crashes (losing whatever the node had not persisted yet) and restarts
from its durable state, membership changes, leadership transfers, snapshots and reads.
After every event the checker verifies election safety, log matching, leader completeness,
state-machine safety and that reads see every write that completed before them; at the end
the network heals and the cluster must elect a leader and commit a proposal.

    python -m tests.sim.raft_sim --seeds 5000 [--start 0] [--nodes 3,5] [--jobs 2]

prints the seed of every failure; `--seed N -v` replays one.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import heapq
import random
import sys
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable

import msgpack

from manager.raft.core import NotLeader, PersistedState, ProposalDropped, RaftConfig, RaftCore, Role, initial_state
from manager.raft.messages import (ENTRY_CONF, ConfChange, ConfChangeType, Entry, Message, MsgType,
                                   Snapshot)
from manager.raft.storage.memory import MemoryStorage


class SafetyViolation(AssertionError):
    pass


class LivenessFailure(AssertionError):
    pass


@dataclass
class SimParams:
    nodes: int = 3
    duration_ms: int = 5000  # chaos phase, virtual time
    heal_ms: int = 4000  # time allowed to recover after healing
    tick_ms: int = 10
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_msg_entries: int = 4  # small, to exercise batching and pipelining
    max_inflight: int = 3
    loss: float = 0.05
    dup: float = 0.03
    max_delay_ms: int = 8
    slow_delay_ms: int = 60  # occasional long delays reorder messages
    fault_every_ms: int = 120
    client_every_ms: int = 15
    crash: bool = True
    partitions: bool = True
    membership: bool = True
    transfers: bool = True
    reads: bool = True
    snapshot_every: tuple[int, int] = (6, 30)
    wire_fraction: float = 0.25  # share of messages sent through to_wire/msgpack/from_wire
    corrupt_fraction: float = 0.01  # share of those garbled on the wire (must be rejected)
    send_before_persist: bool = False  # deliberately break the durability contract
    # As manager/raft/node.py does: a Ready marked send_first (a leader's, no new term or vote)
    # is sent before it is persisted, and a crash may come in between.
    honour_send_first: bool = True
    max_members: int = 7
    vary: bool = True  # let the seed pick batching, pipelining, timing and fault rates


_VARIED = {
    "max_msg_entries": (1, 4, 4, 64),
    "max_inflight": (1, 3, 3, 256),
    "heartbeat_ticks": (1, 1, 2),
    "election_ticks": (5, 10, 10, 20),
    "fault_every_ms": (60, 120, 120, 400),
    "client_every_ms": (5, 15, 15, 40),
}


# ------------------------------------------------------------------ state machine
def _chain(prev: bytes, term: int, data: bytes) -> bytes:
    return hashlib.blake2b(prev + term.to_bytes(8, "big") + data, digest_size=12).digest()


@dataclass
class App:
    """Replicated state: the applied index and a hash chain over every applied entry."""

    index: int = 0
    digest: bytes = b""

    def snapshot_data(self) -> bytes:
        return msgpack.packb([self.index, self.digest])

    @staticmethod
    def from_snapshot(snap: Snapshot) -> App:
        if snap.index == 0:
            return App()
        index, digest = msgpack.unpackb(snap.data)
        return App(index, digest)


@dataclass
class SimNode:
    id: str
    storage: MemoryStorage
    core: RaftCore | None = None
    app: App = field(default_factory=App)
    up: bool = False
    retired: bool = False  # removed from the cluster and shut down for good
    ready_scheduled: bool = False
    snap_every: int = 20
    snap_keep: int = 0
    incarnation: int = 0


# ------------------------------------------------------------------ events
TICK, DELIVER, READY, FAULT, CLIENT, RETIRE, RESTART = range(7)


class Sim:
    def __init__(self, seed: int, params: SimParams | None = None,
                 core_cls: type[RaftCore] = RaftCore,
                 storage_cls: Callable[[PersistedState | None], MemoryStorage] = MemoryStorage,
                 verbose: bool = False):
        self.seed = seed
        self.rng = random.Random(seed)
        params = params or SimParams()
        if params.vary:
            params = dataclasses.replace(params, **{k: self.rng.choice(v) for k, v in _VARIED.items()})
        self.p = params
        self.core_cls = core_cls
        self.storage_cls = storage_cls
        self.verbose = verbose
        self.now = 0
        self._seq = 0
        self.queue: list[tuple] = []
        self.nodes: dict[str, SimNode] = {}
        self.blocked: set[tuple[str, str]] = set()
        self.loss = self.p.loss
        self.dup = self.p.dup
        self.chaos = True
        self.next_id = 0
        self.trace = zlib.crc32(b"")
        self.events = 0
        # checker state
        self.leaders: dict[int, str] = {}
        self.applied: dict[int, tuple[int, bytes, bytes]] = {}  # index -> (term, data, chain)
        self.entry_keys: dict[tuple[int, int], tuple[bytes, int]] = {}  # (index, term) -> (data, prev term)
        self.max_applied = 0
        self.proposals: dict[tuple[int, int], tuple[str, bytes]] = {}  # (term, index) -> (node, data)
        self.acked: dict[int, bytes] = {}
        self.reads: dict[bytes, tuple[str, int]] = {}  # ctx -> (node, max applied when issued)
        self.reads_done = 0
        self.stats = {"elections": 0, "snap_installs": 0, "crashes": 0, "conf_changes": 0, "reads": 0, "sent_first": 0,
                      "transfers": 0, "commits": 0, "wire_rejects": 0, "timeout_now": 0}

        ids = [self._new_id() for _ in range(self.p.nodes)]
        init = initial_state(ids)
        for nid in ids:
            node = self._make_node(nid, init)
            self._start(node)

    # ---------------------------------------------------------------- plumbing
    def _new_id(self) -> str:
        self.next_id += 1
        return f"n{self.next_id}"

    def _make_node(self, nid: str, init: PersistedState | None) -> SimNode:
        node = SimNode(nid, self.storage_cls(init))
        node.snap_every = self.rng.randint(*self.p.snapshot_every)
        node.snap_keep = self.rng.randint(0, 5)
        self.nodes[nid] = node
        return node

    def _schedule(self, at: int, kind: int, a=None, b=None) -> None:
        self._seq += 1
        heapq.heappush(self.queue, (at, self._seq, kind, a, b))

    def _log(self, *args) -> None:
        if self.verbose:
            print(f"[{self.now:6d}]", *args)

    def _start(self, node: SimNode) -> None:
        p = self.p
        cfg = RaftConfig(node.id, election_ticks=p.election_ticks, heartbeat_ticks=p.heartbeat_ticks,
                         pre_vote=p.pre_vote, check_quorum=p.check_quorum,
                         max_msg_entries=p.max_msg_entries, max_inflight=p.max_inflight,
                         snapshot_entries=node.snap_every, snapshot_keep=node.snap_keep)
        state = node.storage.load()
        node.core = self.core_cls(cfg, state, random.Random(self.rng.getrandbits(64)))
        node.app = App.from_snapshot(state.snapshot)
        self._check_app_snapshot(node, state.snapshot)
        node.up = True
        node.incarnation += 1
        node.ready_scheduled = False
        self._schedule(self.now + self.rng.randint(1, p.tick_ms), TICK, node.id, node.incarnation)
        self._want_ready(node)

    def _crash(self, node: SimNode) -> None:
        self._log("crash", node.id)
        self.stats["crashes"] += 1
        node.up = False
        node.core = None
        node.ready_scheduled = False
        if self.rng.random() < 0.8:
            self._schedule(self.now + self.rng.randint(20, 800), RESTART, node.id, node.incarnation)

    def _want_ready(self, node: SimNode) -> None:
        if node.up and not node.ready_scheduled and node.core.has_ready():
            node.ready_scheduled = True
            self._schedule(self.now + self.rng.randint(0, 2), READY, node.id, node.incarnation)

    def _send(self, m: Message) -> None:
        if self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            if self.rng.random() < 0.05:
                delay = self.rng.randint(1, self.p.slow_delay_ms)
            else:
                delay = self.rng.randint(0, self.p.max_delay_ms)
            self._schedule(self.now + delay, DELIVER, m)

    def _wire(self, m: Message) -> Message | None:
        """Send a message through the real wire path; garble some, which must be refused."""
        raw = msgpack.packb(m.to_wire())
        obj = msgpack.unpackb(raw)
        if self.rng.random() < self.p.corrupt_fraction:
            how = self.rng.randrange(4)
            if how == 0:
                obj.pop("from")
            elif how == 1:
                obj["term"] = "x"
            elif how == 2:
                obj["type"] = 99
            else:
                obj["entries"] = [[1, 2]]
            try:
                Message.from_wire(obj)
            except ValueError:
                self.stats["wire_rejects"] += 1
                return None
            raise SafetyViolation(f"garbled message accepted: {obj!r}")
        return Message.from_wire(obj)

    # ---------------------------------------------------------------- main loop
    def run(self) -> dict:
        p = self.p
        self._schedule(p.fault_every_ms, FAULT)
        self._schedule(p.client_every_ms, CLIENT)
        end_chaos = p.duration_ms
        while self.queue and self.queue[0][0] <= end_chaos:
            self._event()
        self._heal()
        self._liveness(end_chaos + p.heal_ms)
        self._full_log_check()
        return self.stats

    def _event(self) -> None:
        at, _, kind, a, b = heapq.heappop(self.queue)
        self.now = at
        self.events += 1
        if kind == TICK:
            node = self.nodes[a]
            if not node.up or node.incarnation != b:
                return
            node.core.tick()
            self._after_input(node)
            self._schedule(self.now + self.p.tick_ms, TICK, a, b)
        elif kind == DELIVER:
            m: Message = a
            node = self.nodes.get(m.to)
            if node is None or not node.up or (m.frm, m.to) in self.blocked:
                return
            if self.p.wire_fraction and self.rng.random() < self.p.wire_fraction:
                m = self._wire(m)
                if m is None:
                    return
            self.trace = zlib.crc32(f"{self.now}{m.to}{m.frm}{int(m.type)}{m.term}{m.index}".encode(), self.trace)
            if m.type is MsgType.TIMEOUT_NOW:
                self.stats["timeout_now"] += 1
            node.core.step(m)
            self._after_input(node)
        elif kind == READY:
            node = self.nodes[a]
            if node.up and node.incarnation == b:
                node.ready_scheduled = False
                self._process_ready(node)
        elif kind == FAULT:
            if self.chaos:
                self._fault()
                self._schedule(self.now + self.rng.randint(1, 2 * self.p.fault_every_ms), FAULT)
        elif kind == CLIENT:
            if self.chaos:
                self._client()
                self._schedule(self.now + self.rng.randint(1, 2 * self.p.client_every_ms), CLIENT)
        elif kind == RESTART:
            node = self.nodes[a]
            if not node.up and not node.retired and node.incarnation == b and self.chaos:
                self._log("restart", node.id)
                self._start(node)
        elif kind == RETIRE:
            node = self.nodes[a]
            if node.up:
                self._crash(node)
            node.retired = True

    def _after_input(self, node: SimNode) -> None:
        self._check_node(node)
        self._want_ready(node)

    def _process_ready(self, node: SimNode) -> None:
        core = node.core
        rd = core.ready()
        self.trace = zlib.crc32(f"R{self.now}{node.id}{len(rd.messages)}{len(rd.entries)}"
                                f"{len(rd.committed_entries)}".encode(), self.trace)
        self._check_new_entries(node, rd.entries, rd.snapshot)
        early = self.p.send_before_persist or (self.p.honour_send_first and rd.send_first)
        if early:
            self.stats["sent_first"] += bool(rd.messages)
            for m in rd.messages:
                self._send(m)
            if self.chaos and self.p.crash and self.rng.random() < (0.02 if self.p.send_before_persist else 0.004):
                self._crash(node)  # sent, but died before the fsync completed
                return
        elif self.chaos and self.p.crash and self.rng.random() < 0.004:
            self._crash(node)  # before the fsync completed: this Ready is lost
            return
        node.storage.save(rd.hard_state, rd.entries, rd.snapshot)
        if not early:
            if self.chaos and self.p.crash and self.rng.random() < 0.004:
                self._crash(node)  # persisted, but died before sending
                return
            for m in rd.messages:
                self._send(m)
        if rd.snapshot is not None:
            self.stats["snap_installs"] += 1
            node.app = App.from_snapshot(rd.snapshot)
            self._check_app_snapshot(node, rd.snapshot)
        for e in rd.committed_entries:
            self._apply(node, e)
        for rs in rd.read_states:
            self._check_read(node, rs.index, rs.context)
        core.advance(rd)
        self._maybe_snapshot(node)
        self._check_node(node)
        self._want_ready(node)

    # ---------------------------------------------------------------- applying
    def _apply(self, node: SimNode, e: Entry) -> None:
        app = node.app
        if e.index != app.index + 1:
            raise SafetyViolation(f"{node.id} applied index {e.index} after {app.index}")
        app.index = e.index
        app.digest = _chain(app.digest, e.term, e.data)
        seen = self.applied.get(e.index)
        if seen is None:
            self.applied[e.index] = (e.term, e.data, app.digest)
            self.max_applied = max(self.max_applied, e.index)
            self.stats["commits"] += 1
            if e.type == ENTRY_CONF:
                key = "conf_" + ConfChange.decode(e.data).type.name.lower()
                self.stats[key] = self.stats.get(key, 0) + 1
        elif seen[2] != app.digest:
            raise SafetyViolation(f"state machine safety: {node.id} applied {e.data!r}@{e.index} term "
                                  f"{e.term}, others applied {seen[1]!r} term {seen[0]}")
        prop = self.proposals.get((e.term, e.index))
        if prop is not None and prop[0] == node.id:
            if prop[1] != e.data:
                raise SafetyViolation(f"proposal at {e.term}/{e.index} applied with other data")
            self.acked[e.index] = e.data
        if e.type == ENTRY_CONF:
            cc = ConfChange.decode(e.data)
            self.stats["conf_changes"] += 1
            if cc.type == ConfChangeType.REMOVE and cc.node_id in self.nodes and self.chaos:
                target = self.nodes[cc.node_id]
                if not target.retired and self.rng.random() < 0.5:
                    self._schedule(self.now + self.rng.randint(0, 300), RETIRE, cc.node_id)

    def _maybe_snapshot(self, node: SimNode) -> None:
        core = node.core
        if not core.should_snapshot():
            return
        snap = core.create_snapshot(node.app.index, node.app.snapshot_data())
        node.storage.save_snapshot(snap)
        core.compact()

    # ---------------------------------------------------------------- faults & clients
    def _live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.up]

    def _fault(self) -> None:
        p, rng = self.p, self.rng
        ids = [n.id for n in self.nodes.values() if not n.retired]
        r = rng.random()
        if r < 0.25 and p.partitions:
            self.blocked.clear()
            kind = rng.randrange(3)
            if kind == 0:  # isolate one node (often the leader)
                leaders = [n.id for n in self._live() if n.core.role is Role.LEADER]
                victim = rng.choice(leaders) if leaders and rng.random() < 0.6 else rng.choice(ids)
                for o in ids:
                    if o != victim:
                        self.blocked.add((victim, o))
                        self.blocked.add((o, victim))
            elif kind == 1:  # split in two
                side = {i for i in ids if rng.random() < 0.5}
                for x in ids:
                    for y in ids:
                        if (x in side) != (y in side):
                            self.blocked.add((x, y))
            else:  # one-way cuts
                for _ in range(rng.randint(1, 3)):
                    x, y = rng.sample(ids, 2) if len(ids) > 1 else (ids[0], ids[0])
                    self.blocked.add((x, y))
            self._log("partition", sorted(self.blocked))
        elif r < 0.45:
            self.blocked.clear()
            self._log("heal")
        elif r < 0.65 and p.crash:
            up = [n for n in self._live() if not n.retired]
            if up:
                self._crash(rng.choice(up))
        elif r < 0.85:
            down = [n for n in self.nodes.values() if not n.up and not n.retired]
            if down:
                node = rng.choice(down)
                self._log("restart", node.id)
                self._start(node)
        else:
            self.loss = rng.choice([0.0, p.loss, 3 * p.loss])
            self.dup = rng.choice([0.0, p.dup])

    def _leader(self) -> SimNode | None:
        leaders = [n for n in self._live() if n.core.role is Role.LEADER]
        if not leaders:
            return None
        return self.rng.choice(leaders)

    def _client(self) -> None:
        p, rng = self.p, self.rng
        r = rng.random()
        if r < 0.6:
            node = self._leader()
            if node is None:
                return
            n = rng.randint(1, 5)
            datas = [f"{node.id}:{self.now}:{k}:{rng.getrandbits(16)}".encode() for k in range(n)]
            try:
                term, first = node.core.propose_batch(datas)
            except (NotLeader, ProposalDropped):
                return
            for k, d in enumerate(datas):
                self.proposals[(term, first + k)] = (node.id, d)
            self._after_input(node)
        elif r < 0.75 and p.reads:
            live = self._live()
            if not live:
                return
            node = rng.choice(live)
            ctx = f"read:{self.now}:{rng.getrandbits(32)}".encode()
            try:
                node.core.read_index(ctx)
            except NotLeader:
                return
            self.reads[ctx] = (node.id, self.max_applied)
            self._after_input(node)
        elif r < 0.82 and p.transfers:
            node = self._leader()
            if node is None:
                return
            others = [v for v in node.core.conf_state.voters if v != node.id]
            if others:
                target = rng.choice(others)
                self.stats["transfers"] += 1
                try:
                    node.core.transfer_leadership(target)
                except (NotLeader, ValueError):
                    return
                self._after_input(node)
        elif r < 0.90 and p.membership:
            self._member_op()

    def _member_op(self) -> None:
        rng = self.rng
        node = self._leader()
        if node is None:
            return
        core = node.core
        cs = core.conf_state
        choice = rng.random()
        new_node = None
        if cs.learners and choice < 0.5:
            lid = rng.choice(cs.learners)
            pr = core.progress(lid)
            if pr is None or pr.match + 3 < core.committed:
                return  # promote only once it has caught up
            cc = ConfChange(ConfChangeType.ADD_VOTER, lid)
        elif choice < 0.75 and len(cs.voters) + len(cs.learners) < self.p.max_members:
            new_node = self._new_id()
            cc = ConfChange(ConfChangeType.ADD_LEARNER, new_node)
        else:
            members = list(cs.voters) + list(cs.learners)
            victim = rng.choice(members)
            if victim in cs.voters and len(cs.voters) <= 2:
                return
            cc = ConfChange(ConfChangeType.REMOVE, victim)
        try:
            core.propose_conf_change(cc)
        except (NotLeader, ProposalDropped, ValueError):
            if new_node is not None:
                self.next_id -= 1
            return
        self._log("conf change", cc.type.name, cc.node_id, "via", node.id)
        if new_node is not None:
            self._start(self._make_node(new_node, None))
        self._after_input(node)

    # ---------------------------------------------------------------- checks
    def _check_node(self, node: SimNode) -> None:
        core = node.core
        if core is None:
            return
        if core.protocol_errors:
            raise SafetyViolation(f"{node.id} saw {core.protocol_errors} protocol errors")
        if core.role is Role.LEADER:
            known = self.leaders.get(core.term)
            if known is None:
                self.leaders[core.term] = node.id
                self.stats["elections"] += 1
                self._log("leader", node.id, "term", core.term)
                self._check_leader_completeness(node)
            elif known != node.id:
                raise SafetyViolation(f"election safety: {known} and {node.id} both lead term {core.term}")

    def _check_leader_completeness(self, node: SimNode) -> None:
        log = node.core.log
        if log.last_index() < self.max_applied:
            raise SafetyViolation(f"leader completeness: {node.id} leads term {node.core.term} with last index "
                                  f"{log.last_index()} < committed {self.max_applied}")
        for i in range(log.first_index(), self.max_applied + 1):
            t = log.term(i)
            seen = self.applied.get(i)
            if seen is not None and seen[0] != t:
                raise SafetyViolation(f"leader completeness: {node.id} term {node.core.term} has term {t} at "
                                      f"{i}, committed entry has term {seen[0]}")

    def _check_new_entries(self, node: SimNode, entries: list[Entry], snap: Snapshot | None) -> None:
        log = node.core.log
        prev_term = None
        for e in entries:
            pt = prev_term if prev_term is not None else log.term(e.index - 1)
            if pt is None and snap is not None and e.index == snap.index + 1:
                pt = snap.term
            key = (e.index, e.term)
            seen = self.entry_keys.get(key)
            if seen is None:
                self.entry_keys[key] = (e.data, pt)
            elif seen[0] != e.data or (pt is not None and seen[1] is not None and seen[1] != pt):
                raise SafetyViolation(f"log matching: {node.id} holds a different entry {key}")
            prev_term = e.term

    def _full_log_check(self) -> None:
        for node in self._live():
            log = node.core.log
            prev = log.prev_term
            for e in log.entries:
                seen = self.entry_keys.get((e.index, e.term))
                if seen is not None and (seen[0] != e.data or (seen[1] is not None and seen[1] != prev)):
                    raise SafetyViolation(f"log matching: {node.id} entry {e.index}/{e.term} differs")
                prev = e.term

    def _check_app_snapshot(self, node: SimNode, snap: Snapshot) -> None:
        if snap.index == 0:
            return
        seen = self.applied.get(snap.index)
        if seen is None:
            raise SafetyViolation(f"{node.id} got snapshot at {snap.index}, never applied anywhere")
        if seen[2] != node.app.digest or node.app.index != snap.index:
            raise SafetyViolation(f"state machine safety: {node.id} snapshot at {snap.index} differs")

    def _check_read(self, node: SimNode, index: int, ctx: bytes) -> None:
        issued = self.reads.pop(ctx, None)
        if issued is None:
            return  # a duplicate answer
        self.stats["reads"] += 1
        if index < issued[1]:
            raise SafetyViolation(f"stale read on {node.id}: read index {index} < {issued[1]} "
                                  "applied before the read began")

    # ---------------------------------------------------------------- the end
    def _heal(self) -> None:
        self.chaos = False
        self.blocked.clear()
        self.loss = 0.0
        self.dup = 0.0
        for node in self.nodes.values():
            if not node.up and not node.retired:
                self._start(node)

    def _liveness(self, deadline: int) -> None:
        target: tuple[str, int, int] | None = None
        while self.now < deadline and self.queue:
            self._event()
            leader = next((n for n in self._live() if n.core.role is Role.LEADER), None)
            if leader is None:
                continue
            core = leader.core
            if target is None or target[0] != leader.id or self.nodes[target[0]].core.term != target[1]:
                if core.log.term(core.committed) != core.term:
                    continue
                try:
                    term, index = core.propose(f"final:{leader.id}:{core.term}".encode())
                except (NotLeader, ProposalDropped):
                    continue
                target = (leader.id, term, index)
                self._want_ready(leader)
                continue
            if leader.app.index >= target[2] and self.applied[target[2]][0] == target[1]:
                break
        else:
            raise LivenessFailure(f"no leader committed a proposal within {self.p.heal_ms} ms of healing "
                                  f"(leaders: {[n.id for n in self._live() if n.core.role is Role.LEADER]})")
        # Every live voter of the leader's configuration catches up.
        leader = self.nodes[target[0]]
        voters = [self.nodes[v] for v in leader.core.conf_state.voters if v in self.nodes]
        while self.now < deadline and self.queue:
            if all(v.up and v.app.index >= target[2] for v in voters):
                return
            self._event()
        lag = {v.id: v.app.index for v in voters}
        raise LivenessFailure(f"voters did not catch up to {target[2]}: {lag}")


def run_seed(seed: int, nodes: int = 3, verbose: bool = False, broken: str | None = None, **kw) -> dict:
    """Run one seed; raises SafetyViolation or LivenessFailure. `broken` names a variant
    from tests.sim.broken to check that the checker catches it."""
    extra: dict = {}
    if broken is not None:
        from .broken import VARIANTS
        variant = dict(VARIANTS[broken])
        variant.pop("nodes", None)
        kw = {**variant.pop("params", {}), **kw}
        extra = variant
    params = SimParams(nodes=nodes, **kw)
    sim = Sim(seed, params, verbose=verbose, **extra)
    stats = sim.run()
    stats["events"] = sim.events
    stats["trace"] = sim.trace
    return stats


def _worker(args: tuple[int, int, str | None]) -> tuple[int, int, str | None]:
    seed, nodes, broken = args
    try:
        run_seed(seed, nodes, broken=broken)
    except (SafetyViolation, LivenessFailure) as exc:
        return seed, nodes, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a crash of the core is a failure too
        return seed, nodes, f"{type(exc).__name__}: {exc}"
    return seed, nodes, None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=1000, help="number of seeds per cluster size")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--seed", type=int, help="replay one seed")
    ap.add_argument("--nodes", default="3,5", help="cluster sizes, comma separated")
    ap.add_argument("--jobs", type=int, default=0, help="worker processes (default: CPU count)")
    ap.add_argument("--broken", help="run a deliberately broken variant (see tests/sim/broken.py)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.nodes.split(",")]
    if args.seed is not None:
        for n in sizes:
            print(f"seed {args.seed} nodes {n}:", run_seed(args.seed, n, verbose=args.verbose,
                                                           broken=args.broken))
        return 0
    work = [(s, n, args.broken) for n in sizes for s in range(args.start, args.start + args.seeds)]
    t0 = time.monotonic()
    failures = []
    jobs = args.jobs or None
    import multiprocessing
    with multiprocessing.Pool(jobs) as pool:
        for seed, nodes, err in pool.imap_unordered(_worker, work, chunksize=8):
            if err is not None:
                failures.append((seed, nodes))
                print(f"FAIL seed={seed} nodes={nodes}: {err}", flush=True)
    dt = time.monotonic() - t0
    print(f"{len(work) - len(failures)} passed, {len(failures)} failed in {dt:.1f}s")
    if failures:
        print("replay with: python -m tests.sim.raft_sim --seed SEED --nodes N -v"
              + (f" --broken {args.broken}" if args.broken else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
