"""The container's init, between fork and exec: namespaces, rootfs, devices, identity, seccomp.

Runs in a child of the container's shim. It follows the OCI runtime spec in config.json, so
the same bundle means the same container under runc. On any failure it writes
"<exit code>:<message>" to the error pipe and exits with that code; on success the pipe closes
at exec (it is close-on-exec) and the shim reads nothing.

Order matters and follows runc: join the cgroups first (so the cgroup namespace is rooted at
the container's cgroup), unshare, mount, pivot_root, then set rlimits, drop privileges, set
no_new_privs, load the seccomp filter as the very last step before execve.

With an init (the shim's request says "init"), the process forks once the namespaces exist,
before the mounts: the child sets the container up and execs the entrypoint; the parent stays as
pid 1 (initproc.py) and confines itself as the container process is, before that process may
exec.

With a user namespace (linux.uidMappings), the process forked by the shim creates it, waits for
the shim to write the id maps (only a process outside can map a range), becomes root inside,
creates the other namespaces (so that they belong to the user namespace) and forks the real
init into the new pid namespace; the shim, a child subreaper, adopts that init.

Importable on its own (the shim imports it as `nsinit`), so no package imports.
"""
import os
import resource
import signal
import stat

try:
    from . import initproc, linux, seccomp, sysctl
    from .paths import secure_join
except ImportError:  # loaded on its own by the supervisor
    import initproc
    import linux
    import seccomp
    import sysctl
    from paths import secure_join

CAPABILITIES = linux.CAPABILITIES

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
_STATVFS_TO_MS = ((os.ST_RDONLY, linux.MS_RDONLY), (os.ST_NOSUID, linux.MS_NOSUID),
                  (os.ST_NODEV, linux.MS_NODEV), (os.ST_NOEXEC, linux.MS_NOEXEC),
                  (os.ST_NOATIME, linux.MS_NOATIME), (os.ST_NODIRATIME, linux.MS_NODIRATIME),
                  (os.ST_RELATIME, linux.MS_RELATIME))

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


def _mount_flags_of(path: str) -> int:
    f = os.statvfs(path).f_flag
    return sum(ms for st, ms in _STATVFS_TO_MS if f & st)


def _make_target(dest: str, like_dir: bool) -> None:
    if like_dir:
        os.makedirs(dest, exist_ok=True)
    elif not os.path.lexists(dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.close(os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def v1_hierarchies():
    """[(mount point name, subsystem options)] of the host's cgroup v1 hierarchies."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields, post_fields = pre.split(), post.split()
            if len(post_fields) >= 3 and post_fields[0] == "cgroup":
                opts = [o for o in post_fields[2].split(",") if o not in ("rw", "ro")
                        and not o.startswith("release_agent=") and o not in ("xattr", "clone_children",
                                                                            "noprefix", "cpuset_v2_mode")]
                out.append((os.path.basename(fields[4]), ",".join(opts)))
    return out


def mount_cgroup(dest: str, flags: int, hierarchies, version: int) -> None:
    """The container's view of its cgroups: in a cgroup namespace, each hierarchy shows the
    container's own cgroup as its root (v1: a tmpfs with one mount per hierarchy, as runc does)."""
    _make_target(dest, True)
    if version == 2:
        linux.mount("cgroup2", dest, "cgroup2", flags)
        return
    # The tmpfs stays writable, the hierarchies on it are read-only (as runc and crun do it).
    linux.mount("tmpfs", dest, "tmpfs", flags & ~linux.MS_RDONLY, "mode=755")
    for name, opts in hierarchies:
        target = os.path.join(dest, name)
        os.mkdir(target)
        linux.mount("cgroup", target, "cgroup", flags, opts)
        for sub in opts.split(","):
            if sub != name and "=" not in sub and "," in name:  # co-mounted: cpu -> cpu,cpuacct
                os.symlink(name, os.path.join(dest, sub))


def do_mount(rootfs: str, m: dict, cgroups: dict) -> None:
    dest = secure_join(rootfs, m["destination"])
    flags, propagation, data = parse_mount_options(m.get("options"))
    fstype = m.get("type") or None
    source = m.get("source")
    if fstype == "cgroup":
        mount_cgroup(dest, flags, cgroups.get("hierarchies") or [], cgroups.get("version", 1))
    elif fstype == "bind" or flags & linux.MS_BIND:
        flags |= linux.MS_BIND
        _make_target(dest, os.path.isdir(source))
        linux.mount(source, dest, None, flags & (linux.MS_BIND | linux.MS_REC))
        extra = flags & ~(linux.MS_BIND | linux.MS_REC)
        if extra:
            current = _mount_flags_of(dest) & _KEEP_ON_REMOUNT
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
        current = _mount_flags_of(p) & _KEEP_ON_REMOUNT
        linux.mount(p, p, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_REC | linux.MS_RDONLY | current)


def write_sysctls(sysctls: dict, kinds: set) -> None:
    try:
        sysctl.apply(sysctls, kinds)
    except ValueError as exc:
        raise InitError(128, str(exc)) from None
    except OSError as exc:  # its strerror names the sysctl; str() would prefix "[Errno n]"
        raise InitError(128, exc.strerror or str(exc)) from None


def _mask(names) -> int:
    mask = 0
    for name in names or []:
        if name not in CAPABILITIES:
            raise InitError(128, f"capabilities: unknown capability {name!r}")
        mask |= 1 << CAPABILITIES.index(name)
    return mask


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAPABILITIES) - 1


def switch_identity(process: dict, last: int) -> None:
    """Drop the bounding set, become the user, then set the capability sets the spec asks."""
    user = process.get("user") or {}
    caps = process.get("capabilities")
    if caps is not None:
        keep = _mask(caps.get("bounding"))
        for cap in range(last + 1):
            if not keep & (1 << cap):
                linux.prctl(linux.PR_CAPBSET_DROP, cap)
        linux.prctl(linux.PR_SET_KEEPCAPS, 1)
    os.setgroups(list(user.get("additionalGids") or []))
    os.setresgid(user.get("gid", 0), user.get("gid", 0), user.get("gid", 0))
    os.setresuid(user.get("uid", 0), user.get("uid", 0), user.get("uid", 0))
    if caps is not None:
        linux.prctl(linux.PR_SET_KEEPCAPS, 0)
        linux.capset(_mask(caps.get("effective")), _mask(caps.get("permitted")),
                     _mask(caps.get("inheritable")))
        for cap in caps.get("ambient") or []:
            linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_RAISE, CAPABILITIES.index(cap))


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
    for rl in rlimits or []:
        which = getattr(resource, rl["type"], None)
        if which is None:
            raise InitError(128, f"rlimits: unknown limit {rl['type']!r}")
        soft = resource.RLIM_INFINITY if rl["soft"] >= 2**64 - 1 else rl["soft"]
        hard = resource.RLIM_INFINITY if rl["hard"] >= 2**64 - 1 else rl["hard"]
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError) as exc:
            raise InitError(128, f"rlimits: {rl['type']}: {exc}") from None


