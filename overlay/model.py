"""What a node is told about its networks: plain values, validated on construction.

The managers allocate every number and address here; the node only programs them. A bad
value raises ValueError naming the field, before anything touches the kernel.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50           # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
ESP_OVERHEAD = 40             # SPI 4 + seq 4 + IV 8 + pad <= 3 + pad length 1 + next header 1 + ICV 16, rounded up
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_PROTOS = ("tcp", "udp")


def _fail(where: str, why: str) -> None:
    raise ValueError(f"{where}: {why}")


def _ip(where: str, value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        _fail(where, f"{value!r} is not an IPv4 address")
    raise AssertionError  # unreachable; keeps type checkers quiet


def _iface(where: str, value: str) -> ipaddress.IPv4Interface:
    try:
        iface = ipaddress.IPv4Interface(value)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        _fail(where, f"{value!r} is not an IPv4 address with a prefix length (a.b.c.d/n)")
        raise AssertionError
    if "/" not in str(value):
        _fail(where, f"{value!r} lacks its prefix length (a.b.c.d/n)")
    return iface


def normalize_mac(where: str, value: str) -> str:
    """value in lower case; ValueError naming where if it is not a unicast MAC address."""
    value = (value or "").lower()
    if not _MAC_RE.match(value):
        _fail(where, f"{value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    if int(value[:2], 16) & 1:
        _fail(where, f"{value!r} is a multicast MAC address")
    return value


def mac_for_ip(ip: str) -> str:
    """Docker's convention: 02:42 followed by the IPv4 address, locally administered and unique
    wherever the address is."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip.split("/")[0]).packed)


@dataclass(frozen=True)
class NetworkSpec:
    id: str
    name: str
    vni: int
    subnet: str
    gateway: str
    mtu: int | None = None
    internal: bool = False
    encrypted: bool = False
    ingress: bool = False

    def __post_init__(self) -> None:
        if not self.id or not re.match(r"^[A-Za-z0-9_.-]+$", self.id):
            _fail("network.id", f"{self.id!r} must be non-empty letters, digits, '_', '.' or '-'")
        if not isinstance(self.vni, int) or not 1 <= self.vni <= 0xFFFFFF:
            _fail("network.vni", f"{self.vni!r} is not a VXLAN id (1..16777215)")
        try:
            net = ipaddress.IPv4Network(self.subnet)
        except (ValueError, TypeError):
            _fail("network.subnet", f"{self.subnet!r} is not an IPv4 network (a.b.c.0/n, host bits zero)")
            raise AssertionError
        if net.prefixlen > 30:
            _fail("network.subnet", f"{self.subnet} is too small (at most /30)")
        gw = _ip("network.gateway", self.gateway)
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            _fail("network.gateway", f"{self.gateway} is not a host address of {self.subnet}")
        if self.mtu is not None and not 576 <= self.mtu <= 9000:
            _fail("network.mtu", f"{self.mtu} is out of range (576..9000)")

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway_cidr(self) -> str:
        return f"{self.gateway}/{self.network.prefixlen}"


@dataclass(frozen=True)
class Endpoint:
    """One task's interface on one network, as every node must know it."""
    task_id: str
    network_id: str
    ip: str           # with prefix length, e.g. 10.0.1.5/24
    mac: str
    node_addr: str    # underlay address of the node that hosts the task

    def __post_init__(self) -> None:
        _iface("endpoint.ip", self.ip)
        object.__setattr__(self, "mac", normalize_mac("endpoint.mac", self.mac))
        _ip("endpoint.node_addr", self.node_addr)

    @property
    def address(self) -> str:
        return self.ip.split("/")[0]


def _ports(where: str, ports) -> tuple[tuple[str, int], ...]:
    out = []
    for i, item in enumerate(ports):
        try:
            proto, port = item
        except (TypeError, ValueError):
            _fail(f"{where}[{i}]", f"{item!r} is not a (protocol, port) pair")
        if proto not in _PROTOS:
            _fail(f"{where}[{i}].protocol", f"{proto!r} is not tcp or udp")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            _fail(f"{where}[{i}].port", f"{port!r} is not a port number (1..65535)")
        out.append((proto, port))
    return tuple(out)


@dataclass(frozen=True)
class ServiceVIP:
    """Connections to vip (on ports, or on any port when ports is empty) spread over backends."""
    service_id: str
    network_id: str
    vip: str
    ports: tuple[tuple[str, int], ...] = ()
    backends: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _ip("vip.vip", self.vip.split("/")[0])
        object.__setattr__(self, "vip", self.vip.split("/")[0])
        object.__setattr__(self, "ports", _ports("vip.ports", self.ports))
        backends = tuple(b.split("/")[0] for b in self.backends)
        for i, b in enumerate(backends):
            _ip(f"vip.backends[{i}]", b)
        object.__setattr__(self, "backends", tuple(sorted(set(backends), key=ipaddress.IPv4Address)))


@dataclass(frozen=True)
class PublishedPort:
    """`--publish published=P,target=T,mode=M`. mode ingress: P on every node, spread over
    backends (task addresses on the ingress network, on any node). mode host: P only on this
    node, to the local task's address on network_id."""
    protocol: str
    published_port: int
    target_port: int
    network_id: str
    backends: tuple[str, ...] = ()
    mode: str = "ingress"

    def __post_init__(self) -> None:
        if self.protocol not in _PROTOS:
            _fail("port.protocol", f"{self.protocol!r} is not tcp or udp")
        for name in ("published_port", "target_port"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 1 <= v <= 65535:
                _fail(f"port.{name}", f"{v!r} is not a port number (1..65535)")
        if self.mode not in ("ingress", "host"):
            _fail("port.mode", f"{self.mode!r} is not ingress or host")
        backends = tuple(b.split("/")[0] for b in self.backends)
        for i, b in enumerate(backends):
            _ip(f"port.backends[{i}]", b)
        object.__setattr__(self, "backends", tuple(sorted(set(backends), key=ipaddress.IPv4Address)))


@dataclass(frozen=True)
class EncryptionKey:
    """A cluster data-plane key. The first key given to set_encryption_keys encrypts; all of
    them decrypt, so a rotation that adds the new key everywhere before making it primary loses
    no packet."""
    key_id: int
    key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, int) or not 0 <= self.key_id <= 255:
            _fail("key.key_id", f"{self.key_id!r} is not in 0..255")
        if not isinstance(self.key, bytes) or len(self.key) < 16:
            _fail("key.key", "must be at least 16 random bytes")


@dataclass(frozen=True)
class ServiceDNS:
    """What the DNS server needs to know of one service on one network."""
    name: str                          # the service name, e.g. web or mystack_web
    vip: str | None = None             # None, or endpoint_mode dnsrr: the name answers task IPs
    task_ips: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()      # network aliases
    stack: str | None = None           # the stack the service belongs to, if any
    endpoint_mode: str = "vip"
    task_names: tuple[tuple[str, str], ...] = field(default=())  # (task name, ip) pairs

    def __post_init__(self) -> None:
        if not self.name:
            _fail("service.name", "must not be empty")
        if self.endpoint_mode not in ("vip", "dnsrr"):
            _fail("service.endpoint_mode", f"{self.endpoint_mode!r} is not vip or dnsrr")
        if self.vip is not None:
            object.__setattr__(self, "vip", str(_ip("service.vip", self.vip.split("/")[0])))
        ips = tuple(t.split("/")[0] for t in self.task_ips)
        for i, t in enumerate(ips):
            _ip(f"service.task_ips[{i}]", t)
        object.__setattr__(self, "task_ips", ips)
