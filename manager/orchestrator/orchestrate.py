"""One orchestration pass for one service: the function the manager calls for every service.

It routes by mode (replicated, global, replicated job, global job) and puts the rolling updater
and the slot logic together: the updater goes first, over the slots the service keeps, and the
slot logic (restarts, node failures, scaling, history) over everything; the updater takes only
slots the slot logic leaves alone in the same pass (see `replicated.slot_settled`). Pure: the
result is one Plan, proposed as one log entry.
"""
from __future__ import annotations

from typing import Callable

from api.objects import Node, Service, Task
from manager.orchestrator.global_ import reconcile_global
from manager.orchestrator.jobs import job_status_action, reconcile_global_job, reconcile_replicated_job
from manager.orchestrator.replicated import Plan, is_job, kept_slots, reconcile_replicated, replicas_of
from manager.orchestrator.update import plan_update
from manager.scheduling import global_eligible
from manager.store import Action


def orchestrate_service(service: Service, tasks: list[Task], nodes: list[Node], now: float,
                        new_id: Callable[[], str], *, history_limit: int = 5,
                        down_nodes: frozenset[str] = frozenset(),
                        eligible: Callable[[Node], bool] | None = None) -> Plan:
    """`down_nodes`: nodes whose tasks move elsewhere (down, drained, or gone)."""
    if eligible is None:
        tt = service.spec.task_template
        eligible = lambda node: global_eligible(node, tt)  # noqa: E731
    mode = service.spec.mode
    if is_job(service):
        first = job_status_action(service)
        if first is not None:
            return Plan(actions=[first])  # the next pass runs the job under its JobStatus
        if mode.replicated_job is not None:
            return reconcile_replicated_job(service, tasks, now, new_id, history_limit, down_nodes)
        return reconcile_global_job(service, tasks, nodes, now, new_id, eligible, history_limit)

    by_id = {n.id: n for n in nodes}
    if mode.replicated is not None:
        slots: dict = {}
        for t in tasks:
            slots.setdefault(t.slot, []).append(t)
        kept = {k: slots[k] for k in kept_slots(slots, replicas_of(service))}
        update = plan_update(service, kept, now, new_id, nodes=by_id, down_nodes=down_nodes)
        base = lambda: reconcile_replicated(service, tasks, now, new_id, history_limit, down_nodes)  # noqa: E731
    else:
        by_node: dict = {}
        for t in tasks:
            by_node.setdefault(t.node_id, []).append(t)
        kept = {n.id: by_node[n.id] for n in nodes if n.id in by_node and eligible(n)}
        not_ready = frozenset(n.id for n in nodes if n.status.state != "ready")
        update = plan_update(service, kept, now, new_id, nodes=by_id, down_nodes=not_ready)
        base = lambda: reconcile_global(service, tasks, nodes, now, new_id, eligible, history_limit)  # noqa: E731

    plan = Plan()
    if update.service is not None:
        plan.actions.append(Action("update", "service", update.service))
    if update.spec_changed:
        return plan  # rolled back: the next pass works from the previous spec
    plan.actions.extend(update.actions)
    plan.wake(update.wake_at)
    plan.extend(base())
    return plan
