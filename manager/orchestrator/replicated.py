"""Reconciles a replicated service with its tasks: a pure function of the service, its tasks and
the clock, returning the store actions that move the cluster toward the spec.

As in SwarmKit, a task runs once; a replacement is a new task in the same slot. A failed task is
shut down at once and its replacement is created with desired state `ready`, then promoted to
`running` when the restart delay has passed, so the delay is visible and survives a leader change.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Iterable

from api.ids import parse_timestamp, timestamp
from api.objects import SECOND, RestartPolicy, Service, Task, TaskStatus, Version, is_terminal, state_rank
from manager.store import Action

DEFAULT_RESTART_DELAY = 5 * SECOND  # Swarm's default

ACTIVE_DESIRED = ("ready", "running")


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    wake_at: float | None = None  # when to look again even if nothing changes

    def wake(self, at: float) -> None:
        if self.wake_at is None or at < self.wake_at:
            self.wake_at = at


def restart_policy(service: Service) -> RestartPolicy:
    return service.spec.task_template.restart_policy or RestartPolicy()


def should_restart(policy: RestartPolicy, task: Task, slot_history: Iterable[Task], now: float) -> bool:
    """Swarm's restart conditions: `any` restarts every ended task, `on-failure` only a failed
    or rejected one, `none` never. max_attempts counts restarts in the slot (within `window` when set)."""
    state = task.status.state
    if policy.condition == "none":
        return False
    if policy.condition == "on-failure" and state not in ("failed", "rejected"):
        return False
    if policy.max_attempts > 0:
        window_start = now - policy.window / SECOND if policy.window else None
        ended = [t for t in slot_history if is_terminal(t.status.state) and t.id != task.id
                 and (window_start is None or parse_timestamp(t.status.timestamp) >= window_start)]
        if len(ended) >= policy.max_attempts:
            return False
    return True


def new_task(service: Service, slot: int, task_id: str, now: float, desired: str = "running",
             node_id: str = "") -> Task:
    return Task(
        id=task_id,
        service_id=service.id,
        slot=slot,
        node_id=node_id,
        spec=copy.deepcopy(service.spec.task_template),
        spec_version=Version(service.version.index),
        labels=dict(service.spec.labels),
        status=TaskStatus(timestamp=timestamp(now), state="new", message="created"),
        desired_state=desired,
    )


def restart_delay_s(service: Service) -> float:
    policy = restart_policy(service)
    return (policy.delay if policy.delay is not None else DEFAULT_RESTART_DELAY) / SECOND


def reconcile_slot(service: Service, history: list[Task], now: float, new_id: Callable[[], str], plan: Plan,
                   slot: int = 0, node_id: str = "", down_nodes: frozenset[str] = frozenset()) -> bool:
    """Restart handling for one slot (a slot number, or a node for global services).
    Returns whether the slot is occupied: it has a task that runs or is meant to.
    A task on a node that is down is moved: shut down (the node stops it when it returns)
    and replaced at once elsewhere."""
    policy = restart_policy(service)
    delay = restart_delay_s(service)
    active = [t for t in history if t.desired_state in ACTIVE_DESIRED]
    if not active:
        return False
    stranded = [t for t in active if t.node_id in down_nodes and not is_terminal(t.status.state)]
    live = [t for t in active if not is_terminal(t.status.state) and t not in stranded]
    ended = [t for t in active if is_terminal(t.status.state)]
    for t in stranded:
        plan.actions.append(Action("task_desired", "task", "shutdown", t.id))
        if not live:
            replacement = new_task(service, slot, new_id(), now, node_id=node_id)
            plan.actions.append(Action("create", "task", replacement))
            live.append(replacement)
    for t in ended:
        if should_restart(policy, t, history, now):
            plan.actions.append(Action("task_desired", "task", "shutdown", t.id))
            if not live:
                replacement = new_task(service, slot, new_id(), now, desired="ready", node_id=node_id)
                plan.actions.append(Action("create", "task", replacement))
                plan.wake(now + delay)
                live.append(replacement)
        # otherwise the ended task keeps its slot, as Swarm leaves a slot whose policy says no restart
    for t in live:
        if t.desired_state == "ready" and _created(t) + delay <= now:
            plan.actions.append(Action("task_desired", "task", "running", t.id))
        elif t.desired_state == "ready":
            plan.wake(_created(t) + delay)
    return True


def reconcile_replicated(service: Service, tasks: list[Task], now: float,
                         new_id: Callable[[], str], history_limit: int = 5,
                         down_nodes: frozenset[str] = frozenset()) -> Plan:
    plan = Plan()
    replicas = service.spec.mode.replicated.replicas if service.spec.mode.replicated else 0
    slots: dict[int, list[Task]] = {}
    for t in tasks:
        slots.setdefault(t.slot, []).append(t)

    active_slots = [slot for slot, history in sorted(slots.items())
                    if reconcile_slot(service, history, now, new_id, plan, slot=slot, down_nodes=down_nodes)]

    # Scale: fill the lowest free slot numbers, remove the highest.
    if len(active_slots) < replicas:
        used = set(active_slots)
        free = (n for n in range(1, replicas + len(used) + 1) if n not in used)
        for _ in range(replicas - len(active_slots)):
            plan.actions.append(Action("create", "task", new_task(service, next(free), new_id(), now)))
    elif len(active_slots) > replicas:
        for slot in sorted(active_slots)[replicas:]:
            for t in slots[slot]:
                if t.desired_state in ACTIVE_DESIRED:
                    plan.actions.append(Action("task_desired", "task", "shutdown", t.id))

    plan.actions.extend(_reap_history(slots, history_limit))
    plan.actions.extend(_settle_unassigned_shutdowns(tasks, now))
    return plan


def _created(t: Task) -> float:
    return parse_timestamp(t.created_at or t.status.timestamp)


def _reap_history(slots: dict[int, list[Task]], limit: int) -> list[Action]:
    """Keep at most `limit` ended tasks per slot (Swarm's task history retention)."""
    actions = []
    for history in slots.values():
        dead = [t for t in history if is_terminal(t.status.state) and t.desired_state not in ACTIVE_DESIRED]
        dead.sort(key=lambda t: (parse_timestamp(t.status.timestamp), t.id))
        for t in dead[: max(0, len(dead) - limit)]:
            actions.append(Action("delete", "task", None, t.id))
    return actions


def _settle_unassigned_shutdowns(tasks: list[Task], now: float) -> list[Action]:
    """A task told to stop before any node took it has nothing to stop: mark it shut down."""
    out = []
    for t in tasks:
        if t.desired_state not in ACTIVE_DESIRED and state_rank(t.status.state) < state_rank("assigned"):
            out.append(Action("task_status", "task",
                              TaskStatus(timestamp=timestamp(now), state="shutdown", message="shutdown before assignment"),
                              t.id))
    return out


def reconcile_removed(tasks: list[Task], now: float) -> Plan:
    """Tasks whose service is gone: stop them, then delete them once they have ended."""
    plan = Plan()
    for t in tasks:
        if t.desired_state != "remove":
            plan.actions.append(Action("task_desired", "task", "remove", t.id))
        elif is_terminal(t.status.state):
            plan.actions.append(Action("delete", "task", None, t.id))
    plan.actions.extend(_settle_unassigned_shutdowns(tasks, now))
    return plan


def orphan_actions(tasks: list[Task], known_nodes: set[str], now: float) -> list[Action]:
    """Tasks left on a node that was removed from the cluster can never report again."""
    return [Action("task_status", "task", TaskStatus(timestamp=timestamp(now), state="orphaned",
                                                     message="node removed from the cluster"), t.id)
            for t in tasks if t.node_id and t.node_id not in known_nodes and not is_terminal(t.status.state)]
