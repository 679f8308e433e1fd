"""The manager role of a node: the replicated store, its log, and the loops that act on it
(orchestrator, scheduler, dispatcher)."""
from __future__ import annotations

import asyncio
import copy
import gc
import logging
import ssl
import time
from pathlib import Path
from typing import Callable

from api.ids import new_id
from api.objects import SECOND
from manager.allocator import allocate
from manager.dispatcher import Dispatcher
from manager.orchestrator.orchestrate import orchestrate_service
from manager.orchestrator.replicated import Plan, orphan_actions, reconcile_removed
from manager.scheduling import scheduling_actions
from manager.raft.messages import ConfChange, ConfChangeType
from manager.encryption.aead import Crypter
from manager.raft.node import NoLeader, RaftNode
from manager.raft.storage.wal import PLAINTEXT
from manager.raft.transport import RaftTransport
from manager.store import Action, Change, Store, StoreError

log = logging.getLogger("shoal.manager")

# Passes over the cluster come at most this often under a stream of changes (one alone is
# acted on at once), as SwarmKit's scheduler batches its commits within 50 ms.
RECONCILE_MIN_INTERVAL_S = 0.05
# The collector: the store and the Raft log are large, long-lived object graphs that a full
# collection walks again each time, and every write allocates thousands of young objects;
# collecting the young generation less often costs a little memory and saves most of it.
GC_THRESHOLDS = (20_000, 20, 50)


def tune_gc() -> None:
    """Once per process, when the first manager has loaded its state: freeze what is alive
    (modules, the restored store and log: the collector no longer walks them; they are still
    freed when released) and raise the thresholds (never lowering ones set higher)."""
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.freeze()
    gc.set_threshold(*(max(have, want) for have, want in zip(gc.get_threshold(), GC_THRESHOLDS)))


_gc_tuned = False


