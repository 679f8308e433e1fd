"""Rolling updates and rollbacks, with SwarmKit's semantics, as a pure function of the service,
its tasks, the nodes and the clock.

Nothing is kept in memory between passes, so a new leader resumes an update where the old one
was. Everything is read back from the store each time:

- the update in progress: `Service.UpdateStatus` (its state and StartedAt);
- the slots this update has already taken: those holding a task on the current spec created at
  or after StartedAt (a "fresh" task); an update never takes a slot twice;
- the slots in flight, which parallelism caps: a fresh task that has not come up yet, a
  start-first slot whose old task still runs, or a fresh task that came up (or ended) less than
  `delay` ago — the task's status timestamp says when;
- failures: fresh tasks that ended (failed, rejected, or exited) within `monitor` of their start.
  A task's start is not stored once it has ended, so it is taken as the latest of its creation
  and the end of the task it replaced (a stop-first task starts as soon as the old one stopped):
  never later than the real start, so a task that ended within `monitor` always counts.

The updater takes only slots the slot logic leaves alone in this pass (`slot_settled`); the slot
logic promotes stop-first replacements once the old task has stopped (see replicated.py).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Hashable

from api.ids import parse_timestamp, timestamp
from api.objects import SECOND, Node, Service, Task, UpdateConfig, UpdateStatus, is_terminal, state_rank
from manager.orchestrator.replicated import ACTIVE_DESIRED, new_task, slot_settled
from manager.scheduling import global_eligible
from manager.store import Action

UPDATING = "updating"
PAUSED = "paused"
COMPLETED = "completed"
ROLLBACK_STARTED = "rollback_started"
ROLLBACK_PAUSED = "rollback_paused"
ROLLBACK_COMPLETED = "rollback_completed"

IN_PROGRESS = (UPDATING, ROLLBACK_STARTED)
# A fresh task ending in one of these within the monitor window counts as a failed update.
FAILURE_STATES = frozenset({"failed", "rejected", "complete"})

DEFAULT_UPDATE = UpdateConfig()  # Swarm's defaults: 1 at a time, no delay, pause, 5 s monitor, stop-first
DEFAULT_ROLLBACK = UpdateConfig()


@dataclass
class UpdatePlan:
    actions: list[Action] = field(default_factory=list)
    wake_at: float | None = None
    service: Service | None = None  # the service to write back: a new UpdateStatus, or a rollback
    spec_changed: bool = False  # a rollback replaced the spec: act on it in the next pass

    def wake(self, at: float | None) -> None:
        if at is not None and (self.wake_at is None or at < self.wake_at):
            self.wake_at = at


def config_for(service: Service, rollback: bool) -> UpdateConfig:
    if rollback:
        return service.spec.rollback_config or DEFAULT_ROLLBACK
    return service.spec.update_config or DEFAULT_UPDATE


def _pulled(task: Task) -> bool:
    """Meant to run, and between ready and running: its node has the image already."""
    return (state_rank(task.desired_state) <= state_rank("running")
            and state_rank("ready") <= state_rank(task.status.state) <= state_rank("running"))


def is_dirty(service: Service, task: Task, node: Node | None = None) -> bool:
    """The task was made from another spec than the service's current task template (a changed
    ForceUpdate counts). As in Swarm, a change of placement constraints alone leaves a task
    whose node still satisfies the new constraints where it is."""
    template = service.spec.task_template
    if task.spec == template:
        return False
    if _pulled(task) and template.container_spec.pull_options != task.spec.container_spec.pull_options:
        # As Swarm: new registry credentials alone do not replace a task that has its image
        # already (swarmkit#971); they are for the pulls still to come.
        template = copy.deepcopy(template)
        template.container_spec.pull_options = task.spec.container_spec.pull_options
        if task.spec == template:
            return False
    if node is None or template.placement is None:
        return True
    same = copy.copy(task.spec)
    same.placement = copy.copy(task.spec.placement) if task.spec.placement else copy.copy(template.placement)
    same.placement.constraints = list(template.placement.constraints)
    if same != template:
        return True
    return not global_eligible(node, template)


def _ts(text: str) -> float:
    return parse_timestamp(text)


def _created(t: Task) -> float:
    return _ts(t.created_at or t.status.timestamp)


def _progress(t: Task) -> float | None:
    """When the task came up (running) or ended: the moment Swarm's updater moves on from it."""
    if t.status.state == "running" or is_terminal(t.status.state):
        return _ts(t.status.timestamp)
    return None


