"""Which sysctls a service may set: the namespaced ones, as Docker (and runc) allow them.

A sysctl outside a namespace the container owns would change the whole node, so it is refused.
The IPC ones and fs.mqueue.* live in the IPC namespace, net.* in the network namespace; every
Shoal container has its own of both (there is no host network or IPC mode), so all of them are
always allowed. Pure: the manager validates with it; the runtime enforces the same rule on
whatever bundle it runs (worker/runtime/sysctl.py, self-contained like the rest of the runtime).
"""
from __future__ import annotations

import re

# kernel.* sysctls that belong to the IPC namespace (Docker's validSysctlMap).
IPC_SYSCTLS = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
    "kernel.shmmni", "kernel.shm_rmid_forced",
})
NAMESPACED_PREFIXES = ("fs.mqueue.", "net.")

# Dotted names only: the key becomes a path under /proc/sys, so no "/", no empty part.
_KEY = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$")
# A task's overlay interfaces (eth0, eth1, ...) are attached once its process runs, after the
# sysctls are written, so their per-interface settings do not exist yet. The "default" ones do,
# and the kernel gives them to every interface made in the namespace later: point there.
_LATE_INTERFACE = re.compile(r"^(net\.ipv[46]\.(?:conf|neigh))\.(eth\d+)\.(.+)$")


def check_sysctl(key: str, value: str) -> None:
    """ValueError saying why key=value cannot be set in a container."""
    if not _KEY.match(key):
        raise ValueError(f"{key!r} is not a sysctl name such as net.ipv4.ip_forward")
    if key not in IPC_SYSCTLS and not key.startswith(NAMESPACED_PREFIXES):
        raise ValueError(f"{key} is not a namespaced sysctl (allowed: {', '.join(sorted(IPC_SYSCTLS))}, "
                         f"fs.mqueue.*, net.*)")
    late = _LATE_INTERFACE.match(key)
    if late:
        raise ValueError(f"{key}: {late.group(2)} is attached after the task starts, so it cannot be set "
                         f"this way; {late.group(1)}.default.{late.group(3)} applies to it")
    if not value.strip() or any(c in value for c in "\n\r\0"):
        raise ValueError(f"{key}: the value must be one line of text, got {value!r}")
