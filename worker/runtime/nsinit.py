"""The container's init, between fork and exec: namespaces, rootfs, devices, identity.

Runs in the child the shim forks (already pid 1 of a new pid namespace). It follows the
OCI runtime spec in config.json, so the same bundle means the same container under runc.
On any failure it writes "<exit code>:<message>" to the error pipe and exits with that code;
on success the pipe closes at exec (it is close-on-exec) and the shim reads nothing.

Importable on its own (the shim imports it as `nsinit`), so no package imports.
"""
import os
import signal
import stat

import linux
from paths import secure_join

CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]

_MOUNT_FLAGS = {
    "ro": (linux.MS_RDONLY, True), "rw": (linux.MS_RDONLY, False),
    "nosuid": (linux.MS_NOSUID, True), "suid": (linux.MS_NOSUID, False),
    "nodev": (linux.MS_NODEV, True), "dev": (linux.MS_NODEV, False),
    "noexec": (linux.MS_NOEXEC, True), "exec": (linux.MS_NOEXEC, False),
    "sync": (linux.MS_SYNCHRONOUS, True), "async": (linux.MS_SYNCHRONOUS, False),
    "dirsync": (linux.MS_DIRSYNC, True), "remount": (linux.MS_REMOUNT, True),
    "mand": (linux.MS_MANDLOCK, True), "nomand": (linux.MS_MANDLOCK, False),
    "atime": (linux.MS_NOATIME, False), "noatime": (linux.MS_NOATIME, True),
    "diratime": (linux.MS_NODIRATIME, False), "nodiratime": (linux.MS_NODIRATIME, True),
    "bind": (linux.MS_BIND, True), "rbind": (linux.MS_BIND | linux.MS_REC, True),
    "relatime": (linux.MS_RELATIME, True), "norelatime": (linux.MS_RELATIME, False),
    "strictatime": (linux.MS_STRICTATIME, True), "nostrictatime": (linux.MS_STRICTATIME, False),
}
_PROPAGATION = {
    "private": linux.MS_PRIVATE, "rprivate": linux.MS_PRIVATE | linux.MS_REC,
    "slave": linux.MS_SLAVE, "rslave": linux.MS_SLAVE | linux.MS_REC,
    "shared": linux.MS_SHARED, "rshared": linux.MS_SHARED | linux.MS_REC,
    "unbindable": linux.MS_UNBINDABLE, "runbindable": linux.MS_UNBINDABLE | linux.MS_REC,
}
# Flags a bind remount must repeat, or the kernel refuses to clear locked ones.
_KEEP_ON_REMOUNT = (linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
                    | linux.MS_NOATIME | linux.MS_NODIRATIME | linux.MS_RELATIME)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class InitError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def parse_mount_options(options):
    """(flags, propagation flags, data string) from OCI mount options."""
    flags, propagation, data = 0, [], []
    for opt in options or []:
        if opt in _MOUNT_FLAGS:
            bit, on = _MOUNT_FLAGS[opt]
            flags = flags | bit if on else flags & ~bit
        elif opt in _PROPAGATION:
            propagation.append(_PROPAGATION[opt])
        else:
            data.append(opt)
    return flags, propagation, ",".join(data) or None