def reset_signals() -> None:
    # Python ignores SIGPIPE (and the shim ignores a few more); ignored dispositions survive exec.
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def seccomp_program(linux_spec: dict, compiled=None):
    """The filter for linux.seccomp: as the daemon compiled it at create, else compiled here."""
    section = linux_spec.get("seccomp")
    if not section:
        return None
    if compiled:
        return compiled
    try:
        return seccomp.compile_cached(section)
    except ValueError as exc:
        raise InitError(128, str(exc)) from None


def take_identity(process: dict, prog, nnp: bool) -> None:
    """Become the container's user with its capabilities (the filter first when no_new_privs is
    off: without it only CAP_SYS_ADMIN may load one, and that is about to go)."""
    if prog is not None and not nnp:
        seccomp.load(prog)
    switch_identity(process, last_cap())


def lock_down(prog, nnp: bool, keep_fds=()) -> None:
    """The last steps before execve (or the init's loop): no_new_privs, every descriptor above
    stdio closed but keep_fds, then the seccomp filter, as late as possible."""
    if nnp:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    low = 3
    for fd in sorted(keep_fds):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)
    if prog is not None and nnp:
        seccomp.load(prog)


def confine_init(process: dict, linux_spec: dict, compiled_seccomp=None, keep_fds=()) -> None:
    """The container's init (initproc) gets what its process gets: user, groups, capabilities,
    no_new_privs, seccomp. Non-dumpable, so that its /proc files need CAP_SYS_PTRACE.

    Not the rlimits: they bound the workload (its child has them), grant nothing, and an
    address-space or data limit sized for a small program could starve the interpreter."""
    prog = seccomp_program(linux_spec, compiled_seccomp)
    nnp = bool(process.get("noNewPrivileges"))
    take_identity(process, prog, nnp)
    linux.prctl(linux.PR_SET_DUMPABLE, 0)  # after the uid change, which may reset it
    lock_down(prog, nnp, keep_fds)


def _start_init(spec: dict, meta: dict, kinds: set, errfd: int):
    """Fork the entrypoint's process and stay as the container's init (never returns here);
    in the child, the function to call once the container is set up (initproc.start).

    Called once the namespaces exist and before anything is mounted: the child's mounts are in
    the namespace they share, and its pivot_root moves the root of every process in it that
    stood at the old root, the init's too, so the init is in the container without a setns."""
    if "pid" not in kinds:
        raise InitError(128, "init: needs a pid namespace (it is the namespace's pid 1)")

    def confine(keep_fds) -> None:
        os.chdir("/")  # the container's root, since the child's pivot_root
        confine_init(spec["process"], spec.get("linux") or {}, meta.get("seccomp_prog"), keep_fds)
    return initproc.start(confine, keep_fds=(errfd,))


