"""A container's shim: the process forked from the node supervisor for one container.

It creates the container (Shoal's own init from nsinit.py, or `runc`/`crun create` + `start`
on the same bundle), tells the client the container's pid, then stays with the container for
its whole life:
- relays the container's stdout and stderr (pipes) into the json-file log, rotated by size;
- as a child subreaper it is the parent of the container's init whatever created it, so it
  reaps it and records exit code, signal and OOM kills in exit.json, its very last act;
- escalates a stop: the client writes stop.json (signal time, deadline) and sends SIGUSR1; at
  the deadline the shim sends SIGKILL itself, so a stop finishes even if the daemon is gone.
Everything it knows is in the state directory (state.json, exit.json), so a new daemon reads the
same facts. It is its own session: the supervisor and the daemon can exit or restart under it.

Kept lean: no imports beyond what the supervisor has loaded, small flat JSON written by hand.
"""
import os
import select
import signal
import time

import _json
import _socket

try:
    from . import engines, jsonlog, linux, nsinit, procfs
except ImportError:  # loaded on its own by the supervisor
    import engines
    import jsonlog
    import linux
    import nsinit
    import procfs

DRAIN_SECONDS = 2.0  # after the init exits, how long processes it left may keep the pipes open
READ_SIZE = 16384    # per read of a pipe: bounds what one burst of output allocates
IDLE_TRIM = 1.0      # seconds of quiet after output before the heap is given back to the system


def dumps(obj) -> str:
    """JSON for the flat dicts of numbers, strings, booleans and None this file writes."""
    def value(v):
        if v is None:
            return "null"
        if v is True or v is False:
            return "true" if v else "false"
        if isinstance(v, str):
            return _json.encode_basestring_ascii(v)
        return repr(v)
    return "{" + ", ".join(f"{value(k)}: {value(v)}" for k, v in obj.items()) + "}"


class _JsonContext:
    """What CPython's C JSON scanner reads from a json.JSONDecoder: using the scanner directly
    keeps the json package (and re, enum, ...) out of the supervisor and its children."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float
    memo: dict = {}


def loads(data):
    text = (data.decode() if isinstance(data, bytes) else data).strip()
    try:
        value, end = _json.make_scanner(_JsonContext())(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return value


def send(conn, obj, fds=()) -> None:
    data = dumps(obj).encode()
    if fds:
        payload = b"".join(fd.to_bytes(4, "little") for fd in fds)
        conn.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, payload)])
    else:
        conn.sendall(data)


def atomic_write_json(path: str, obj) -> None:
    # No fsync: these files must survive a daemon restart, not a crash of the machine (which
    # the container would not survive either).
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, dumps(obj).encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def oom_kills(path: str) -> int:
    """OOM kills seen by the container's memory cgroup (v1 memory.oom_control, v2 memory.events)."""
    if not path:
        return 0
    try:
        with open(path) as f:
            values = dict(line.split() for line in f if line.strip())
    except OSError:
        return 0
    if "oom_kill" in values:
        return int(values["oom_kill"])
    return int(values.get("under_oom", 0))  # kernels before 4.13 have no counter


