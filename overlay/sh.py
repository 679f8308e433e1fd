"""Running iproute2 / nft inside a network namespace, and entering one from Python.

A namespace is named by the path of its nsfs file (`/run/netns/NAME`, `/proc/PID/ns/net`), or
None for the namespace this process runs in. Tools run through `nsenter --net=PATH`, which
costs one exec and leaves the caller's namespace alone.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from pathlib import Path
from typing import Callable, TypeVar

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]

T = TypeVar("T")


class OverlayError(Exception):
    """A kernel step of the data plane failed; the message names the step and the reason."""


def named(name: str) -> str:
    return str(NETNS_DIR / name)


def of_pid(pid: int) -> str:
    return f"/proc/{pid}/ns/net"


def run(argv: list[str], netns: str | None = None, *, input: str | None = None, check: bool = True,
        what: str = "") -> subprocess.CompletedProcess:
    full = (["nsenter", f"--net={netns}"] if netns else []) + argv
    r = subprocess.run(full, input=input, capture_output=True, text=True)
    if check and r.returncode != 0:
        detail = (r.stderr or r.stdout).strip().replace("\n", " | ") or f"exit {r.returncode}"
        raise OverlayError(f"{what or argv[0]}: {' '.join(argv)}: {detail}")
    return r


def batch(tool: str, lines: list[str], netns: str | None = None, what: str = "") -> None:
    """Many `ip`/`bridge` commands in one exec (`-batch -`); nothing to do for no lines."""
    if lines:
        run([tool, "-batch", "-"], netns, input="\n".join(lines) + "\n", what=what or f"{tool} batch")


def nft(ruleset: str, netns: str | None = None, what: str = "nft") -> None:
    """Apply a ruleset text in one transaction: it all applies or nothing does."""
    run(["nft", "-f", "-"], netns, input=ruleset, what=what)


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Call fn in a short-lived thread that has entered netns, so that sockets or devices it
    opens belong there; the caller's own threads never change namespace."""
    if netns is None:
        return fn()
    box: dict[str, object] = {}

    def body() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=body, name="overlay-netns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def enter(netns: str) -> None:
    """For preexec_fn: move a freshly forked child (single-threaded) into netns."""
    fd = os.open(netns, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns}")
    finally:
        os.close(fd)


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def netns_add(name: str) -> None:
    if not netns_exists(name):
        run(["ip", "netns", "add", name], what=f"netns {name}")
    run(["ip", "-n", name, "link", "set", "lo", "up"], what=f"netns {name}: loopback")


def netns_del(name: str) -> None:
    if netns_exists(name):
        r = run(["ip", "netns", "del", name], check=False)
        if r.returncode != 0 and netns_exists(name):
            raise OverlayError(f"netns {name}: ip netns del: {r.stderr.strip()}")


def sysctl(netns: str | None, key: str, value: str) -> None:
    """Write /proc/sys/KEY as seen from netns (net.* sysctls are per namespace)."""
    path = "/proc/sys/" + key.replace(".", "/")

    def write() -> None:
        with open(path, "w") as f:
            f.write(value)

    in_netns(netns, write)