def finish_process(process: dict, linux_spec: dict, env: list, keep_fds=(), pdeathsig: int = 0,
                   compiled_seccomp=None) -> None:
    """The common end of the container init and of exec: identity, no_new_privs, seccomp, exec."""
    args = process["args"]
    prog = seccomp_program(linux_spec, compiled_seccomp)
    nnp = bool(process.get("noNewPrivileges"))
    take_identity(process, prog, nnp)
    if pdeathsig:
        linux.prctl(linux.PR_SET_PDEATHSIG, pdeathsig)  # after the uid change, which clears it
    cwd = process.get("cwd") or "/"
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise InitError(128, f"cwd: cannot enter {cwd}: {exc.strerror}") from None
    path = find_executable(args[0], env)
    environ = dict(item.split("=", 1) for item in env if "=" in item)
    reset_signals()
    lock_down(prog, nnp, keep_fds)
    try:
        os.execve(path, args, environ)
    except FileNotFoundError:
        raise InitError(127, f"exec: {path}: no such file or directory") from None
    except PermissionError:
        raise InitError(126, f"exec: {path}: permission denied") from None
    except OSError as exc:
        raise InitError(126, f"exec: {path}: {exc.strerror}") from None


def _write_map(pid: int, kind: str, mappings: list) -> None:
    text = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in mappings)
    with open(f"/proc/{pid}/{kind}_map", "w") as f:
        f.write(text)


def map_ids(pid: int, linux_spec: dict) -> None:
    """Write a child's uid/gid maps (called by the shim, outside the user namespace)."""
    _write_map(pid, "uid", linux_spec.get("uidMappings") or [])
    _write_map(pid, "gid", linux_spec.get("gidMappings") or [])


def _enter_user_namespace(linux_spec: dict, sync: int, new_pid_ns: bool) -> None:
    """Create the user namespace and the pid namespace inside it; returns in the new init."""
    linux.unshare(linux.CLONE_NEWUSER)
    os.write(sync, b"U")
    if os.read(sync, 1) != b"G":
        raise InitError(128, "user namespace: the shim did not write the id maps")
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    if new_pid_ns:
        linux.unshare(linux.CLONE_NEWPID)
    pid = os.fork()
    if pid:
        os.write(sync, f"P{pid}\n".encode())
        os._exit(0)  # the shim, a subreaper, adopts the init
    os.close(sync)


def setup_and_exec(spec: dict, bundle: str, meta: dict, errfd: int) -> None:
    os.umask(0o022)
    os.setsid()
    stdio = meta["stdio"]
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
    cgroup_info = meta.get("cgroups") or {}
    # Join the cgroups first: the cgroup namespace is rooted where the process is when it is
    # created, and the container's memory account then covers everything from here on.
    for path in cgroup_info.get("procs") or []:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    linux_spec = spec.get("linux", {})
    kinds = {ns["type"] for ns in linux_spec.get("namespaces", [])}
    if "mount" not in kinds:
        raise InitError(128, "namespaces: a mount namespace is required")
    if "user" in kinds:
        _enter_user_namespace(linux_spec, meta["userns_sync"], "pid" in kinds)
    flags = 0
    for kind in kinds - {"pid", "user"}:
        flags |= linux.NAMESPACE_FLAGS[kind]
    linux.unshare(flags)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    # With an init, only the entrypoint's process goes on from here (this one stays as pid 1).
    set_up = _start_init(spec, meta, kinds, errfd) if meta.get("init") else None

    root = spec["root"]["path"]
    rootfs = root if root.startswith("/") else os.path.join(bundle, root)
    linux.mount(rootfs, rootfs, None, linux.MS_BIND | linux.MS_REC)
    for m in spec.get("mounts", []):
        try:
            do_mount(rootfs, m, cgroup_info)
        except OSError as exc:
            raise InitError(128, f"mounts: {m.get('destination')}: {exc.strerror or exc}") from None
    make_devices(rootfs, linux_spec.get("devices", []))
    dev_symlinks(rootfs)
    pivot(rootfs)
    # After pivot_root, /proc is the container's (its IPC and network namespaces), and before
    # readonly_paths makes /proc/sys read-only: the point where runc writes them too.
    write_sysctls(linux_spec.get("sysctl") or {}, kinds)
    mask_paths(linux_spec.get("maskedPaths", []))
    readonly_paths(linux_spec.get("readonlyPaths", []))
    if spec["root"].get("readonly"):
        linux.mount(None, "/", None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | _mount_flags_of("/"))
    if "uts" in kinds and spec.get("hostname"):
        linux.sethostname(spec["hostname"])
    if "network" in kinds:
        linux.link_up("lo")

    process = spec["process"]
    set_rlimits(process.get("rlimits"))
    cwd = process.get("cwd") or "/"
    os.makedirs(cwd, exist_ok=True)
    if set_up is not None:
        set_up()
    finish_process(process, linux_spec, process.get("env", []), keep_fds=(errfd,),
                   compiled_seccomp=meta.get("seccomp_prog"))


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
