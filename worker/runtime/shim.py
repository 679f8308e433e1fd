"""Per-container supervisor, one per running container:

    python -I -S shim.py BUNDLE REPORT_FD NEW_PID_NS(0|1) OOM_FILE(or -)

It detaches from the daemon (fork, setsid: the daemon can exit or restart), forks the
container init into a new pid namespace, writes state.json (pids and their start times),
tells the daemon the pid on REPORT_FD, waits for the init, and writes exit.json (exit code,
signal, OOM, error) atomically as its very last act. Kept lean (it lives as long as the
container): what it needs comes on the command line, it reads and writes JSON without the json
package, and the container setup code is imported only in the forked child.
"""
import _json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import linux  # noqa: E402
import procfs  # noqa: E402


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
    """What CPython's C JSON scanner reads from json.JSONDecoder; using the scanner directly
    spares the child importing json (and re, enum, ...) before it can exec."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float
    memo: dict = {}


def load_json(path: str):
    with open(path) as f:
        text = f.read().strip()
    return _json.make_scanner(_JsonContext())(text, 0)[0]


def atomic_write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(dumps(obj))
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def oom_kills(path: str) -> int:
    """OOM kills seen by the container's memory cgroup (v1 memory.oom_control, v2 memory.events)."""
    if not path or path == "-":
        return 0
    try:
        with open(path) as f:
            values = dict(line.split() for line in f if line.strip())
    except OSError:
        return 0
    if "oom_kill" in values:
        return int(values["oom_kill"])
    return int(values.get("under_oom", 0))  # kernels before 4.13 have no counter


def report(fd: int, obj) -> None:
    try:
        os.write(fd, (dumps(obj) + "\n").encode())
        os.close(fd)
    except OSError:
        pass  # the daemon went away; the state files still tell everything


def child(bundle: str, errpipe_w: int) -> None:
    try:
        spec = load_json(os.path.join(bundle, "config.json"))
        meta = load_json(os.path.join(bundle, "shoal.json"))
        import nsinit
        nsinit.run(spec, bundle, meta, errpipe_w)
    except BaseException as exc:  # noqa: BLE001
        os.write(errpipe_w, f"128:container init: {exc}".encode(errors="replace"))
    os._exit(128)


def supervise(bundle: str, report_fd: int, new_pid_ns: bool, oom_file: str) -> None:
    exit_path = os.path.join(bundle, "exit.json")
    if new_pid_ns:
        linux.unshare(linux.CLONE_NEWPID)  # applies to our next child, which becomes its pid 1
    errpipe_r, errpipe_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(errpipe_r)
        child(bundle, errpipe_w)
    os.close(errpipe_w)
    pid_start = procfs.start_time(pid)
    chunks = []
    while chunk := os.read(errpipe_r, 4096):
        chunks.append(chunk)
    os.close(errpipe_r)
    started_at = time.time()
    atomic_write_json(os.path.join(bundle, "state.json"), {
        "pid": pid, "pid_start": pid_start, "started_at": started_at,
        "shim_pid": os.getpid(), "shim_start": procfs.start_time(os.getpid()),
    })
    failure = b"".join(chunks).decode(errors="replace")
    report(report_fd, {"pid": pid, "error": failure.partition(":")[2] if failure else ""})

    _, status = os.waitpid(pid, 0)
    finished_at = time.time()
    code = os.waitstatus_to_exitcode(status)
    sig = -code if code < 0 else None
    error = ""
    if failure:
        head, _, error = failure.partition(":")
        code = int(head) if head.isdigit() else 128
    atomic_write_json(exit_path, {
        "exit_code": 128 + sig if sig else code, "signal": sig,
        "oom_killed": oom_kills(oom_file) > 0,
        "started_at": started_at, "finished_at": finished_at, "error": error,
    })


def main() -> None:
    bundle, report_fd, new_pid_ns, oom_file = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
    os.set_inheritable(report_fd, False)
    if os.fork():
        os._exit(0)  # the daemon reaps the launcher at once; we are reparented to init
    os.setsid()
    os.chdir("/")
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    try:
        supervise(bundle, report_fd, new_pid_ns, oom_file)
    except BaseException as exc:  # noqa: BLE001 - the failure must be recorded, not lost
        message = f"shim: {type(exc).__name__}: {exc}"
        print(message, file=sys.stderr, flush=True)
        try:
            if not os.path.exists(os.path.join(bundle, "exit.json")):
                atomic_write_json(os.path.join(bundle, "exit.json"), {
                    "exit_code": 128, "signal": None, "oom_killed": False,
                    "started_at": None, "finished_at": time.time(), "error": message,
                })
        finally:
            report(report_fd, {"pid": None, "error": message})
            os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main()
