"""The manager role of a node: the replicated store, its log, and the loops that act on it
(orchestrator, scheduler, dispatcher)."""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from api.ids import new_id
from api.objects import SECOND
from manager.dispatcher import Dispatcher
from manager.orchestrator.replicated import Plan, orphan_actions, reconcile_removed, reconcile_replicated
from manager.orchestrator.global_ import reconcile_global
from manager.scheduling import global_eligible, scheduling_actions
from manager.statelog import LocalLog
from manager.store import Action, Change, Store, StoreError

log = logging.getLogger("shoal.manager")


class Manager:
    def __init__(self, state_dir: Path, node_id: str):
        self.state_dir = state_dir
        self.node_id = node_id
        self.store = Store()
        self.log = LocalLog(self.store, state_dir / "raft")
        self.dispatcher = Dispatcher(self.store, self.propose)
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.store.watch(self._on_change)

    @property
    def cluster(self):
        clusters = self.store.list("cluster")
        return clusters[0] if clusters else None

    def load(self) -> None:
        self.log.load()

    async def start(self) -> None:
        self.log.start()
        self._dirty.set()
        self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="reconcile"))
        self._tasks.append(asyncio.create_task(self.dispatcher.monitor(), name="node-monitor"))

    def heartbeat_period(self) -> int:
        """Nanoseconds between a worker's heartbeats, from the cluster spec."""
        cluster = self.cluster
        period = cluster.spec.dispatcher.heartbeat_period if cluster else 0
        return period or 2 * SECOND

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        await self.log.close()

    async def propose(self, actions: list[Action]) -> list[Change]:
        return await self.log.propose(actions)

    def _on_change(self, changes: list[Change]) -> None:
        self._dirty.set()

    async def _reconcile_loop(self) -> None:
        wake_at: float | None = None
        while True:
            timeout = None if wake_at is None else max(0.0, wake_at - time.time())
            try:
                await asyncio.wait_for(self._dirty.wait(), timeout)
            except asyncio.TimeoutError:
                pass
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
        for sid, svc in services.items():
            if svc.spec.mode.replicated is not None:
                plans.append(reconcile_replicated(svc, by_service.get(sid, []), now, new_id, history, down))
            else:
                eligible = lambda node, tt=svc.spec.task_template: global_eligible(node, tt)
                plans.append(reconcile_global(svc, by_service.get(sid, []), nodes, now, new_id, eligible, history))
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
        actions = scheduling_actions(self.store)
        if actions:
            await self._propose_quietly(actions)
        return wake_at

    async def _propose_quietly(self, actions: list[Action]) -> None:
        try:
            await self.propose(actions)
        except StoreError as exc:  # raced with another change; the next pass sees the new state
            log.debug("reconcile proposal refused: %s", exc)
