"""The node supervisor: one small process per runtime root that forks every container's shim.

    python -I -S supervisor.py ROOT VERSION RUN_DIR

Why: starting a Python interpreter costs ~8 ms and ~4 MiB per container; forking one that has
already imported the container init and the log writer costs well under a millisecond, and the
child shares all those pages with it (copy-on-write; gc.freeze keeps the garbage collector from
touching, and so copying, the inherited objects). The supervisor itself does nothing per
request but read it and fork, so its memory stays as it was at start.

It listens on RUN_DIR/supervisor.sock (SOCK_SEQPACKET: one message per request, root only;
RUN_DIR is under /run, named after ROOT, so the runtime root holds only containers) and
for each request forks a child that does the work and answers on the same connection:
  start  the container's shim (shim.py): creates the container, then relays its output and
         records its exit. Shims are independent of the supervisor: each is its own session,
         keeps running if the supervisor dies, and is reaped by init then.
  exec   a process inside a running container (nsexec.py), with the client's stdio fds.
  ping / quit.
The launcher binds the socket before it forks the server and exits, so a client can connect as
soon as the launcher is gone. The server leaves when its socket file is removed or replaced
or its runtime root is deleted (a newer supervisor started, the node left), or when a request
carries another
code version (the runtime was upgraded under it).

This file is also imported by the runtime package for `code_version` and the socket name,
so the heavy imports happen in main().
"""
import os
import sys
import zlib

SOCKET = "supervisor.sock"
MODULES = ("supervisor.py", "shim.py", "nsinit.py", "initproc.py", "nsexec.py", "linux.py", "procfs.py", "paths.py",
           "seccomp.py", "syscalls.py", "jsonlog.py", "engines.py", "sysctl.py")
HERE = os.path.dirname(os.path.abspath(__file__))
RUN_BASE = "/run/shoal/runtime"
IDLE_EXIT = 600.0  # seconds without requests or children before the supervisor leaves


def code_version(directory: str = HERE) -> str:
    """Changes whenever one of the modules the supervisor runs changes on disk."""
    parts = []
    for name in MODULES:
        try:
            st = os.stat(os.path.join(directory, name))
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{name}:-")
    return f"{zlib.crc32(';'.join(parts).encode()):08x}"


def run_dir(root: str) -> str:
    """Where the supervisor of a runtime root keeps its socket, lock and log."""
    real = os.path.realpath(root)
    return os.path.join(RUN_BASE, f"{zlib.crc32(real.encode()):08x}")


def main() -> None:
    root, version, rundir = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.path.insert(0, HERE)
    import _socket
    import gc
    import select
    import signal
    import time

    import nsexec
    import nsinit
    import shim

    root_ino = os.stat(root).st_ino
    base = rundir + "/"
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    tmp = f"{SOCKET}.{os.getpid()}"
    try:
        os.unlink(base + tmp)
    except FileNotFoundError:
        pass
    old_umask = os.umask(0o177)
    listener.bind(base + tmp)
    os.umask(old_umask)
    os.rename(base + tmp, base + SOCKET)  # atomically replaces a dead supervisor's socket
    listener.listen(128)
    ino = os.stat(base + SOCKET).st_ino
    if os.fork():
        os._exit(0)
    os.setsid()
    os.chdir("/")
    nsinit.linux.set_process_name("shoal-supervise")

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    hierarchies = nsinit.v1_hierarchies()
    caches = {"config": {}}

    def reap() -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)

    def still_ours() -> bool:
        try:
            return os.stat(base + SOCKET).st_ino == ino
        except OSError:
            return False

    def root_gone() -> bool:
        try:
            return os.stat(root).st_ino != root_ino
        except OSError:
            return True

    def leave() -> None:
        """Exit, removing the socket (and, with the root gone, everything else here)."""
        if still_ours():
            os.unlink(base + SOCKET)
            if root_gone():
                for name in ("supervisor.log", ".lock"):
                    try:
                        os.unlink(base + name)
                    except OSError:
                        pass
                for name in ("runc", "crun"):  # the engines' state dirs, empty once containers are gone
                    try:
                        os.rmdir(base + name)
                    except OSError:
                        pass
                try:
                    os.rmdir(rundir)
                except OSError:
                    pass
        os._exit(0)

    children = set()
    last_active = time.monotonic()
    gc.collect()
    gc.freeze()  # children share these objects; a collection there must not write to them
    while True:
        try:
            ready, _, _ = select.select([listener, wake_r], [], [], 2.0)
        except InterruptedError:
            continue
        if wake_r in ready:
            try:
                while os.read(wake_r, 64):
                    pass
            except BlockingIOError:
                pass
        reap()
        if not still_ours():
            os._exit(0)
        if root_gone():
            leave()
        if listener not in ready:
            if not children and time.monotonic() - last_active > IDLE_EXIT:
                leave()  # nothing to look after: the next request starts a new one
            continue
        last_active = time.monotonic()
        try:
            conn, _ = listener._accept()
        except OSError:
            continue
        conn = _socket.socket(fileno=conn)
        fds = []
        try:
            conn.settimeout(5.0)
            cred = conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
            peer_uid = int.from_bytes(cred[4:8], sys.byteorder)
            if peer_uid not in (0, os.getuid()):
                conn.close()
                continue
            data, anc, _, _ = conn.recvmsg(1 << 20, _socket.CMSG_SPACE(16 * 4))
            for level, kind, payload in anc:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                    fds += [int.from_bytes(payload[i:i + 4], sys.byteorder) for i in range(0, len(payload) - 3, 4)]
            req = shim.loads(data)
            op = req.get("op")
            if req.get("v") != version:
                shim.send(conn, {"stale": True, "error": "supervisor runs other code; restarting it"})
                os._exit(0)
            if op == "ping":
                shim.send(conn, {"pid": os.getpid(), "version": version})
                continue
            if op == "quit":
                shim.send(conn, {"ok": True})
                leave()
            if op not in ("start", "exec"):
                shim.send(conn, {"error": f"op: unknown operation {op!r}"})
                continue
            req.setdefault("cgroups", {})["hierarchies"] = hierarchies
            pid = os.fork()
            if pid:
                children.add(pid)
            if pid == 0:
                try:
                    listener.close()
                    os.close(wake_r)
                    gc.disable()
                    conn.settimeout(None)
                    if op == "start":
                        shim.run(conn, req)
                    else:
                        nsexec.run(conn, req, fds)
                except BaseException as exc:  # noqa: BLE001 - the client must hear about it
                    print(f"supervisor child ({op}): {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                    try:
                        shim.send(conn, {"error": f"{op}: {type(exc).__name__}: {exc}"})
                    except OSError:
                        pass
                os._exit(0)
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the supervisor
            print(f"supervisor: request failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            try:
                shim.send(conn, {"error": f"supervisor: {type(exc).__name__}: {exc}"})
            except OSError:
                pass
        finally:
            conn.close()
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass


if __name__ == "__main__":
    main()
