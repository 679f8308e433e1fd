"""Names of everything a node creates, derived from its prefix: pure functions.

Kernel interface names have at most 15 characters, so names in shared namespaces (the
underlay, a container's) carry a short hash tag of the prefix instead of the prefix itself;
one tag per NodeNetworks lets several of them share a machine and lets `purge` find leftovers.
Inside a network's own namespace names are fixed (br0, vxlan0, gw0).
"""
from __future__ import annotations

import hashlib
import re

BRIDGE = "br0"
VXLAN = "vxlan0"
GW_INNER = "gw0"     # the network namespace's end of its link to the underlay


def _h(*parts: object, n: int = 8) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:n]


def tag(prefix: str) -> str:
    """7 characters that mark this node's objects in shared namespaces."""
    return "s" + _h("tag", prefix, n=6)


def short_id(network_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", network_id)[:12] or _h(network_id, n=12)


def netns(prefix: str, network_id: str) -> str:
    return f"{prefix}-ov-{short_id(network_id)}"


def netns_prefix(prefix: str) -> str:
    return f"{prefix}-ov-"


def vxlan_tmp(prefix: str, network_id: str) -> str:
    return f"{tag(prefix)}x{_h(network_id, n=6)}"


def gw_outer(prefix: str, network_id: str) -> str:
    """The underlay's end of a network namespace's link (egress and published ports)."""
    return f"{tag(prefix)}g{_h(network_id, n=6)}"


def gw_outer_glob(prefix: str) -> str:
    return f"{tag(prefix)}g*"


def tun(prefix: str) -> str:
    return f"{tag(prefix)}esp"


def veth_host(network_id: str, container: str, ifname: str) -> str:
    """The network namespace's end of a container's veth."""
    return "ve" + _h(network_id, container, ifname, n=10)


def veth_tmp(network_id: str, container: str, ifname: str) -> str:
    """The container's end before it is renamed to ifname (which may be taken until then)."""
    return "vt" + _h(network_id, container, ifname, n=10)


def nft_table(prefix: str) -> str:
    """The node's table in the underlay (and in network namespaces)."""
    return f"shoal_{tag(prefix)}"


def nft_container_table(prefix: str, network_id: str) -> str:
    return f"shoal_{tag(prefix)}_{_h(network_id, n=8)}"


def fwmark(prefix: str) -> int:
    """Marks VXLAN packets of encrypted networks for the route to the ESP device."""
    return 0x5E000000 | int(_h("mark", prefix, n=4), 16)


def route_table(prefix: str) -> int:
    return 0x5E00 + int(_h("table", prefix, n=3), 16)
