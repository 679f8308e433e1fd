"""What a task asks of a node, compiled once per batch, and Swarm's filters over it.

Static filters (ready and active, constraints, platform) depend only on the node
and are evaluated as bit sets over all nodes; dynamic ones (resources, host
ports, replicas per node) change as tasks land and are checked per node.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from scheduler.constraints import Constraint, parse_constraints
from scheduler.preferences import Preference, parse_preferences
from scheduler.types import NodeInfo, TaskRequest

PROTOCOLS = ("tcp", "udp", "sctp")
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64"}


def normalize_arch(arch: str) -> str:
    arch = arch.strip().lower()
    return _ARCH_ALIASES.get(arch, arch)


def platform_matches(platforms: Sequence[tuple[str, str]], os: str, arch: str) -> bool:
    """An image platform with an empty os or arch accepts any; no platforms accepts every node."""
    if not platforms:
        return True
    os, arch = os.strip().lower(), normalize_arch(arch)
    return any((not p_os or p_os == os) and (not p_arch or p_arch == arch) for p_os, p_arch in platforms)


@dataclass(frozen=True, slots=True)
class Requirements:
    """The placement-relevant part of a task spec, validated and normalized."""

    service_id: str
    constraints: tuple[Constraint, ...]
    preferences: tuple[Preference, ...]
    cpu: int
    memory: int
    max_replicas: int
    ports: frozenset[tuple[str, int]]
    platforms: tuple[tuple[str, str], ...]


def placement_fields(t: TaskRequest) -> tuple:
    """The fields that must agree among tasks sharing a spec_key."""
    return (t.service_id, t.constraints, t.preferences, t.reserve_nano_cpus, t.reserve_memory,
            t.max_replicas_per_node, t.host_ports, t.platforms)


PLACEMENT_FIELD_NAMES = ("service_id", "constraints", "preferences", "reserve_nano_cpus",
                         "reserve_memory", "max_replicas_per_node", "host_ports", "platforms")


def normalize_ports(ports: Sequence[tuple[str, int]], field: str = "host_ports") -> frozenset[tuple[str, int]]:
    out = set()
    for entry in ports:
        try:
            proto, port = entry
        except (TypeError, ValueError):
            raise ValueError(f"{field}: {entry!r} is not a (protocol, port) pair") from None
        proto = str(proto).lower()
        if proto not in PROTOCOLS:
            raise ValueError(f"{field}: protocol {proto!r} is not one of {', '.join(PROTOCOLS)}")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"{field}: port {port!r} is not in 0..65535")
        if port:  # port 0 asks for no fixed host port, so it cannot conflict
            out.add((proto, port))
    return frozenset(out)


def _non_negative(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{field}: must be a non-negative integer, got {value!r}")
    return value


def compile_request(t: TaskRequest) -> Requirements:
    """Validate and normalize; raises ValueError naming the bad field."""
    platforms = []
    for entry in t.platforms:
        try:
            p_os, p_arch = entry
        except (TypeError, ValueError):
            raise ValueError(f"platforms: {entry!r} is not an (os, arch) pair") from None
        platforms.append((str(p_os).strip().lower(), normalize_arch(str(p_arch))))
    return Requirements(
        service_id=t.service_id,
        constraints=parse_constraints(tuple(t.constraints)),
        preferences=parse_preferences(tuple(t.preferences)),
        cpu=_non_negative(t.reserve_nano_cpus, "reserve_nano_cpus"),
        memory=_non_negative(t.reserve_memory, "reserve_memory"),
        max_replicas=_non_negative(t.max_replicas_per_node, "max_replicas_per_node"),
        ports=normalize_ports(t.host_ports),
        platforms=tuple(platforms),
    )


def node_is_available(node: NodeInfo) -> bool:
    """Pause and drain take no new tasks; neither does a node that is not ready."""
    return node.ready and node.availability == "active"


def node_matches(node: NodeInfo, constraints: Sequence[str],
                 platforms: Sequence[tuple[str, str]] = ()) -> bool:
    """Whether the node satisfies the static placement of a spec (constraints and platform).

    For the global orchestrator, which decides on which nodes a global service
    should have a task; availability and resources are left to the caller and
    to schedule().
    """
    parsed = parse_constraints(tuple(constraints))
    norm = [(o.strip().lower(), normalize_arch(a)) for o, a in platforms]
    return all(c.matches(node) for c in parsed) and platform_matches(norm, node.os, node.arch)
