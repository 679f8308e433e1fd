"""The cluster's state file: what the harness made, written *before* it makes each thing, so
`down` can undo everything from this file alone after the harness itself crashed."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

STATE_FILE = "cluster.json"


@dataclass
class NodeRecord:
    name: str
    role: str                   # manager | worker | probe (a plain namespace, no daemon)
    address: str
    netns: str
    cgroup_parent: str = ""
    pid: int | None = None
    start_time: int | None = None   # from /proc/<pid>/stat, so a reused pid is never mistaken for ours
    stopped: bool = False       # stopped or killed on purpose (vs. exited on its own)
    cut: bool = False
    netem: str = ""             # the netem arguments in force, "" for none
    join_seconds: float | None = None   # how long its `shoal swarm join` took


@dataclass
class ClusterState:
    name: str
    dir: str
    bridge_netns: str
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    log_level: str = "info"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ClusterState":
        raw = json.loads(text)
        nodes = {k: NodeRecord(**v) for k, v in raw.pop("nodes", {}).items()}
        return cls(nodes=nodes, **raw)


def state_path(cdir: Path) -> Path:
    return cdir / STATE_FILE


def load(cdir: Path) -> ClusterState | None:
    try:
        return ClusterState.from_json(state_path(cdir).read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{state_path(cdir)}: unreadable state file ({exc}); `shoal dev down` still cleans up by name") from None


def save(st: ClusterState) -> None:
    cdir = Path(st.dir)
    cdir.mkdir(parents=True, exist_ok=True)
    tmp = state_path(cdir).with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(st.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, state_path(cdir))


@contextlib.contextmanager
def locked(cdir: Path) -> Iterator[None]:
    """Serializes commands on one cluster (a `dev kill` while the fixture restarts a node).
    The lock lives beside the cluster dir so `down` can remove the dir while holding it."""
    key = str(cdir)
    if key in _held:  # flock is per open file: taking it again in this process would deadlock
        yield
        return
    cdir.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(cdir), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _held.add(key)
        yield
    finally:
        _held.discard(key)
        os.close(fd)


def lock_path(cdir: Path) -> Path:
    return cdir.parent / f".{cdir.name}.lock"


_held: set[str] = set()
