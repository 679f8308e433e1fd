"""Reconciles a replicated service with its tasks: a pure function of the service, its tasks and
the clock, returning the store actions that move the cluster toward the spec.

As in SwarmKit, a task runs once; a replacement is a new task in the same slot. A failed task is
shut down at once and its replacement is created with desired state `ready`, then promoted to
`running` when the restart delay has passed, so the delay is visible and survives a leader change.

The same `ready` state serves a stop-first update: the updater creates the new task `ready` next
to the old one it stops, and the slot logic promotes it once the old task has stopped (with no
restart delay, since the old task did not end by itself). Slot logic and updater never act on the
same slot in one pass: the updater only takes slots that `slot_settled` says need nothing here.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Iterable

from api.ids import parse_timestamp, timestamp
from api.objects import SECOND, RestartPolicy, Service, Task, TaskStatus, Version, is_terminal, state_rank
from manager.store import Action

DEFAULT_RESTART_DELAY = 5 * SECOND  # Swarm's default
# A replacement waits this long at most for the task it replaces to stop (Swarm's old-task timeout).
OLD_TASK_TIMEOUT = 60.0

ACTIVE_DESIRED = ("ready", "running")
# Tasks that ended on their own (not because they were told to stop): these are what the restart
# policy restarts, counts against max-attempts, and delays the replacement of.
ENDED_BY_ITSELF = frozenset({"failed", "rejected", "complete"})


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    wake_at: float | None = None  # when to look again even if nothing changes

    def wake(self, at: float | None) -> None:
        if at is not None and (self.wake_at is None or at < self.wake_at):
            self.wake_at = at

    def extend(self, other: "Plan") -> None:
        self.actions.extend(other.actions)
        self.wake(other.wake_at)


def is_job(service: Service) -> bool:
    mode = service.spec.mode
    return mode.replicated_job is not None or mode.global_job is not None


def restart_policy(service: Service) -> RestartPolicy:
    """The service's policy as it is now (an update of the policy applies to running tasks too).
    Jobs never restart a task that completed: `any` means `on-failure` for them, which is also
    their default."""
    policy = service.spec.task_template.restart_policy
    if is_job(service):
        policy = copy.copy(policy) if policy else RestartPolicy(condition="on-failure")
        if policy.condition == "any":
            policy.condition = "on-failure"
    return policy or RestartPolicy()


def should_restart(policy: RestartPolicy, task: Task, slot_history: Iterable[Task], now: float) -> bool:
    """Swarm's restart conditions: `any` restarts every ended task, `on-failure` every one that
    did not complete successfully, `none` never. max_attempts caps the restarts of the slot:
    the tasks before this one that ended by themselves (those ending within `window` when set)."""
    state = task.status.state
    if policy.condition == "none":
        return False
    if policy.condition == "on-failure" and state == "complete":
        return False
    if policy.max_attempts > 0:
        window_start = now - policy.window / SECOND if policy.window else None
        created = _created(task)
        restarts = [t for t in slot_history
                    if t.id != task.id and t.status.state in ENDED_BY_ITSELF and _created(t) <= created
                    and (window_start is None or _ended(t) >= window_start)]
        if len(restarts) >= policy.max_attempts:
            return False
    return True


def new_task(service: Service, slot: int, task_id: str, now: float, desired: str = "running",
             node_id: str = "") -> Task:
    job = service.job_status.job_iteration.index if service.job_status else 0
    return Task(
        id=task_id,
        service_id=service.id,
        slot=slot,
        node_id=node_id,
        spec=copy.deepcopy(service.spec.task_template),
        spec_version=Version(service.version.index),
        labels=dict(service.spec.labels),
        created_at=timestamp(now),
        status=TaskStatus(timestamp=timestamp(now), state="new", message="created"),
        desired_state=desired,
        job_iteration=Version(job) if is_job(service) else None,
    )


def delay_s(policy: RestartPolicy) -> float:
    return (policy.delay if policy.delay is not None else DEFAULT_RESTART_DELAY) / SECOND


def restart_delay_s(service: Service) -> float:
    return delay_s(restart_policy(service))


def _alive(t: Task, down_nodes: frozenset[str]) -> bool:
    """Whether a task may still be running something on a node that can stop it."""
    return (not is_terminal(t.status.state) and state_rank(t.status.state) >= state_rank("assigned")
            and t.node_id not in down_nodes)


def start_time(service: Service, t: Task, history: list[Task], down_nodes: frozenset[str]) -> float:
    """When a `ready` task may be told to run: once every other task of its slot has stopped
    (or OLD_TASK_TIMEOUT after it was created), and, when it replaces a task that ended by itself,
    once that task's restart delay has passed since the replacement was made."""
    created = _created(t)
    others = [o for o in history if o.id != t.id]
    if any(_alive(o, down_nodes) for o in others):
        return created + OLD_TASK_TIMEOUT
    before = [o for o in others if _created(o) <= created]
    if before:
        prev = max(before, key=lambda o: (_created(o), o.id))
        if prev.status.state in ENDED_BY_ITSELF:
            return created + delay_s(restart_policy(service))
    return created


