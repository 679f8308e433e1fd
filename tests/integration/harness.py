"""Starts a real shoald on a private state dir and socket, and leaves nothing behind."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_dirs(parent: str) -> list[Path]:
    """Every directory of this cgroup parent, in v1 controllers and in a v2 hierarchy."""
    out = []
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        candidates = [CGROUP_ROOT / parent]
    else:
        candidates = [p / parent for p in CGROUP_ROOT.iterdir() if p.is_dir()]
    for c in candidates:
        if c.is_dir():
            out.append(c)
    return out


def pids_in_cgroups(parent: str) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(parent):
        for procs in top.rglob("cgroup.procs"):
            try:
                pids.update(int(x) for x in procs.read_text().split())
            except OSError:
                pass
    return pids


def mounts_under(path: Path) -> list[str]:
    prefix = str(path)
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            target = line.split()[1].encode().decode("unicode_escape")
            if target == prefix or target.startswith(prefix + "/"):
                out.append(target)
    return out


def remove_cgroups(parent: str) -> None:
    for top in cgroup_dirs(parent):
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass


@dataclass
class Daemon:
    root: Path
    cgroup_parent: str
    hostname: str = "node1"
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self):
        self.port = free_port()
        self.state_dir = self.root / "state"
        self.socket = self.root / "run" / "shoal.sock"
        self.log_path = self.root / "shoald.log"

    @property
    def env(self) -> dict:
        env = dict(os.environ)
        env["SHOAL_HOST"] = f"unix://{self.socket}"
        env["PYTHONPATH"] = str(REPO)
        return env

    def start(self, timeout: float = 20, extra: tuple[str, ...] = ()) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.main", "--state-dir", str(self.state_dir), "--socket", str(self.socket),
             "--hostname", self.hostname, "--cgroup-parent", self.cgroup_parent, "--log-level", "debug",
             "--listen-addr", f"127.0.0.1:{self.port}", *extra],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"shoald exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            if self.socket.exists():
                r = self.cli("node", "ls", check=False)  # any answer (even an error) means it is serving
                if "Cannot connect" not in r.stderr:
                    return
            time.sleep(0.1)
        raise RuntimeError("shoald did not start:\n" + self.log_path.read_text()[-3000:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cli(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, env=self.env,
                           cwd=REPO, input=input, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"shoal {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def json(self, *args: str):
        return json.loads(self.cli(*args).stdout)

    def api(self, path: str):
        """GET an API path straight from the socket (the CLI's tables are for people)."""
        conn = _UnixHTTPConnection(str(self.socket))
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return json.loads(resp.read() or b"null")
        finally:
            conn.close()

    def api_tasks(self, service: str | None = None) -> list[dict]:
        import urllib.parse
        filters = json.dumps({"service": [service]}) if service else "{}"
        return self.api("/tasks?filters=" + urllib.parse.quote(filters))

    def _purge_overlay(self) -> None:
        _purge_overlay_of(self.state_dir)

    def cleanup(self) -> None:
        """Leave nothing: daemon, container processes, mounts, cgroups, files."""
        self.stop(signal.SIGKILL)
        keep = Path(tempfile.gettempdir()) / "shoal-last-logs"  # for reading after a failed test
        keep.mkdir(exist_ok=True)
        if self.log_path.exists():
            shutil.copy(self.log_path, keep / f"{self.hostname}.log")
        for _ in range(50):
            pids = pids_in_cgroups(self.cgroup_parent)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            # the per-container supervisors live outside the cgroup; find them by their bundle path
            for shim in _shims_of(self.state_dir):
                try:
                    os.kill(shim, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not pids:
                break
            time.sleep(0.1)
        self._purge_overlay()
        for m in sorted(mounts_under(self.root), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        remove_cgroups(self.cgroup_parent)
        shutil.rmtree(self.root, ignore_errors=True)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.unix_path)


def _purge_overlay_of(state_dir: Path) -> None:
    """The overlay namespaces, links and nftables table a killed daemon left in this namespace."""
    try:
        node_id = json.loads((state_dir / "swarm" / "node.json").read_text())["NodeID"]
    except (OSError, ValueError, KeyError):
        return
    from overlay import purge
    from worker.networks import node_prefix
    purge(node_prefix(node_id))


def _shims_of(state_dir: Path) -> list[int]:
    out = []
    needle = str(state_dir).encode()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if needle in (p / "cmdline").read_bytes():
                out.append(int(p.name))
        except OSError:
            pass
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_daemon(hostname: str = "node1") -> Daemon:
    root = Path(tempfile.mkdtemp(prefix="shoal-it-"))
    return Daemon(root=root, cgroup_parent=f"shoal-it-{os.getpid()}-{root.name[-6:]}", hostname=hostname)


def wait_for(predicate, timeout: float = 30, interval: float = 0.2, what: str = "condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
