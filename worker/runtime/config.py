"""What the runtime is asked to run, and what it reports back."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

MIN_MEMORY = 6 * 1024 * 1024  # Docker's minimum; below it the runtime's own setup cannot fit

_ID = re.compile(r"^[a-f0-9]{64}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*(:[A-Za-z0-9_.][A-Za-z0-9_.-]*)?$")
_ENV_NAME = re.compile(r"^[^=\0]+$")


@dataclass
class ContainerConfig:
    id: str                              # 64 hex
    args: list[str]                      # argv; args[0] is searched in PATH from env
    env: list[str]                       # "K=V"
    layers: list[Path]                   # read-only lower dirs, lowest first
    hostname: str = ""                   # default: id[:12]
    cwd: str = "/"
    user: str = ""                       # "uid[:gid]" or names from the image's /etc/passwd
    memory_limit: int | None = None      # bytes
    pids_limit: int | None = None
    nano_cpus: int | None = None         # 1e9 = one CPU
    labels: dict[str, str] = field(default_factory=dict)

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

    @property
    def effective_hostname(self) -> str:
        return self.hostname or self.id[:12]


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
