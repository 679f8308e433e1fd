"""runc and crun as alternative engines for the same OCI bundle: their command lines, and the
mount namespace trick crun needs on a hybrid cgroup host.

crun 1.8 refuses a host whose cgroup v1 controllers sit next to a cgroup2 mount at
/sys/fs/cgroup/unified; every crun command therefore runs in a private mount namespace where
that one mount is detached (the host keeps it).

Importable on its own (the shim imports it as `engines`).
"""
import os

try:
    from . import linux
except ImportError:  # loaded on its own by the supervisor
    import linux

ENGINES = ("shoal", "runc", "crun")
UNIFIED = "/sys/fs/cgroup/unified"


def hybrid_unified() -> bool:
    """True on a hybrid host: v1 controllers plus the unified hierarchy beside them."""
    return os.path.ismount(UNIFIED) and os.path.ismount("/sys/fs/cgroup/memory")


def hide_unified() -> None:
    """In this (single-threaded) process only: a private mount namespace without the unified
    hierarchy, so crun sees a plain cgroup v1 host."""
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.umount2(UNIFIED, linux.MNT_DETACH)


def global_args(engine: str, binary: str, root: str, log: str = "") -> list:
    args = [binary, "--root", root]
    if log:
        args += ["--log", log if engine == "runc" else "file:" + log, "--log-format", "json"]
    return args


def create_args(engine, binary, root, log, id, bundle, pid_file) -> list:
    return global_args(engine, binary, root, log) + ["create", "--bundle", bundle, "--pid-file", pid_file, id]


def start_args(engine, binary, root, log, id) -> list:
    return global_args(engine, binary, root, log) + ["start", id]


def delete_args(engine, binary, root, id, force=True) -> list:
    return global_args(engine, binary, root) + ["delete"] + (["--force"] if force else []) + [id]


def last_error(log_path: str) -> str:
    """The last message runc/crun logged (JSON lines with "msg"), or ""."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    if not lines:
        return ""
    last = lines[-1]
    key = '"msg":"'
    at = last.find(key)
    if at < 0:
        return last.strip()
    msg, i = [], at + len(key)
    while i < len(last) and last[i] != '"':
        if last[i] == "\\" and i + 1 < len(last):
            i += 1
            msg.append({"n": "\n", "t": "\t"}.get(last[i], last[i]))
        else:
            msg.append(last[i])
        i += 1
    return "".join(msg)
