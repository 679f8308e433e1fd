"""Where new tasks would go: the real pure scheduler run over the store's nodes and tasks for
services that are about to be created or updated, proposing nothing (`POST /services/placement`,
which `shoal stack deploy --dry-run` calls).

The preview models the end state of the change, the way the orchestrator gets there:
- a new service gets its replicas (a global one a task on every eligible active node; a job its
  first wave);
- an updated service keeps the tasks that still match its new task template (as the rolling
  updater leaves them) and gets a new task for every task it replaces, and for every slot a
  scale-up adds;
- tasks of removed services, and tasks an update replaces or a scale-down drops, free their node.
Services are previewed in the order given, each seeing the tasks placed for the ones before it,
as `stack deploy` creates them one after the other. A rolling update replaces tasks a few at a
time, so where a replaced task lands can differ from this estimate when the cluster is uneven.
Pure: values in, values out.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from api.objects import Node, Service, Task, is_terminal, state_rank
from manager.orchestrator.jobs import total_completions
from manager.orchestrator.replicated import ACTIVE_DESIRED, kept_slots, new_task
from manager.orchestrator.update import is_dirty
from manager.scheduling import global_eligible, node_info, placed_task, task_request
from scheduler import PlacedTask, schedule


@dataclass
class PreviewRequest:
    """A service as it would be after the change: `service` carries the new spec, and the id and
    tasks of the service it replaces (`existing`), or a made-up id for a create."""

    service: Service
    existing: Service | None = None


@dataclass
class PreviewResult:
    name: str
    new_tasks: int = 0
    nodes: Counter = field(default_factory=Counter)  # node id -> new tasks there
    unplaced: Counter = field(default_factory=Counter)  # reason -> tasks
    error: str = ""  # the service could not run at all (e.g. its published port is taken)


@dataclass
class _Change:
    """The tasks one request makes and the live tasks it ends."""

    new: list[Task] = field(default_factory=list)
    ended: set[str] = field(default_factory=set)


def _live(t: Task) -> bool:
    """Holds its node, as the scheduler counts it (see manager.scheduling)."""
    return bool(t.node_id) and not is_terminal(t.status.state) and state_rank(t.status.state) >= state_rank("assigned")


def _active(tasks: Iterable[Task]) -> list[Task]:
    return [t for t in tasks if t.desired_state in ACTIVE_DESIRED]


def _changes(req: PreviewRequest, tasks: list[Task], nodes: list[Node], now: float,
             new_id: Callable[[], str]) -> _Change:
    svc = req.service
    mode = svc.spec.mode
    old = _active(tasks) if req.existing is not None else []
    by_node = {n.id: n for n in nodes}
    out = _Change()

    def dirty(t: Task) -> bool:
        return is_dirty(svc, t, by_node.get(t.node_id))

    def eligible_active() -> list[Node]:
        return [n for n in nodes if n.spec.availability == "active" and global_eligible(n, svc.spec.task_template)]

    if mode.replicated is not None:
        slots: dict[int, list[Task]] = {}
        for t in old:
            slots.setdefault(t.slot, []).append(t)
        kept = kept_slots(slots, mode.replicated.replicas)
        for slot, history in slots.items():
            if slot not in kept or any(dirty(t) for t in history):
                out.ended.update(t.id for t in history)
        for slot in kept:
            if any(dirty(t) for t in slots[slot]):
                out.new.append(new_task(svc, slot, new_id(), now))
        free = (n for n in range(1, 1 << 30) if n not in slots)
        for _ in range(mode.replicated.replicas - len(kept)):
            out.new.append(new_task(svc, next(free), new_id(), now))
    elif mode.global_ is not None:
        keep = {t.node_id for t in old if not dirty(t) and t.node_id in by_node
                and global_eligible(by_node[t.node_id], svc.spec.task_template)}
        out.ended.update(t.id for t in old if t.node_id not in keep)
        for n in eligible_active():
            if n.id not in keep:
                out.new.append(new_task(svc, 0, new_id(), now, node_id=n.id))
    else:  # a job runs again from the start on any change: its first wave
        out.ended.update(t.id for t in old)
        if mode.replicated_job is not None:
            wave = min(mode.replicated_job.max_concurrent, total_completions(svc))
            out.new.extend(new_task(svc, slot, new_id(), now) for slot in range(1, wave + 1))
        else:
            out.new.extend(new_task(svc, 0, new_id(), now, node_id=n.id) for n in eligible_active())
    return out


def _ingress_ports(svc: Service) -> list[tuple[int, str, int]]:
    """(index in EndpointSpec.Ports, protocol, port) of the ports published on the routing mesh."""
    ports = svc.spec.endpoint_spec.ports if svc.spec.endpoint_spec else []
    return [(i, p.protocol or "tcp", p.published_port) for i, p in enumerate(ports)
            if p.publish_mode == "ingress" and p.published_port]


def _port_conflicts(requests: list[PreviewRequest], services: list[Service], removed: set[str]) -> dict[int, str]:
    """The allocator refuses a routing-mesh port another service holds; a service then never gets
    tasks. Checked here because the control API accepts such a service and the allocator only
    reports it on its tasks later. Ports of services being updated or removed count as free."""
    replaced = {r.existing.id for r in requests if r.existing is not None} | removed
    held: dict[tuple[str, int], str] = {}
    for s in services:
        if s.id not in replaced and s.endpoint is not None:
            for p in s.endpoint.ports:
                if p.publish_mode == "ingress" and p.published_port:
                    held[(p.protocol, p.published_port)] = s.spec.name
    errors: dict[int, str] = {}
    for k, r in enumerate(requests):
        for i, proto, port in _ingress_ports(r.service):
            holder = held.get((proto, port))
            if holder is not None and holder != r.service.spec.name:
                errors[k] = f"EndpointSpec.Ports[{i}].PublishedPort: {port}/{proto} is already in use by service {holder}"
                break
        if k not in errors:
            for _, proto, port in _ingress_ports(r.service):
                held[(proto, port)] = r.service.spec.name
    return errors


def preview_placement(requests: list[PreviewRequest], nodes: list[Node], services: list[Service],
                      tasks: list[Task], now: float, removed: Iterable[str] = ()) -> list[PreviewResult]:
    """One result per request, in order. `removed`: ids of services the change deletes."""
    gone = set(removed)
    counter = iter(range(1, 1 << 62))
    new_id = lambda: f"preview-{next(counter)}"  # noqa: E731
    by_service: dict[str, list[Task]] = {}
    for t in tasks:
        by_service.setdefault(t.service_id, []).append(t)
    changes = [_changes(r, by_service.get(r.existing.id, []) if r.existing else [], nodes, now, new_id)
               for r in requests]
    ended = set().union(*(c.ended for c in changes)) if changes else set()
    endpoints = {s.id: s.spec.endpoint_spec for s in services}
    placed: list[PlacedTask] = [placed_task(t, endpoints.get(t.service_id)) for t in tasks
                                if _live(t) and t.id not in ended and t.service_id not in gone]
    node_infos = [node_info(n) for n in nodes]
    conflicts = _port_conflicts(requests, services, gone)

    results = []
    for k, (req, change) in enumerate(zip(requests, changes)):
        res = PreviewResult(name=req.service.spec.name, new_tasks=len(change.new))
        results.append(res)
        if k in conflicts:
            res.error = conflicts[k]
            continue
        endpoint = req.service.spec.endpoint_spec
        decision = schedule(node_infos, placed, [task_request(t, endpoint) for t in change.new])
        by_id = {t.id: t for t in change.new}
        for task_id, node_id in sorted(decision.assignments.items()):
            res.nodes[node_id] += 1
            t = by_id[task_id]
            t.node_id = node_id
            placed.append(placed_task(t, endpoint))
        for reason in decision.unplaced.values():
            res.unplaced[reason] += 1
    return results
