"""Reconciles a global service: one task per eligible node, following nodes as they join,
leave, drain or change labels. Pure, like the replicated orchestrator; the slot of a global
task is its node."""
from __future__ import annotations

from typing import Callable

from api.objects import Node, Service, Task
from manager.orchestrator.replicated import (
    ACTIVE_DESIRED, Plan, _settle_unassigned_shutdowns, new_task, reap_history, reconcile_slot, restart_policy,
)
from manager.store import Action


def reconcile_global(service: Service, tasks: list[Task], nodes: list[Node], now: float,
                     new_id: Callable[[], str], eligible: Callable[[Node], bool], history_limit: int = 5) -> Plan:
    """`eligible(node)`: the node may run this service (not drained, constraints hold).
    A paused node keeps its task but gets no new one; a node that is down keeps its task
    until it returns (as Swarm waits for it rather than rescheduling)."""
    plan = Plan()
    by_node: dict[str, list[Task]] = {}
    for t in tasks:
        by_node.setdefault(t.node_id, []).append(t)
    known = {n.id: n for n in nodes}
    for node in nodes:
        history = by_node.get(node.id, [])
        if not eligible(node):
            for t in history:
                if t.desired_state in ACTIVE_DESIRED:
                    plan.actions.append(Action("task_desired", "task", "shutdown", t.id))
            continue
        occupied = reconcile_slot(service, history, now, new_id, plan, node_id=node.id)
        if not occupied and node.spec.availability == "active":
            plan.actions.append(Action("create", "task", new_task(service, 0, new_id(), now, node_id=node.id)))
    for node_id, history in by_node.items():
        if node_id not in known:  # the node was removed from the cluster
            for t in history:
                if t.desired_state in ACTIVE_DESIRED:
                    plan.actions.append(Action("task_desired", "task", "shutdown", t.id))
    plan.actions.extend(reap_history(by_node, history_limit, restart_policy(service)))
    plan.actions.extend(_settle_unassigned_shutdowns(tasks, now))
    return plan