class Manager:
    """A manager: every manager holds the replicated store through Raft and answers reads;
    the leader alone runs the orchestrators, the scheduler and the dispatcher, and takes
    writes (the others forward them)."""

    def __init__(self, state_dir: Path, node_id: str, ssl_context: Callable[[], ssl.SSLContext] | None = None,
                 peer_addrs: dict[str, str] | None = None, crypter: Crypter = PLAINTEXT):
        self.state_dir = state_dir
        self.node_id = node_id
        self.store = Store()
        self.ssl_context = ssl_context
        self._peer_addrs: dict[str, str] = dict(peer_addrs or {})
        self.transport = RaftTransport(ssl_context or (lambda: None), self.address_of, self._peer_unreachable,
                                       self._peer_connected)
        self.raft = RaftNode(node_id, state_dir / "raft", self.store, send=self.transport.send,
                             on_role_change=self._role_changed, on_conf_change=self._conf_changed, crypter=crypter)
        self.dispatcher = Dispatcher(self.store, self.propose, members=lambda: sum(self.raft.members(), ()))
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._leader_tasks: list[asyncio.Task] = []
        self.on_leadership: list[Callable[[bool], None]] = []
        self.removed = asyncio.Event()  # set when this manager is removed from the Raft membership
        self.store.watch(self._on_change)

    @property
    def cluster(self):
        clusters = self.store.list("cluster")
        return clusters[0] if clusters else None

    @property
    def is_leader(self) -> bool:
        return self.raft.is_leader

    def leader_addr(self) -> str | None:
        lead = self.raft.leader_id
        return self.address_of(lead) if lead else None

    def address_of(self, node_id: str) -> str:
        node = self.store.get("node", node_id)
        if node is not None and node.manager_status is not None and node.manager_status.addr:
            return node.manager_status.addr
        return self._peer_addrs.get(node_id, "")

    def peer_addrs(self) -> dict[str, str]:
        voters, learners = self.raft.members()
        return {n: self.address_of(n) for n in voters + learners if self.address_of(n)}

    def manager_addrs(self) -> list[str]:
        voters, learners = self.raft.members()
        return [a for a in (self.address_of(n) for n in voters + learners) if a]

    def reachability(self, node_id: str) -> str:
        """The leader's live view; other managers show what the leader last recorded (followers
        do not talk to each other, so only the leader can tell)."""
        if node_id == self.node_id:
            return "reachable"
        if self.is_leader:
            return "reachable" if self.transport.reachable(node_id) else "unreachable"
        node = self.store.get("node", node_id)
        return node.manager_status.reachability if node and node.manager_status else "unknown"

    def load(self, bootstrap: bool = False) -> None:
        self.raft.open(bootstrap)

    async def start(self) -> None:
        tune_gc()
        self.raft.start()

    def heartbeat_period(self) -> int:
        """Nanoseconds between a worker's heartbeats, from the cluster spec."""
        cluster = self.cluster
        period = cluster.spec.dispatcher.heartbeat_period if cluster else 0
        return period or 2 * SECOND

    async def stop(self) -> None:
        await self._stop_leading()
        self.transport.close()
        await self.raft.close()

    async def propose(self, actions: list[Action]) -> list[Change]:
        return await self.raft.propose(actions)

    # --- leadership and membership ----------------------------------------------------------

    def _role_changed(self, leader: bool) -> None:
        if leader:
            self._dirty.set()
            self.dispatcher.grant_grace()
            self._leader_tasks = [
                asyncio.create_task(self._reconcile_loop(), name="reconcile"),
                asyncio.create_task(self.dispatcher.monitor(), name="node-monitor"),
                asyncio.create_task(self._membership_loop(), name="membership"),
            ]
        else:
            asyncio.create_task(self._stop_leading())
        for cb in list(self.on_leadership):
            cb(leader)

    async def _stop_leading(self) -> None:
        tasks, self._leader_tasks = self._leader_tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self.dispatcher.last_heartbeat.clear()

    def _conf_changed(self, cc: ConfChange) -> None:
        if cc.context:
            self._peer_addrs[cc.node_id] = cc.context.decode(errors="replace")
        if cc.type == ConfChangeType.REMOVE:
            self.transport.forget(cc.node_id)
            if cc.node_id == self.node_id:
                self.removed.set()

    def _peer_unreachable(self, peer_id: str) -> None:
        if self.raft.core is not None and self.is_leader:
            self.raft.core.report_unreachable(peer_id)

    def _peer_connected(self, peer_id: str) -> None:
        self.raft.peer_connected(peer_id)

    def step(self, msg) -> None:
        self.transport.heard_from(msg.frm)
        self.raft.step(msg)

    def step_many(self, msgs: list) -> None:
        """The messages of one frame from a peer."""
        for frm in {m.frm for m in msgs}:
            self.transport.heard_from(frm)
        self.raft.step_many(msgs)

    async def forward(self, method: str, path_qs: str, body: bytes, content_type: str,
                      headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
        """Send a write that reached a follower to the leader's control API (mutual TLS);
        `headers` adds request headers (a service's X-Registry-Auth)."""
        import aiohttp
        leader = self.leader_addr()
        if not leader or self.raft.leader_id == self.node_id:
            raise NoLeader()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30, sock_connect=2)) as http:
                async with http.request(method, f"https://{leader}/control{path_qs}", data=body,
                                        headers={**(headers or {}), "Content-Type": content_type},
                                        ssl=self.ssl_context()) as resp:
                    return resp.status, await resp.read(), resp.content_type
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise NoLeader(f"the leader at {leader} could not be reached: {exc or type(exc).__name__}") from None

    async def add_manager(self, node_id: str, addr: str) -> None:
        """A new manager joins as a learner; the membership loop promotes it to voter once it
        has caught up, so it never holds back the quorum while it is behind."""
        self._peer_addrs[node_id] = addr
        await self.raft.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, node_id, addr.encode()))

    async def remove_manager(self, node_id: str) -> None:
        voters, learners = self.raft.members()
        if node_id not in voters and node_id not in learners:
            return
        await self.raft.propose_conf_change(ConfChange(ConfChangeType.REMOVE, node_id))

    async def _record_reachability(self) -> None:
        changed = []
        for node in self.store.list("node"):
            if node.manager_status is None:
                continue
            live = self.reachability(node.id)
            if node.manager_status.reachability != live:
                new = copy.deepcopy(node)
                new.manager_status.reachability = live
                changed.append(Action("update", "node", new))
        if changed:
            try:
                await self.propose(changed)
            except StoreError:
                pass  # raced with another node update; next round

    async def _follow_roles(self) -> None:
        """Make the Raft membership follow the roles in the store: a promoted node joins as a
        learner once it holds a manager certificate; a demoted one leaves."""
        voters, learners = self.raft.members()
        members = set(voters) | set(learners)
        for node in self.store.list("node"):
            try:
                if (node.spec.role == "manager" and node.id not in members and node.manager_status
                        and node.status.state == "ready" and self.dispatcher.session_roles.get(node.id) == "manager"):
                    await self.add_manager(node.id, node.manager_status.addr)
                    log.info("manager %s added as a learner", node.id)
                elif node.spec.role == "worker" and node.id in members:
                    await self.remove_manager(node.id)
                    log.info("manager %s removed from the Raft membership", node.id)
                elif node.spec.role == "worker" and node.manager_status is not None:
                    new = copy.deepcopy(node)
                    new.manager_status = None
                    await self.propose([Action("update", "node", new)])
            except StoreError as exc:
                log.debug("membership change for %s postponed: %s", node.id, exc)

    async def _membership_loop(self) -> None:
        while True:
            await asyncio.sleep(0.3)
            core = self.raft.core
            if core is None or not self.is_leader:
                continue
            await self._record_reachability()
            await self._follow_roles()
            _, learners = self.raft.members()
            for learner in learners:
                pr = core.progress(learner)
                if pr is not None and pr.match >= core.committed - 5:
                    try:
                        await self.raft.propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, learner,
                                                                       self.address_of(learner).encode()))
                        log.info("manager %s caught up and is now a voter", learner)
                    except StoreError as exc:
                        log.debug("promotion of %s postponed: %s", learner, exc)

    def _on_change(self, changes: list[Change]) -> None:
        self._dirty.set()

    async def _reconcile_loop(self) -> None:
        wake_at: float | None = None
        last_pass = 0.0
        while True:
            timeout = None if wake_at is None else max(0.0, wake_at - time.time())
            try:
                await asyncio.wait_for(self._dirty.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            # A pass looks at every service, task and node: under a stream of writes, one pass
            # per applied entry would cost O(cluster) each. Changes that arrive within
            # RECONCILE_MIN_INTERVAL_S of the last pass wait for the next one, together.
            pause = last_pass + RECONCILE_MIN_INTERVAL_S - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            last_pass = time.monotonic()
            self._dirty.clear()
            try:
                wake_at = await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the control loop alive; the next change retries
                log.exception("reconcile pass failed")
                wake_at = time.time() + 1.0

    async def reconcile_once(self) -> float | None:
        """One orchestrator pass and one scheduler pass. Returns when to look again."""
        now = time.time()
        cluster = self.cluster
        history = cluster.spec.orchestration.task_history_retention_limit if cluster else 5
        plans: list[Plan] = []
        services = {s.id: s for s in self.store.list("service")}
        by_service: dict[str, list] = {}
        for t in self.store.list("task"):
            by_service.setdefault(t.service_id, []).append(t)
        nodes = self.store.list("node")
        self.dispatcher.heartbeat_s = self.heartbeat_period() / SECOND
        # Tasks move off nodes that are down, drained, or gone.
        down = frozenset(n.id for n in nodes if n.status.state == "down" or n.spec.availability == "drain") | (
            frozenset(t.node_id for t in self.store.list("task") if t.node_id) - {n.id for n in nodes})
        for sid, svc in services.items():  # modes, restarts, rolling updates, jobs: see manager/orchestrator
            plans.append(orchestrate_service(svc, by_service.get(sid, []), nodes, now, new_id,
                                             history_limit=history, down_nodes=down))
        for sid, tasks in by_service.items():
            if sid not in services:
                plans.append(reconcile_removed(tasks, now))
        orphans = orphan_actions(self.store.list("task"), {n.id for n in nodes}, now)
        if orphans:
            plans.append(Plan(actions=orphans))
        wake_at = None
        for plan in plans:
            if plan.wake_at is not None:
                wake_at = plan.wake_at if wake_at is None else min(wake_at, plan.wake_at)
            if plan.actions:
                await self._propose_quietly(plan.actions)
        await allocate(self.store, self.propose, new_id)  # networks, addresses, ports: new -> pending
        actions = scheduling_actions(self.store)
        if actions:
            await self._propose_quietly(actions)
        return wake_at

    async def _propose_quietly(self, actions: list[Action]) -> None:
        try:
            await self.propose(actions)
        except StoreError as exc:  # raced with another change; the next pass sees the new state
            log.debug("reconcile proposal refused: %s", exc)
