"""Shoal's container runtime: OCI bundles, each container supervised by its own shim.

State directory of a container (root/<id>/):
    shoal.json      runtime bookkeeping: bundle, engine, cgroup, log settings, whether pid 1 is
                    Shoal's init (initproc.py) (written first)
    config.json     the OCI runtime spec (written last by create: its presence means "created");
                    for a bundle made elsewhere (create_bundle) it lives in that bundle
    rootfs/         overlayfs mount: layers read-only below, upper/ + work/ for writes
    hostname, hosts, resolv.conf   bound over the image's /etc files (with the config's extra
                    hosts and DNS settings)
    container.log   stdout and stderr in Docker's json-file format, rotated to .1, .2, ...
                    (left empty with log_driver "none": the shim drops the output)
    state.json      written by the shim once the process runs: pids and start times
    stop.json       a stop in progress: signal and the time to SIGKILL (the shim enforces it)
    exit.json       written by the shim when the process has exited: its last act
Everything the daemon needs to know about a container is on disk, so a new daemon on the
same root re-adopts what an old one started.

Processes: one node supervisor per root (supervisor.py, started on first use) forks a shim per
container (shim.py) and a helper per exec (nsexec.py). The engine that creates the container's
init is Shoal's own (nsinit.py), or runc or crun on the same bundle.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

from . import engines, idmap, linux, procfs, seccomp
from .cgroups import Cgroup, CgroupLayout, Resources, detect_layout
from .client import SupervisorClient
from .config import (ContainerConfig, ContainerExistsError, ContainerNotFoundError, ContainerState,
                     ContainerStateError, UserNamespace)
from .paths import secure_join
from .spec import add_groups, build_spec, capability_set, home_dir, hosts_file, parse_user, resolv_conf

START_TIMEOUT = 30.0
STOP_SLACK = 2.0  # past the deadline, how long the shim gets to SIGKILL before the daemon does it
_ID = re.compile(r"^[a-f0-9]{64}$")
_PAGE = os.sysconf("SC_PAGESIZE")


class ContainerStartError(RuntimeError):
    pass


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.rename(tmp, path)


@dataclass
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    error: str = ""          # why the process could not be executed (exit code 126/127)


@dataclass
class ExecProcess:
    """A process started by Runtime.exec. Its output comes from `output()` (or the raw fds);
    `wait()` gives its exit code. Closing (or dropping the connection) kills it."""
    pid: int
    error: str
    stdin: int | None = None     # write end, when asked for
    stdout: int | None = None    # read ends (None with a terminal)
    stderr: int | None = None
    pty: int | None = None       # the terminal's master side, with tty=True
    _conn: Any = field(default=None, repr=False)
    _exit_code: int | None = field(default=None, repr=False)

    async def output(self) -> AsyncIterator[tuple[str, bytes]]:
        """("stdout"|"stderr", chunk) until the process closes both (with a tty: "stdout" only)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        fds = {fd: name for fd, name in ((self.stdout, "stdout"), (self.stderr, "stderr"), (self.pty, "stdout"))
               if fd is not None}
        for fd in fds:
            os.set_blocking(fd, False)

            def readable(fd=fd) -> None:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    return
                except OSError:  # a pty reads EIO once the other side is closed
                    data = b""
                queue.put_nowait((fd, data))
                if not data:
                    loop.remove_reader(fd)
            loop.add_reader(fd, readable)
        try:
            open_fds = set(fds)
            while open_fds:
                fd, data = await queue.get()
                if not data:
                    open_fds.discard(fd)
                    continue
                yield fds[fd], data
        finally:
            for fd in fds:
                loop.remove_reader(fd)

    async def wait(self) -> int:
        if self._exit_code is None:
            loop = asyncio.get_running_loop()
            self._conn.setblocking(False)
            data = await loop.sock_recv(self._conn, 4096)
            self._exit_code = int(json.loads(data)["exit_code"]) if data else 255
        return self._exit_code

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            pass
        finally:
            os.close(pidfd)

    def close(self) -> None:
        """Release everything; a process still running is killed by its helper."""
        for name in ("stdin", "stdout", "stderr", "pty"):
            fd = getattr(self, name)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, name, None)
        if self._conn is not None:
            self._conn.close()


