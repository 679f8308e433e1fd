"""linux.sysctl of the OCI spec: which sysctls a container may set, and setting them.

Only sysctls of namespaces the container owns are allowed (runc's rule): the IPC ones and
fs.mqueue.* (IPC namespace), net.* (network namespace), kernel.domainname (UTS namespace);
written from inside the container's namespaces, they change the container alone. Any other
one (kernel.panic, vm.*) would change the whole host, so the runtime refuses it whatever bundle
asks for it. The cluster's own check (api/sysctls.py) is the same rule minus kernel.domainname,
which Docker does not accept for services.

Importable on its own (nsinit imports it as `sysctl`), so no package imports.
"""
import os

IPC = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
    "kernel.shmmni", "kernel.shm_rmid_forced",
})
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def _valid_key(key) -> bool:
    """Dotted words: the key becomes a path under /proc/sys, so no "/" and no empty part."""
    parts = key.split(".") if isinstance(key, str) else []
    return len(parts) >= 2 and all(p and _KEY_CHARS.issuperset(p) for p in parts)


def problem(key, value, namespaces) -> "str | None":
    """Why key=value may not be set in a container with these namespace types, or None."""
    if not _valid_key(key):
        return f"{key!r} is not a sysctl name such as net.ipv4.ip_forward"
    if not isinstance(value, str) or any(c in value for c in "\n\r\0"):
        return f"{key}: the value must be one line of text"
    if key in IPC or key.startswith("fs.mqueue."):
        needed = "ipc"
    elif key.startswith("net."):
        needed = "network"
    elif key == "kernel.domainname":
        needed = "uts"
    else:
        return f"{key} is not a namespaced sysctl: it would change the host"
    if needed not in namespaces:
        return f"{key} needs the container's own {needed} namespace"
    return None


def apply(sysctls, namespaces, proc_sys="/proc/sys"):
    """Write each one under proc_sys (the container's /proc, inside its namespaces); raises
    ValueError for a refused key and OSError (with the key in its message) when the kernel
    refuses the write."""
    for key in sorted(sysctls):
        value = sysctls[key]
        reason = problem(key, value, namespaces)
        if reason:
            raise ValueError(f"sysctl: {reason}")
        path = os.path.join(proc_sys, *key.split("."))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            raise OSError(exc.errno, f"sysctl {key}: {exc.strerror}") from None
        try:
            os.write(fd, value.encode())
        except OSError as exc:
            raise OSError(exc.errno, f"sysctl {key}={value}: {exc.strerror}") from None
        finally:
            os.close(fd)