def _start_estimate(t: Task, history: list[Task]) -> float:
    created, end = _created(t), _ts(t.status.timestamp)
    prior = [_ts(o.status.timestamp) for o in history
             if o.id != t.id and is_terminal(o.status.state) and _created(o) < created
             and _ts(o.status.timestamp) <= end]
    return max([created] + prior)


def finish_start_first(history: list[Task], dirty: Callable[[Task], bool]) -> list[Action]:
    """Once a task on the current spec runs in a slot, the slot's other tasks meant to run stop
    (the second half of a start-first replacement, or of a rollback met half-way)."""
    if not any(t.desired_state == "running" and t.status.state == "running" and not dirty(t) for t in history):
        return []
    return [Action("task_desired", "task", "shutdown", t.id)
            for t in history if t.desired_state in ACTIVE_DESIRED and dirty(t)]


def _start_slot(service: Service, key: Hashable, history: list[Task], now: float, new_id: Callable[[], str],
                order: str, global_mode: bool) -> list[Action]:
    slot, node_id = (0, str(key)) if global_mode else (int(key), "")
    active = [t for t in history if t.desired_state in ACTIVE_DESIRED]
    if order == "start-first":
        return [Action("create", "task", new_task(service, slot, new_id(), now, desired="running", node_id=node_id))]
    # stop-first: the new task is placed and prepared while the old one stops, and runs once it
    # has stopped; with nothing left running there is nothing to wait for.
    waiting = any(not is_terminal(t.status.state) for t in active)
    actions = [Action("task_desired", "task", "shutdown", t.id) for t in active]
    actions.append(Action("create", "task", new_task(service, slot, new_id(), now,
                                                     desired="ready" if waiting else "running", node_id=node_id)))
    return actions


def _with_status(service: Service, status: UpdateStatus) -> Service:
    new = copy.deepcopy(service)
    new.update_status = status
    return new