class Runtime:
    def __init__(self, root: Path, cgroup_parent: str = "shoal", layout: CgroupLayout | None = None,
                 engine: str = "shoal"):
        if engine not in engines.ENGINES:
            raise ValueError(f"engine: must be one of {', '.join(engines.ENGINES)}, got {engine!r}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.cgroup_parent = cgroup_parent
        self.layout = layout or detect_layout()
        self.engine = engine
        self.engine_bin = ""
        if engine != "shoal":
            found = shutil.which(engine)
            if not found:
                raise ValueError(f"engine: {engine} is not installed (apt-get install {engine})")
            self.engine_bin = found
        self.python = sys.executable
        self._supervisor = SupervisorClient(self.root, self.python)

    # -- paths ---------------------------------------------------------------------------

    def _bundle(self, id: str) -> Path:
        """The container's state directory (and its bundle, unless created from one elsewhere)."""
        if not isinstance(id, str) or not _ID.match(id):
            raise ValueError(f"id: must be 64 lowercase hex digits, got {id!r}")
        return self.root / id

    def _cgroup(self, id: str, meta: dict[str, Any] | None = None) -> Cgroup:
        path = (meta or {}).get("cgroup_path") or f"/{self.cgroup_parent}/{id}"
        return Cgroup.from_path(self.layout, path)

    def cgroup_dirs(self, id: str) -> list[Path]:
        meta = _read_json(self._bundle(id) / "shoal.json")
        return self._cgroup(id, meta).dirs()

    def log_path(self, id: str) -> Path:
        return self._bundle(id) / "container.log"

    def _meta(self, id: str) -> dict[str, Any]:
        meta = _read_json(self._bundle(id) / "shoal.json")
        if meta is None:
            raise ContainerNotFoundError(f"container: no such container {id}")
        return meta

    def _spec_path(self, id: str, meta: dict[str, Any]) -> Path:
        return Path(meta.get("bundle") or self._bundle(id)) / "config.json"

    @contextmanager
    def _locked(self, id: str) -> Iterator[None]:
        with open(self._bundle(id) / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    # -- create --------------------------------------------------------------------------

    def create(self, cfg: ContainerConfig) -> None:
        cfg.validate()
        if cfg.init:
            self._check_init(cfg)
        bundle = self._bundle(cfg.id)
        try:
            bundle.mkdir(mode=0o711)
        except FileExistsError:
            raise ContainerExistsError(f"id: container {cfg.id[:12]} already exists") from None
        try:
            self._create(cfg, bundle)
        except BaseException:
            self._teardown(cfg.id)
            raise

    def _check_init(self, cfg: ContainerConfig) -> None:
        """Only Shoal's engine has an init to give (initproc.py: its own process, forked); runc
        and crun would need an init binary in the container, and the node has none to bind in.
        Refused rather than ignored: the service would silently lose the signal forwarding and
        reaping it asked for."""
        if self.engine != "shoal":
            raise ValueError(f"init: the {self.engine} engine cannot run an init in the container "
                             f"(no init binary on this node); only the shoal engine can")
        if "CAP_SYS_PTRACE" in capability_set(cfg.cap_add, cfg.cap_drop) and cfg.user_namespace is None:
            # The init is the node's Python interpreter: a container that may ptrace its pid 1
            # could reach that host file through /proc/1/exe (runc's CVE-2019-5736).
            raise ValueError("init: cannot be combined with capability SYS_PTRACE (the init runs the node's "
                             "own Python interpreter) unless the node remaps user namespaces")

    def _meta_for(self, id: str, bundle: Path, cgroup_path: str, resources: dict[str, Any],
                  labels: dict[str, str], log_max_size: int, log_max_files: int, **extra: Any) -> dict[str, Any]:
        cgroup = Cgroup.from_path(self.layout, cgroup_path)
        state = self._bundle(id)
        return {
            "id": id, "created_at": time.time(), "labels": dict(labels), "bundle": str(bundle),
            "engine": self.engine, "cgroup_path": cgroup_path, "resources": resources,
            "cgroups": {"version": self.layout.version, "procs": cgroup.procs_files(),
                        "oom": cgroup.oom_source().get("path") or ""},
            "log": {"path": str(state / "container.log"), "max_size": log_max_size, "max_files": log_max_files},
            **extra,
        }

    def _create(self, cfg: ContainerConfig, bundle: Path) -> None:
        for name in ("rootfs", "upper", "work"):
            (bundle / name).mkdir(mode=0o755)
        lowers = [str(p) for p in cfg.layers]
        if not lowers:  # overlayfs needs a lower dir even for an image without layers
            (bundle / "empty").mkdir()
            lowers = [str(bundle / "empty")]
        extra: dict[str, Any] = {}
        if cfg.user_namespace is not None:
            self._prepare_userns(cfg, bundle)
            u = cfg.user_namespace
            extra["idmap"] = {"host_uid": u.host_uid, "host_gid": u.host_gid, "size": u.size}
        cgroup_path = f"/{self.cgroup_parent}/{cfg.id}"
        meta = self._meta_for(cfg.id, bundle, cgroup_path, {}, cfg.labels, cfg.log_max_size,
                              cfg.log_max_files, layers=lowers, **extra)
        meta["log"]["driver"] = cfg.log_driver  # the shim drops the output of a "none" container
        meta["init"] = cfg.init
        _write_json(bundle / "shoal.json", meta)
        self._mount_rootfs(bundle, meta)

        rootfs = str(bundle / "rootfs")
        passwd = self._read_image_file(rootfs, "/etc/passwd")
        group = self._read_image_file(rootfs, "/etc/group")
        uid, gid, extra_gids = parse_user(cfg.user, passwd, group)
        extra_gids = add_groups(gid, extra_gids, cfg.groups, group)
        if cfg.user_namespace is not None:
            for kind, value in (("uid", uid), ("gid", gid), *(("gid", g) for g in extra_gids)):
                if value >= cfg.user_namespace.size:
                    raise ValueError(f"user: {kind} {value} is outside the user namespace, which maps "
                                     f"ids 0-{cfg.user_namespace.size - 1}")

        hostname = cfg.effective_hostname
        (bundle / "hostname").write_text(hostname + "\n")
        (bundle / "hosts").write_text(hosts_file(hostname, cfg.extra_hosts))
        try:
            host_resolv = Path("/etc/resolv.conf").read_text()
        except OSError:
            host_resolv = ""
        (bundle / "resolv.conf").write_text(resolv_conf(host_resolv, cfg.dns_servers, cfg.dns_search, cfg.dns_options))
        etc = {f"/etc/{n}": str(bundle / n) for n in ("hostname", "hosts", "resolv.conf")}

        spec = build_spec(cfg, uid, gid, extra_gids, cgroup_path, etc, home=home_dir(uid, passwd))
        self._compile_seccomp(bundle, spec)
        meta["resources"] = spec["linux"]["resources"]
        _write_json(bundle / "shoal.json", meta)
        Cgroup.from_path(self.layout, cgroup_path).create(Resources.from_oci(meta["resources"]))
        fd = os.open(meta["log"]["path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.close(fd)
        _write_json(bundle / "config.json", spec)

    def _prepare_userns(self, cfg: ContainerConfig, bundle: Path) -> None:
        """The remapped root must reach the bundle (it sets up the mounts) and own the writable
        layer (so that / is its own); the image layers below are id-mapped at mount."""
        u = cfg.user_namespace
        assert u is not None
        for d in [bundle, *bundle.parents]:
            if not searchable(d, u):
                raise ValueError(f"user_namespace: {d} is not searchable by uid {u.host_uid} "
                                 f"(it needs o+x, or g+x with group {u.host_gid})")
        os.chown(bundle / "upper", u.host_uid, u.host_gid)

    def create_bundle(self, id: str, bundle: Path, labels: dict[str, str] | None = None,
                      log_max_size: int = 10 * 1024 * 1024, log_max_files: int = 3) -> None:
        """Take a standard OCI bundle (config.json + its root) made elsewhere as container id: the
        bundle is used as it is and left in place by delete. Its linux.cgroupsPath (absolute, or
        default /<cgroup_parent>/<id>) and linux.resources set up the cgroup, as runc would."""
        state = self._bundle(id)
        bundle = Path(bundle).resolve()
        spec = _read_json(bundle / "config.json")
        if not isinstance(spec, dict) or not isinstance(spec.get("process"), dict):
            raise ValueError(f"bundle: {bundle}/config.json is missing or has no process")
        linux_spec = spec.get("linux") or {}
        cgroup_path = linux_spec.get("cgroupsPath") or f"/{self.cgroup_parent}/{id}"
        resources = linux_spec.get("resources") or {}
        try:
            state.mkdir(mode=0o711)
        except FileExistsError:
            raise ContainerExistsError(f"id: container {id[:12]} already exists") from None
        try:
            meta = self._meta_for(id, bundle, cgroup_path, resources, labels or {}, log_max_size, log_max_files,
                                  external=True)
            self._compile_seccomp(state, spec)
            _write_json(state / "shoal.json", meta)
            Cgroup.from_path(self.layout, cgroup_path).create(Resources.from_oci(resources))
            os.close(os.open(meta["log"]["path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640))
        except BaseException:
            self._teardown(id)
            raise

    @staticmethod
    def _compile_seccomp(state: Path, spec: dict[str, Any]) -> None:
        """The container's BPF filter, compiled here once (and cached for the next container
        with the same profile) rather than by every container init."""
        section = (spec.get("linux") or {}).get("seccomp")
        if section:
            (state / "seccomp.bpf").write_bytes(seccomp.compile_cached(section))

    @staticmethod
    def _read_image_file(rootfs: str, path: str) -> str:
        try:
            with open(secure_join(rootfs, path), errors="replace") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return ""

    def _mount_rootfs(self, bundle: Path, meta: dict[str, Any]) -> None:
        rootfs = bundle / "rootfs"
        if meta.get("external") or os.path.ismount(rootfs):
            return
        options = (f"lowerdir={':'.join(reversed(meta['layers']))},"
                   f"upperdir={bundle / 'upper'},workdir={bundle / 'work'}")
        if len(options) >= _PAGE:
            raise ValueError(f"layers: {len(meta['layers'])} layers make overlay options longer than "
                             f"{_PAGE} bytes")
        if meta.get("idmap"):
            m = meta["idmap"]  # a user namespace: the layers id-mapped to its range (idmap.py)
            idmap.mount_overlay(rootfs, meta["layers"], options,
                                UserNamespace(m["host_uid"], m["host_gid"], m["size"]))
        else:
            linux.mount("overlay", rootfs, "overlay", 0, options)

    # -- start ---------------------------------------------------------------------------

    def start(self, id: str) -> int:
        """Start the container's process; returns its pid (host pid namespace).

        A process that cannot be executed (missing binary, bad cwd) still "starts": its pid is
        returned and the container ends up stopped with exit code 126/127 and an error.
        """
        state = self._bundle(id)
        meta = self._meta(id)
        with self._locked(id):
            st = self.state(id)
            if st.status != "created":
                raise ContainerStateError(f"container {id[:12]} is {st.status}, not created")
            self._mount_rootfs(state, meta)  # gone after a reboot
            cgroup = self._cgroup(id, meta)
            if not cgroup.exists():
                cgroup.create(self._resources(meta))
            engine = meta.get("engine", "shoal")
            oom = meta["cgroups"].get("oom") or ""
            if isinstance(oom, dict):  # written by the runtime before the supervisor existed
                oom = oom.get("path") or ""
            req = {"op": "start", "id": id, "state": str(state), "bundle": meta.get("bundle") or str(state),
                   "engine": engine, "cgroups": {"version": self.layout.version,
                                                 "procs": meta["cgroups"]["procs"]},
                   "oom": oom, "log": meta.get("log") or {"path": str(state / "container.log")},
                   "init": bool(meta.get("init"))}
            if engine != "shoal":
                req.update(engine_bin=self.engine_bin or shutil.which(engine) or engine,
                           engine_root=str(self._engine_root(engine)),
                           hide_unified=engine == "crun" and engines.hybrid_unified())
            try:
                conn, msg, _ = self._supervisor.request(req, timeout=START_TIMEOUT)
            except TimeoutError:
                raise ContainerStartError(f"start: no word from the shim of {id[:12]} in "
                                          f"{START_TIMEOUT:.0f} s") from None
            conn.close()
        if msg.get("pid") is None:
            exit_info = _read_json(state / "exit.json") or {}
            reason = msg.get("error") or exit_info.get("error") or "shim exited without a report"
            raise ContainerStartError(f"start: container {id[:12]}: {reason}")
        return int(msg["pid"])

    @staticmethod
    def _resources(meta: dict[str, Any]) -> Resources:
        res = meta.get("resources") or {}
        if "memory_limit" in res or "nano_cpus" in res:  # the earlier runtime's own format
            return Resources(memory_limit=res.get("memory_limit"), pids_limit=res.get("pids_limit"),
                             nano_cpus=res.get("nano_cpus"))
        return Resources.from_oci(res)

    def _engine_root(self, engine: str) -> Path:
        """runc's/crun's own state (--root), beside the supervisor's files under /run."""
        d = self._supervisor.run_dir / engine
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        return d

    # -- state ---------------------------------------------------------------------------

    def state(self, id: str) -> ContainerState:
        bundle = self._bundle(id)
        meta = self._meta(id)
        st = ContainerState(id=id, status="created", created_at=meta.get("created_at"),
                            labels=meta.get("labels") or {})
        if not self._spec_path(id, meta).exists():
            st.status, st.error = "stopped", "create did not complete"
            return st
        run = _read_json(bundle / "state.json")
        if run:
            st.pid, st.started_at = run["pid"], run["started_at"]
        exit_info = _read_json(bundle / "exit.json")
        if exit_info is None and run is not None:
            if procfs.is_alive(run["pid"], run["pid_start"]) or \
                    procfs.is_alive(run["shim_pid"], run["shim_start"]):
                st.status = "running"
                return st
            exit_info = _read_json(bundle / "exit.json")  # the shim may have just finished
            if exit_info is None:
                exit_info = {"exit_code": 255, "error": "container supervisor exited without "
                                                        "recording the exit status"}
        if exit_info is not None:
            st.status = "stopped"
            st.exit_code = exit_info.get("exit_code")
            st.oom_killed = bool(exit_info.get("oom_killed"))
            st.finished_at = exit_info.get("finished_at")
            st.error = exit_info.get("error") or ""
        return st

    def list(self) -> list[ContainerState]:
        states = []
        for d in sorted(self.root.iterdir()):
            if _ID.match(d.name) and (d / "shoal.json").exists():
                try:
                    states.append(self.state(d.name))
                except ContainerNotFoundError:
                    continue  # deleted meanwhile
        return states

    # -- signals and waiting -------------------------------------------------------------

    def kill(self, id: str, sig: int) -> None:
        """Send sig to the container's init process (pidfd: never to a reused pid)."""
        run = _read_json(self._bundle(id) / "state.json")
        if self.state(id).status != "running" or not run:
            raise ContainerStateError(f"container {id[:12]} is not running")
        if not _signal(run["pid"], run["pid_start"], sig):
            raise ContainerStateError(f"container {id[:12]} is not running")

    async def wait(self, id: str) -> ContainerState:
        """Return once the container has stopped; works for containers of an earlier daemon."""
        while True:
            st = self.state(id)
            if st.status == "stopped":
                return st
            run = _read_json(self._bundle(id) / "state.json")
            if st.status == "created" or not run:
                await asyncio.sleep(0.05)
                continue
            # The shim outlives the process and writes exit.json last: wait for it if it is there.
            if procfs.is_alive(run["shim_pid"], run["shim_start"]):
                await _exited(run["shim_pid"], run["shim_start"])
            elif procfs.is_alive(run["pid"], run["pid_start"]):
                await _exited(run["pid"], run["pid_start"])

    async def stop(self, id: str, timeout: float = 10.0, sig: int = signal.SIGTERM) -> ContainerState:
        """sig, then SIGKILL if the container is still running after timeout seconds.

        The request is written to stop.json and carried out by the container's shim, so the
        SIGKILL comes on time even if this daemon dies meanwhile; a new daemon calling stop again
        continues the same stop (same deadline, no second signal). If the shim is gone, the
        daemon signals the container itself."""
        st = self.state(id)
        if st.status != "running":
            return st
        bundle = self._bundle(id)
        now = time.time()
        stop = _read_json(bundle / "stop.json")
        if not stop or stop.get("pid") != st.pid:
            stop = {"signal": int(sig), "kill_at": now + max(0.0, timeout), "requested_at": now, "pid": st.pid}
            _write_json(bundle / "stop.json", stop)
        elif now + max(0.0, timeout) < stop["kill_at"]:  # a stop in progress can only be hurried
            stop["kill_at"] = now + max(0.0, timeout)
            _write_json(bundle / "stop.json", stop)
        run = _read_json(bundle / "state.json") or {}
        # shims that carry out stops say so (an older shim would die of SIGUSR1)
        if not (run.get("shim_stops") and _signal(run.get("shim_pid"), run.get("shim_start"), signal.SIGUSR1)):
            _signal(run.get("pid"), run.get("pid_start"), stop["signal"])
        try:
            return await asyncio.wait_for(self.wait(id), max(0.0, stop["kill_at"] - time.time()) + STOP_SLACK)
        except asyncio.TimeoutError:
            pass
        run = _read_json(bundle / "state.json") or {}
        _signal(run.get("pid"), run.get("pid_start"), signal.SIGKILL)
        return await self.wait(id)

    def _wait_sync(self, id: str, timeout: float) -> ContainerState:
        deadline = time.monotonic() + timeout
        while True:
            st = self.state(id)
            if st.status != "running" or time.monotonic() > deadline:
                return st
            time.sleep(0.005)

    # -- exec ----------------------------------------------------------------------------

    def exec(self, id: str, args: list[str], env: list[str] | None = None, tty: bool = False,
             user: str | None = None, cwd: str | None = None, stdin: bool = False) -> ExecProcess:
        """Start a process in the running container's namespaces and cgroup, with its
        capabilities, no_new_privs and seccomp filter. env adds to the container's environment;
        user ("uid[:gid]" or names from the image) and cwd default to the container's."""
        if not args or not all(isinstance(a, str) and "\0" not in a for a in args) or not args[0]:
            raise ValueError("args: must be a non-empty list of strings")
        for item in env or []:
            if "=" not in item or item.startswith("="):
                raise ValueError(f"env: {item!r} is not NAME=VALUE")
        if cwd is not None and not cwd.startswith("/"):
            raise ValueError(f"cwd: must be an absolute path, got {cwd!r}")
        meta = self._meta(id)
        run = _read_json(self._bundle(id) / "state.json")
        if self.state(id).status != "running" or not run:
            raise ContainerStateError(f"container {id[:12]} is not running")
        req: dict[str, Any] = {"op": "exec", "id": id, "bundle": str(self._spec_path(id, meta).parent),
                               "state": str(self._bundle(id)),
                               "pid": run["pid"], "pid_start": run["pid_start"], "args": list(args),
                               "env": list(env or []), "tty": bool(tty),
                               "cgroups": {"procs": meta["cgroups"]["procs"]}}
        if cwd:
            req["cwd"] = cwd
        if user:
            rootfs = str(self._spec_path(id, meta).parent / "rootfs")
            uid, gid, extra = parse_user(user, self._read_image_file(rootfs, "/etc/passwd"),
                                         self._read_image_file(rootfs, "/etc/group"))
            req["user"] = {"uid": uid, "gid": gid, "additionalGids": extra}
        ours: list[int] = []
        theirs: list[int] = []
        try:
            if not tty:
                if stdin:
                    in_r, in_w = os.pipe()
                else:
                    in_r, in_w = os.open("/dev/null", os.O_RDONLY), None
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                theirs = [in_r, out_w, err_w]
                ours = [fd for fd in (in_w, out_r, err_r) if fd is not None]
            conn, msg, fds = self._supervisor.request(req, fds=tuple(theirs))
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        if msg.get("pid") is None:
            conn.close()
            for fd in ours + fds:
                os.close(fd)
            raise ContainerStateError(f"exec: container {id[:12]}: {msg.get('error') or 'exec failed'}")
        proc = ExecProcess(pid=int(msg["pid"]), error=msg.get("error") or "", _conn=conn)
        if tty:
            proc.pty = fds[0] if fds else None
        else:
            proc.stdin = in_w
            proc.stdout, proc.stderr = out_r, err_r
        return proc

    async def exec_run(self, id: str, args: list[str], env: list[str] | None = None, user: str | None = None,
                       cwd: str | None = None, timeout: float | None = None, input: bytes | None = None,
                       max_output: int = 1 << 20) -> ExecResult:
        """Run a process in the container to its end and collect its output (at most max_output
        bytes of each stream are kept). On timeout it is killed and asyncio.TimeoutError raised."""
        proc = self.exec(id, args, env=env, user=user, cwd=cwd, stdin=input is not None)
        try:
            if input is not None and proc.stdin is not None:
                await asyncio.to_thread(_write_all, proc.stdin, input)
                os.close(proc.stdin)
                proc.stdin = None

            async def collect() -> ExecResult:
                out = {"stdout": bytearray(), "stderr": bytearray()}
                async for stream, data in proc.output():
                    buf = out[stream]
                    buf += data[:max(0, max_output - len(buf))]
                code = await proc.wait()
                return ExecResult(code, bytes(out["stdout"]), bytes(out["stderr"]), proc.error)
            return await asyncio.wait_for(collect(), timeout)
        finally:
            if proc._exit_code is None:
                proc.kill()
            proc.close()

    # -- stats ---------------------------------------------------------------------------

    def stats(self, id: str) -> dict[str, int | None]:
        """{cpu_usage_ns, memory_usage_bytes, memory_limit_bytes, pids} from the container's cgroup."""
        meta = self._meta(id)
        return self._cgroup(id, meta).stats()

    # -- delete --------------------------------------------------------------------------

    def delete(self, id: str, force: bool = False) -> None:
        """Remove everything: rootfs mount, cgroups, state. A running container needs force
        (then it is SIGKILLed first). Deleting what is already gone is not an error."""
        bundle = self._bundle(id)
        if (bundle / "shoal.json").exists():
            st = self.state(id)
            if st.status == "running":
                if not force:
                    raise ContainerStateError(f"container {id[:12]} is running: stop it first, or force")
                try:
                    self.kill(id, signal.SIGKILL)
                except ContainerStateError:
                    pass
                if self._wait_sync(id, 10.0).status == "running":
                    raise ContainerStateError(f"container {id[:12]} did not die after SIGKILL")
        self._teardown(id)

    def _engine_delete(self, id: str, engine: str) -> None:
        binary = self.engine_bin or shutil.which(engine)
        if not binary:
            return
        args = engines.delete_args(engine, binary, str(self._engine_root(engine)), id)
        if engine == "crun" and engines.hybrid_unified():
            args = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                    f'umount -l {engines.UNIFIED} && exec "$0" "$@"'] + args
        subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)

    def _teardown(self, id: str) -> None:
        bundle = self._bundle(id)
        meta = _read_json(bundle / "shoal.json") or {}
        if meta.get("engine", "shoal") != "shoal" and (self._supervisor.run_dir / meta["engine"] / id).exists():
            self._engine_delete(id, meta["engine"])
        rootfs = bundle / "rootfs"
        if not meta.get("external") and os.path.ismount(rootfs):
            try:
                linux.umount2(rootfs)
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                linux.umount2(rootfs, linux.MNT_DETACH)
            if os.path.ismount(rootfs):
                raise OSError(errno.EBUSY, f"rootfs of {id[:12]} is still mounted")
        self._cgroup(id, meta).remove()
        if bundle.exists():
            shutil.rmtree(bundle)

    def close(self) -> None:
        """Stop this root's node supervisor (running containers and their shims go on)."""
        self._supervisor.quit()


def searchable(path: Path, u: UserNamespace) -> bool:
    """Whether the remapped root (uid u.host_uid, gid u.host_gid) may pass through directory path."""
    st = os.stat(path)
    if st.st_uid == u.host_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == u.host_gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _signal(pid: int | None, start: int | None, sig: int) -> bool:
    """Signal pid if it is still the process that started at `start`; False if it is gone."""
    if not pid:
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        if not procfs.is_alive(pid, start):
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


async def _exited(pid: int, start: int | None) -> None:
    """Wait for one process (not our child) to exit, via a pidfd in the event loop."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # no pidfd support: poll
        while procfs.is_alive(pid, start):
            await asyncio.sleep(0.05)
        return
    try:
        if not procfs.is_alive(pid, start):
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
        try:
            await done
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
