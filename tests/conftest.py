"""Session-wide cleanup of what runtimes leave on the host even when every test tidied up:
the run directories of per-root supervisors under /run/shoal/runtime (one per runtime root a test
made; a supervisor that logged an error keeps its directory for reading), and the test cgroup
parents in hierarchies the runtime joins but does not manage (cpuset, systemd, unified)."""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

RUN_BASE = Path("/run/shoal/runtime")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _entries(base: Path) -> set[str]:
    try:
        return {p.name for p in base.iterdir()}
    except OSError:
        return set()


def _alive(run_dir: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        probe.connect(str(run_dir / "supervisor.sock"))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _quiet_rmdir(path: Path) -> None:
    """A cgroup directory goes with rmdir (its files are the kernel's), children first."""
    for child in (p for p in path.iterdir() if p.is_dir()):
        _quiet_rmdir(child)
    try:
        path.rmdir()
    except OSError:
        pass


@pytest.fixture(scope="session", autouse=True)
def _host_left_as_found():
    if os.geteuid() != 0:
        yield
        return
    run_before = _entries(RUN_BASE)
    cgroups_before = {h.name: _entries(h) for h in CGROUP_ROOT.iterdir() if h.is_dir()} if CGROUP_ROOT.is_dir() else {}
    yield
    for name in _entries(RUN_BASE) - run_before:
        d = RUN_BASE / name
        if not _alive(d) and not any((d / e).is_dir() and any((d / e).iterdir()) for e in ("runc", "crun")):
            shutil.rmtree(d, ignore_errors=True)
    for hierarchy, before in cgroups_before.items():
        for name in _entries(CGROUP_ROOT / hierarchy) - before:
            if name.startswith("shoal"):
                _quiet_rmdir(CGROUP_ROOT / hierarchy / name)
