"""nftables rulesets of the data plane, as text: pure functions of the desired state.

Every ruleset replaces its whole table in one `nft -f` transaction (`add table; delete table;
table {...}`), so an update is atomic: a backend that leaves is out of the very next
connection's choice, and a half-applied state is never visible.

Load balancing is `numgen random mod N` into a map of backends, evaluated in nat chains, so
only a connection's first packet draws and conntrack keeps the rest of it on the same backend.
"""
from __future__ import annotations

from dataclasses import dataclass

from overlay.model import VXLAN_PORT, PublishedPort, ServiceVIP


def replace_table(table: str, body: str) -> str:
    return f"add table ip {table}\ndelete table ip {table}\ntable ip {table} {{\n{body}}}\n"


def delete_table(table: str) -> str:
    return f"add table ip {table}\ndelete table ip {table}\n"


def _spread(backends: tuple[str, ...], port: int | None = None) -> str:
    """dnat target choosing one backend per new connection."""
    if port is None:
        if len(backends) == 1:
            return f"dnat to {backends[0]}"
        entries = ", ".join(f"{i} : {b}" for i, b in enumerate(backends))
        return f"dnat to numgen random mod {len(backends)} map {{ {entries} }}"
    if len(backends) == 1:
        return f"dnat to {backends[0]}:{port}"
    entries = ", ".join(f"{i} : {b} . {port}" for i, b in enumerate(backends))
    return f"dnat ip to numgen random mod {len(backends)} map {{ {entries} }}"


def _match_ports(ports: tuple[tuple[str, int], ...]) -> list[str]:
    by_proto: dict[str, list[int]] = {}
    for proto, port in ports:
        by_proto.setdefault(proto, []).append(port)
    return [f"{proto} dport {{ {', '.join(map(str, sorted(ps)))} }}" for proto, ps in sorted(by_proto.items())]


def container_vips(table: str, vips: list[ServiceVIP]) -> str:
    """Inside a container's namespace: its connections to a VIP go straight to a backend."""
    nat, reject = [], []
    for v in sorted(vips, key=lambda v: v.vip):
        matches = _match_ports(v.ports) or [""]
        for m in matches:
            sel = f"ip daddr {v.vip} {m}".rstrip()
            if v.backends:
                nat.append(f"{sel} {_spread(v.backends)}")
            else:
                # Nobody to serve it: refuse at once rather than let the client time out.
                reject.append(f"{sel} meta l4proto tcp reject with tcp reset")
                reject.append(f"{sel} reject")
    body = ("  chain vip { type nat hook output priority -100; policy accept;\n"
            + "".join(f"    {r}\n" for r in nat) + "  }\n"
            "  chain novip { type filter hook output priority filter; policy accept;\n"
            + "".join(f"    {r}\n" for r in reject) + "  }\n")
    return replace_table(table, body)


@dataclass(frozen=True)
class NetnsNat:
    """The desired state of one network namespace's own table."""
    egress: bool                       # containers reach beyond the network through gw0
    snat_to: str                       # source for published-port connections entering br0
    ports: tuple[PublishedPort, ...]   # published ports that land in this namespace


def network_namespace(table: str, bridge: str, gw: str, state: NetnsNat) -> str:
    pre, post, fwd = [], [], ["ct state established,related accept", "ct state invalid drop"]
    reject = []
    for p in state.ports:
        sel = f"iifname \"{gw}\" {p.protocol} dport {p.published_port}"
        if p.backends:
            pre.append(f"{sel} {_spread(p.backends, p.target_port)}")
        else:
            reject.append(f"{sel} meta l4proto tcp reject with tcp reset")
            reject.append(f"{sel} reject")
    if state.ports:
        # Replies must come back through this node, so the backend sees this node's address;
        # fine for ingress (Swarm does the same) and for mode=host it keeps the container's
        # default route free to be on any network.
        post.append(f"oifname \"{bridge}\" ct status dnat snat to {state.snat_to}")
        fwd.append(f"iifname \"{gw}\" oifname \"{bridge}\" ct status dnat accept")
    if state.egress:
        post.append(f"oifname \"{gw}\" masquerade")
        fwd.append(f"iifname \"{bridge}\" oifname \"{gw}\" accept")
    body = ("  chain pre { type nat hook prerouting priority dstnat; policy accept;\n"
            + "".join(f"    {r}\n" for r in pre) + "  }\n"
            "  chain noport { type filter hook prerouting priority mangle; policy accept;\n"
            + "".join(f"    {r}\n" for r in reject) + "  }\n"
            "  chain post { type nat hook postrouting priority srcnat; policy accept;\n"
            + "".join(f"    {r}\n" for r in post) + "  }\n"
            "  chain forwarding { type filter hook forward priority filter; policy drop;\n"
            + "".join(f"    {r}\n" for r in fwd) + "  }\n")
    return replace_table(table, body)


@dataclass(frozen=True)
class UnderlayState:
    link_pool: str                          # addresses of the links to network namespaces
    link_glob: str                          # their underlay ends, e.g. "s1a2b3cg*"
    published: tuple[tuple[str, int, str], ...] = ()   # (protocol, port, namespace's link address)
    encrypted_vnis: tuple[int, ...] = ()
    esp_device: str = ""
    esp_mark: int = 0


def underlay(table: str, s: UnderlayState) -> str:
    pre = [f"fib daddr type local {proto} dport {port} dnat to {addr}" for proto, port, addr in s.published]
    fwd = [f"iifname \"{s.link_glob}\" oifname \"{s.link_glob}\" drop"]  # networks never meet here
    post = [f"ip saddr {s.link_pool} oifname != \"{s.link_glob}\" masquerade"]
    mark, guard = [], []
    if s.encrypted_vnis:
        vnis = ", ".join(str(v) for v in sorted(s.encrypted_vnis))
        # VNI = the 24 bits after the UDP header (64 bits) and VXLAN flags/reserved (32 bits).
        vx = f"udp dport {VXLAN_PORT} @th,96,24 {{ {vnis} }}"
        mark.append(f"{vx} meta mark set {s.esp_mark:#x}")
        # Plaintext for an encrypted network never enters, whoever sends it.
        guard.append(f"iifname != \"{s.esp_device}\" {vx} drop")
    # Connection tracking of VXLAN datagrams buys nothing (they are never NATed) and costs a
    # table lookup per packet at both ends.
    notrack = f"udp dport {VXLAN_PORT} notrack"
    body = ("  chain rawpre { type filter hook prerouting priority raw; policy accept;\n"
            f"    {notrack}\n  }}\n"
            "  chain rawout { type filter hook output priority raw; policy accept;\n"
            f"    {notrack}\n  }}\n"
            "  chain pre { type nat hook prerouting priority dstnat; policy accept;\n"
            + "".join(f"    {r}\n" for r in pre) + "  }\n"
            "  chain out { type nat hook output priority -100; policy accept;\n"
            + "".join(f"    {r}\n" for r in pre) + "  }\n"
            "  chain post { type nat hook postrouting priority srcnat; policy accept;\n"
            + "".join(f"    {r}\n" for r in post) + "  }\n"
            "  chain forwarding { type filter hook forward priority filter; policy accept;\n"
            + "".join(f"    {r}\n" for r in fwd) + "  }\n"
            "  chain espmark { type route hook output priority mangle; policy accept;\n"
            + "".join(f"    {r}\n" for r in mark) + "  }\n"
            "  chain espguard { type filter hook input priority mangle; policy accept;\n"
            + "".join(f"    {r}\n" for r in guard) + "  }\n")
    return replace_table(table, body)
