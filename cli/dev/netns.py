"""Network namespaces, the bridge, veth pairs, addresses, link state and netem, through `ip`
and `tc` (iproute2).

Every link is created directly inside a named namespace (`ip -n NS link add ... netns OTHER`),
so nothing ever appears in the host's `ip link`, not even for a moment.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


class NetError(Exception):
    """A network step failed; the message is one line naming what and why."""


def require_tools(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            raise NetError(f"{tool}: command not found (install iproute2: apt-get install iproute2)")


def _run(argv: list[str], what: str) -> str:
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise NetError(f"{what}: {' '.join(argv)}: {r.stderr.strip() or f'exit {r.returncode}'}")
    return r.stdout


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def list_all() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def create(name: str) -> None:
    """A new named namespace with its loopback up (the daemon talks to itself over it)."""
    if not exists(name):
        _run(["ip", "netns", "add", name], f"netns {name}")
    _run(["ip", "-n", name, "link", "set", "lo", "up"], f"netns {name}: loopback")


def delete(name: str) -> bool:
    """Remove a named namespace (its links go with it); False if it was not there."""
    if not exists(name):
        return False
    r = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True)
    if r.returncode != 0 and exists(name):
        raise NetError(f"netns {name}: ip netns del: {r.stderr.strip()}")
    return True


def create_bridge(ns: str, bridge: str) -> None:
    if not _link_exists(ns, bridge):
        _run(["ip", "-n", ns, "link", "add", "name", bridge, "type", "bridge"], f"bridge {bridge} in {ns}")
    _run(["ip", "-n", ns, "link", "set", bridge, "up"], f"bridge {bridge} in {ns}")


def attach(bridge_ns: str, bridge: str, port: str, node_ns: str, ifname: str, address: str, prefix_len: int) -> None:
    """Plug a node into the bridge: a veth with one end (`port`) on the bridge and the other
    (`ifname`, with the node's address) inside the node's namespace. Idempotent."""
    if not _link_exists(bridge_ns, port):
        if _link_exists(node_ns, ifname):  # half of an earlier attempt: start clean
            _run(["ip", "-n", node_ns, "link", "del", ifname], f"{node_ns}: stale {ifname}")
        _run(["ip", "-n", bridge_ns, "link", "add", "name", port, "type", "veth", "peer", "name", ifname,
              "netns", node_ns], f"veth {port}/{ifname}")
    _run(["ip", "-n", bridge_ns, "link", "set", port, "master", bridge, "up"], f"veth {port} on {bridge}")
    _run(["ip", "-n", node_ns, "addr", "replace", f"{address}/{prefix_len}", "dev", ifname], f"{node_ns}: address {address}")
    _run(["ip", "-n", node_ns, "link", "set", ifname, "up"], f"{node_ns}: {ifname} up")


def set_link(ns: str, ifname: str, up: bool) -> None:
    _run(["ip", "-n", ns, "link", "set", ifname, "up" if up else "down"], f"{ns}: {ifname} {'up' if up else 'down'}")


def link_is_up(ns: str, ifname: str) -> bool:
    out = _run(["ip", "-n", ns, "-o", "link", "show", ifname], f"{ns}: {ifname}")
    flags = re.search(r"<([^>]*)>", out)
    return bool(flags) and "UP" in flags.group(1).split(",")


def _link_exists(ns: str, ifname: str) -> bool:
    return subprocess.run(["ip", "-n", ns, "link", "show", ifname], capture_output=True).returncode == 0


def links(ns: str) -> list[str]:
    out = _run(["ip", "-n", ns, "-o", "link", "show"], f"{ns}: links")
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def netem_args(delay: str = "", loss: str = "", jitter: str = "") -> list[str]:
    """The `tc ... netem` arguments for the options given; a bad value names its option."""
    args: list[str] = []
    if delay:
        if not re.fullmatch(r"\d+(\.\d+)?(us|ms|s)", delay):
            raise ValueError(f"--delay: {delay!r} is not a duration (e.g. 50ms, 1s)")
        args += ["delay", delay]
        if jitter:
            if not re.fullmatch(r"\d+(\.\d+)?(us|ms|s)", jitter):
                raise ValueError(f"--jitter: {jitter!r} is not a duration (e.g. 10ms)")
            args.append(jitter)
    elif jitter:
        raise ValueError("--jitter: needs --delay")
    if loss:
        m = re.fullmatch(r"(\d+(\.\d+)?)%?", loss)
        if not m or float(m.group(1)) > 100:
            raise ValueError(f"--loss: {loss!r} is not a percentage between 0 and 100 (e.g. 1%)")
        args += ["loss", f"{m.group(1)}%"]
    if not args:
        raise ValueError("--delay/--loss: give at least one (or --clear)")
    return args


def set_netem(ns: str, ifname: str, args: list[str]) -> None:
    require_tools("tc")
    r = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", ifname, "root", "netem", *args],
                       capture_output=True, text=True)
    if r.returncode != 0:
        err = r.stderr.strip()
        if "qdisc kind is unknown" in err or "No such file" in err:
            raise NetError("netem: this kernel has no netem queueing discipline (module sch_netem, "
                           "CONFIG_NET_SCH_NETEM); load it with `modprobe sch_netem` or use a kernel that has it "
                           "(`shoal dev cut` works without it)")
        raise NetError(f"netem: tc qdisc replace dev {ifname} in {ns}: {err}")


def clear_netem(ns: str, ifname: str) -> None:
    require_tools("tc")
    r = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", ifname, "root"],
                       capture_output=True, text=True)
    # "no qdisc to delete" is what a clear of a clean interface looks like: fine.
    if r.returncode != 0 and "Cannot delete qdisc with handle of zero" not in r.stderr \
            and "No such file" not in r.stderr:
        raise NetError(f"netem: tc qdisc del dev {ifname} in {ns}: {r.stderr.strip()}")


def enter(name: str) -> None:
    """Move the calling thread into a named network namespace (only the network: mounts, cgroups
    and /sys stay the host's, unlike `ip netns exec`, so the daemon's mounts and cgroups are
    where `down` can find them). Used in a child before exec."""
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def namespace_id(name: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of a named namespace: equal for every process inside it."""
    try:
        st = os.stat(NETNS_DIR / name)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def pids_in(name: str) -> set[int]:
    """Every process whose network namespace is this one (what `ip netns pids` reports)."""
    ident = namespace_id(name)
    if ident is None:
        return set()
    out: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == ident:
            out.add(int(entry.name))
    return out
