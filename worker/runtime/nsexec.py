"""Running a process inside a running container (`exec`), in a child of the node supervisor.

The helper (this process) opens the container init's namespace files, checks that the pid is
still that init (start time), enters its pid namespace (which applies to children) and forks
the process. The process joins the container's cgroups, enters the user namespace if any, then
ipc, uts, net, cgroup and mount namespaces (setns on the mount namespace puts it at the
container's root: no chroot), and ends like the container's own init: rlimits, user,
capabilities, no_new_privs and the seccomp filter from the bundle's config.json, then execve.

The client gets {"pid", "error"} once the process runs, and {"exit_code"} when it ends. If the
client hangs up first, the process is killed. With a terminal, the process gets a new pty of
the container's own devpts and the client receives its master side with the first message.

Importable on its own (the supervisor imports it as `nsexec`).
"""
import fcntl
import os
import select
import signal
import struct

try:
    from . import linux, nsinit, procfs, shim
except ImportError:  # loaded on its own by the supervisor
    import linux
    import nsinit
    import procfs
    import shim

NS_ORDER = ("user", "ipc", "uts", "net", "cgroup", "mnt")  # pid is entered by the helper
TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430
TIOCSCTTY = 0x540E


def _open_namespaces(pid: int) -> dict:
    fds = {}
    for kind in NS_ORDER + ("pid",):
        mine, theirs = f"/proc/self/ns/{kind}", f"/proc/{pid}/ns/{kind}"
        try:
            if os.stat(mine).st_ino == os.stat(theirs).st_ino:
                continue  # shared with the host (e.g. no user namespace): nothing to enter
            fds[kind] = os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
    return fds


def _new_pty(uid: int):
    """A pty of the container's devpts (we are in its mount namespace): (master, slave)."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    n = struct.unpack("i", fcntl.ioctl(master, TIOCGPTN, struct.pack("i", 0)))[0]
    slave = os.open(f"/dev/pts/{n}", os.O_RDWR | os.O_NOCTTY)
    os.fchown(slave, uid, -1)
    return master, slave


def child(req: dict, spec: dict, prog, ns: dict, cgroup_fds: list, stdio: list, errfd: int, pty_sock) -> None:
    for fd in cgroup_fds:
        os.write(fd, b"0")
        os.close(fd)
    for kind in NS_ORDER:
        if kind in ns:
            linux.setns(ns[kind], 0)
    os.chdir("/")
    process = dict(spec.get("process") or {})
    process["args"] = list(req["args"])
    if req.get("cwd"):
        process["cwd"] = req["cwd"]
    if req.get("user"):
        process["user"] = req["user"]
    base = list(process.get("env") or [])
    merged = {}
    for item in base + list(req.get("env") or []):
        merged[item.split("=", 1)[0]] = item
    env = list(merged.values())
    os.setsid()
    if req.get("tty"):
        uid = (process.get("user") or {}).get("uid", 0)
        master, slave = _new_pty(uid)
        shim.send(pty_sock, {"pty": True}, fds=[master])
        os.close(master)
        fcntl.ioctl(slave, TIOCSCTTY, 0)
        stdio = [slave, slave, slave]
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
    nsinit.set_rlimits(process.get("rlimits"))
    nsinit.finish_process(process, spec.get("linux") or {}, env, keep_fds=(errfd,), pdeathsig=signal.SIGKILL,
                          compiled_seccomp=prog)


def run(conn, req: dict, fds: list) -> None:
    """Entry point in the forked helper; never returns."""
    linux.set_process_name("shoal-exec")
    pid, start = req["pid"], req.get("pid_start")
    spec, prog = shim.read_spec(req)
    try:
        ns = _open_namespaces(pid)
    except OSError:
        ns = None
    if ns is None or not procfs.is_alive(pid, start):
        shim.send(conn, {"pid": None, "error": "container is not running"})
        os._exit(0)
    cgroup_fds = [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in (req.get("cgroups") or {}).get("procs") or []]
    if "pid" in ns:
        linux.setns(ns.pop("pid"), linux.CLONE_NEWPID)
    stdio = list(fds[:3]) if len(fds) >= 3 else [os.open("/dev/null", os.O_RDWR)] * 3
    errpipe_r, errpipe_w = os.pipe2(os.O_CLOEXEC)
    pty_parent = pty_child = None
    if req.get("tty"):
        import _socket
        pty_parent, pty_child = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    proc = os.fork()
    if proc == 0:
        code, message = 128, "exec returned"
        try:
            os.close(errpipe_r)
            linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
            child(req, spec, prog, ns, cgroup_fds, stdio, errpipe_w, pty_child)
        except nsinit.InitError as exc:
            code, message = exc.code, str(exc)
        except BaseException as exc:  # noqa: BLE001
            code, message = 128, f"exec: {type(exc).__name__}: {exc}"
        try:
            os.write(errpipe_w, f"{code}:{message}".encode(errors="replace"))
        finally:
            os._exit(code)
    os.close(errpipe_w)
    for fd in set(stdio) | set(cgroup_fds) | set(ns.values()):
        os.close(fd)
    master = None
    if pty_parent is not None:
        pty_child.close()
        pty_parent.settimeout(10)
        try:
            _, anc, _, _ = pty_parent.recvmsg(64, 64)
            for _, _, payload in anc:
                master = int.from_bytes(payload[:4], "little")
        except OSError:
            pass
        pty_parent.close()
    chunks = []
    while chunk := os.read(errpipe_r, 4096):
        chunks.append(chunk)
    os.close(errpipe_r)
    failure = b"".join(chunks).decode(errors="replace")
    head, _, message = failure.partition(":")
    shim.send(conn, {"pid": proc, "error": message}, fds=[master] if master is not None else ())
    if master is not None:
        os.close(master)
    code = _wait(proc, conn)
    if failure:
        code = int(head) if head.isdigit() else 128
    try:
        shim.send(conn, {"exit_code": code})
    except OSError:
        pass
    os._exit(0)


def _wait(proc: int, conn) -> int:
    """Wait for the process; kill it if the client hangs up first."""
    pidfd = os.pidfd_open(proc)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(conn.fileno(), select.POLLIN | select.POLLHUP)
    while True:
        for fd, ev in poller.poll():
            if fd == pidfd:
                _, status = os.waitpid(proc, 0)
                os.close(pidfd)
                code = os.waitstatus_to_exitcode(status)
                return 128 - code if code < 0 else code
            try:
                gone = not conn.recv(1)
            except (BlockingIOError, InterruptedError):
                gone = False
            except OSError:
                gone = True
            if gone:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                poller.unregister(conn.fileno())
