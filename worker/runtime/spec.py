"""Pure builders for the OCI runtime bundle: config.json and the /etc files a container gets."""
from __future__ import annotations

from typing import Any

from .config import ContainerConfig

OCI_VERSION = "1.0.2"

# Docker's default capability set.
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]

MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

DEVICES = [("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
           ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0)]

NAMESPACES = ["pid", "mount", "uts", "ipc", "network"]


def _lookup(table: str, key: str, by_name: bool) -> list[str] | None:
    for line in table.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and (fields[0] == key if by_name else fields[2] == key):
            return fields
    return None


def parse_user(user: str, passwd: str, group: str) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary gids) from "user[:group]" and the image's /etc/passwd and /etc/group.

    A numeric uid missing from passwd is allowed (gid 0), as Docker does; a name must exist.
    """
    if not user:
        user = "0"
    name, _, grp = user.partition(":")
    entry = _lookup(passwd, name, by_name=not name.isdigit())
    if name.isdigit():
        uid = int(name)
    elif entry is None:
        raise ValueError(f"user: no user {name!r} in the image's /etc/passwd")
    else:
        uid = int(entry[2])
    gid = int(entry[3]) if entry and len(entry) > 3 and entry[3].isdigit() else 0
    if grp:
        if grp.isdigit():
            gid = int(grp)
        else:
            g = _lookup(group, grp, by_name=True)
            if g is None:
                raise ValueError(f"user: no group {grp!r} in the image's /etc/group")
            gid = int(g[2])
    extra: list[int] = []
    user_name = entry[0] if entry else None
    if user_name and not grp:
        for line in group.splitlines():
            fields = line.split(":")
            if len(fields) >= 4 and user_name in fields[3].split(",") and fields[2].isdigit():
                if int(fields[2]) != gid and int(fields[2]) not in extra:
                    extra.append(int(fields[2]))
    for value in (uid, gid):
        if value >= 2**32 - 1:
            raise ValueError(f"user: id {value} is out of range")
    return uid, gid, extra


def hosts_file(hostname: str) -> str:
    return ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"127.0.1.1\t{hostname}\n")


def resolv_conf(host_resolv: str) -> str:
    """The host's resolver config without loopback name servers, which a container's
    network namespace cannot reach."""
    out = []
    for line in host_resolv.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and len(words) > 1 and (
                words[1].startswith("127.") or words[1] == "::1"):
            continue
        out.append(line)
    return "\n".join(out) + ("\n" if out else "")


def build_spec(cfg: ContainerConfig, uid: int, gid: int, additional_gids: list[int],
               cgroups_path: str, etc_files: dict[str, str]) -> dict[str, Any]:
    """config.json for cfg; etc_files maps "/etc/hostname" etc. to host files to bind in."""
    root_caps = DEFAULT_CAPABILITIES if uid == 0 else []  # a non-root user gets none effective
    resources: dict[str, Any] = {}
    if cfg.memory_limit is not None:
        resources["memory"] = {"limit": cfg.memory_limit, "swap": cfg.memory_limit}
    if cfg.pids_limit is not None:
        resources["pids"] = {"limit": cfg.pids_limit}
    if cfg.nano_cpus is not None:
        resources["cpu"] = {"quota": cfg.nano_cpus * 100_000 // 1_000_000_000, "period": 100_000}
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]
    for dest, src in sorted(etc_files.items()):
        mounts.append({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate"]})
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": additional_gids},
            "args": list(cfg.args),
            "env": list(cfg.env),
            "cwd": cfg.cwd,
            "capabilities": {"bounding": list(DEFAULT_CAPABILITIES), "effective": list(root_caps),
                             "permitted": list(root_caps), "inheritable": [], "ambient": []},
            "noNewPrivileges": False,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": cfg.effective_hostname,
        "mounts": mounts,
        "annotations": dict(cfg.labels),
        "linux": {
            "namespaces": [{"type": t} for t in NAMESPACES],
            "cgroupsPath": cgroups_path,
            "resources": resources,
            "devices": [{"path": p, "type": "c", "major": ma, "minor": mi, "fileMode": 0o666, "uid": 0, "gid": 0}
                        for p, ma, mi in DEVICES],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
