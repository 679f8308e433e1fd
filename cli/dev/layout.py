"""Names, addresses and paths of a dev cluster: pure functions, no I/O.

Every cluster gets its own bridge namespace, so all clusters can reuse the same private subnet
without meeting: nothing of it is ever routed outside those namespaces.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path("/tmp/shoal-dev")
DEFAULT_CLUSTER = "dev"
SUBNET_PREFIX = "10.77.0."
PREFIX_LEN = 24
CLUSTER_PORT = 2377
NODE_IFNAME = "eth0"      # the node's end of its veth, inside the node's namespace
BRIDGE = "br0"            # inside the bridge namespace
MAX_MANAGERS = 89         # addresses .11 - .99
MAX_WORKERS = 99          # addresses .101 - .199
MAX_PROBES = 50           # addresses .201 - .250

_CLUSTER_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
_NODE_RE = re.compile(r"^([mwp])([1-9][0-9]{0,2})$")
_ROLES = {"m": "manager", "w": "worker", "p": "probe"}
# A unix socket path must fit in sun_path (108 bytes including the NUL).
_MAX_SOCKET_PATH = 107


def dev_root() -> Path:
    """Where clusters live; SHOAL_DEV_ROOT overrides it (tests may use their own)."""
    return Path(os.environ.get("SHOAL_DEV_ROOT") or DEFAULT_ROOT)


def validate_cluster_name(name: str) -> str:
    if not _CLUSTER_RE.match(name or ""):
        raise ValueError(f"--name: {name!r} is not a valid cluster name "
                         "(1-24 characters: lowercase letters, digits and '-', not starting with '-')")
    return name


def parse_node(name: str) -> tuple[str, int]:
    """('manager'|'worker'|'probe', index) of a node name such as m1, w2, p1."""
    m = _NODE_RE.match(name or "")
    if not m:
        raise ValueError(f"NODE: {name!r} is not a node name (m1, m2, ... for managers, w1, ... for workers)")
    return _ROLES[m.group(1)], int(m.group(2))


def node_names(managers: int, workers: int) -> list[str]:
    if not 1 <= managers <= MAX_MANAGERS:
        raise ValueError(f"--managers: must be between 1 and {MAX_MANAGERS}, got {managers}")
    if not 0 <= workers <= MAX_WORKERS:
        raise ValueError(f"--workers: must be between 0 and {MAX_WORKERS}, got {workers}")
    return [f"m{i}" for i in range(1, managers + 1)] + [f"w{i}" for i in range(1, workers + 1)]


def probe_name(index: int) -> str:
    if not 1 <= index <= MAX_PROBES:
        raise ValueError(f"probe: at most {MAX_PROBES} probes per cluster")
    return f"p{index}"


def node_address(name: str) -> str:
    """m<i> -> 10.77.0.(10+i), w<i> -> 10.77.0.(100+i), p<i> -> 10.77.0.(200+i): stable
    whatever else is in the cluster, and readable at a glance."""
    role, index = parse_node(name)
    base, limit = {"manager": (10, MAX_MANAGERS), "worker": (100, MAX_WORKERS), "probe": (200, MAX_PROBES)}[role]
    if index > limit:
        raise ValueError(f"NODE: {name!r} is beyond the last {role} address (at most {limit})")
    return f"{SUBNET_PREFIX}{base + index}"


def netns_name(cluster: str, node: str) -> str:
    return f"shl-{cluster}-{node}"


def bridge_netns(cluster: str) -> str:
    return f"shl-{cluster}-net"


def owned_netns_re(cluster: str) -> re.Pattern[str]:
    """Exactly this cluster's namespaces: cluster 'a' must not claim cluster 'a-b''s 'shl-a-b-m1'."""
    return re.compile(rf"^shl-{re.escape(cluster)}-(net|[mwp][1-9][0-9]{{0,2}})$")


def cgroup_parent(cluster: str, node: str) -> str:
    return f"shoal-dev-{cluster}-{node}"


def owned_cgroup_re(cluster: str) -> re.Pattern[str]:
    return re.compile(rf"^shoal-dev-{re.escape(cluster)}-[mwp][1-9][0-9]{{0,2}}$")


def bridge_port(node: str) -> str:
    """The bridge-side end of a node's veth (inside the bridge namespace, so short names are safe)."""
    return node


@dataclass(frozen=True)
class NodePaths:
    dir: Path
    state_dir: Path
    socket: Path
    log: Path


def cluster_dir(cluster: str, root: Path | None = None) -> Path:
    return (root or dev_root()) / cluster


def node_paths(cdir: Path, node: str) -> NodePaths:
    d = cdir / node
    paths = NodePaths(dir=d, state_dir=d / "state", socket=d / "shoal.sock", log=d / "shoald.log")
    if len(str(paths.socket)) > _MAX_SOCKET_PATH:
        raise ValueError(f"--name: socket path {paths.socket} is longer than a unix socket allows; "
                         "use a shorter cluster name or SHOAL_DEV_ROOT")
    return paths
