"""Static forwarding and neighbour entries for remote endpoints: a pure diff to commands.

Each remote endpoint becomes three kernel entries in its network's namespace:
- `bridge fdb ... dev vxlan0 dst NODE self`: the VXLAN device sends frames for MAC to NODE;
- `bridge fdb ... dev vxlan0 master static`: the bridge forwards MAC to the VXLAN port
  instead of flooding it to every local port;
- `ip neigh ... dev vxlan0 nud permanent`: with the VXLAN device's `proxy` flag the kernel
  answers a container's ARP request locally from this entry.
Nothing is ever learnt and the VXLAN device has no default destination, so no broadcast,
unknown unicast or ARP ever crosses to another node.
"""
from __future__ import annotations

from dataclasses import dataclass

from overlay.model import Endpoint


@dataclass(frozen=True)
class Peer:
    ip: str        # bare address
    mac: str
    node_addr: str


def desired(endpoints: list[Endpoint], network_id: str, local_node: str) -> dict[str, Peer]:
    """IP -> Peer for the endpoints of network_id hosted elsewhere. A later duplicate of an IP
    wins (the managers' newest word); local endpoints are the bridge's business."""
    out: dict[str, Peer] = {}
    for i, e in enumerate(endpoints):
        if e.network_id != network_id:
            raise ValueError(f"endpoints[{i}].network_id: {e.network_id!r} is not network {network_id!r}")
        if e.node_addr == local_node:
            continue
        out[e.address] = Peer(e.address, e.mac, e.node_addr)
    return out


def diff(current: dict[str, Peer], want: dict[str, Peer], vxlan: str) -> tuple[list[str], list[str]]:
    """(ip batch lines, bridge batch lines) turning current into want. Removals come first so a
    MAC that moved to another node never has two destinations."""
    ip_lines: list[str] = []
    br_lines: list[str] = []
    for addr, old in sorted(current.items()):
        new = want.get(addr)
        if new == old:
            continue
        ip_lines.append(f"neigh del {addr} dev {vxlan}")
        if not any(p.mac == old.mac and p.node_addr == old.node_addr for p in want.values()):
            br_lines.append(f"fdb del {old.mac} dev {vxlan} dst {old.node_addr} self")
            if not any(p.mac == old.mac for p in want.values()):
                br_lines.append(f"fdb del {old.mac} dev {vxlan} master")
    known = {(p.mac, p.node_addr) for p in current.values()}
    for addr, new in sorted(want.items()):
        if current.get(addr) == new:
            continue
        if (new.mac, new.node_addr) not in known:
            br_lines.append(f"fdb append {new.mac} dev {vxlan} dst {new.node_addr} self permanent")
            br_lines.append(f"fdb replace {new.mac} dev {vxlan} master static")
            known.add((new.mac, new.node_addr))
        ip_lines.append(f"neigh replace {addr} lladdr {new.mac} dev {vxlan} nud permanent")
    return ip_lines, br_lines
