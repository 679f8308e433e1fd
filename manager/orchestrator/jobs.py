"""Jobs: services whose tasks run to completion, as SwarmKit's job orchestrators run them.

A replicated job runs until TotalCompletions tasks have completed, at most MaxConcurrent at a
time; a global job runs once on every eligible node (nodes that join later run it too). A task
that completed is never restarted; a failed one is, under the restart policy (on-failure by
default), in its slot. Every spec update starts a new iteration (JobStatus.JobIteration): tasks
of older iterations are stopped and kept as history.
"""
from __future__ import annotations

import copy
from typing import Callable

from api.objects import JobStatus, Node, Service, Task, Version, is_terminal
from manager.orchestrator.replicated import (
    ACTIVE_DESIRED, Plan, _settle_unassigned_shutdowns, new_task, reap_history, reconcile_slot, restart_policy,
)
from manager.store import Action


def iteration(service: Service) -> int:
    return service.job_status.job_iteration.index if service.job_status else 0


def _of(t: Task) -> int:
    return t.job_iteration.index if t.job_iteration else 0


def total_completions(service: Service) -> int:
    rj = service.spec.mode.replicated_job
    if rj is None:
        return 0
    return rj.max_concurrent if rj.total_completions is None else rj.total_completions


def job_status_action(service: Service) -> Action | None:
    """A job gets its JobStatus when it is first seen (iteration 0, executed when created)."""
    if service.job_status is not None:
        return None
    new = copy.deepcopy(service)
    new.job_status = JobStatus(job_iteration=Version(0), last_execution=service.created_at)
    return Action("update", "service", new)


def _retire_old_iterations(tasks: list[Task], current: int) -> list[Action]:
    return [Action("task_desired", "task", "shutdown", t.id) for t in tasks
            if _of(t) != current and t.desired_state in ACTIVE_DESIRED]


def _mark_completed(tasks: list[Task]) -> list[Action]:
    """A completed job task is done for good: its desired state says so, as in Docker."""
    return [Action("task_desired", "task", "complete", t.id) for t in tasks
            if t.status.state == "complete" and t.desired_state in ACTIVE_DESIRED]


def reconcile_replicated_job(service: Service, tasks: list[Task], now: float, new_id: Callable[[], str],
                             history_limit: int = 5, down_nodes: frozenset[str] = frozenset()) -> Plan:
    plan = Plan()
    current = iteration(service)
    plan.actions.extend(_retire_old_iterations(tasks, current))
    mine = [t for t in tasks if _of(t) == current]
    plan.actions.extend(_mark_completed(mine))
    slots: dict[int, list[Task]] = {}
    for t in mine:
        slots.setdefault(t.slot, []).append(t)
    completed = {s for s, h in slots.items() if any(t.status.state == "complete" for t in h)}
    running = {s for s, h in slots.items() if s not in completed
               and reconcile_slot(service, h, now, new_id, plan, slot=s, down_nodes=down_nodes)}

    rj = service.spec.mode.replicated_job
    total = total_completions(service)
    room = min(rj.max_concurrent - len(running), total - len(completed) - len(running))
    used = completed | running
    free = (n for n in range(1, total + len(used) + 1) if n not in used)
    for _ in range(max(0, room)):
        plan.actions.append(Action("create", "task", new_task(service, next(free), new_id(), now)))

    everything: dict[int, list[Task]] = {}
    for t in tasks:
        everything.setdefault(t.slot, []).append(t)
    plan.actions.extend(reap_history(everything, history_limit, restart_policy(service),
                                     keep=lambda t: _of(t) == current and t.status.state == "complete"))
    plan.actions.extend(_settle_unassigned_shutdowns(tasks, now))
    return plan


def reconcile_global_job(service: Service, tasks: list[Task], nodes: list[Node], now: float,
                         new_id: Callable[[], str], eligible: Callable[[Node], bool], history_limit: int = 5) -> Plan:
    """Once per eligible node. A node that is down keeps its task until it returns; a node that
    stops being eligible has its unfinished task stopped."""
    plan = Plan()
    current = iteration(service)
    plan.actions.extend(_retire_old_iterations(tasks, current))
    mine = [t for t in tasks if _of(t) == current]
    plan.actions.extend(_mark_completed(mine))
    by_node: dict[str, list[Task]] = {}
    for t in mine:
        by_node.setdefault(t.node_id, []).append(t)
    known = {n.id for n in nodes}
    for node in nodes:
        history = by_node.get(node.id, [])
        if any(t.status.state == "complete" for t in history):
            continue
        if not eligible(node):
            plan.actions.extend(Action("task_desired", "task", "shutdown", t.id)
                                for t in history if t.desired_state in ACTIVE_DESIRED)
            continue
        occupied = reconcile_slot(service, history, now, new_id, plan, node_id=node.id)
        if not occupied and not history and node.spec.availability == "active":
            plan.actions.append(Action("create", "task", new_task(service, 0, new_id(), now, node_id=node.id)))
    for node_id, history in by_node.items():
        if node_id not in known:
            plan.actions.extend(Action("task_desired", "task", "shutdown", t.id)
                                for t in history if t.desired_state in ACTIVE_DESIRED and not is_terminal(t.status.state))
    everything: dict[str, list[Task]] = {}
    for t in tasks:
        everything.setdefault(t.node_id, []).append(t)
    plan.actions.extend(reap_history(everything, history_limit, restart_policy(service),
                                     keep=lambda t: _of(t) == current and t.status.state == "complete"))
    plan.actions.extend(_settle_unassigned_shutdowns(tasks, now))
    return plan
