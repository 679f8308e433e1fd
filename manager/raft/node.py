"""The asyncio runner around the pure Raft core: ticks, durable storage, the transport, and the
store as the replicated state machine. It offers the same `propose(actions)` as the single-member
log it replaces, so the callers did not change.

Each Ready is handled in the order the core's contract requires: persist (fsync), then send
its messages (a leader's go first, see `Ready.send_first`), then apply its committed entries to
the store, then advance. Proposals made meanwhile gather in the core and go out together in the
next Ready: one WAL record, one fsync and one append message per follower for all of them.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import msgpack

from api.ids import timestamp
from manager.raft.core import NotLeader, ProposalDropped, RaftConfig, RaftCore, Ready, Role, initial_state
from manager.raft.messages import ENTRY_CONF, ConfChange, ConfChangeType, Entry, Message
from manager.encryption.aead import Crypter
from manager.raft.persist import Persister
from manager.raft.storage.disk import DiskStorage
from manager.raft.storage.wal import PLAINTEXT, gc_paused
from manager.store import Action, Change, Store, StoreError

log = logging.getLogger("shoal.raft")

TICK_S = 0.1
ELECTION_TICKS = 5  # randomized in [0.5 s, 1 s): failover well under Swarm's ~10 s
PROPOSE_TIMEOUT_S = 10.0
MAX_IN_FLIGHT = 4096


class NoLeader(StoreError):
    status = 503

    def __init__(self, detail: str = ""):
        super().__init__("The swarm does not have a leader. It's possible that too few managers are online. "
                         "Make sure more than half of the managers are online." + (f" ({detail})" if detail else ""))


class NotLeaderError(StoreError):
    """This manager is not the leader; the caller should forward to `leader`."""
    status = 421

    def __init__(self, leader: str | None):
        super().__init__(f"this manager is not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


def _needs_sync(rd: Ready) -> bool:
    return bool(rd.entries) or rd.snapshot is not None or rd.must_sync


@dataclass(slots=True)
class _Waiter:
    term: int
    future: asyncio.Future
    deadline: float  # loop time after which the write is reported as not committed in time


@dataclass
class RaftNode:
    node_id: str
    directory: Path
    store: Store
    send: Callable[[list[Message]], None] = lambda msgs: None
    on_role_change: Callable[[bool], None] = lambda is_leader: None
    on_conf_change: Callable[[ConfChange], None] = lambda cc: None
    snapshot_entries: int = 10_000
    crypter: Crypter = PLAINTEXT  # seals the WAL and snapshots (the manager's data-encryption key)
    core: RaftCore | None = None
    storage: DiskStorage | None = None
    _waiters: dict[int, _Waiter] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _was_leader: bool = False
    _inbox: list[Message] = field(default_factory=list)
    _persister: Persister = field(default_factory=Persister)
    _in_ready: bool = False  # a Ready is being handled (the ready loop may be awaiting its write)
    _closed: bool = False
    _rekeys: list[tuple[Crypter, asyncio.Future]] = field(default_factory=list)
    _rekey_job: asyncio.Future | None = None
    # Counters for benchmarks and diagnostics: Readies handled, of them persisted (one WAL
    # record and fsync each), entries persisted, messages sent, microseconds writers waited.
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("readies", "syncs", "entries", "messages", "wait_us"), 0))

    # --- lifecycle ----------------------------------------------------------------------

    def open(self, bootstrap: bool = False) -> None:
        """Open the storage and rebuild the store from its snapshot and log. `bootstrap` founds a
        new cluster with this node as its only voter; a joining node starts empty and learns
        everything from the leader."""
        with gc_paused():  # a large log and snapshot: see gc_paused
            self._open(bootstrap)

    def _open(self, bootstrap: bool) -> None:
        self.storage = DiskStorage(str(self.directory), crypter=self.crypter)
        if self.storage.report and getattr(self.storage.report, "dropped_records", 0):
            log.warning("raft log: %s", self.storage.report)
        if bootstrap and self.storage.is_empty:
            self.storage.bootstrap(initial_state([self.node_id]))
        state = self.storage.state
        if state.snapshot.index:
            self.store.restore(msgpack.unpackb(state.snapshot.data, raw=False))
        cfg = RaftConfig(id=self.node_id, election_ticks=ELECTION_TICKS, heartbeat_ticks=1,
                         snapshot_entries=self.snapshot_entries)
        self.core = RaftCore(cfg, state, random.Random())

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._ticker(), name="raft-tick"))
        self._tasks.append(loop.create_task(self._ready_loop(), name="raft-ready"))
        if self.core.conf_state.voters == (self.node_id,):
            self.core.campaign()  # a cluster of one need not wait out an election timeout
            self._wake.set()

    async def close(self) -> None:
        self._closed = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        if self._rekey_job is not None:
            await asyncio.wait([self._rekey_job])
        for w in self._waiters.values():
            if not w.future.done():
                w.future.set_exception(NoLeader("manager shutting down"))
        self._waiters.clear()
        for _, fut in self._rekeys:
            if not fut.done():
                fut.set_exception(NoLeader("manager shutting down"))
        self._rekeys.clear()
        self._persister.close()
        if self.storage:
            self.storage.close()

    # --- queries ----------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.core is not None and self.core.role is Role.LEADER

    @property
    def leader_id(self) -> str | None:
        return self.core.lead if self.core else None

    def members(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        cs = self.core.conf_state
        return cs.voters, cs.learners

    # --- inputs -----------------------------------------------------------------------------

    def step(self, msg: Message) -> None:
        self._inbox.append(msg)
        self._wake.set()

    def step_many(self, msgs: Sequence[Message]) -> None:
        """Messages from a peer (one frame), handled at once if possible (`_handle_ready_now`)."""
        self._inbox.extend(msgs)
        if not self._handle_ready_now():
            self._wake.set()

    async def propose(self, actions: Sequence[Action]) -> list[Change]:
        data = msgpack.packb({"Time": timestamp(), "Actions": [a.to_wire() for a in actions]}, use_bin_type=True)
        return await self._propose_data(data)

    async def propose_conf_change(self, cc: ConfChange) -> None:
        self._flush_inbox()
        try:
            term, index = self.core.propose_conf_change(cc)
        except NotLeader as exc:
            raise NotLeaderError(exc.leader) from None
        except ProposalDropped as exc:
            raise StoreError(f"membership change refused: {exc}") from None
        await self._wait(term, index)

    async def _propose_data(self, data: bytes):
        if len(self._waiters) > MAX_IN_FLIGHT:
            raise NoLeader("too many writes in flight")
        self._flush_inbox()
        try:
            term, index = self.core.propose(data)
        except NotLeader as exc:
            if exc.leader is None:
                raise NoLeader() from None
            raise NotLeaderError(exc.leader) from None
        except ProposalDropped as exc:
            raise NoLeader(str(exc)) from None
        return await self._wait(term, index)

    async def _wait(self, term: int, index: int):
        # No asyncio.wait_for (a timer and a wrapping future per write): the ticker fails the
        # waiters whose deadline passed (`_expire_waiters`).
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        waiter = _Waiter(term, fut, loop.time() + PROPOSE_TIMEOUT_S)
        old = self._waiters.get(index)
        if old is not None and not old.future.done():  # an entry of an older term was replaced
            old.future.set_exception(NoLeader("leadership changed before the write committed"))
        self._waiters[index] = waiter
        self._wake.set()
        t0 = time.perf_counter()
        try:
            return await fut
        finally:
            self.stats["wait_us"] += int(1e6 * (time.perf_counter() - t0))
            if self._waiters.get(index) is waiter:
                del self._waiters[index]

    def _expire_waiters(self) -> None:
        """Writes not committed within PROPOSE_TIMEOUT_S fail (checked every tick)."""
        now = asyncio.get_running_loop().time()
        for w in self._waiters.values():
            if w.deadline <= now and not w.future.done():
                w.future.set_exception(NoLeader("the write was not committed in time"))

    def peer_connected(self, peer: str) -> None:
        if self.core is not None:
            self.core.report_connected(peer)
            self._wake.set()

    async def rekey(self, crypter: Crypter) -> None:
        """Rewrite the whole storage sealed with `crypter`'s key and write with it from now on.
        Done by the ready loop between two Readies with `_in_ready` set, so no save (not even
        an inline one, see _handle_ready_now) runs meanwhile."""
        fut = asyncio.get_running_loop().create_future()
        self._rekeys.append((crypter, fut))
        self._wake.set()
        await fut

    async def _run_rekeys(self) -> None:
        while self._rekeys:
            crypter, fut = self._rekeys.pop(0)
            # Shielded, and awaited by close(): the storage must not be closed mid-rewrite.
            self._rekey_job = asyncio.ensure_future(asyncio.to_thread(self.storage.rekey, crypter))
            try:
                await asyncio.shield(self._rekey_job)
                self.crypter = crypter
            except asyncio.CancelledError:
                if not fut.done():
                    fut.set_exception(NoLeader("manager shutting down"))
                raise
            except Exception as exc:  # the caller reports it; the loop must keep running
                if not fut.done():
                    fut.set_exception(exc)
                continue
            if not fut.done():
                fut.set_result(None)

    def transfer_leadership(self, target: str) -> None:
        self.core.transfer_leadership(target)
        self._wake.set()

    # --- the loops --------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._flush_inbox()
            self.core.tick()
            self._expire_waiters()
            self._wake.set()

    def _flush_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for m in inbox:
            try:
                self.core.step(m)
            except Exception as exc:  # a malformed or hostile message must not stop the node
                log.warning("raft message from %s dropped: %s", m.frm, exc)

    async def _ready_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._in_ready = True
            try:
                self._flush_inbox()
                while self.core.has_ready():
                    rd = self.core.ready()
                    self._before_persist(rd)
                    if _needs_sync(rd):
                        await self._persister.run(self.storage.save, rd.hard_state, rd.entries, rd.snapshot,
                                                  rd.must_sync)
                    self._after_persist(rd)
                if self.core.should_snapshot():
                    await self._snapshot()
                if self._rekeys:
                    await self._run_rekeys()
            finally:
                self._in_ready = False

    def _handle_ready_now(self) -> bool:
        """Handle the pending input and its Readies here and now, when that needs no waiting
        (the ready loop is between Readies and writes go inline). Under load an event-loop
        round is long (every connection's requests are parsed in it), so the ready loop's
        turn comes late; an acknowledgement that commits writes should not wait for it."""
        if self._in_ready or self._persister.threaded or self.core is None or self._closed:
            return False
        self._in_ready = True
        try:
            self._flush_inbox()
            while self.core.has_ready():
                rd = self.core.ready()
                self._before_persist(rd)
                if _needs_sync(rd):
                    self._persister.run_inline(self.storage.save, rd.hard_state, rd.entries, rd.snapshot,
                                               rd.must_sync)
                self._after_persist(rd)
        finally:
            self._in_ready = False
        if self.core.should_snapshot():
            self._wake.set()  # the ready loop takes it (it writes a file)
        return True

    def _before_persist(self, rd: Ready) -> None:
        stats = self.stats
        stats["readies"] += 1
        stats["entries"] += len(rd.entries)
        stats["messages"] += len(rd.messages)
        if _needs_sync(rd):
            stats["syncs"] += 1
        if rd.send_first and rd.messages:
            self.send(rd.messages)  # the followers write these entries while we do

    def _after_persist(self, rd: Ready) -> None:
        if rd.hard_state is not None and not _needs_sync(rd):
            # Only the commit index moved: recorded without an fsync (it is recomputed after a
            # crash), so not worth a trip through the persister.
            self.storage.save(rd.hard_state, [], None, False)
        if rd.messages and not rd.send_first:
            self.send(rd.messages)
        if rd.snapshot is not None and rd.snapshot.index:
            with gc_paused():
                self.store.restore(msgpack.unpackb(rd.snapshot.data, raw=False))
            self._fail_waiters_upto(rd.snapshot.index)
        for entry in rd.committed_entries:
            self._apply(entry)
        self.core.advance(rd)
        self._flush_inbox()
        if rd.soft_state is not None:
            self._role_changed()

    def _role_changed(self) -> None:
        leader = self.is_leader
        if leader != self._was_leader:
            self._was_leader = leader
            log.info("raft: %s (term %d)", "became leader" if leader else "no longer leader", self.core.term)
            if not leader:
                for w in list(self._waiters.values()):
                    if not w.future.done():
                        w.future.set_exception(NoLeader("leadership changed before the write committed"))
            self.on_role_change(leader)

    def _apply(self, entry: Entry) -> None:
        waiter = self._waiters.get(entry.index)
        if waiter is not None and waiter.term != entry.term:
            if not waiter.future.done():
                waiter.future.set_exception(NoLeader("leadership changed before the write committed"))
            waiter = None
        if entry.type == ENTRY_CONF:
            cc = ConfChange.decode(entry.data)
            self.store.index = entry.index
            self.on_conf_change(cc)
            if waiter and not waiter.future.done():
                waiter.future.set_result([])
            return
        if not entry.data:  # a new leader's no-op
            self.store.index = entry.index
            return
        try:
            body = msgpack.unpackb(entry.data, raw=False)
            actions = [Action.from_wire(a) for a in body["Actions"]]
            result = self.store.apply(entry.index, body["Time"], actions, owned=True)
        except StoreError as exc:
            self.store.index = entry.index
            if waiter and not waiter.future.done():
                waiter.future.set_exception(exc)
            return
        except Exception as exc:  # undecodable: refused identically on every manager
            self.store.index = entry.index
            log.warning("raft entry %d could not be applied: %s", entry.index, exc)
            if waiter and not waiter.future.done():
                waiter.future.set_exception(StoreError(f"entry {entry.index}: {exc}"))
            return
        if waiter and not waiter.future.done():
            waiter.future.set_result(result)

    def _fail_waiters_upto(self, index: int) -> None:
        for i, w in list(self._waiters.items()):
            if i <= index and not w.future.done():
                w.future.set_exception(NoLeader("replaced by a snapshot from the leader"))

    async def _snapshot(self) -> None:
        index = self.core.applied
        data = msgpack.packb(self.store.snapshot(), use_bin_type=True)
        snap = self.core.create_snapshot(index, data)
        # Always in a thread: a snapshot file can be large, and this is rare. `_in_ready` is set
        # meanwhile, so no other write touches the WAL at the same time.
        await asyncio.to_thread(self.storage.save_snapshot, snap)
        self.core.compact()
