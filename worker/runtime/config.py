"""What the runtime is asked to run, and what it reports back."""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import linux, sysctl

MAX_GID = 2**31 - 1  # the kernel takes up to 2**32 - 2, runc only this far (the same under every engine)
MIN_MEMORY = 6 * 1024 * 1024  # Docker's minimum; below it the runtime's own setup cannot fit

_ID = re.compile(r"^[a-f0-9]{64}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*(:[A-Za-z0-9_.][A-Za-z0-9_.-]*)?$")
_GROUP = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
_ENV_NAME = re.compile(r"^[^=\0]+$")
_ETC_WORD = re.compile(r"^[\x21-\x7e]+$")  # one printable word of an /etc/hosts or resolv.conf line
LOG_DRIVERS = ("json-file", "none")

# Docker's --ulimit names and the RLIMIT_* each stands for.
ULIMITS = {
    "as": "RLIMIT_AS", "core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA",
    "fsize": "RLIMIT_FSIZE", "locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK",
    "msgqueue": "RLIMIT_MSGQUEUE", "nice": "RLIMIT_NICE", "nofile": "RLIMIT_NOFILE",
    "nproc": "RLIMIT_NPROC", "rss": "RLIMIT_RSS", "rtprio": "RLIMIT_RTPRIO", "rttime": "RLIMIT_RTTIME",
    "sigpending": "RLIMIT_SIGPENDING", "stack": "RLIMIT_STACK",
}
MOUNT_TYPES = ("bind", "tmpfs")
_SIZE = re.compile(r"^(\d+)([kmg]?)b?$", re.IGNORECASE)