def plan_update(service: Service, slots: dict[Hashable, list[Task]], now: float, new_id: Callable[[], str], *,
                nodes: dict[str, Node] | None = None, down_nodes: frozenset[str] = frozenset()) -> UpdatePlan:
    """One pass of the updater over `slots` (slot number or node id -> every task of that slot;
    only the slots the service keeps). Returns task actions, and the service to write when its
    UpdateStatus or (on an automatic rollback) its spec changes."""
    out = UpdatePlan()
    nodes = nodes or {}
    global_mode = service.spec.mode.global_ is not None
    status = service.update_status
    state = status.state if status else ""

    def dirty(t: Task) -> bool:
        return is_dirty(service, t, nodes.get(t.node_id))

    for history in slots.values():
        out.actions.extend(finish_start_first(history, dirty))
    if status is not None and state not in IN_PROGRESS:
        return out  # paused (resumed by the next `service update`), or done

    dirty_slots = {k for k, h in slots.items() if any(t.desired_state in ACTIVE_DESIRED and dirty(t) for t in h)}
    if status is None:
        if not dirty_slots:
            return out
        status = UpdateStatus(state=UPDATING, started_at=timestamp(now), message="update in progress")
        out.service = _with_status(service, status)
    rollback = status.state == ROLLBACK_STARTED
    cfg = config_for(service, rollback)
    started = _ts(status.started_at)
    delay, monitor = cfg.delay / SECOND, cfg.monitor / SECOND

    fresh = {k: [t for t in h if not dirty(t) and _created(t) >= started] for k, h in slots.items()}

    # Failures first: they may stop the update before it takes another slot.
    failures: list[tuple[float, str, Hashable]] = []
    for key, tasks in fresh.items():
        for t in tasks:
            if t.status.state in FAILURE_STATES:
                end = _ts(t.status.timestamp)
                if end - _start_estimate(t, slots[key]) <= monitor:
                    failures.append((end, t.id, key))
    failed_slots = {key for _, _, key in failures}
    if failed_slots and cfg.failure_action != "continue" and len(failed_slots) / max(1, len(slots)) > cfg.max_failure_ratio:
        _, task_id, _ = max(failures)
        out.actions = []
        out.service = _stop(service, status, cfg.failure_action, task_id, now)
        out.spec_changed = out.service.update_status.state == ROLLBACK_STARTED
        return out

    busy, candidates, waiting_dirty = 0, [], False
    last_progress: float | None = None
    for key in sorted(slots, key=str if global_mode else int):
        history = slots[key]
        if fresh[key]:
            # The first fresh task is the one this update made; later ones are restarts of it.
            first = min(fresh[key], key=lambda t: (_created(t), t.id))
            progress = _progress(first)
            old_running = not is_terminal(first.status.state) and any(
                t.desired_state in ACTIVE_DESIRED and dirty(t) and not is_terminal(t.status.state) for t in history)
            if progress is None or old_running or progress + delay > now:
                busy += 1
                if progress is not None and not old_running:
                    out.wake(progress + delay)
            if progress is not None:
                last_progress = progress if last_progress is None else max(last_progress, progress)
            continue  # this update has taken the slot already
        if key in dirty_slots:
            waiting_dirty = True
            if slot_settled(service, history, now, down_nodes):
                candidates.append(key)

    room = len(candidates) if cfg.parallelism == 0 else max(0, cfg.parallelism - busy)
    for key in candidates[:room]:
        out.actions.extend(_start_slot(service, key, slots[key], now, new_id, cfg.order, global_mode))
    if waiting_dirty or busy:
        return out
    done_at = now if last_progress is None else last_progress + delay + monitor
    if done_at > now:
        out.wake(done_at)
        return out
    final = UpdateStatus(state=ROLLBACK_COMPLETED if rollback else COMPLETED, started_at=status.started_at,
                         completed_at=timestamp(now), message="rollback completed" if rollback else "update completed")
    out.service = _with_status(service, final)
    return out


def _stop(service: Service, status: UpdateStatus, action: str, task_id: str, now: float) -> Service:
    """The failure action: pause, or roll back to the previous spec (a rollback is never rolled
    back: it pauses instead)."""
    why = f"due to failure or early termination of task {task_id}"
    if status.state == ROLLBACK_STARTED:
        return _with_status(service, UpdateStatus(state=ROLLBACK_PAUSED, started_at=status.started_at,
                                                  message=f"rollback paused {why}"))
    if action == "rollback" and service.previous_spec is not None:
        new = copy.deepcopy(service)
        new.spec = copy.deepcopy(service.previous_spec)
        new.previous_spec = None
        new.update_status = UpdateStatus(state=ROLLBACK_STARTED, started_at=status.started_at,
                                         message=f"update rolled back {why}")
        return new
    message = f"update paused {why}"
    if action == "rollback":
        message += " (no previous spec to roll back to)"
    return _with_status(service, UpdateStatus(state=PAUSED, started_at=status.started_at, message=message))


def manual_rollback(service: Service, now: float) -> Service:
    """`service rollback` (POST /services/{id}/update?rollback=previous): the previous spec comes
    back, and the spec it replaces becomes the previous one. Raises ValueError without one."""
    if service.previous_spec is None:
        raise ValueError(f"service {service.id} does not have a previous spec")
    new = copy.deepcopy(service)
    new.spec, new.previous_spec = copy.deepcopy(service.previous_spec), copy.deepcopy(service.spec)
    new.update_status = UpdateStatus(state=ROLLBACK_STARTED, started_at=timestamp(now),
                                     message="manually requested rollback")
    return new