def slot_settled(service: Service, history: list[Task], now: float, down_nodes: frozenset[str]) -> bool:
    """The slot logic has nothing to do in this slot now: every task meant to run is placed on a
    live node and told to run, or has ended for good under its restart policy. Only such slots
    are handed to the updater, so the two never act on one slot in the same pass."""
    active = [t for t in history if t.desired_state in ACTIVE_DESIRED]
    if not active:
        return False
    for t in active:
        if is_terminal(t.status.state):
            if should_restart(restart_policy(service), t, history, now):
                return False
        elif t.desired_state != "running" or t.node_id in down_nodes:
            return False
    return True


def reconcile_slot(service: Service, history: list[Task], now: float, new_id: Callable[[], str], plan: Plan,
                   slot: int = 0, node_id: str = "", down_nodes: frozenset[str] = frozenset()) -> bool:
    """Restart handling for one slot (a slot number, or a node for global services).
    Returns whether the slot is occupied: it has a task that runs or is meant to.
    A task on a node that is down is moved: shut down (the node stops it when it returns)
    and replaced at once elsewhere."""
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
        if should_restart(restart_policy(service), t, history, now):
            plan.actions.append(Action("task_desired", "task", "shutdown", t.id))
            if not live:
                replacement = new_task(service, slot, new_id(), now, desired="ready", node_id=node_id)
                plan.actions.append(Action("create", "task", replacement))
                plan.wake(now + delay_s(restart_policy(service)))
                live.append(replacement)
        # otherwise the ended task keeps its slot, as Swarm leaves a slot whose policy says no restart
    stored = {h.id for h in history}  # a replacement made in this pass waits for the next one
    for t in live:
        if t.desired_state != "ready" or t.id not in stored:
            continue
        at = start_time(service, t, history, down_nodes)
        if at <= now:
            plan.actions.append(Action("task_desired", "task", "running", t.id))
        else:
            plan.wake(at)
    return True


def replicas_of(service: Service) -> int:
    return service.spec.mode.replicated.replicas if service.spec.mode.replicated else 0


def kept_slots(slots: dict[int, list[Task]], replicas: int) -> list[int]:
    """The slots a replicated service keeps: the lowest `replicas` of those with an active task
    (scaling down removes the highest)."""
    active = [s for s, h in sorted(slots.items()) if any(t.desired_state in ACTIVE_DESIRED for t in h)]
    return active[:replicas]


def reconcile_replicated(service: Service, tasks: list[Task], now: float,
                         new_id: Callable[[], str], history_limit: int = 5,
                         down_nodes: frozenset[str] = frozenset()) -> Plan:
    plan = Plan()
    replicas = replicas_of(service)
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

    plan.actions.extend(reap_history(slots, history_limit, restart_policy(service)))
    plan.actions.extend(_settle_unassigned_shutdowns(tasks, now))
    return plan


def _created(t: Task) -> float:
    return parse_timestamp(t.created_at or t.status.timestamp)


def _ended(t: Task) -> float:
    return parse_timestamp(t.status.timestamp or t.created_at)


def reap_history(slots: dict, limit: int, policy: RestartPolicy | None = None,
                 keep: Callable[[Task], bool] | None = None) -> list[Action]:
    """Swarm's task history retention: a slot keeps at most `limit` tasks, the running one
    included; only tasks that ended and are not meant to run are deleted, oldest first. A slot
    keeps more when its restart policy needs them to count max-attempts (the count lives in the
    store, not in memory), and `keep` spares tasks a caller still counts (a job's completions)."""
    if limit < 0:
        return []
    if policy is not None and policy.max_attempts > 0:
        limit = max(limit, policy.max_attempts + 1)
    actions = []
    for history in slots.values():
        excess = len(history) - limit
        if excess <= 0:
            continue
        dead = [t for t in history if is_terminal(t.status.state) and t.desired_state not in ACTIVE_DESIRED
                and not (keep and keep(t))]
        dead.sort(key=lambda t: (_ended(t), t.id))
        for t in dead[:excess]:
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
