"""Processes, cgroups and mounts: starting a daemon detached inside a namespace, recognising
it again later (pid + start time), and finding everything a node left behind."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: the fields after it start after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(pid: int | None, started: int | None) -> bool:
    if not pid:
        return False
    st = start_time(pid)
    return st is not None and (started is None or st == started)


def reap(pid: int) -> None:
    """Collect our own child's exit status, if it is ours (the pytest fixture is the daemon's
    parent; a `shoal dev` command is not, and init reaps for it)."""
    if pid <= 0:  # waitpid(0 or -1) would take any child's status, not ours to take
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def signal_if_alive(pid: int | None, started: int | None, sig: int) -> bool:
    if not is_alive(pid, started):
        return False
    try:
        os.kill(pid, sig)  # type: ignore[arg-type]
    except ProcessLookupError:
        return False
    return True


def wait_gone(pid: int, started: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        reap(pid)
        if not is_alive(pid, started):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def spawn_detached(argv: list[str], env: dict[str, str], log_path: Path, cwd: Path,
                   preexec: Callable[[], None]) -> tuple[int, int | None]:
    """Start argv in its own session (a Ctrl-C at the harness does not reach it, and it outlives
    the `shoal dev up` that made it), output appended to log_path. Returns (pid, start time)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=cwd, start_new_session=True, preexec_fn=preexec, close_fds=True)
    return proc.pid, start_time(proc.pid)


def pids_with_cmdline(needle: str) -> set[int]:
    """Processes whose command line mentions needle (e.g. a node's state dir: its daemon and the
    per-container supervisors, which live outside the container cgroups)."""
    raw = needle.encode()
    out: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                if raw in f.read():
                    out.add(int(entry.name))
        except OSError:
            pass
    return out


def kill_all(pids: Iterable[int]) -> set[int]:
    """SIGKILL each (never ourselves or our parent); the pids that were signalled."""
    protected = {os.getpid(), os.getppid()}
    hit: set[int] = set()
    for pid in pids:
        if pid in protected:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            hit.add(pid)
        except ProcessLookupError:
            pass
        reap(pid)
    return hit


# --- cgroups -------------------------------------------------------------------------------

def cgroup_mounts(mountinfo: str | None = None) -> list[Path]:
    """Mount points of every cgroup hierarchy, v1 and v2."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    out = []
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        fields, post_fields = pre.split(), post.split()
        if len(fields) >= 5 and post_fields and post_fields[0] in ("cgroup", "cgroup2"):
            out.append(Path(fields[4].replace("\\040", " ")))
    return out


def cgroup_dirs(pattern: re.Pattern[str]) -> list[Path]:
    """Top-level cgroups, in every hierarchy, whose name matches pattern."""
    out = []
    for mount in cgroup_mounts():
        try:
            for entry in os.scandir(mount):
                if entry.is_dir(follow_symlinks=False) and pattern.match(entry.name):
                    out.append(Path(entry.path))
        except OSError:
            pass
    return out


def pids_in_cgroups(tops: Iterable[Path]) -> set[int]:
    pids: set[int] = set()
    for top in tops:
        for procs in [top / "cgroup.procs", *top.rglob("*/cgroup.procs")]:
            try:
                pids.update(int(x) for x in procs.read_text().split())
            except (OSError, ValueError):
                pass
    return pids


def remove_cgroup_tree(top: Path) -> bool:
    """rmdir children before parents; True if the whole tree is gone."""
    if not top.exists():
        return True
    subdirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for d in [*subdirs, top]:
        try:
            d.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            return False
    return True


# --- mounts --------------------------------------------------------------------------------

def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def mounts_under(path: Path) -> list[str]:
    prefix = str(path)
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            target = _unescape(line.split()[1])
            if target == prefix or target.startswith(prefix + "/"):
                out.append(target)
    return out


def umount_all(path: Path) -> int:
    """Detach every mount at or under path, deepest first; the count detached."""
    n = 0
    for _ in range(5):  # a mount may hide another on the same target: go until none is left
        targets = sorted(set(mounts_under(path)), key=len, reverse=True)
        if not targets:
            break
        for t in targets:
            if subprocess.run(["umount", "-l", t], capture_output=True).returncode == 0:
                n += 1
    return n
