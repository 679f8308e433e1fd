"""Small helpers shared by the multi-host tests."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from typing import Any, Callable

from cli.dev.cluster import REPO

_counter = itertools.count(1)


def unique_name() -> str:
    """Short (unix socket paths are limited) and unique per test run and per cluster."""
    return f"t{os.getpid() % 100000}-{next(_counter)}"


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip() for line in out.splitlines()}


def dev_cli(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """`shoal dev ARGS` as a user runs it: a process of its own."""
    r = subprocess.run([sys.executable, "-m", "cli.main", "dev", *args], capture_output=True, text=True,
                       cwd=REPO, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"shoal dev {' '.join(args)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
    return r


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except ConnectionRefusedError:
    pass  # an answer (a reset) is reachability too: the host is there, the port is closed
except OSError as exc:
    print(exc)
    sys.exit(1)
"""


def reachable(cluster, from_node: str, address: str, port: int = 2377, timeout: float = 1.0) -> bool:
    """Whether a TCP handshake from inside from_node's namespace gets any answer from address."""
    r = cluster.exec(from_node, sys.executable, "-c", _CONNECT, address, str(port), str(timeout),
                     timeout=timeout + 10)
    return r.returncode == 0
