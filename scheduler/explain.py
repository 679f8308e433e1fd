"""Why a task found no node: every node is run through the filters in Swarm's pipeline order
(ready, resources, constraints, platform, host ports, replicas per node) and counted
under the first filter it fails, e.g.
`2 nodes not available for new tasks; 1 node had insufficient memory`.

Resources and constraints are reported more precisely than Swarm does (which
resource, which constraint); the other phrases are Swarm's own.
"""
from __future__ import annotations

from scheduler import bitset
from scheduler.cluster import ClusterState
from scheduler.filters import Requirements

NO_SUITABLE_NODE = "no suitable node"


def nodes(n: int) -> str:
    return "1 node" if n == 1 else f"{n} nodes"


def explain(state: ClusterState, req: Requirements, counts: list[int], candidates: int | None = None) -> str:
    """The reasons, joined by "; ", over the candidate nodes (default: all nodes)."""
    cand = state.all_mask if candidates is None else candidates
    parts: list[str] = []

    failed = cand & ~state.available_mask
    if failed:
        parts.append(f"{nodes(bitset.count(failed))} not available for new tasks")
    cand &= state.available_mask

    if (req.cpu or req.memory) and cand:
        members = bitset.to_indices(cand)
        cpu_short = {i for i in members if state.cpu_free[i] < req.cpu} if req.cpu else set()
        memory_short = {i for i in members if state.memory_free[i] < req.memory} if req.memory else set()
        both = cpu_short & memory_short
        for what, failing in (("CPU", cpu_short - both), ("memory", memory_short - both),
                              ("CPU and memory", both)):
            if failing:
                parts.append(f"{nodes(len(failing))} had insufficient {what}")
        if cpu_short or memory_short:
            cand &= ~bitset.from_indices(cpu_short | memory_short, state.size)

    for c in req.constraints:
        passing = state.constraint_mask(c)
        failed = cand & ~passing
        if failed:
            parts.append(f"{nodes(bitset.count(failed))} did not satisfy constraint {c}")
        cand &= passing

    if req.platforms:
        passing = state.platform_mask(req.platforms)
        failed = cand & ~passing
        if failed:
            parts.append(f"unsupported platform on {nodes(bitset.count(failed))}")
        cand &= passing

    if req.ports and cand:
        failing = [i for i in bitset.to_indices(cand)
                   if state.ports[i] and not state.ports[i].isdisjoint(req.ports)]
        if failing:
            parts.append(f"host-mode port already in use on {nodes(len(failing))}")
            cand &= ~bitset.from_indices(failing, state.size)

    if req.max_replicas and cand:
        failing = [i for i in bitset.to_indices(cand) if counts[i] >= req.max_replicas]
        if failing:
            parts.append(f"max replicas per node limit reached on {nodes(len(failing))}")

    return "; ".join(parts)


def no_suitable_node(explanation: str) -> str:
    return f"{NO_SUITABLE_NODE} ({explanation})" if explanation else NO_SUITABLE_NODE
