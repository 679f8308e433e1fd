"""The cluster during one scheduling pass: what every node has left, and indexes over nodes.

Nodes are numbered in node-id order, so "lowest index" is the stable tie-break
"lowest node id". Static filter results are cached as bit sets (see bitset.py)
because many services share constraints, and every constraint on one attribute
shares one index of value -> nodes.
"""
from __future__ import annotations

from typing import Sequence

from scheduler import bitset
from scheduler.constraints import Constraint, node_attribute
from scheduler.filters import Requirements, node_is_available, normalize_ports, platform_matches
from scheduler.preferences import Preference
from scheduler.types import AVAILABILITIES, ROLES, NodeInfo, PlacedTask

class ClusterState:
    def __init__(self, nodes: Sequence[NodeInfo], placed: Sequence[PlacedTask]) -> None:
        ordered = sorted(nodes, key=lambda n: n.id)
        self.nodes: list[NodeInfo] = ordered
        self.ids: list[str] = [n.id for n in ordered]
        self.index: dict[str, int] = {}
        for i, n in enumerate(ordered):
            if n.id in self.index:
                raise ValueError(f"nodes: duplicate node id {n.id!r}")
            if n.role not in ROLES:
                raise ValueError(f"nodes: node {n.id!r} has role {n.role!r}, expected one of {', '.join(ROLES)}")
            if n.availability not in AVAILABILITIES:
                raise ValueError(f"nodes: node {n.id!r} has availability {n.availability!r}, "
                                 f"expected one of {', '.join(AVAILABILITIES)}")
            self.index[n.id] = i
        size = len(ordered)
        self.size = size
        self.all_mask = (1 << size) - 1
        self.available_mask = bitset.from_indices(
            (i for i, n in enumerate(ordered) if node_is_available(n)), size)
        self.cpu_free: list[int] = [n.nano_cpus for n in ordered]
        self.memory_free: list[int] = [n.memory_bytes for n in ordered]
        self.total_tasks: list[int] = [0] * size
        self.ports: list[set[tuple[str, int]] | None] = [None] * size
        self._service_counts: dict[str, list[int]] = {}
        self._attribute_index: dict[tuple[str, str], dict[str, int]] = {}
        self._constraint_masks: dict[Constraint, int] = {}
        self._platform_masks: dict[tuple[tuple[str, str], ...], int] = {}
        self._preference_values: dict[Preference, list[str]] = {}
        self._decoded: dict[int, list[int]] = {}
        for t in placed:
            i = self.index.get(t.node_id)
            if i is None:
                continue  # the node left the cluster; its tasks hold nothing any more
            self.take(i, self.service_counts(t.service_id), t.reserve_nano_cpus, t.reserve_memory,
                      normalize_ports(t.host_ports, f"placed task {t.id} host_ports"))

    def service_counts(self, service_id: str) -> list[int]:
        """Tasks of the service per node index, updated in place as tasks land."""
        counts = self._service_counts.get(service_id)
        if counts is None:
            counts = self._service_counts[service_id] = [0] * self.size
        return counts

    def take(self, i: int, counts: list[int], cpu: int, memory: int, ports: frozenset) -> None:
        """Account one task on node i."""
        self.cpu_free[i] -= cpu
        self.memory_free[i] -= memory
        self.total_tasks[i] += 1
        counts[i] += 1
        if ports:
            used = self.ports[i]
            if used is None:
                self.ports[i] = set(ports)
            else:
                used.update(ports)

    def fits(self, i: int, req: Requirements, counts: list[int]) -> bool:
        """The dynamic filters: resources left, replicas per node, host ports."""
        if req.cpu and self.cpu_free[i] < req.cpu:
            return False
        if req.memory and self.memory_free[i] < req.memory:
            return False
        if req.max_replicas and counts[i] >= req.max_replicas:
            return False
        if req.ports:
            used = self.ports[i]
            if used and not used.isdisjoint(req.ports):
                return False
        return True

    def fitting(self, members: list[int], req: Requirements, counts: list[int]) -> list[int]:
        """The members that pass fits(), filtered a criterion at a time because a comprehension
        per criterion is several times cheaper than a call per node."""
        out = members
        if req.cpu:
            free, need = self.cpu_free, req.cpu
            out = [i for i in out if free[i] >= need]
        if req.memory:
            free, need = self.memory_free, req.memory
            out = [i for i in out if free[i] >= need]
        if req.max_replicas:
            limit = req.max_replicas
            out = [i for i in out if counts[i] < limit]
        if req.ports:
            used, wanted = self.ports, req.ports
            out = [i for i in out if not used[i] or used[i].isdisjoint(wanted)]
        return out

    # -- static filters as bit sets ------------------------------------------------

    def constraint_mask(self, c: Constraint) -> int:
        mask = self._constraint_masks.get(c)
        if mask is None:
            index = self._attribute_index.get(c.attribute)
            if index is None:
                index = self._attribute_index[c.attribute] = self._build_index(c.attribute)
            equal = index.get(c.folded_value, 0)
            mask = equal if c.op == "==" else self.all_mask & ~equal
            self._constraint_masks[c] = mask
        return mask

    def _build_index(self, attribute: tuple[str, str]) -> dict[str, int]:
        members: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            value = node_attribute(n, attribute)
            if value is not None:  # a node lacking a label is in no value's set
                members.setdefault(value.casefold(), []).append(i)
        return {v: bitset.from_indices(ix, self.size) for v, ix in members.items()}

    def platform_mask(self, platforms: tuple[tuple[str, str], ...]) -> int:
        mask = self._platform_masks.get(platforms)
        if mask is None:
            mask = self._platform_masks[platforms] = bitset.from_indices(
                (i for i, n in enumerate(self.nodes) if platform_matches(platforms, n.os, n.arch)), self.size)
        return mask

    def static_mask(self, req: Requirements) -> int:
        mask = self.available_mask
        for c in req.constraints:
            mask &= self.constraint_mask(c)
        if req.platforms:
            mask &= self.platform_mask(req.platforms)
        return mask

    def indices(self, mask: int) -> list[int]:
        """Node indices of a static mask; cached, so callers must not mutate the list."""
        out = self._decoded.get(mask)
        if out is None:
            out = self._decoded[mask] = bitset.to_indices(mask)
        return out

    def preference_values(self, pref: Preference) -> list[str]:
        values = self._preference_values.get(pref)
        if values is None:
            values = self._preference_values[pref] = [pref.value(n) for n in self.nodes]
        return values
