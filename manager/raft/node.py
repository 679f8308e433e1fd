"""The asyncio runner around the pure Raft core: ticks, durable storage, the transport, and the
store as the replicated state machine. It offers the same `propose(actions)` as the single-member
log it replaces, so the callers did not change.

Each Ready is handled in the order the core's contract requires: persist (fsync) in a thread,
then send its messages, then apply its committed entries to the store, then advance.
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
from manager.raft.core import NotLeader, ProposalDropped, RaftConfig, RaftCore, Role, initial_state
from manager.raft.messages import ENTRY_CONF, ConfChange, ConfChangeType, Entry, Message
from manager.encryption.aead import Crypter
from manager.raft.storage.disk import DiskStorage
from manager.raft.storage.wal import PLAINTEXT
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


@dataclass
class _Waiter:
    term: int
    future: asyncio.Future


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
    _rekeys: list[tuple[Crypter, asyncio.Future]] = field(default_factory=list)
    _rekey_job: asyncio.Future | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def open(self, bootstrap: bool = False) -> None:
        """Open the storage and rebuild the store from its snapshot and log. `bootstrap` founds a
        new cluster with this node as its only voter; a joining node starts empty and learns
        everything from the leader."""
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
        fut = asyncio.get_running_loop().create_future()
        self._waiters[index] = _Waiter(term, fut)
        self._wake.set()
        try:
            return await asyncio.wait_for(fut, PROPOSE_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise NoLeader("the write was not committed in time") from None
        finally:
            self._waiters.pop(index, None)

    async def rekey(self, crypter: Crypter) -> None:
        """Rewrite the whole storage sealed with `crypter`'s key and write with it from now on.
        Done by the ready loop between two Readys, so no save runs meanwhile."""
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
            self._flush_inbox()
            while self.core.has_ready():
                rd = self.core.ready()
                if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
                    await asyncio.to_thread(self.storage.save, rd.hard_state, rd.entries, rd.snapshot,
                                            rd.must_sync)
                if rd.messages:
                    self.send(rd.messages)
                if rd.snapshot is not None and rd.snapshot.index:
                    self.store.restore(msgpack.unpackb(rd.snapshot.data, raw=False))
                    self._fail_waiters_upto(rd.snapshot.index)
                for entry in rd.committed_entries:
                    self._apply(entry)
                self.core.advance(rd)
                self._flush_inbox()
                if rd.soft_state is not None:
                    self._role_changed()
            if self.core.should_snapshot():
                await self._snapshot()
            if self._rekeys:
                await self._run_rekeys()

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
            result = self.store.apply(entry.index, body["Time"], actions)
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
        await asyncio.to_thread(self.storage.save_snapshot, snap)
        self.core.compact()
