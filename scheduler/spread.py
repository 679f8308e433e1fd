"""The spread strategy: where the identical tasks of one batch go among the nodes that pass.

Without preferences the nodes sit in one heap ordered by (tasks of this service,
tasks overall, node index); each task takes the top node, which goes back with
its new counts, so a batch of n tasks over e nodes costs O(e + n log e) instead
of a scan of all nodes per task. A node that no longer fits (resources, host
ports, replicas per node) leaves the heap for good: within a batch nothing frees
up.

With preferences (`spread=node.labels.zone`, then maybe `rack`...) the nodes form a
tree, one level per preference, one branch per label value; at each level the
tasks are divided so that the branches' task counts (tasks already there
included) become as even as possible, and a branch that runs out of room hands
its share to the others. The leaves are heaps as above.
"""
from __future__ import annotations

from heapq import heapify, heappop, heapreplace
from itertools import compress

from scheduler.cluster import ClusterState
from scheduler.filters import Requirements


class _Branch:
    __slots__ = ("tasks", "children", "members", "heap")

    def __init__(self) -> None:
        self.tasks = 0  # tasks of the service under this branch
        self.children: dict[str, _Branch] | None = None  # by label value, in sorted order
        self.members: list[int] = []  # node indices, leaves only
        self.heap: list[tuple[int, int, int]] | None = None


class _Batch:
    __slots__ = ("state", "req", "counts", "chosen", "dynamic")

    def __init__(self, state: ClusterState, req: Requirements, counts: list[int]) -> None:
        self.state = state
        self.req = req
        self.counts = counts
        self.chosen: list[int] = []
        self.dynamic = bool(req.cpu or req.memory or req.max_replicas or req.ports)


def place_batch(state: ClusterState, req: Requirements, eligible: list[int], n: int) -> list[int]:
    """Place up to n identical tasks on the eligible node indices; returns one node index per
    placed task, in placement order, and leaves the state accounting for them."""
    batch = _Batch(state, req, state.service_counts(req.service_id))
    if not eligible or n <= 0:
        return []
    if req.preferences:
        root = _build_tree(state, req, batch.counts, eligible)
    else:
        root = _Branch()
        root.members = eligible
    _place_on_branch(batch, root, n)
    return batch.chosen


def _build_tree(state: ClusterState, req: Requirements, counts: list[int], eligible: list[int]) -> _Branch:
    columns = [state.preference_values(p) for p in req.preferences]
    root = _group(eligible, columns, 0)
    # Tasks of the service on nodes that cannot take more still count for their branch,
    # as in Swarm: the point of spreading is where the service runs.
    for i in compress(range(state.size), counts):
        branch = root
        for column in columns:
            branch = branch.children.get(column[i])  # type: ignore[union-attr]
            if branch is None:
                break
            branch.tasks += counts[i]
    return root


def _group(members: list[int], columns: list[list[str]], level: int) -> _Branch:
    branch = _Branch()
    if level == len(columns):
        branch.members = members
        return branch
    column = columns[level]
    groups: dict[str, list[int]] = {}
    for i in members:
        value = column[i]
        group = groups.get(value)
        if group is None:
            groups[value] = [i]
        else:
            group.append(i)
    branch.children = {v: _group(groups[v], columns, level + 1) for v in sorted(groups)}
    return branch


def _place_on_branch(batch: _Batch, branch: _Branch, n: int) -> int:
    if branch.children is None:
        placed = _place_on_leaf(batch, branch, n)
    else:
        placed = 0
        open_ = list(branch.children.values())
        while placed < n and open_:
            wants = water_fill([b.tasks for b in open_], n - placed)
            full = []
            for child, want in zip(open_, wants):
                if want:
                    got = _place_on_branch(batch, child, want)
                    placed += got
                    if got < want:
                        full.append(child)
            if not full:
                break  # every branch took its share, so all n are placed
            open_ = [b for b in open_ if b not in full]
    branch.tasks += placed
    return placed


def water_fill(levels: list[int], r: int) -> list[int]:
    """How many of r new tasks each branch gets so the lowest levels rise evenly.

    The m lowest branches are raised to a common level; the remainder goes to the
    lowest (level, position) first, so the result is deterministic.
    """
    k = len(levels)
    order = sorted(range(k), key=lambda j: (levels[j], j))
    m, low_sum = 1, levels[order[0]]
    while m < k and levels[order[m]] * m - low_sum <= r:
        low_sum += levels[order[m]]
        m += 1
    base, extra = divmod(low_sum + r, m)
    wants = [0] * k
    for pos in range(m):
        j = order[pos]
        wants[j] = base + (1 if pos < extra else 0) - levels[j]
    return wants


def _place_on_leaf(batch: _Batch, leaf: _Branch, n: int) -> int:
    state, req, counts, chosen = batch.state, batch.req, batch.counts, batch.chosen
    total = state.total_tasks
    heap = leaf.heap
    if heap is None:
        members = state.fitting(leaf.members, req, counts) if batch.dynamic else leaf.members
        heap = leaf.heap = [(counts[i], total[i], i) for i in members]
        heapify(heap)
    fits, take = state.fits, state.take
    dynamic = batch.dynamic
    cpu, memory, ports = req.cpu, req.memory, req.ports
    placed = 0
    while placed < n and heap:
        i = heap[0][2]
        if dynamic and not fits(i, req, counts):
            heappop(heap)
            continue
        take(i, counts, cpu, memory, ports)
        chosen.append(i)
        placed += 1
        heapreplace(heap, (counts[i], total[i], i))
    return placed