def _make_target(dest: str, like_dir: bool) -> None:
    if like_dir:
        os.makedirs(dest, exist_ok=True)
    elif not os.path.lexists(dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.close(os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def do_mount(rootfs: str, m: dict) -> None:
    dest = secure_join(rootfs, m["destination"])
    flags, propagation, data = parse_mount_options(m.get("options"))
    fstype = m.get("type") or None
    source = m.get("source")
    if fstype == "bind" or flags & linux.MS_BIND:
        flags |= linux.MS_BIND
        _make_target(dest, os.path.isdir(source))
        linux.mount(source, dest, None, flags & (linux.MS_BIND | linux.MS_REC))
        extra = flags & ~(linux.MS_BIND | linux.MS_REC)
        if extra:
            current = os.statvfs(dest).f_flag & _KEEP_ON_REMOUNT
            linux.mount(source, dest, None, linux.MS_BIND | linux.MS_REMOUNT | current | extra)
    else:
        _make_target(dest, True)
        linux.mount(source, dest, fstype, flags, data)
    for p in propagation:
        linux.mount(None, dest, None, p)


def make_devices(rootfs: str, devices: list) -> None:
    for dev in devices:
        path = secure_join(rootfs, dev["path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        kind = stat.S_IFCHR if dev.get("type", "c") in ("c", "u") else stat.S_IFBLK
        mode = dev.get("fileMode", 0o666)
        if os.path.lexists(path):
            os.unlink(path)
        try:
            os.mknod(path, kind | mode, os.makedev(dev["major"], dev["minor"]))
        except PermissionError:
            # No CAP_MKNOD (a user namespace): bind the host's node instead.
            _make_target(path, False)
            linux.mount(dev["path"], path, None, linux.MS_BIND)
            continue
        os.chmod(path, mode)
        os.chown(path, dev.get("uid", 0), dev.get("gid", 0))


def dev_symlinks(rootfs: str) -> None:
    links = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
    if os.path.exists("/proc/kcore"):
        links["core"] = "/proc/kcore"
    for name, target in links.items():
        path = secure_join(rootfs, "/dev/" + name)
        if not os.path.lexists(path):
            os.symlink(target, path)


def pivot(rootfs: str) -> None:
    """pivot_root into rootfs and drop the old root (never chroot: it can be escaped)."""
    os.chdir(rootfs)
    linux.pivot_root(".", ".")
    # The old root is now stacked on ".": detach it, lazily, since host mounts may be busy.
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")


def mask_paths(paths: list) -> None:
    for p in paths:
        try:
            if os.path.isdir(p):
                linux.mount("tmpfs", p, "tmpfs", linux.MS_RDONLY)
            else:
                linux.mount("/dev/null", p, None, linux.MS_BIND)
        except FileNotFoundError:
            pass  # not every kernel has every path


def readonly_paths(paths: list) -> None:
    for p in paths:
        if not os.path.exists(p):
            continue
        linux.mount(p, p, None, linux.MS_BIND | linux.MS_REC)
        current = os.statvfs(p).f_flag & _KEEP_ON_REMOUNT
        linux.mount(p, p, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_REC | linux.MS_RDONLY | current)


def _mask(names) -> int:
    mask = 0
    for name in names or []:
        if name not in CAPABILITIES:
            raise InitError(128, f"capabilities: unknown capability {name!r}")
        mask |= 1 << CAPABILITIES.index(name)
    return mask


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAPABILITIES) - 1


def switch_identity(process: dict, last_cap: int) -> None:
    """Drop the bounding set, become the user, then set the capability sets the spec asks."""
    user = process.get("user") or {}
    caps = process.get("capabilities")
    if caps is not None:
        keep = _mask(caps.get("bounding"))
        for cap in range(last_cap + 1):
            if not keep & (1 << cap):
                linux.prctl(linux.PR_CAPBSET_DROP, cap)
        linux.prctl(linux.PR_SET_KEEPCAPS, 1)
    os.setgroups(list(user.get("additionalGids") or []))
    os.setgid(user.get("gid", 0))
    os.setuid(user.get("uid", 0))
    if caps is not None:
        linux.prctl(linux.PR_SET_KEEPCAPS, 0)
        linux.capset(_mask(caps.get("effective")), _mask(caps.get("permitted")),
                     _mask(caps.get("inheritable")))
        for cap in caps.get("ambient") or []:
            linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_RAISE, CAPABILITIES.index(cap))
    if process.get("noNewPrivileges"):
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)


def find_executable(name: str, env: list) -> str:
    if "/" in name:
        return name
    path = DEFAULT_PATH
    for item in env:
        if item.startswith("PATH="):
            path = item[5:]
    for d in path.split(":"):
        candidate = os.path.join(d or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise InitError(127, f'exec: "{name}": executable file not found in $PATH')


def set_rlimits(rlimits: list) -> None:
    if not rlimits:
        return
    import resource
    for rl in rlimits:
        which = getattr(resource, rl["type"], None)
        if which is None:
            raise InitError(128, f"rlimits: unknown limit {rl['type']!r}")
        resource.setrlimit(which, (rl["soft"], rl["hard"]))


def reset_signals() -> None:
    # Python ignores SIGPIPE (and the shim ignores a few more); ignored dispositions survive exec.
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def setup_and_exec(spec: dict, bundle: str, meta: dict, errfd: int) -> None:
    os.umask(0o022)
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    log = os.open(meta["log_path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    # Opened now, written just before exec: the host's cgroupfs is out of sight after pivot_root,
    # and joining late keeps this Python process's setup out of the container's memory account.
    cgroup_fds = [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in meta["cgroups"]["procs"]]
    last_cap = _last_cap()

    linux_spec = spec.get("linux", {})
    kinds = {ns["type"] for ns in linux_spec.get("namespaces", [])}
    flags = 0
    for kind in kinds - {"pid"}:
        flags |= linux.NAMESPACE_FLAGS[kind]
    if "mount" not in kinds:
        raise InitError(128, "namespaces: a mount namespace is required")
    linux.unshare(flags)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)

    root = spec["root"]["path"]
    rootfs = root if root.startswith("/") else os.path.join(bundle, root)
    linux.mount(rootfs, rootfs, None, linux.MS_BIND | linux.MS_REC)
    for m in spec.get("mounts", []):
        do_mount(rootfs, m)
    make_devices(rootfs, linux_spec.get("devices", []))
    dev_symlinks(rootfs)
    pivot(rootfs)
    mask_paths(linux_spec.get("maskedPaths", []))
    readonly_paths(linux_spec.get("readonlyPaths", []))
    if spec["root"].get("readonly"):
        linux.mount("/", "/", None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_REC)
    if "uts" in kinds and spec.get("hostname"):
        linux.sethostname(spec["hostname"])
    if "network" in kinds:
        linux.link_up("lo")

    process = spec["process"]
    set_rlimits(process.get("rlimits"))
    cwd = process.get("cwd") or "/"
    os.makedirs(cwd, exist_ok=True)
    for fd in cgroup_fds:
        os.write(fd, b"0")
        os.close(fd)
    switch_identity(process, last_cap)
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise InitError(128, f"cwd: cannot enter {cwd}: {exc.strerror}") from None

    args = process["args"]
    env = process.get("env", [])
    path = find_executable(args[0], env)
    environ = dict(item.split("=", 1) for item in env)
    reset_signals()
    os.closerange(3, errfd)
    os.closerange(errfd + 1, 1 << 16)
    try:
        os.execve(path, args, environ)
    except FileNotFoundError:
        raise InitError(127, f"exec: {path}: no such file or directory") from None
    except PermissionError:
        raise InitError(126, f"exec: {path}: permission denied") from None
    except OSError as exc:
        raise InitError(126, f"exec: {path}: {exc.strerror}") from None


def run(spec: dict, bundle: str, meta: dict, errfd: int) -> None:
    """Never returns: execs the container process or exits with a reported error."""
    try:
        setup_and_exec(spec, bundle, meta, errfd)
        code, message = 128, "exec returned"
    except InitError as exc:
        code, message = exc.code, str(exc)
    except BaseException as exc:  # noqa: BLE001 - everything must reach the shim as a message
        code, message = 128, f"container init: {exc}"
    try:
        os.write(errfd, f"{code}:{message}".encode(errors="replace"))
    finally:
        os._exit(code)
