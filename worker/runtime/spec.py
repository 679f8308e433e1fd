"""Pure builders for the OCI runtime bundle: config.json and the /etc files a container gets."""
from __future__ import annotations

from typing import Any

from . import seccomp_profile
from .config import MAX_GID, ULIMITS, ContainerConfig
from .linux import CAPABILITIES

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

# The device cgroup rules runc and Docker give every container: create any node (m), but read
# and write only the usual character devices, ptys and /dev/net/tun.
DEVICE_RULES = [{"allow": False, "access": "rwm"},
                {"allow": True, "type": "c", "access": "m"}, {"allow": True, "type": "b", "access": "m"}] + [
    {"allow": True, "type": "c", "major": ma, "minor": mi, "access": "rwm"}
    for ma, mi in ((1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 1), (136, None), (5, 2), (10, 200))]
for _rule in DEVICE_RULES:
    if _rule.get("minor", 0) is None:
        del _rule["minor"]


def capability_set(cap_add: list[str], cap_drop: list[str]) -> list[str]:
    """Docker's default set with --cap-add/--cap-drop applied ("ALL" works in both)."""
    def full(name: str) -> str:
        name = name.upper()
        return name if name.startswith("CAP_") or name == "ALL" else "CAP_" + name
    add, drop = {full(c) for c in cap_add}, {full(c) for c in cap_drop}
    caps = list(CAPABILITIES) if "ALL" in add else list(DEFAULT_CAPABILITIES)
    caps += [c for c in CAPABILITIES if c in add and c not in caps]
    if "ALL" in drop:
        return [c for c in caps if c in add and "ALL" not in add]
    return [c for c in caps if c not in drop]


def home_dir(uid: int, passwd: str) -> str:
    entry = _lookup(passwd, str(uid), by_name=False)
    return entry[5] if entry and len(entry) > 5 and entry[5] else "/"


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


def add_groups(gid: int, extra: list[int], groups: list[str], group: str) -> list[int]:
    """The user's supplementary gids with Docker's --group-add on top: each a numeric gid (which
    need not exist) or a name that must be in the image's /etc/group. Duplicates and the
    primary gid are left out (id -G lists that first anyway)."""
    out = list(extra)
    for name in groups:
        if name.isdigit():
            value = int(name)
        else:
            entry = _lookup(group, name, by_name=True)
            if entry is None or not entry[2].isdigit():
                raise ValueError(f"groups: no group {name!r} in the image's /etc/group")
            value = int(entry[2])
        if value > MAX_GID:
            raise ValueError(f"groups: gid {value} is out of range (0-{MAX_GID})")
        if value != gid and value not in out:
            out.append(value)
    return out


