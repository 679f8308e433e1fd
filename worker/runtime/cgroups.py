"""Per-container cgroups, on cgroup v1 (a hierarchy per controller) or v2 (unified), chosen at
runtime from the mount table: v1 when a v1 hierarchy carries the memory controller, else v2.

v1: <mount of each controller>/<parent>/<id>; v2: <unified mount>/<parent>/<id>, with the
controllers enabled in every ancestor's cgroup.subtree_control.
"""
from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

# v1 hierarchies a container joins (when mounted). cpuset is left out: a new cpuset cgroup
# has no cpus or mems until they are copied in, and nothing here limits it yet.
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "blkio", "devices", "freezer")
V2_CONTROLLERS = ("memory", "pids", "cpu", "io")
CFS_PERIOD_US = 100_000


@dataclass(frozen=True)
class Resources:
    memory_limit: int | None = None   # bytes; swap is not allowed on top of it
    pids_limit: int | None = None
    nano_cpus: int | None = None      # 1e9 = one CPU
    memory_reservation: int | None = None  # bytes: v1 soft limit, v2 memory.low
    cpu_shares: int | None = None     # v1 cpu.shares; v2 cpu.weight converted as runc does
    devices: tuple = ()               # OCI linux.resources.devices rules, in order

    def cpu_quota_us(self) -> int | None:
        if not self.nano_cpus:
            return None
        return max(1000, self.nano_cpus * CFS_PERIOD_US // 1_000_000_000)

    @classmethod
    def from_oci(cls, res: dict) -> "Resources":
        """From an OCI spec's linux.resources (what runc would apply)."""
        mem, pids, cpu = res.get("memory") or {}, res.get("pids") or {}, res.get("cpu") or {}
        nano = None
        if cpu.get("quota") and cpu["quota"] > 0:
            nano = cpu["quota"] * 1_000_000_000 // (cpu.get("period") or CFS_PERIOD_US)
        return cls(memory_limit=mem.get("limit"), pids_limit=pids.get("limit"), nano_cpus=nano,
                   memory_reservation=mem.get("reservation"), cpu_shares=cpu.get("shares"),
                   devices=tuple(res.get("devices") or ()))


def device_rule(rule: dict) -> str:
    """"c 1:3 rwm" for a v1 devices.allow/deny line (no type, major or minor: "a", "*")."""
    kind = rule.get("type") or "a"
    if kind == "a":
        return "a"
    major = "*" if rule.get("major") in (None, -1) else str(rule["major"])
    minor = "*" if rule.get("minor") in (None, -1) else str(rule["minor"])
    return f"{kind} {major}:{minor} {rule.get('access') or 'rwm'}"


def cpu_weight(shares: int) -> int:
    """cgroup v2 cpu.weight for v1 cpu.shares (the conversion runc and crun use)."""
    return 1 + ((shares - 2) * 9999) // 262142


@dataclass(frozen=True)
class CgroupLayout:
    version: int                                   # 1 or 2
    v1: dict[str, Path] = field(default_factory=dict)  # controller -> hierarchy mount point
    unified: Path | None = None                    # v2 mount point


def detect_layout(mountinfo: str | None = None) -> CgroupLayout:
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    v1: dict[str, Path] = {}
    unified: Path | None = None
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        fields, post_fields = pre.split(), post.split()
        if len(fields) < 5 or len(post_fields) < 3:
            continue
        mount_point = Path(fields[4].replace("\\040", " "))
        if post_fields[0] == "cgroup":
            for opt in post_fields[2].split(","):
                if opt in V1_CONTROLLERS:
                    v1.setdefault(opt, mount_point)
        elif post_fields[0] == "cgroup2" and unified is None:
            unified = mount_point
    if "memory" in v1:
        return CgroupLayout(1, v1=v1)
    if unified is not None:
        return CgroupLayout(2, unified=unified)
    raise RuntimeError("cgroups: no cgroup v1 memory hierarchy and no cgroup v2 mount found")


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _rmdir_retry(path: Path, deadline: float) -> None:
    """rmdir a cgroup; it stays busy for a moment while its last tasks finish exiting."""
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise OSError(exc.errno, f"cgroup {path}: {exc.strerror}") from None
            _kill_all(path)
            time.sleep(0.01)


def _kill_all(path: Path) -> None:
    try:
        pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Cgroup:
    """The cgroup(s) of one container."""

    def __init__(self, layout: CgroupLayout, parent: str, name: str):
        if not parent or parent.startswith("/") or ".." in parent.split("/"):
            raise ValueError(f"cgroup_parent: must be a relative path without '..', got {parent!r}")
        self.layout = layout
        self.parent = parent.strip("/")
        self.name = name

    @classmethod
    def from_path(cls, layout: CgroupLayout, cgroups_path: str) -> "Cgroup":
        """The cgroup an OCI spec's linux.cgroupsPath names ("/shoal/<id>"), below each hierarchy's root."""
        parent, _, name = cgroups_path.strip("/").rpartition("/")
        if not parent or not name:
            raise ValueError(f"linux.cgroupsPath: must be parent/name, got {cgroups_path!r}")
        return cls(layout, parent, name)

    def dirs(self) -> list[Path]:
        if self.layout.version == 2:
            assert self.layout.unified is not None
            return [self.layout.unified / self.parent / self.name]
        seen: list[Path] = []
        for controller in V1_CONTROLLERS:
            mount = self.layout.v1.get(controller)
            if mount is not None and mount / self.parent / self.name not in seen:
                seen.append(mount / self.parent / self.name)  # co-mounted controllers share a dir
        return seen

    def _dir(self, controller: str) -> Path | None:
        if self.layout.version == 2:
            return self.dirs()[0]
        mount = self.layout.v1.get(controller)
        return None if mount is None else mount / self.parent / self.name

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs()]

    def oom_source(self) -> dict:
        d = self._dir("memory")
        if d is None:
            return {}
        name = "memory.events" if self.layout.version == 2 else "memory.oom_control"
        return {"path": str(d / name)}

    def exists(self) -> bool:
        return any(d.is_dir() for d in self.dirs())

    def create(self, res: Resources) -> None:
        if self.layout.version == 2:
            self._enable_v2_controllers()
        for d in self.dirs():
            d.mkdir(parents=True, exist_ok=True)
        if self.layout.version == 2:
            self._limits_v2(res)
        else:
            self._limits_v1(res)

    def _enable_v2_controllers(self) -> None:
        assert self.layout.unified is not None
        cur = self.layout.unified
        for part in [*self.parent.split("/"), None]:
            available = set((cur / "cgroup.controllers").read_text().split()) \
                if (cur / "cgroup.controllers").exists() else set()
            wanted = [c for c in V2_CONTROLLERS if c in available]
            if wanted:
                enabled = set((cur / "cgroup.subtree_control").read_text().split()) \
                    if (cur / "cgroup.subtree_control").exists() else set()
                missing = [c for c in wanted if c not in enabled]
                if missing:
                    _write(cur / "cgroup.subtree_control", " ".join("+" + c for c in missing))
            if part is None:
                break
            cur = cur / part
            cur.mkdir(exist_ok=True)

    def _controller_file(self, controller: str, name: str, field: str) -> Path:
        """The file that sets a limit; refuse loudly rather than silently run without the limit."""
        d = self._dir(controller)
        if d is None or not (d / name).exists():
            where = "in the unified hierarchy" if self.layout.version == 2 else "as a v1 hierarchy"
            raise RuntimeError(f"{field}: the {controller} cgroup controller is not available {where}")
        return d / name

    def _limits_v1(self, res: Resources) -> None:
        if res.memory_limit is not None:
            limit = self._controller_file("memory", "memory.limit_in_bytes", "memory_limit")
            _write(limit, str(res.memory_limit))
            memsw = limit.with_name("memory.memsw.limit_in_bytes")
            if memsw.exists():  # only with swap accounting
                _write(memsw, str(res.memory_limit))
        if res.pids_limit is not None:
            _write(self._controller_file("pids", "pids.max", "pids_limit"),
                   str(res.pids_limit) if res.pids_limit > 0 else "max")
        quota = res.cpu_quota_us()
        if quota is not None:
            _write(self._controller_file("cpu", "cpu.cfs_period_us", "nano_cpus"), str(CFS_PERIOD_US))
            _write(self._controller_file("cpu", "cpu.cfs_quota_us", "nano_cpus"), str(quota))
        if res.memory_reservation is not None:
            _write(self._controller_file("memory", "memory.soft_limit_in_bytes", "memory_reservation"),
                   str(res.memory_reservation))
        if res.cpu_shares is not None:
            _write(self._controller_file("cpu", "cpu.shares", "cpu_shares"), str(res.cpu_shares))
        if res.devices:
            d = self._dir("devices")
            if d is None:
                raise RuntimeError("devices: the devices cgroup controller is not mounted as a v1 hierarchy")
            for rule in res.devices:
                _write(d / ("devices.allow" if rule.get("allow") else "devices.deny"), device_rule(rule))

    def _limits_v2(self, res: Resources) -> None:
        if res.memory_limit is not None:
            limit = self._controller_file("memory", "memory.max", "memory_limit")
            _write(limit, str(res.memory_limit))
            if limit.with_name("memory.swap.max").exists():
                _write(limit.with_name("memory.swap.max"), "0")
        if res.pids_limit is not None:
            _write(self._controller_file("pids", "pids.max", "pids_limit"),
                   str(res.pids_limit) if res.pids_limit > 0 else "max")
        quota = res.cpu_quota_us()
        if quota is not None:
            _write(self._controller_file("cpu", "cpu.max", "nano_cpus"), f"{quota} {CFS_PERIOD_US}")
        if res.memory_reservation is not None:
            _write(self._controller_file("memory", "memory.low", "memory_reservation"), str(res.memory_reservation))
        if res.cpu_shares is not None:
            _write(self._controller_file("cpu", "cpu.weight", "cpu_shares"), str(cpu_weight(res.cpu_shares)))
        if res.devices:
            from . import devices_bpf  # cgroup v2 controls devices with an eBPF program
            devices_bpf.attach(self.dirs()[0], list(res.devices))

    def memory_limit(self) -> int | None:
        d = self._dir("memory")
        if d is None:
            return None
        name = "memory.max" if self.layout.version == 2 else "memory.limit_in_bytes"
        raw = (d / name).read_text().strip()
        return None if raw == "max" else int(raw)

    def stats(self) -> dict[str, int | None]:
        """CPU time, memory use and limit, process count, read from the cgroup files (None when
        the controller is missing). Memory use leaves out the inactive page cache, as `docker
        stats` does; an unlimited memory limit reads as the host's memory."""
        if self.layout.version == 2:
            d = self.dirs()[0]
            cpu = _keyed(d / "cpu.stat").get("usage_usec")
            usage = _int_file(d / "memory.current")
            inactive = _keyed(d / "memory.stat").get("inactive_file", 0)
            limit = _int_file(d / "memory.max")
            pids = _int_file(d / "pids.current")
            cpu_ns = cpu * 1000 if cpu is not None else None
        else:
            cpu_dir, mem_dir, pids_dir = self._dir("cpuacct"), self._dir("memory"), self._dir("pids")
            cpu_ns = _int_file(cpu_dir / "cpuacct.usage") if cpu_dir else None
            usage = _int_file(mem_dir / "memory.usage_in_bytes") if mem_dir else None
            inactive = _keyed(mem_dir / "memory.stat").get("total_inactive_file", 0) if mem_dir else 0
            limit = _int_file(mem_dir / "memory.limit_in_bytes") if mem_dir else None
            pids = _int_file(pids_dir / "pids.current") if pids_dir else None
        total = _host_memory()
        if limit is None or limit >= total:
            limit = total
        if usage is not None:
            usage = max(0, usage - inactive)
        return {"cpu_usage_ns": cpu_ns, "memory_usage_bytes": usage, "memory_limit_bytes": limit, "pids": pids}

    def remove(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for d in self.dirs():
            _rmdir_retry(d, deadline)

    def remove_parent(self) -> None:
        """Remove the (shared) parent cgroups if nothing is left in them."""
        for d in self.dirs():
            try:
                os.rmdir(d.parent)
            except OSError:
                pass  # still in use by other containers, or already gone


def _int_file(path: Path) -> int | None:
    try:
        raw = path.read_text().strip()
    except OSError:
        return None
    if raw == "max":
        return 2**63 - 1
    return int(raw) if raw.lstrip("-").isdigit() else None


def _keyed(path: Path) -> dict[str, int]:
    try:
        text = path.read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _host_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 2**63 - 1
