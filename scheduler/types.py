"""The scheduler's own input and output values.

The manager adapts its store objects to these, so the scheduler never depends on
`api` or `manager`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

ROLES = ("manager", "worker")
AVAILABILITIES = ("active", "pause", "drain")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node as the scheduler sees it; nano_cpus and memory_bytes are its total capacity."""

    id: str
    hostname: str
    role: str  # "manager" | "worker"
    ready: bool
    availability: str  # "active" | "pause" | "drain"
    labels: Mapping[str, str] = field(default_factory=dict)
    engine_labels: Mapping[str, str] = field(default_factory=dict)
    os: str = "linux"
    arch: str = "x86_64"
    nano_cpus: int = 0
    memory_bytes: int = 0


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """A task waiting for a node.

    Tasks with the same spec_key must carry identical placement fields; they are
    placed together in one pass. node_id pins the task to one node (global
    services): the scheduler then only checks that this node can take it.
    """

    id: str
    service_id: str
    spec_key: str
    constraints: tuple[str, ...] = ()
    preferences: tuple[str, ...] = ()
    reserve_nano_cpus: int = 0
    reserve_memory: int = 0
    max_replicas_per_node: int = 0  # 0 = unlimited
    host_ports: tuple[tuple[str, int], ...] = ()  # (protocol, published port), host mode
    platforms: tuple[tuple[str, str], ...] = ()  # (os, arch); empty = any; "" in a pair = any
    node_id: str = ""


@dataclass(frozen=True, slots=True)
class PlacedTask:
    """A task already assigned to or running on a node: it holds resources and ports there."""

    id: str
    service_id: str
    node_id: str
    reserve_nano_cpus: int = 0
    reserve_memory: int = 0
    host_ports: tuple[tuple[str, int], ...] = ()


@dataclass
class Decision:
    assignments: dict[str, str] = field(default_factory=dict)  # task id -> node id
    unplaced: dict[str, str] = field(default_factory=dict)  # task id -> reason