def _read_stop(state: str):
    """(signal, kill_at) the client asked for in stop.json, or None."""
    try:
        with open(os.path.join(state, "stop.json")) as f:
            stop = loads(f.read())
        return int(stop["signal"]), float(stop["kill_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def split_failure(failure: str) -> tuple:
    """("<code>:<message>" from the init, or a bare message) -> (code or None, message)."""
    head, sep, message = failure.partition(":")
    if sep and head.isdigit():
        return int(head), message
    return None, failure


def _wait_child(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        except InterruptedError:
            continue


def spawn_shoal(req: dict, spec: dict, stdio, prog=None) -> tuple:
    """Fork Shoal's own init; (pid of the container's init, failure text or "")."""
    linux_spec = spec.get("linux") or {}
    kinds = {ns.get("type") for ns in linux_spec.get("namespaces") or []}
    userns = "user" in kinds
    meta = {"stdio": stdio, "cgroups": req.get("cgroups") or {}, "seccomp_prog": prog, "init": bool(req.get("init"))}
    sync_parent = sync_child = None
    if userns:
        sync_parent, sync_child = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        meta["userns_sync"] = sync_child.fileno()
    elif "pid" in kinds:
        linux.unshare(linux.CLONE_NEWPID)  # applies to our next child, which becomes its pid 1
    errpipe_r, errpipe_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(errpipe_r)
        if sync_parent is not None:
            sync_parent.close()
            os.set_inheritable(meta["userns_sync"], False)
        nsinit.run(spec, req["bundle"], meta, errpipe_w)
    os.close(errpipe_w)
    if userns:
        sync_child.close()
        pid = _userns_handshake(sync_parent, pid, linux_spec)
        sync_parent.close()
    chunks = []
    while True:
        try:
            chunk = os.read(errpipe_r, 4096)
        except InterruptedError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
    os.close(errpipe_r)
    return pid, b"".join(chunks).decode(errors="replace")


def _userns_handshake(sync, child: int, linux_spec: dict) -> int:
    """Map the ids of the child's new user namespace; returns the pid of the init it forks."""
    if sync.recv(1) != b"U":
        return child  # it failed before unsharing: the error pipe says why
    nsinit.map_ids(child, linux_spec)
    sync.sendall(b"G")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sync.recv(64)
        if not chunk:
            return child
        data += chunk
    return int(data[1:].strip())


def spawn_oci(req: dict, stdio) -> tuple:
    """`runc|crun create` then `start`; the container's init, orphaned by `create`, becomes our
    child (we are a subreaper)."""
    engine, binary, root = req["engine"], req["engine_bin"], req["engine_root"]
    state, cid = req["state"], req["id"]
    log = os.path.join(state, f"{engine}.log")
    pid_file = os.path.join(state, "init.pid")
    hide = bool(req.get("hide_unified"))

    def run(args, with_stdio) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                if with_stdio:
                    for target, fd in enumerate(stdio):
                        os.dup2(fd, target)
                else:
                    os.dup2(stdio[0], 0)
                if hide:
                    engines.hide_unified()
                os.execv(args[0], args)
            except BaseException as exc:  # noqa: BLE001
                os.write(2, f"{engine}: {exc}\n".encode())
            os._exit(127)
        return _wait_child(pid)

    rc = run(engines.create_args(engine, binary, root, log, cid, req["bundle"], pid_file), True)
    if rc != 0:
        return None, engines.last_error(log) or f"{engine} create exited with status {rc}"
    with open(pid_file) as f:
        pid = int(f.read().strip())
    rc = run(engines.start_args(engine, binary, root, log, cid), False)
    if rc != 0:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return pid, "128:" + (engines.last_error(log) or f"{engine} start exited with status {rc}")
    return pid, ""


def read_spec(req: dict):
    """config.json of the bundle, and the seccomp program the daemon compiled for it (if any)."""
    with open(os.path.join(req["bundle"], "config.json"), "rb") as f:
        spec = loads(f.read())
    try:
        with open(os.path.join(req["state"], "seccomp.bpf"), "rb") as f:
            prog = f.read()
    except FileNotFoundError:
        prog = None
    return spec, prog


def launch(conn, req: dict, stdio, info_w: int) -> None:
    """In the short-lived launcher: create the container, record and report its pid, then tell
    the shim on info_w ("<pid or ->\n<failure>"). Never returns."""
    state = req["state"]
    linux.set_process_name("shoal-launch")
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)  # what the shim ignores must not reach runc's children
    signal.set_wakeup_fd(-1)
    try:
        spec, prog = read_spec(req)
        if req.get("engine", "shoal") == "shoal":
            pid, failure = spawn_shoal(req, spec, stdio, prog)
        else:
            pid, failure = spawn_oci(req, stdio)
    except BaseException as exc:  # noqa: BLE001
        pid, failure = None, f"128:shim: {type(exc).__name__}: {exc}"
    started_at = time.time()
    if pid is not None:
        atomic_write_json(os.path.join(state, "state.json"), {
            "pid": pid, "pid_start": procfs.start_time(pid), "started_at": started_at,
            "shim_pid": os.getppid(), "shim_start": procfs.start_time(os.getppid()), "shim_stops": True,
        })
    else:  # recorded before the client hears of it, so that it finds the container stopped
        atomic_write_json(os.path.join(state, "exit.json"), {
            "exit_code": 128, "signal": None, "oom_killed": False, "started_at": None,
            "finished_at": started_at, "error": split_failure(failure)[1] or "the container did not start"})
    os.write(info_w, f"{pid if pid is not None else '-'}\n{started_at!r}\n{failure}".encode(errors="replace"))
    try:
        send(conn, {"pid": pid, "error": split_failure(failure)[1]})
    except OSError:
        pass  # the client went away: the state files tell everything
    os._exit(0)


def run(conn, req: dict) -> None:
    """Entry point of the shim, in a child of the supervisor; never returns.

    The work of creating the container (parsing the spec, forking and setting up the init) is
    done in a launcher child that exits once the container runs: the pages it dirties go with it,
    and the shim that stays for the container's life keeps only what its relay loop touches."""
    os.setsid()
    linux.set_process_name("shoal-shim")
    state = req["state"]
    exit_path = os.path.join(state, "exit.json")
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGCHLD, signal.SIGUSR1):
        signal.signal(sig, _ignore)
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)  # whoever forks the init, it ends up ours
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    info_r, info_w = os.pipe2(os.O_CLOEXEC)
    launcher = os.fork()
    if launcher == 0:
        for fd in (out_r, err_r, info_r, wake_r):
            os.close(fd)
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        launch(conn, req, (null, out_w, err_w), info_w)
    for fd in (out_w, err_w, info_w):
        os.close(fd)
    conn.close()
    chunks = []
    while True:
        try:
            chunk = os.read(info_r, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
    os.close(info_r)
    pid_text, _, rest = b"".join(chunks).decode(errors="replace").partition("\n")
    started_text, _, failure = rest.partition("\n")
    if not pid_text.isdigit():
        if not os.path.exists(exit_path):  # the launcher died before it could record anything
            atomic_write_json(exit_path, {"exit_code": 128, "signal": None, "oom_killed": False,
                                          "started_at": None, "finished_at": time.time(),
                                          "error": failure or "the container did not start"})
        os._exit(0)
    pid = int(pid_text)
    code, sig = supervise(req, pid, (out_r, err_r), wake_r)
    failed_code, message = split_failure(failure)
    if failure:
        code, sig = failed_code or 128, None
    atomic_write_json(exit_path, {
        "exit_code": code, "signal": sig, "oom_killed": oom_kills(req.get("oom") or "") > 0,
        "started_at": float(started_text) if started_text else None, "finished_at": time.time(),
        "error": message,
    })
    os._exit(0)


def _ignore(*_):
    pass


def supervise(req: dict, pid: int, pipes, wake_r: int) -> tuple:
    """Relay output until the init has exited and the pipes are drained; (exit code, signal)."""
    log = jsonlog.open_log(req.get("log") or {}, req["state"])
    streams = {pipes[0]: "stdout", pipes[1]: "stderr"}
    poller = select.poll()
    for fd in (*pipes, wake_r):
        poller.register(fd, select.POLLIN)
    status = None
    stopping = None
    kill_at = None
    drain_until = None
    trim_at = None
    while True:
        now = time.time()
        if trim_at is not None and now >= trim_at:
            linux.malloc_trim()  # a burst of output grew the heap; the shim lives on, smaller
            trim_at = None
        deadlines = [t for t in (kill_at, drain_until, trim_at) if t is not None]
        timeout = max(0, int((min(deadlines) - now) * 1000) + 1) if deadlines else None
        try:
            events = poller.poll(timeout)
        except InterruptedError:
            events = []
        for fd, _ in events:
            if fd == wake_r:
                try:
                    signals = os.read(wake_r, 256)
                except BlockingIOError:
                    signals = b""
                if signal.SIGUSR1 in signals and status is None:
                    stop = _read_stop(req["state"])
                    if stop is not None:
                        if stopping is None or stop[0] != stopping[0]:  # a repeated request is not resent
                            try:
                                os.kill(pid, stop[0])
                            except ProcessLookupError:
                                pass
                        stopping, kill_at = stop, stop[1]
                continue
            try:
                data = os.read(fd, READ_SIZE)
            except InterruptedError:
                continue
            if data:
                log.feed(streams[fd], data)
                trim_at = now + IDLE_TRIM
            else:
                log.flush(streams.pop(fd))
                poller.unregister(fd)
                os.close(fd)
        while True:
            try:
                child, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if child == 0:
                break
            if child == pid:
                status = st
        now = time.time()
        if status is None and kill_at is not None and now >= kill_at:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            kill_at = None
        if status is not None:
            if not streams:
                break
            if drain_until is None:
                drain_until = now + DRAIN_SECONDS
            elif now >= drain_until:
                break
    log.close()
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return 128 - code, -code
    return code, None
