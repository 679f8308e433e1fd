"""The daemon's side of the node supervisor (supervisor.py): start it when needed, send it
requests over its unix socket, read the answers (with file descriptors when there are some)."""
from __future__ import annotations

import array
import errno
import fcntl
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from .supervisor import HERE, RUN_BASE, SOCKET, code_version, run_dir

SUPERVISOR = Path(HERE) / "supervisor.py"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SupervisorError(RuntimeError):
    pass


class SupervisorClient:
    def __init__(self, root: Path, python: str):
        self.root = Path(root)
        self.python = python
        self.version = code_version()
        self.run_dir = Path(run_dir(str(self.root)))
        self._lock = threading.Lock()
        sweep(Path(RUN_BASE), keep=self.run_dir)

    def _try_connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.connect(str(self.run_dir / SOCKET))
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                return None
            raise

    def _spawn(self) -> None:
        with open(self.run_dir / "supervisor.log", "ab") as log:
            proc = subprocess.run([self.python, "-I", "-S", str(SUPERVISOR), str(self.root), self.version,
                                   str(self.run_dir)],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True, cwd="/", env={"PATH": DEFAULT_PATH}, timeout=30)
        if proc.returncode != 0:
            raise SupervisorError(f"supervisor: failed to start (exit {proc.returncode}); "
                                  f"see {self.run_dir / 'supervisor.log'}")

    def connect(self) -> socket.socket:
        sock = self._try_connect()
        if sock is not None:
            return sock
        for attempt in range(3):
            try:
                return self._start_and_connect()
            except FileNotFoundError:
                if attempt == 2:  # another runtime's sweep removed the empty directory meanwhile
                    raise
        raise AssertionError("unreachable")

    def _start_and_connect(self) -> socket.socket:
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._lock, open(self.run_dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            sock = self._try_connect()
            if sock is None:
                self._spawn()
                sock = self._try_connect()
            if sock is None:
                raise SupervisorError("supervisor: started, but its socket does not answer")
            return sock

    def request(self, msg: dict[str, Any], fds: tuple[int, ...] = (),
                timeout: float = 30.0) -> tuple[socket.socket, dict[str, Any], list[int]]:
        """Send one request; the connection stays open for later messages (exit codes)."""
        body = json.dumps({**msg, "v": self.version}).encode()
        for _ in range(3):
            sock = self.connect()
            try:
                sock.settimeout(timeout)
                if fds:
                    sock.sendmsg([body], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                else:
                    sock.sendall(body)
                reply, got = receive(sock)
            except BaseException:
                sock.close()
                raise
            if reply is None or reply.get("stale"):
                sock.close()
                time.sleep(0.02)  # a stale one is exiting; the next connect starts the current code
                continue
            return sock, reply, got
        raise SupervisorError("supervisor: could not reach a supervisor running the current code")

    def quit(self) -> None:
        sock = self._try_connect()
        if sock is None:
            return
        try:
            sock.settimeout(5)
            sock.sendall(json.dumps({"op": "quit", "v": self.version}).encode())
            receive(sock)
        except OSError:
            pass
        finally:
            sock.close()
        self._tidy()

    def _tidy(self) -> None:
        """Remove the run directory if the supervisor left nothing worth reading in it."""
        log = self.run_dir / "supervisor.log"
        try:
            if log.exists() and log.stat().st_size:
                return
            for name in ("supervisor.log", ".lock"):
                (self.run_dir / name).unlink(missing_ok=True)
            for d in (self.run_dir / "runc", self.run_dir / "crun", self.run_dir):
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()
        except OSError:
            pass


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and the file descriptors passed with it; (None, []) at end of stream."""
    fds = array.array("i")
    data, anc, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), list(fds)


def sweep(base: Path, keep: Path) -> None:
    """Remove what killed supervisors left under /run: directories whose socket nobody listens
    on, nobody is starting a supervisor in (the lock is free) and whose log is empty."""
    try:
        dirs = [d for d in base.iterdir() if d.is_dir() and d != keep]
    except OSError:
        return
    for d in dirs:
        try:
            log = d / "supervisor.log"
            if log.exists() and log.stat().st_size:
                continue
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            try:
                probe.connect(str(d / SOCKET))
                continue  # alive
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED):
                    continue
            finally:
                probe.close()
            with open(d / ".lock", "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                if any(p.name not in (SOCKET, "supervisor.log", ".lock") for p in d.iterdir()):
                    continue  # runc/crun state: containers may still be there
                for name in (SOCKET, "supervisor.log", ".lock"):
                    (d / name).unlink(missing_ok=True)
            d.rmdir()
        except OSError:
            continue