def parse_size(text: str | int, field: str) -> int:
    """Bytes from 1024, "10k", "10m", "1g" (Docker's log-opt max-size units)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _SIZE.match(str(text).strip())
    if not m:
        raise ValueError(f"{field}: {text!r} is not a size such as 10m")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]


@dataclass
class Mount:
    """A bind mount of a host path (a named volume is a bind of its directory) or a tmpfs."""
    type: str                            # "bind" | "tmpfs"
    target: str                          # absolute path in the container
    source: str = ""                     # host path, for bind
    read_only: bool = False
    tmpfs_size: int | None = None        # bytes
    tmpfs_mode: int | None = None        # e.g. 0o1777

    def validate(self, i: int) -> None:
        where = f"mounts[{i}]"
        if self.type not in MOUNT_TYPES:
            raise ValueError(f"{where}.type: must be one of {', '.join(MOUNT_TYPES)}, got {self.type!r}")
        if not self.target.startswith("/") or "\0" in self.target:
            raise ValueError(f"{where}.target: must be an absolute path, got {self.target!r}")
        if self.type == "bind" and (not self.source.startswith("/") or not os.path.exists(self.source)):
            raise ValueError(f"{where}.source: {self.source!r} is not an existing absolute host path")
        if self.type == "tmpfs" and self.source:
            raise ValueError(f"{where}.source: a tmpfs mount takes no source")


@dataclass
class UserNamespace:
    """Run the container in a user namespace: uid/gid 0..size-1 inside are host_uid/host_gid.. outside."""
    host_uid: int = 100000
    host_gid: int = 100000
    size: int = 65536

    def validate(self) -> None:
        for name in ("host_uid", "host_gid", "size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1 if name == "size" else 0) or value >= 2**32 - 1:
                raise ValueError(f"user_namespace.{name}: must be an integer in range, got {value!r}")


@dataclass
class ContainerConfig:
    id: str                              # 64 hex
    args: list[str]                      # argv; args[0] is searched in PATH from env
    env: list[str]                       # "K=V"
    layers: list[Path]                   # read-only lower dirs, lowest first
    hostname: str = ""                   # default: id[:12]
    cwd: str = "/"
    user: str = ""                       # "uid[:gid]" or names from the image's /etc/passwd
    groups: list[str] = field(default_factory=list)  # supplementary groups: names in the image's /etc/group, or gids
    init: bool = False                   # pid 1 is an init that forwards signals and reaps (Docker's --init)
    memory_limit: int | None = None      # bytes
    pids_limit: int | None = None
    nano_cpus: int | None = None         # 1e9 = one CPU
    labels: dict[str, str] = field(default_factory=dict)
    memory_reservation: int | None = None  # bytes: soft limit
    cpu_shares: int | None = None        # relative weight, 2..262144 (1024 = default)
    read_only: bool = False              # root filesystem read-only
    no_new_privileges: bool = True
    seccomp: str = "default"             # "default" (Docker's profile) | "unconfined"
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    ulimits: dict[str, tuple[int, int]] = field(default_factory=dict)  # "nofile": (soft, hard)
    cgroupns: bool = True                # private cgroup namespace
    user_namespace: UserNamespace | None = None
    mounts: list[Mount] = field(default_factory=list)
    log_max_size: int = 10 * 1024 * 1024  # json-file rotation, as Docker's max-size
    log_max_files: int = 3
    log_driver: str = "json-file"        # "none": the output is read and dropped, no log is kept
    sysctls: dict[str, str] = field(default_factory=dict)  # linux.sysctl: namespaced ones only
    extra_hosts: list[str] = field(default_factory=list)   # "IP NAME [ALIAS...]" lines for /etc/hosts
    dns_servers: list[str] = field(default_factory=list)   # resolv.conf: each replaces the host's list
    dns_search: list[str] = field(default_factory=list)    # ["."]: no search domains at all
    dns_options: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not isinstance(self.id, str) or not _ID.match(self.id):
            raise ValueError(f"id: must be 64 lowercase hex digits, got {self.id!r}")
        if not self.args or not all(isinstance(a, str) for a in self.args) or not self.args[0]:
            raise ValueError("args: must be a non-empty list of strings")
        if any("\0" in a for a in self.args):
            raise ValueError("args: must not contain NUL bytes")
        for item in self.env:
            if not isinstance(item, str) or "=" not in item or not _ENV_NAME.match(item.split("=", 1)[0]) \
                    or "\0" in item:
                raise ValueError(f"env: {item!r} is not NAME=VALUE")
        for layer in self.layers:
            if not Path(layer).is_absolute() or not Path(layer).is_dir():
                raise ValueError(f"layers: {layer} is not an existing absolute directory")
            if ":" in str(layer) or "," in str(layer):
                raise ValueError(f"layers: {layer} contains ':' or ',', which overlayfs cannot take")
        if self.hostname and not _HOSTNAME.match(self.hostname):
            raise ValueError(f"hostname: {self.hostname!r} is not a valid host name")
        if not self.cwd.startswith("/"):
            raise ValueError(f"cwd: must be an absolute path, got {self.cwd!r}")
        if self.user and not _USER.match(self.user):
            raise ValueError(f"user: {self.user!r} is not user[:group]")
        for group in self.groups:
            if not isinstance(group, str) or not _GROUP.match(group):
                raise ValueError(f"groups: {group!r} is not a group name or numeric gid")
            if group.isdigit() and int(group) > MAX_GID:
                raise ValueError(f"groups: gid {group} is out of range (0-{MAX_GID})")
        if self.memory_limit is not None and self.memory_limit < MIN_MEMORY:
            raise ValueError(f"memory_limit: minimum is {MIN_MEMORY} bytes (6 MiB), got {self.memory_limit}")
        if self.pids_limit is not None and self.pids_limit == 0:
            raise ValueError("pids_limit: must be positive (or negative for unlimited), got 0")
        if self.nano_cpus is not None:
            cpus = os.cpu_count() or 1
            if not 10_000_000 <= self.nano_cpus <= cpus * 1_000_000_000:
                raise ValueError(f"nano_cpus: must be between 0.01 and {cpus} CPUs, "
                                 f"got {self.nano_cpus / 1e9:g}")
        for key, value in self.labels.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError("labels: keys and values must be strings")
        if self.memory_reservation is not None:
            if self.memory_reservation <= 0:
                raise ValueError(f"memory_reservation: must be positive, got {self.memory_reservation}")
            if self.memory_limit is not None and self.memory_reservation > self.memory_limit:
                raise ValueError("memory_reservation: must not be above memory_limit")
        if self.cpu_shares is not None and not 2 <= self.cpu_shares <= 262144:
            raise ValueError(f"cpu_shares: must be between 2 and 262144, got {self.cpu_shares}")
        if self.seccomp not in ("default", "unconfined"):
            raise ValueError(f"seccomp: must be 'default' or 'unconfined', got {self.seccomp!r}")
        for name in ("cap_add", "cap_drop"):
            for cap in getattr(self, name):
                full = cap.upper() if cap.upper().startswith("CAP_") else "CAP_" + cap.upper()
                if cap.upper() != "ALL" and full not in linux.CAPABILITIES:
                    raise ValueError(f"{name}: unknown capability {cap!r}")
        for key, value in self.ulimits.items():
            if key not in ULIMITS:
                raise ValueError(f"ulimits: unknown limit {key!r}")
            if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(
                    isinstance(v, int) and v >= -1 for v in value):
                raise ValueError(f"ulimits: {key} must be (soft, hard), got {value!r}")
            soft, hard = (v if v >= 0 else 2**64 - 1 for v in value)
            if soft > hard:
                raise ValueError(f"ulimits: {key} soft limit {value[0]} is above the hard limit {value[1]}")
        if self.user_namespace is not None:
            self.user_namespace.validate()
        for i, m in enumerate(self.mounts):
            m.validate(i)
        if self.log_max_size < 4096:
            raise ValueError(f"log_max_size: minimum is 4096 bytes, got {self.log_max_size}")
        if not 1 <= self.log_max_files <= 100:
            raise ValueError(f"log_max_files: must be between 1 and 100, got {self.log_max_files}")
        if self.log_driver not in LOG_DRIVERS:
            raise ValueError(f"log_driver: must be one of {', '.join(LOG_DRIVERS)}, got {self.log_driver!r}")
        self._validate_etc()

    def _validate_etc(self) -> None:
        """What goes into the container's /proc/sys and /etc files: a stray newline would add a
        line of the caller's choosing, and a non-namespaced sysctl would change the host."""
        namespaces = {"ipc", "network", "uts"}  # every container gets its own (spec.NAMESPACES)
        for key, value in self.sysctls.items():
            reason = sysctl.problem(key, value, namespaces)
            if reason:
                raise ValueError(f"sysctls: {reason}")
        for line in self.extra_hosts:
            words = line.split() if isinstance(line, str) else []
            if len(words) < 2 or not all(_ETC_WORD.match(w) for w in words) or not _is_ip(words[0]):
                raise ValueError(f"extra_hosts: {line!r} is not \"IP NAME [ALIAS...]\"")
        for server in self.dns_servers:
            if not _is_ip(server):
                raise ValueError(f"dns_servers: {server!r} is not an IP address")
        for name in ("dns_search", "dns_options"):
            for word in getattr(self, name):
                if not isinstance(word, str) or not _ETC_WORD.match(word):
                    raise ValueError(f"{name}: {word!r} must be one word without spaces")

    @property
    def effective_hostname(self) -> str:
        return self.hostname or self.id[:12]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


@dataclass
class ContainerState:
    id: str
    status: str                          # "created" | "running" | "stopped"
    pid: int | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    error: str = ""
    created_at: float | None = None
    labels: dict[str, str] = field(default_factory=dict)


class ContainerNotFoundError(LookupError):
    pass


class ContainerExistsError(RuntimeError):
    pass


class ContainerStateError(RuntimeError):
    """The container is not in a state that allows the operation."""
