"""schedule(): one scheduling pass, from values to a decision.

Order, as in SwarmKit: tasks pinned to a node (global services) first, then the
batches of tasks sharing a spec_key. Batches go in spec_key order and tasks in id
order, so the decision does not depend on the order of the inputs.
"""
from __future__ import annotations

from typing import Sequence

from scheduler.cluster import ClusterState
from scheduler.explain import explain, no_suitable_node
from scheduler.filters import PLACEMENT_FIELD_NAMES, Requirements, compile_request, placement_fields
from scheduler.spread import place_batch
from scheduler.types import Decision, NodeInfo, PlacedTask, TaskRequest


def schedule(nodes: Sequence[NodeInfo], placed: Sequence[PlacedTask],
             pending: Sequence[TaskRequest]) -> Decision:
    """Assign pending tasks to nodes; every pending task ends up in exactly one of
    decision.assignments or decision.unplaced (with the reason).

    Raises ValueError for malformed input that is the caller's bug (duplicate
    ids, tasks sharing a spec_key but not their placement fields). A task whose
    own placement fields are invalid is left unplaced with the error as reason,
    so that one bad service does not stop the others.
    """
    state = ClusterState(nodes, placed)
    decision = Decision()
    pinned: list[TaskRequest] = []
    batches: dict[str, list[TaskRequest]] = {}
    seen: set[str] = set()
    for t in pending:
        if t.id in seen:
            raise ValueError(f"pending: duplicate task id {t.id!r}")
        seen.add(t.id)
        if t.node_id:
            pinned.append(t)
        else:
            batch = batches.get(t.spec_key)
            if batch is None:
                batches[t.spec_key] = [t]
            else:
                batch.append(t)

    compiled: dict[tuple, Requirements | str] = {}

    def requirements(t: TaskRequest, fields: tuple | None) -> Requirements | str:
        try:
            req = compiled.get(fields)
        except TypeError:  # lists instead of tuples: fine, just not cacheable
            fields = None
            req = None
        if req is None:
            try:
                req = compile_request(t)
            except ValueError as e:
                req = str(e)
            if fields is not None:
                compiled[fields] = req
        return req

    for t in sorted(pinned, key=lambda t: t.id):
        req = requirements(t, placement_fields(t))
        if isinstance(req, str):
            decision.unplaced[t.id] = req
            continue
        i = state.index.get(t.node_id)
        if i is None:
            decision.unplaced[t.id] = f"node {t.node_id} is not in the cluster"
            continue
        counts = state.service_counts(req.service_id)
        if state.static_mask(req) >> i & 1 and state.fits(i, req, counts):
            state.take(i, counts, req.cpu, req.memory, req.ports)
            decision.assignments[t.id] = t.node_id
        else:
            # Swarm's form for a task bound to one node: the explanation alone.
            decision.unplaced[t.id] = explain(state, req, counts, candidates=1 << i)

    for key in sorted(batches):
        tasks = sorted(batches[key], key=lambda t: t.id)
        fields = placement_fields(tasks[0])
        for t in tasks[1:]:
            other = placement_fields(t)
            if other != fields:
                name = next(n for n, a, b in zip(PLACEMENT_FIELD_NAMES, fields, other) if a != b)
                raise ValueError(f"pending: tasks {tasks[0].id!r} and {t.id!r} share spec_key {key!r} "
                                 f"but differ in {name}")
        req = requirements(tasks[0], fields)
        if isinstance(req, str):
            for t in tasks:
                decision.unplaced[t.id] = req
            continue
        eligible = state.indices(state.static_mask(req))
        chosen = place_batch(state, req, eligible, len(tasks))
        ids = state.ids
        for t, i in zip(tasks, chosen):
            decision.assignments[t.id] = ids[i]
        if len(chosen) < len(tasks):
            reason = no_suitable_node(explain(state, req, state.service_counts(req.service_id)))
            for t in tasks[len(chosen):]:
                decision.unplaced[t.id] = reason
    return decision