def hosts_file(hostname: str, extra_hosts: list[str] | tuple[str, ...] = ()) -> str:
    """The container's /etc/hosts: loopback names, its hostname, then the extra "IP NAME..."
    lines (Docker's --add-host), tab-separated as Docker writes them. The overlay appends the
    container's own address later (worker/networks.py), after these, as Docker orders them."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", f"127.0.1.1\t{hostname}"]
    for line in extra_hosts:
        ip, *names = line.split()
        lines.append(f"{ip}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


def resolv_conf(host_resolv: str, nameservers: list[str] | tuple[str, ...] = (),
                search: list[str] | tuple[str, ...] = (), options: list[str] | tuple[str, ...] = ()) -> str:
    """The host's resolver config without loopback name servers, which a container's network
    namespace cannot reach. Given nameservers, search domains or options each replace the host's
    (search ["."]: none at all), and the file is then rebuilt from its parts, as Docker does."""
    if not (nameservers or search or options):
        out = []
        for line in host_resolv.splitlines():
            words = line.split()
            if words[:1] == ["nameserver"] and len(words) > 1 and (
                    words[1].startswith("127.") or words[1] == "::1"):
                continue
            out.append(line)
        return "\n".join(out) + ("\n" if out else "")
    host_servers, host_search, host_options = [], [], []
    for line in host_resolv.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and len(words) > 1 and not (words[1].startswith("127.") or words[1] == "::1"):
            host_servers.append(words[1])
        elif words[:1] in (["search"], ["domain"]):
            host_search = words[1:]  # the last one wins, as in the resolver
        elif words[:1] == ["options"]:
            host_options += words[1:]
    return build_resolv_conf(list(nameservers) or host_servers, list(search) or host_search,
                             list(options) or host_options)


def build_resolv_conf(nameservers: list[str], search: list[str], options: list[str]) -> str:
    """search, nameserver and options lines in that order (libnetwork's resolvconf.Build)."""
    lines = []
    domains = [d for d in search if d != "."]
    if domains:
        lines.append("search " + " ".join(domains))
    lines += [f"nameserver {ns}" for ns in nameservers]
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + ("\n" if lines else "")


def build_spec(cfg: ContainerConfig, uid: int, gid: int, additional_gids: list[int],
               cgroups_path: str, etc_files: dict[str, str], home: str = "/") -> dict[str, Any]:
    """config.json for cfg; etc_files maps "/etc/hostname" etc. to host files to bind in."""
    bounding = capability_set(cfg.cap_add, cfg.cap_drop)
    root_caps = bounding if uid == 0 else []  # a non-root user gets none effective
    resources: dict[str, Any] = {}
    if cfg.memory_limit is not None or cfg.memory_reservation is not None:
        resources["memory"] = {}
        if cfg.memory_limit is not None:
            resources["memory"].update(limit=cfg.memory_limit, swap=cfg.memory_limit)
        if cfg.memory_reservation is not None:
            resources["memory"]["reservation"] = cfg.memory_reservation
    if cfg.pids_limit is not None:
        resources["pids"] = {"limit": cfg.pids_limit}
    if cfg.nano_cpus is not None or cfg.cpu_shares is not None:
        resources["cpu"] = {}
        if cfg.nano_cpus is not None:
            resources["cpu"].update(quota=cfg.nano_cpus * 100_000 // 1_000_000_000, period=100_000)
        if cfg.cpu_shares is not None:
            resources["cpu"]["shares"] = cfg.cpu_shares
    resources["devices"] = [dict(r) for r in DEVICE_RULES]
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
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
    ]
    for dest, src in sorted(etc_files.items()):
        mounts.append({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate"]})
    for m in cfg.mounts:
        if m.type == "bind":
            opts = ["rbind", "rprivate"] + (["ro"] if m.read_only else [])
            mounts.append({"destination": m.target, "type": "bind", "source": m.source, "options": opts})
        else:
            opts = ["nosuid", "nodev", "noexec"] + (["ro"] if m.read_only else [])
            if m.tmpfs_size:
                opts.append(f"size={m.tmpfs_size}")
            if m.tmpfs_mode is not None:
                opts.append(f"mode={m.tmpfs_mode:o}")
            mounts.append({"destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": opts})
    env = list(cfg.env)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={home}")  # as Docker does, from the user's /etc/passwd entry
    namespaces = list(NAMESPACES) + (["cgroup"] if cfg.cgroupns else [])
    linux: dict[str, Any] = {
        "namespaces": [{"type": t} for t in namespaces],
        "cgroupsPath": cgroups_path,
        "resources": resources,
        "devices": [{"path": p, "type": "c", "major": ma, "minor": mi, "fileMode": 0o666, "uid": 0, "gid": 0}
                    for p, ma, mi in DEVICES],
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if cfg.user_namespace is not None:
        u = cfg.user_namespace
        linux["namespaces"].append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": u.host_uid, "size": u.size}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": u.host_gid, "size": u.size}]
    if cfg.seccomp == "default":
        linux["seccomp"] = seccomp_profile.resolve(bounding)
    if cfg.sysctls:
        linux["sysctl"] = dict(cfg.sysctls)  # runc and crun write these themselves, as nsinit does
    process: dict[str, Any] = {
        "terminal": False,
        "user": {"uid": uid, "gid": gid, "additionalGids": additional_gids},
        "args": list(cfg.args),
        "env": env,
        "cwd": cfg.cwd,
        "capabilities": {"bounding": list(bounding), "effective": list(root_caps),
                         "permitted": list(root_caps), "inheritable": [], "ambient": []},
        "noNewPrivileges": cfg.no_new_privileges,
    }
    if cfg.ulimits:
        process["rlimits"] = [{"type": ULIMITS[name], "soft": _rlim(soft), "hard": _rlim(hard)}
                              for name, (soft, hard) in sorted(cfg.ulimits.items())]
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": "rootfs", "readonly": cfg.read_only},
        "hostname": cfg.effective_hostname,
        "mounts": mounts,
        "annotations": dict(cfg.labels),
        "linux": linux,
    }


def _rlim(value: int) -> int:
    return 2**64 - 1 if value < 0 else value  # -1 is "unlimited", as Docker's --ulimit takes it
