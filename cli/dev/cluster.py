"""A local multi-host cluster: one network namespace, address, state dir, cgroup parent and
`shoald` per node, wired through a bridge in a namespace of its own, and formed into a swarm
with the real `shoal swarm init / join-token / join` commands over that network.

`shoal dev ...` and the pytest fixtures (tests/multihost/conftest.py) both drive this class.
"""
from __future__ import annotations

import functools
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from cli.dev import layout, netns, procs
from cli.dev.state import ClusterState, NodeRecord, load, lock_path, locked, save

REPO = Path(__file__).resolve().parents[2]
DAEMON_ROLES = ("manager", "worker")


class HarnessError(Exception):
    """A harness step failed; one line naming the node or option and the reason."""


@dataclass(frozen=True)
class NodeStatus:
    name: str
    role: str
    address: str
    pid: int | None
    state: str        # running | stopped | exited | - (probe: a namespace without a daemon)
    cut: bool
    netem: str

    @property
    def display_state(self) -> str:
        return self.state + (", cut" if self.cut else "")


@dataclass
class DownReport:
    processes: int = 0
    mounts: int = 0
    cgroups: int = 0
    namespaces: int = 0
    leftovers: list[str] = field(default_factory=list)

    def summary(self) -> str:
        s = (f"killed {self.processes} processes, unmounted {self.mounts} mounts, removed {self.cgroups} cgroups "
             f"and {self.namespaces} network namespaces")
        return s + (f"; LEFT BEHIND: {', '.join(self.leftovers)}" if self.leftovers else "")


@functools.lru_cache(maxsize=1)
def supports_join() -> bool:
    """Whether this checkout's CLI has `shoal swarm join` (multi-node clusters need it)."""
    r = subprocess.run([sys.executable, "-m", "cli.main", "swarm", "join", "--help"], capture_output=True,
                       cwd=REPO, env=_python_env(dict(os.environ)))
    return r.returncode == 0


def require_root() -> None:
    if os.geteuid() != 0:
        raise HarnessError("shoal dev: needs root (network namespaces, cgroups and mounts)")


