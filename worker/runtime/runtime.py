"""Shoal's container runtime: OCI bundles under root/<id>, run by a detached shim each.

Bundle layout (root/<id>/):
    shoal.json      runtime bookkeeping: layers, labels, cgroup files, log path (written first)
    config.json     the OCI runtime spec (written last by create: its presence means "created")
    rootfs/         overlayfs mount: layers read-only below, upper/ + work/ for writes
    hostname, hosts, resolv.conf   bound over the image's /etc files
    container.log   the container's stdout and stderr (appended)
    state.json      written by the shim once the process runs: pids and start times
    exit.json       written by the shim when the process has exited: the shim's last act
Everything the daemon needs to know about a container is on disk, so a new daemon on the
same root re-adopts what an old one started.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from . import linux, procfs
from .cgroups import Cgroup, CgroupLayout, Resources, detect_layout
from .config import (ContainerConfig, ContainerExistsError, ContainerNotFoundError, ContainerState,
                     ContainerStateError)
from .paths import secure_join
from .spec import build_spec, hosts_file, parse_user, resolv_conf

SHIM = Path(__file__).with_name("shim.py")
START_TIMEOUT = 30.0
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


class Runtime:
    def __init__(self, root: Path, cgroup_parent: str = "shoal", layout: CgroupLayout | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.cgroup_parent = cgroup_parent
        self.layout = layout or detect_layout()
        self.python = sys.executable

    # -- paths ---------------------------------------------------------------------------

    def _bundle(self, id: str) -> Path:
        if not isinstance(id, str) or not _ID.match(id):
            raise ValueError(f"id: must be 64 lowercase hex digits, got {id!r}")
        return self.root / id

    def _cgroup(self, id: str) -> Cgroup:
        return Cgroup(self.layout, self.cgroup_parent, id)

    def cgroup_dirs(self, id: str) -> list[Path]:
        return self._cgroup(id).dirs()

    def log_path(self, id: str) -> Path:
        return self._bundle(id) / "container.log"

    def _meta(self, id: str) -> dict[str, Any]:
        meta = _read_json(self._bundle(id) / "shoal.json")
        if meta is None:
            raise ContainerNotFoundError(f"container: no such container {id}")
        return meta

    @contextmanager
    def _locked(self, id: str) -> Iterator[None]:
        with open(self._bundle(id) / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    # -- create --------------------------------------------------------------------------

    def create(self, cfg: ContainerConfig) -> None:
        cfg.validate()
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

    def _create(self, cfg: ContainerConfig, bundle: Path) -> None:
        for name in ("rootfs", "upper", "work"):
            (bundle / name).mkdir(mode=0o755)
        lowers = [str(p) for p in cfg.layers]
        if not lowers:  # overlayfs needs a lower dir even for an image without layers
            (bundle / "empty").mkdir()
            lowers = [str(bundle / "empty")]
        cgroup = self._cgroup(cfg.id)
        resources = {"memory_limit": cfg.memory_limit, "pids_limit": cfg.pids_limit, "nano_cpus": cfg.nano_cpus}
        meta = {
            "id": cfg.id, "created_at": time.time(), "layers": lowers, "labels": dict(cfg.labels),
            "cgroup_parent": self.cgroup_parent, "resources": resources,
            "cgroups": {"version": self.layout.version, "procs": cgroup.procs_files(),
                        "oom": cgroup.oom_source()},
            "log_path": str(bundle / "container.log"),
        }
        _write_json(bundle / "shoal.json", meta)
        self._mount_rootfs(bundle, meta)

        rootfs = str(bundle / "rootfs")
        passwd = self._read_image_file(rootfs, "/etc/passwd")
        group = self._read_image_file(rootfs, "/etc/group")
        uid, gid, extra = parse_user(cfg.user, passwd, group)

        hostname = cfg.effective_hostname
        (bundle / "hostname").write_text(hostname + "\n")
        (bundle / "hosts").write_text(hosts_file(hostname))
        try:
            host_resolv = Path("/etc/resolv.conf").read_text()
        except OSError:
            host_resolv = ""
        (bundle / "resolv.conf").write_text(resolv_conf(host_resolv))
        etc = {f"/etc/{n}": str(bundle / n) for n in ("hostname", "hosts", "resolv.conf")}

        spec = build_spec(cfg, uid, gid, extra, f"{self.cgroup_parent}/{cfg.id}", etc)
        cgroup.create(Resources(**resources))
        fd = os.open(meta["log_path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.close(fd)
        _write_json(bundle / "config.json", spec)

    @staticmethod
    def _read_image_file(rootfs: str, path: str) -> str:
        try:
            with open(secure_join(rootfs, path), errors="replace") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return ""

    def _mount_rootfs(self, bundle: Path, meta: dict[str, Any]) -> None:
        rootfs = bundle / "rootfs"
        if os.path.ismount(rootfs):
            return
        options = (f"lowerdir={':'.join(reversed(meta['layers']))},"
                   f"upperdir={bundle / 'upper'},workdir={bundle / 'work'}")
        if len(options) >= _PAGE:
            raise ValueError(f"layers: {len(meta['layers'])} layers make overlay options longer than "
                             f"{_PAGE} bytes")
        linux.mount("overlay", rootfs, "overlay", 0, options)

    # -- start ---------------------------------------------------------------------------

    def start(self, id: str) -> int:
        """Start the container's process; returns its pid (host pid namespace).

        A process that cannot be executed (missing binary, bad cwd) still "starts": its pid is
        returned and the container ends up stopped with exit code 126/127 and an error.
        """
        bundle = self._bundle(id)
        meta = self._meta(id)
        with self._locked(id):
            st = self.state(id)
            if st.status != "created":
                raise ContainerStateError(f"container {id[:12]} is {st.status}, not created")
            self._mount_rootfs(bundle, meta)  # gone after a reboot
            cgroup = self._cgroup(id)
            if not cgroup.exists():
                cgroup.create(Resources(**meta["resources"]))
            spec = _read_json(bundle / "config.json")
            new_pid_ns = any(ns.get("type") == "pid" for ns in spec.get("linux", {}).get("namespaces", []))
            msg = self._spawn_shim(bundle, new_pid_ns, meta["cgroups"]["oom"].get("path") or "-")
        if not msg or msg.get("pid") is None:
            exit_info = _read_json(bundle / "exit.json") or {}
            reason = (msg or {}).get("error") or exit_info.get("error") or "shim exited without a report"
            raise ContainerStartError(f"start: container {id[:12]}: {reason}")
        return int(msg["pid"])

    def _spawn_shim(self, bundle: Path, new_pid_ns: bool, oom_file: str) -> dict[str, Any] | None:
        r, w = os.pipe()
        try:
            with open(bundle / "shim.log", "ab") as shim_log:
                launcher = subprocess.Popen(
                    [self.python, "-I", "-S", str(SHIM), str(bundle), str(w), "1" if new_pid_ns else "0", oom_file],
                    pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=shim_log, stderr=subprocess.STDOUT,
                    start_new_session=True, cwd="/")
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        try:
            launcher.wait()  # it forks the real shim and exits at once
            data = b""
            deadline = time.monotonic() + START_TIMEOUT
            while not data.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([r], [], [], left)[0]:
                    raise ContainerStartError(f"start: no word from the shim of {bundle.name[:12]} "
                                              f"in {START_TIMEOUT:.0f} s")
                chunk = os.read(r, 4096)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(r)
        return json.loads(data) if data.strip() else None

    # -- state ---------------------------------------------------------------------------

    def state(self, id: str) -> ContainerState:
        bundle = self._bundle(id)
        meta = self._meta(id)
        st = ContainerState(id=id, status="created", created_at=meta.get("created_at"),
                            labels=meta.get("labels") or {})
        if not (bundle / "config.json").exists():
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
        try:
            pidfd = os.pidfd_open(run["pid"])
        except ProcessLookupError:
            raise ContainerStateError(f"container {id[:12]} is not running") from None
        try:
            if not procfs.is_alive(run["pid"], run["pid_start"]):
                raise ContainerStateError(f"container {id[:12]} is not running")
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            raise ContainerStateError(f"container {id[:12]} is not running") from None
        finally:
            os.close(pidfd)

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
        """sig, then SIGKILL if the container is still running after timeout seconds."""
        if self.state(id).status != "running":
            return self.state(id)
        try:
            self.kill(id, sig)
        except ContainerStateError:
            pass
        try:
            return await asyncio.wait_for(self.wait(id), timeout)
        except asyncio.TimeoutError:
            pass
        try:
            self.kill(id, signal.SIGKILL)
        except ContainerStateError:
            pass
        return await self.wait(id)

    def _wait_sync(self, id: str, timeout: float) -> ContainerState:
        deadline = time.monotonic() + timeout
        while True:
            st = self.state(id)
            if st.status != "running" or time.monotonic() > deadline:
                return st
            time.sleep(0.01)

    # -- delete --------------------------------------------------------------------------

    def delete(self, id: str, force: bool = False) -> None:
        """Remove everything: rootfs mount, cgroups, bundle. A running container needs force
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

    def _teardown(self, id: str) -> None:
        bundle = self._bundle(id)
        rootfs = bundle / "rootfs"
        if os.path.ismount(rootfs):
            try:
                linux.umount2(rootfs)
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                linux.umount2(rootfs, linux.MNT_DETACH)
        if os.path.ismount(rootfs):
            raise OSError(errno.EBUSY, f"rootfs of {id[:12]} is still mounted")
        self._cgroup(id).remove()
        if bundle.exists():
            shutil.rmtree(bundle)


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
