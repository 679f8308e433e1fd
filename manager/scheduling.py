"""Adapts the store's nodes and tasks to the pure scheduler and its decision back to actions."""
from __future__ import annotations

import hashlib

from api import codec
from api.objects import EndpointSpec, Node, Task, is_terminal, state_rank
from manager.store import Action, Store
from scheduler import NodeInfo, PlacedTask, TaskRequest, node_matches, schedule

# The allocator moves a task from new to pending once its networks, addresses and ports are
# allocated; only then is it the scheduler's.
WAITING = ("pending",)


def node_info(node: Node) -> NodeInfo:
    d = node.description
    return NodeInfo(
        id=node.id,
        hostname=d.hostname,
        role=node.spec.role,
        ready=node.status.state == "ready",
        availability=node.spec.availability,
        labels=dict(node.spec.labels),
        engine_labels=dict(d.engine.labels),
        os=d.platform.os or "linux",
        arch=d.platform.architecture or "x86_64",
        nano_cpus=d.resources.nano_cpus,
        memory_bytes=d.resources.memory_bytes,
    )


def _reservations(task: Task) -> tuple[int, int]:
    res = task.spec.resources.reservations if task.spec.resources else None
    return (res.nano_cpus, res.memory_bytes) if res else (0, 0)


def _host_ports(endpoint: EndpointSpec | None) -> tuple[tuple[str, int], ...]:
    """The service's host-mode published ports: two tasks holding one cannot share a node."""
    if endpoint is None:
        return ()
    return tuple(sorted({(p.protocol or "tcp", p.published_port) for p in endpoint.ports
                         if p.publish_mode == "host" and p.published_port}))


def _preferences(task: Task) -> tuple[str, ...]:
    prefs = task.spec.placement.preferences if task.spec.placement else []
    out = []
    for p in prefs:
        spread = p.get("Spread", {}) if isinstance(p, dict) else {}
        if spread.get("SpreadDescriptor"):
            out.append("spread=" + spread["SpreadDescriptor"])
    return tuple(out)


def spec_key(task: Task) -> str:
    return hashlib.sha1(repr(codec.encode(task.spec)).encode()).hexdigest()


def task_request(task: Task, endpoint: EndpointSpec | None = None) -> TaskRequest:
    cpus, mem = _reservations(task)
    placement = task.spec.placement
    return TaskRequest(
        id=task.id,
        service_id=task.service_id,
        spec_key=task.service_id + ":" + spec_key(task),
        constraints=tuple(placement.constraints) if placement else (),
        preferences=_preferences(task),
        reserve_nano_cpus=cpus,
        reserve_memory=mem,
        max_replicas_per_node=placement.max_replicas if placement else 0,
        host_ports=_host_ports(endpoint),
        platforms=tuple((p.os, p.architecture) for p in placement.platforms) if placement else (),
        node_id=task.node_id,  # global tasks are pinned to their node
    )


def placed_task(task: Task, endpoint: EndpointSpec | None = None) -> PlacedTask:
    cpus, mem = _reservations(task)
    return PlacedTask(id=task.id, service_id=task.service_id, node_id=task.node_id,
                      reserve_nano_cpus=cpus, reserve_memory=mem, host_ports=_host_ports(endpoint))


def global_eligible(node: Node, task_template) -> bool:
    """Whether a global service belongs on this node: not drained, constraints and platform hold."""
    if node.spec.availability == "drain":
        return False
    placement = task_template.placement
    if placement is None:
        return True
    return node_matches(node_info(node), placement.constraints,
                        [(p.os, p.architecture) for p in placement.platforms])


def scheduling_actions(store: Store) -> list[Action]:
    """One scheduling pass over every task that waits for a node."""
    pending, placed = [], []
    for t in store.list("task"):
        if t.status.state in WAITING and t.desired_state in ("ready", "running"):
            pending.append(t)
        elif t.node_id and not is_terminal(t.status.state) and state_rank(t.status.state) >= state_rank("assigned"):
            placed.append(t)
    if not pending:
        return []
    nodes = [node_info(n) for n in store.list("node")]
    endpoints = {s.id: s.spec.endpoint_spec for s in store.list("service")}
    decision = schedule(nodes, [placed_task(t, endpoints.get(t.service_id)) for t in placed],
                        [task_request(t, endpoints.get(t.service_id)) for t in pending])
    actions = []
    by_id = {t.id: t for t in pending}
    for task_id, node_id in decision.assignments.items():
        actions.append(Action("task_assign", "task", {"NodeID": node_id}, task_id))
    for task_id, reason in decision.unplaced.items():
        t = by_id[task_id]
        if t.status.state != "pending" or t.status.err != reason:
            actions.append(Action("task_assign", "task", {"NodeID": "", "Message": reason}, task_id))
    return actions