def _python_env(env: dict[str, str]) -> dict[str, str]:
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class DevCluster:
    def __init__(self, name: str = layout.DEFAULT_CLUSTER, root: Path | None = None):
        self.name = layout.validate_cluster_name(name)
        self.dir = layout.cluster_dir(name, root)

    # --- state ---------------------------------------------------------------------------

    def exists(self) -> bool:
        return (self.dir / "cluster.json").exists()

    def state(self) -> ClusterState:
        st = load(self.dir)
        if st is None:
            raise HarnessError(f"--name: no dev cluster {self.name!r} (start one with `shoal dev up --name {self.name}`)")
        return st

    def record(self, node: str) -> NodeRecord:
        layout.parse_node(node)
        st = self.state()
        if node not in st.nodes:
            raise HarnessError(f"NODE: cluster {self.name!r} has no node {node!r} (it has {', '.join(st.nodes)})")
        return st.nodes[node]

    def _daemon_record(self, node: str) -> NodeRecord:
        rec = self.record(node)
        if rec.role not in DAEMON_ROLES:
            raise HarnessError(f"NODE: {node!r} is a probe namespace without a daemon")
        return rec

    def _update(self, node: str, **changes: Any) -> None:
        with locked(self.dir):
            st = self.state()
            for k, v in changes.items():
                setattr(st.nodes[node], k, v)
            save(st)

    def paths(self, node: str) -> layout.NodePaths:
        return layout.node_paths(self.dir, node)

    def address(self, node: str) -> str:
        return self.record(node).address

    def bin_dir(self) -> Path:
        return self.dir / "bin"

    # --- bring-up ------------------------------------------------------------------------

    def up(self, managers: int = 1, workers: int = 2, *, init: bool = True, join: bool = True,
           log_level: str = "info", timeout: float = 60.0) -> dict[str, float]:
        """Namespaces, bridge, addresses, daemons; then `swarm init` on m1 (unless init=False) and
        `swarm join` on every other node (unless join=False; nothing joins without init).
        Returns the seconds each `swarm join` took."""
        require_root()
        netns.require_tools("ip")
        names = layout.node_names(managers, workers)
        for n in names:
            self.paths(n)  # socket path length, before anything is made
        if init and join and len(names) > 1 and not supports_join():
            raise HarnessError("--managers/--workers: `shoal swarm join` is not available in this checkout, so only "
                               "--managers 1 --workers 0 can form a swarm (or pass --no-join to start the daemons only)")
        deadline = time.monotonic() + timeout
        with locked(self.dir):
            if self.exists():
                raise HarnessError(f"--name: dev cluster {self.name!r} already exists (`shoal dev ls --name {self.name}`, "
                                   f"`shoal dev down --name {self.name}`)")
            leftovers = [n for n in netns.list_all() if layout.owned_netns_re(self.name).match(n)]
            if leftovers:
                raise HarnessError(f"--name: leftovers of an earlier cluster {self.name!r} ({', '.join(leftovers)}); "
                                   f"run `shoal dev down --name {self.name}` first")
            st = ClusterState(name=self.name, dir=str(self.dir), bridge_netns=layout.bridge_netns(self.name),
                              log_level=log_level)
            for n in names:
                role, _ = layout.parse_node(n)
                st.nodes[n] = NodeRecord(name=n, role=role, address=layout.node_address(n),
                                         netns=layout.netns_name(self.name, n),
                                         cgroup_parent=layout.cgroup_parent(self.name, n))
            # Written before anything exists: from here on `down` knows every name it may find.
            save(st)
            self._write_wrappers()
            self._make_network(st)
            for n in names:
                self._spawn(n, log_level)
        for n in names:
            self._wait_api(n, deadline)
        joins: dict[str, float] = {}
        if init:
            self._init_swarm(deadline)
            if join:
                joins = self._join_all(names[1:], deadline)
            self.wait_ready(names if join else names[:1], timeout=max(1.0, deadline - time.monotonic()))
        return joins

    def _write_wrappers(self) -> None:
        """`shoal`/`shoald` for commands run with `shoal dev exec`: this checkout's code with this
        interpreter, whatever is (or is not) installed on PATH."""
        bindir = self.bin_dir()
        bindir.mkdir(parents=True, exist_ok=True)
        for name, module in (("shoal", "cli.main"), ("shoald", "daemon.main")):
            p = bindir / name
            p.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}" '
                         f'exec "{sys.executable}" -m {module} "$@"\n')
            p.chmod(0o755)

    def _make_network(self, st: ClusterState) -> None:
        netns.create(st.bridge_netns)
        netns.create_bridge(st.bridge_netns, layout.BRIDGE)
        for rec in st.nodes.values():
            self._plug(st, rec)

    def _plug(self, st: ClusterState, rec: NodeRecord) -> None:
        netns.create(rec.netns)
        netns.attach(st.bridge_netns, layout.BRIDGE, layout.bridge_port(rec.name), rec.netns, layout.NODE_IFNAME,
                     rec.address, layout.PREFIX_LEN)

    def add_probe(self) -> str:
        """A plain namespace on the cluster's network, without a daemon: a vantage point for
        reachability checks (p1, p2, ...)."""
        require_root()
        with locked(self.dir):
            st = self.state()
            i = 1
            while layout.probe_name(i) in st.nodes:
                i += 1
            name = layout.probe_name(i)
            rec = NodeRecord(name=name, role="probe", address=layout.node_address(name),
                             netns=layout.netns_name(self.name, name))
            st.nodes[name] = rec
            save(st)
            self._plug(st, rec)
        return name

    # --- the daemons ---------------------------------------------------------------------

    def _daemon_argv(self, rec: NodeRecord, log_level: str) -> list[str]:
        p = self.paths(rec.name)
        return [sys.executable, "-m", "daemon.main", "--state-dir", str(p.state_dir), "--socket", str(p.socket),
                "--hostname", rec.name, "--cgroup-parent", rec.cgroup_parent,
                "--listen-addr", f"{rec.address}:{layout.CLUSTER_PORT}", "--advertise-addr", rec.address,
                "--log-level", log_level]

    def _spawn(self, node: str, log_level: str | None = None) -> None:
        with locked(self.dir):
            rec = self._daemon_record(node)
            if procs.is_alive(rec.pid, rec.start_time):
                raise HarnessError(f"NODE: {node} is already running (pid {rec.pid})")
            p = self.paths(node)
            p.dir.mkdir(parents=True, exist_ok=True)
            if log_level is None:
                log_level = self.state().log_level
            env = _python_env(dict(os.environ))
            env["SHOAL_HOST"] = f"unix://{p.socket}"
            with open(p.log, "a") as f:
                f.write(f"--- shoal dev: starting {node} at {time.strftime('%H:%M:%S')}\n")
            pid, started = procs.spawn_detached(self._daemon_argv(rec, log_level), env, p.log, REPO,
                                                functools.partial(netns.enter, rec.netns))
            self._update(node, pid=pid, start_time=started, stopped=False)

    def _wait_api(self, node: str, deadline: float) -> None:
        rec = self.record(node)
        while True:
            try:
                if self.api(node, "/_ping", timeout=2) == "OK":
                    return
            except (OSError, http.client.HTTPException, ValueError):
                pass
            if not procs.is_alive(rec.pid, rec.start_time):
                procs.reap(rec.pid or 0)
                raise HarnessError(f"{node}: shoald exited during start-up; last lines of {self.paths(node).log}:\n"
                                   + self.log_tail(node, 25))
            if time.monotonic() > deadline:
                raise HarnessError(f"{node}: shoald did not answer on {self.paths(node).socket} in time; log tail:\n"
                                   + self.log_tail(node, 25))
            time.sleep(0.05)

    def start(self, node: str, timeout: float = 30.0) -> None:
        """Start the node's daemon again, on the same state; returns once its API answers."""
        self._spawn(node)
        self._wait_api(node, time.monotonic() + timeout)

    def stop(self, node: str, timeout: float = 15.0) -> None:
        """SIGTERM, as an administrator would; SIGKILL after timeout."""
        rec = self._daemon_record(node)
        if procs.signal_if_alive(rec.pid, rec.start_time, signal.SIGTERM):
            if not procs.wait_gone(rec.pid, rec.start_time, timeout):  # type: ignore[arg-type]
                procs.signal_if_alive(rec.pid, rec.start_time, signal.SIGKILL)
                procs.wait_gone(rec.pid, rec.start_time, 5)  # type: ignore[arg-type]
        self._update(node, stopped=True)

    def kill(self, node: str) -> None:
        """SIGKILL: the daemon gets no chance to say goodbye (its containers keep running)."""
        rec = self._daemon_record(node)
        if procs.signal_if_alive(rec.pid, rec.start_time, signal.SIGKILL):
            procs.wait_gone(rec.pid, rec.start_time, 5)  # type: ignore[arg-type]
        self._update(node, stopped=True)

    def restart(self, node: str, timeout: float = 30.0) -> None:
        self.stop(node)
        self.start(node, timeout)

    # --- the network ---------------------------------------------------------------------

    def cut(self, node: str) -> None:
        """Pull the node's cable: its bridge port goes down, so nothing gets in or out while the
        node itself (addresses, routes, sockets) stays as it was."""
        self.record(node)
        netns.set_link(self.state().bridge_netns, layout.bridge_port(node), up=False)
        self._update(node, cut=True)

    def heal(self, node: str) -> None:
        self.record(node)
        netns.set_link(self.state().bridge_netns, layout.bridge_port(node), up=True)
        self._update(node, cut=False)

    def netem(self, node: str, delay: str = "", loss: str = "", jitter: str = "") -> None:
        """Delay/loss on everything the node sends (tc netem on its interface; a round trip to
        it gets the delay once)."""
        rec = self.record(node)
        args = netns.netem_args(delay=delay, loss=loss, jitter=jitter)
        netns.set_netem(rec.netns, layout.NODE_IFNAME, args)
        self._update(node, netem=" ".join(args))

    def clear_netem(self, node: str) -> None:
        rec = self.record(node)
        netns.clear_netem(rec.netns, layout.NODE_IFNAME)
        self._update(node, netem="")

    # --- running things on a node ---------------------------------------------------------

    def env(self, node: str, base: dict[str, str] | None = None) -> dict[str, str]:
        rec = self.record(node)
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.bin_dir()}{os.pathsep}{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        env["SHOAL_DEV_CLUSTER"] = self.name
        env["SHOAL_DEV_NODE"] = node
        if rec.role in DAEMON_ROLES:
            env["SHOAL_HOST"] = f"unix://{self.paths(node).socket}"
        else:
            env.pop("SHOAL_HOST", None)
        return env

    def exec(self, node: str, *cmd: str, check: bool = False, timeout: float = 120.0,
             input: str | None = None) -> subprocess.CompletedProcess:
        """Run cmd inside the node's network namespace with SHOAL_HOST at its daemon; output captured."""
        if not cmd:
            raise HarnessError("CMD: give a command to run")
        rec = self.record(node)
        r = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env(node), input=input,
                           timeout=timeout, preexec_fn=functools.partial(netns.enter, rec.netns))
        if check and r.returncode != 0:
            raise HarnessError(f"{node}: {' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        return r

    def exec_replace(self, node: str, cmd: list[str]) -> None:
        """Become cmd inside the node's namespace (what `shoal dev exec` does): the terminal,
        signals and exit status are the command's own."""
        if not cmd:
            raise HarnessError("CMD: give a command to run (shoal dev exec NODE -- CMD...)")
        rec = self.record(node)
        env = self.env(node)
        netns.enter(rec.netns)
        try:
            os.execvpe(cmd[0], cmd, env)
        except FileNotFoundError:
            raise HarnessError(f"CMD: {cmd[0]}: command not found") from None

    def shoal(self, node: str, *args: str, check: bool = True, timeout: float = 120.0,
              input: str | None = None) -> subprocess.CompletedProcess:
        """`shoal ARGS` on the node (the same CLI a user runs), inside its namespace."""
        return self.exec(node, str(self.bin_dir() / "shoal"), *args, check=check, timeout=timeout, input=input)

    def api(self, node: str, path: str, method: str = "GET", body: Any = None, timeout: float = 10.0) -> Any:
        """One request to the node's daemon socket; the decoded JSON (or text). Raises OSError
        if the daemon is not there, ValueError with the daemon's message on an error status."""
        conn = _UnixHTTPConnection(str(self.paths(node).socket), timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            raw = resp.read()
            ctype = resp.getheader("Content-Type", "")
            payload = json.loads(raw) if raw and "json" in ctype else raw.decode()
            if resp.status >= 400:
                msg = payload.get("message") if isinstance(payload, dict) else payload
                raise ValueError(f"{node}: {method} {path}: {resp.status} {msg}")
            return payload
        finally:
            conn.close()

    # --- swarm formation -----------------------------------------------------------------

    def _init_swarm(self, deadline: float) -> None:
        addr = self.address("m1")
        self.shoal("m1", "swarm", "init", "--advertise-addr", addr,
                   "--listen-addr", f"{addr}:{layout.CLUSTER_PORT}", timeout=max(1.0, deadline - time.monotonic()))
        self.wait_ready(["m1"], timeout=max(1.0, deadline - time.monotonic()))

    def join_token(self, role: str, via: str = "m1") -> str:
        return self.shoal(via, "swarm", "join-token", "-q", role).stdout.strip()

    def join(self, node: str, via: str = "m1", timeout: float = 60.0) -> float:
        """`shoal swarm join` with the token for the node's role; the seconds it took."""
        role = self._daemon_record(node).role
        token = self.join_token(role, via)
        target = f"{self.address(via)}:{layout.CLUSTER_PORT}"
        t0 = time.monotonic()
        self.shoal(node, "swarm", "join", "--token", token, target, timeout=timeout)
        seconds = time.monotonic() - t0
        self._update(node, join_seconds=round(seconds, 3))
        return seconds

    def _join_all(self, nodes: list[str], deadline: float) -> dict[str, float]:
        # One at a time: a manager joining changes the raft membership, and Swarm too adds them one by one.
        return {n: self.join(n, timeout=max(1.0, deadline - time.monotonic())) for n in nodes}

    def swarm_nodes(self, via: str = "m1") -> dict[str, dict]:
        """hostname -> node object, as the manager `via` sees the swarm."""
        return {n.get("Description", {}).get("Hostname", ""): n for n in self.api(via, "/nodes")}

    def wait_ready(self, nodes: list[str] | None = None, via: str = "m1", timeout: float = 30.0) -> None:
        """Until every given node (default: every daemon) is Ready in the manager's view, and
        every manager among them is reachable."""
        st = self.state()
        wanted = nodes or [n for n, r in st.nodes.items() if r.role in DAEMON_ROLES]
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                seen = self.swarm_nodes(via)
                missing = [n for n in wanted if not _ready(seen.get(n), st.nodes[n].role)]
                if not missing:
                    return
                last = f"not ready yet: {', '.join(missing)}"
            except (OSError, http.client.HTTPException, ValueError) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise HarnessError(f"cluster {self.name}: nodes not Ready after {timeout:.0f}s ({last})")
            time.sleep(0.1)

    # --- looking ---------------------------------------------------------------------------

    def ls(self) -> list[NodeStatus]:
        out = []
        for rec in self.state().nodes.values():
            if rec.role not in DAEMON_ROLES:
                state = "-"
            elif procs.is_alive(rec.pid, rec.start_time):
                state = "running"
            else:
                procs.reap(rec.pid or 0)
                state = "stopped" if rec.stopped else "exited"
            out.append(NodeStatus(rec.name, rec.role, rec.address, rec.pid if state == "running" else None,
                                  state, rec.cut, rec.netem))
        return out

    def log_tail(self, node: str, lines: int = 50) -> str:
        try:
            with open(self.paths(node).log, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 200 * lines))
                return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    # --- teardown ---------------------------------------------------------------------------

    def down(self, timeout: float = 15.0) -> DownReport:
        return teardown(self.name, self.dir.parent, timeout)


def _ready(node: dict | None, role: str) -> bool:
    if not node or node.get("Status", {}).get("State") != "ready":
        return False
    if role == "manager":
        return (node.get("ManagerStatus") or {}).get("Reachability") == "reachable"
    return True


def list_clusters(root: Path | None = None) -> list[str]:
    base = root or layout.dev_root()
    try:
        return sorted(d.name for d in base.iterdir() if (d / "cluster.json").exists())
    except FileNotFoundError:
        return []


def _owned_node_names(name: str, cdir: Path, st: ClusterState | None) -> set[str]:
    names = set(st.nodes) if st else set()
    pat = layout.owned_netns_re(name)
    names |= {m.group(1) for n in netns.list_all() if (m := pat.match(n)) and m.group(1) != "net"}
    prefix = f"shoal-dev-{name}-"
    names |= {d.name[len(prefix):] for d in procs.cgroup_dirs(layout.owned_cgroup_re(name))}
    if cdir.is_dir():
        for d in cdir.iterdir():
            try:
                layout.parse_node(d.name)
                names.add(d.name)
            except ValueError:
                pass
    return names


def teardown(name: str, root: Path | None = None, timeout: float = 15.0) -> DownReport:
    """Remove every process, mount, cgroup, namespace and file of cluster `name`. Works from the
    state file, and without it from the names alone (a harness that crashed before writing it);
    running it again finds nothing and succeeds."""
    require_root()
    layout.validate_cluster_name(name)
    cdir = layout.cluster_dir(name, root)
    report = DownReport()
    with locked(cdir):
        try:
            st = load(cdir)
        except ValueError:
            st = None
        nodes = _owned_node_names(name, cdir, st)
        spaces = {layout.netns_name(name, n) for n in nodes} | {layout.bridge_netns(name)}
        if st:
            spaces |= {r.netns for r in st.nodes.values()} | {st.bridge_netns}
        cgroup_re = layout.owned_cgroup_re(name)

        # The daemons first, so none of them starts a replacement for a container killed below.
        killed: set[int] = set()
        if st:
            for rec in st.nodes.values():
                if procs.signal_if_alive(rec.pid, rec.start_time, signal.SIGKILL):
                    killed.add(rec.pid)  # type: ignore[arg-type]
        needles = [str(layout.node_paths(cdir, n).state_dir) for n in nodes]
        deadline = time.monotonic() + timeout
        while True:
            pids: set[int] = set()
            for needle in needles:
                pids |= procs.pids_with_cmdline(needle)
            pids |= procs.pids_in_cgroups(procs.cgroup_dirs(cgroup_re))
            for ns in spaces:
                pids |= netns.pids_in(ns)
            pids.discard(os.getpid())
            if not pids:
                break
            if time.monotonic() > deadline:
                report.leftovers.append(f"processes {sorted(pids)}")
                break
            killed |= procs.kill_all(pids)
            time.sleep(0.05)
        report.processes = len(killed)

        report.mounts = procs.umount_all(cdir)
        if procs.mounts_under(cdir):
            report.leftovers.append(f"mounts {procs.mounts_under(cdir)}")

        for top in procs.cgroup_dirs(cgroup_re):
            while not procs.remove_cgroup_tree(top):
                if time.monotonic() > deadline:  # a task that takes its time to exit keeps it busy
                    report.leftovers.append(f"cgroup {top}")
                    break
                time.sleep(0.05)
            else:
                report.cgroups += 1

        for n in nodes:  # the overlay networks a node's daemon made, if it died before removing them
            _purge_overlay(layout.node_paths(cdir, n).state_dir, f"/run/netns/{layout.netns_name(name, n)}", report)

        for ns in sorted(spaces):
            try:
                if netns.delete(ns):
                    report.namespaces += 1
            except netns.NetError as exc:
                report.leftovers.append(str(exc))

        for rec in (st.nodes.values() if st else []):
            procs.reap(rec.pid or 0)  # our own children (the pytest fixture's daemons): no zombies
        if not report.leftovers:
            shutil.rmtree(cdir, ignore_errors=True)
            try:
                lock_path(cdir).unlink()
            except FileNotFoundError:
                pass
    return report


def _purge_overlay(state_dir: Path, underlay: str, report: DownReport) -> None:
    from overlay import purge
    from worker.networks import node_prefix
    try:
        node_id = json.loads((state_dir / "swarm" / "node.json").read_text())["NodeID"]
    except (OSError, ValueError, KeyError):
        return
    try:
        purge(node_prefix(node_id), underlay if os.path.exists(underlay) else None)
    except Exception as exc:  # keep tearing down the rest
        report.leftovers.append(f"overlay networks of {state_dir.parent.name}: {exc}")


def iter_owned(name: str, root: Path | None = None) -> Iterator[str]:
    """What of cluster `name` exists right now (what `down` must leave none of)."""
    cdir = layout.cluster_dir(name, root)
    for ns in netns.list_all():
        if layout.owned_netns_re(name).match(ns):
            yield f"netns {ns}"
    for top in procs.cgroup_dirs(layout.owned_cgroup_re(name)):
        yield f"cgroup {top}"
    for m in procs.mounts_under(cdir):
        yield f"mount {m}"
    for n in _owned_node_names(name, cdir, None):
        for pid in procs.pids_with_cmdline(str(layout.node_paths(cdir, n).state_dir)):
            if pid != os.getpid():
                yield f"process {pid}"
    if cdir.exists():
        yield f"dir {cdir}"
