"""The allocator: VXLAN ids and subnets for networks, an address (and so a MAC) for every task
on each of its networks, a virtual IP per service and network, published ports, each node's
address on the ingress network, and the keys of encrypted networks (made and rotated here). It
also builds what each node must know of all that.

Everything allocated lives in the store (Network.DriverState/IPAMOptions, Service.Endpoint,
Task.NetworksAttachments, Node.Attachments, NetworkKeys), so a new leader carries on where the
old one stopped. What is taken is derived from the store on every pass, never kept aside.

The functions here are pure but two async edges: `allocate`, the leader's pass, proposes what
`allocation_actions` returns, and `key_rotation_loop` takes the steps of key rotation as their
time comes. A task moves from new to pending (and so to the scheduler) only once it has
everything it needs.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import ipaddress
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Iterator

from api.ids import parse_timestamp, timestamp
from api.objects import (
    IPAM, Driver, Endpoint, EndpointSpec, EndpointVirtualIP, IPAMConfig, Network, NetworkAttachment, NetworkKey,
    NetworkKeys, NetworkSpec, Node, PortConfig, Service, Task, TaskStatus, is_terminal, state_rank,
)
from manager.store import Action, Store, StoreError
from overlay.model import mac_for_ip

log = logging.getLogger("shoal.allocator")

DEFAULT_POOL = ipaddress.IPv4Network("10.0.0.0/8")
DEFAULT_SUBNET_PREFIX = 24
INGRESS_NAME = "ingress"
INGRESS_SUBNET = "10.0.0.0/24"   # Docker's: user networks then come from 10.0.1.0/24 on
INGRESS_GATEWAY = "10.0.0.1"
INGRESS_VNI = 4096
FIRST_VNI, LAST_VNI = 4097, 0xFFFFFF
VNI_SPREAD = 1 << 20
FIRST_PORT, LAST_PORT = 30000, 32767
VXLAN_ID_OPTION = "com.docker.network.driver.overlay.vxlanid_list"
MTU_OPTION = "com.docker.network.driver.mtu"
ENCRYPTED_OPTION = "encrypted"
INTERNAL_LABEL = "com.docker.swarm.internal"
STACK_LABEL = "com.docker.stack.namespace"
KEYS_ID = "overlay"              # the one NetworkKeys object
KEY_ROTATION_S = 12 * 3600.0     # Docker's period
KEY_STEP_S = 30.0                # between the steps of a rotation: every node hears of one in time
KEY_BYTES = 16
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_PROTOCOLS = ("tcp", "udp")


class AllocationError(ValueError):
    """Bad input or an exhausted pool; the message names the field and the reason."""


# --------------------------------------------------------------------------- reading allocations

def network_vni(net: Network) -> int | None:
    opts = net.driver_state.options if net.driver_state else {}
    value = opts.get(VXLAN_ID_OPTION, "")
    return int(value) if value.isdigit() else None


def network_subnet(net: Network) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Address] | None:
    """(subnet, gateway) as allocated, or None before allocation."""
    if net.ipam_options is None or not net.ipam_options.config:
        return None
    cfg = net.ipam_options.config[0]
    return ipaddress.IPv4Network(cfg.subnet), ipaddress.IPv4Address(cfg.gateway)


def is_allocated(net: Network) -> bool:
    return network_vni(net) is not None and network_subnet(net) is not None


def is_encrypted(net: Network) -> bool:
    return ENCRYPTED_OPTION in net.spec.options and net.spec.options[ENCRYPTED_OPTION].lower() not in ("false", "0")


def network_mtu(net: Network) -> int | None:
    value = net.spec.options.get(MTU_OPTION, "")
    return int(value) if value.isdigit() else None


def resolve_network(ref: str, networks: Iterable[Network]) -> Network | None:
    """Docker's lookup: exact id, then exact name, then a unique id prefix."""
    nets = list(networks)
    for n in nets:
        if n.id == ref:
            return n
    named = [n for n in nets if n.spec.name == ref]
    if len(named) == 1:
        return named[0]
    prefixed = [n for n in nets if ref and n.id.startswith(ref)]
    return prefixed[0] if len(prefixed) == 1 else None


def ingress_network(networks: Iterable[Network]) -> Network | None:
    return next((n for n in networks if n.spec.ingress), None)


def service_networks(svc: Service) -> list:
    """The attachments a service asks for (TaskTemplate.Networks; the deprecated top-level
    Networks when the template has none)."""
    return list(svc.spec.task_template.networks or svc.spec.networks)


def endpoint_spec(svc: Service) -> EndpointSpec:
    return svc.spec.endpoint_spec or EndpointSpec()


def needs_ingress(svc: Service) -> bool:
    """Ingress-mode ports go through the routing mesh; a service with host-mode ports only and no
    network of its own joins ingress too, so that its tasks have an address to forward to."""
    ports = endpoint_spec(svc).ports
    return any(p.publish_mode == "ingress" for p in ports) or (bool(ports) and not service_networks(svc))


def live(task: Task) -> bool:
    """Placed on a node and not finished: its addresses are in use there."""
    return bool(task.node_id) and not is_terminal(task.status.state) and \
        state_rank(task.status.state) >= state_rank("assigned")


def serving(task: Task) -> bool:
    """Answers for its service (DNS, VIP and published-port backends)."""
    return task.status.state == "running" and task.desired_state == "running"


# --------------------------------------------------------------------------- network create

def validate_network_spec(spec: NetworkSpec, networks: list[Network]) -> NetworkSpec:
    """The spec normalized (driver overlay, IPAM driver default), or AllocationError naming the
    field. networks: the existing ones (names must be unique, subnets must not overlap)."""
    spec = copy.deepcopy(spec)
    if not spec.name or not _NAME.match(spec.name) or len(spec.name) > 64:
        raise AllocationError(f"Name: {spec.name!r} is invalid (letters, digits, '_', '.', '-', at most 64, "
                              f"starting with a letter or digit)")
    if any(n.spec.name == spec.name for n in networks):
        raise AllocationError(f"Name: a network named {spec.name!r} already exists")
    if spec.name == INGRESS_NAME and not spec.ingress:
        raise AllocationError(f"Name: {INGRESS_NAME!r} is reserved for the ingress network (--ingress)")
    spec.driver = spec.driver or "overlay"
    if spec.driver != "overlay":
        raise AllocationError(f"Driver: only overlay networks are supported, got {spec.driver!r}")
    if spec.scope not in ("", "swarm"):
        raise AllocationError(f"Scope: overlay networks are swarm-scoped, got {spec.scope!r}")
    if spec.enable_ipv6:
        raise AllocationError("EnableIPv6: IPv6 is not supported on overlay networks")
    if spec.ingress:
        if ingress_network(networks) is not None:
            raise AllocationError("Ingress: the swarm already has an ingress network; remove it first")
        if spec.attachable:
            raise AllocationError("Attachable: the ingress network cannot be attachable")
    for key, value in spec.options.items():
        if key == MTU_OPTION and not (value.isdigit() and 576 <= int(value) <= 9000):
            raise AllocationError(f"Options.{key}: {value!r} is not an MTU (576..9000)")
        if key == VXLAN_ID_OPTION:
            if not value.isdigit() or not 1 <= int(value) <= LAST_VNI:
                raise AllocationError(f"Options.{key}: {value!r} is not a VXLAN id (1..{LAST_VNI})")
            if any(network_vni(n) == int(value) for n in networks):
                raise AllocationError(f"Options.{key}: VXLAN id {value} is already in use")
    ipam = spec.ipam or IPAM()
    if ipam.driver not in ("", "default"):
        raise AllocationError(f"IPAM.Driver: only the default IPAM driver is supported, got {ipam.driver!r}")
    if len(ipam.config) > 1:
        raise AllocationError("IPAM.Config: at most one IPv4 subnet per network")
    for cfg in ipam.config:
        _validate_ipam_config(cfg, networks)
    return spec


def _validate_ipam_config(cfg: IPAMConfig, networks: list[Network]) -> None:
    where = "IPAM.Config[0]"
    if not cfg.subnet:
        if cfg.gateway or cfg.ip_range:
            raise AllocationError(f"{where}.Subnet: required with a gateway or an IP range")
        return
    try:
        subnet = ipaddress.IPv4Network(cfg.subnet)
    except ValueError:
        raise AllocationError(f"{where}.Subnet: {cfg.subnet!r} is not an IPv4 network (a.b.c.0/n, host bits zero)") \
            from None
    if not 8 <= subnet.prefixlen <= 29:
        raise AllocationError(f"{where}.Subnet: {cfg.subnet} must be between /8 and /29")
    if cfg.gateway:
        gw = _address(f"{where}.Gateway", cfg.gateway)
        if gw not in subnet or gw in (subnet.network_address, subnet.broadcast_address):
            raise AllocationError(f"{where}.Gateway: {cfg.gateway} is not a host address of {subnet}")
    if cfg.ip_range:
        try:
            rng = ipaddress.IPv4Network(cfg.ip_range)
        except ValueError:
            raise AllocationError(f"{where}.IPRange: {cfg.ip_range!r} is not an IPv4 network") from None
        if not rng.subnet_of(subnet):
            raise AllocationError(f"{where}.IPRange: {rng} is not inside {subnet}")
    for name, addr in cfg.auxiliary_addresses.items():
        if _address(f"{where}.AuxiliaryAddresses.{name}", addr) not in subnet:
            raise AllocationError(f"{where}.AuxiliaryAddresses.{name}: {addr} is not in {subnet}")
    for other in networks:
        theirs = _requested_or_allocated_subnet(other)
        if theirs is not None and theirs.overlaps(subnet):
            raise AllocationError(f"{where}.Subnet: {subnet} overlaps network {other.spec.name} ({theirs})")


def _address(where: str, value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise AllocationError(f"{where}: {value!r} is not an IPv4 address") from None


def _requested_or_allocated_subnet(net: Network) -> ipaddress.IPv4Network | None:
    got = network_subnet(net)
    if got:
        return got[0]
    cfg = net.spec.ipam.config if net.spec.ipam else []
    return ipaddress.IPv4Network(cfg[0].subnet) if cfg and cfg[0].subnet else None


def network_in_use(net: Network, services: list[Service], tasks: list[Task], networks: list[Network]) -> str | None:
    """Why the network cannot be removed now, or None."""
    for svc in services:
        for att in service_networks(svc):
            if resolve_network(att.target, networks) is net or att.target == net.id:
                return f"network {net.spec.name} is in use by service {svc.spec.name}"
        if net.spec.ingress and needs_ingress(svc):
            return f"network {net.spec.name} is in use by service {svc.spec.name} (published ports)"
    alive = {s.id for s in services}
    for t in tasks:
        if t.service_id in alive and not is_terminal(t.status.state) and \
                any(a.network.id == net.id for a in t.networks_attachments):
            return f"network {net.spec.name} is in use by task {t.id}"
    return None


# --------------------------------------------------------------------------- what is taken

@dataclass
class Pools:
    """Everything in use, by whom: derived from the store, updated as a pass allocates."""
    vnis: set[int] = field(default_factory=set)
    vni_offset: int = 0
    subnets: list[ipaddress.IPv4Network] = field(default_factory=list)
    reserved: list[ipaddress.IPv4Network] = field(default_factory=list)   # the nodes' own networks
    addresses: dict[str, dict[ipaddress.IPv4Address, str]] = field(default_factory=dict)  # net -> ip -> owner
    history: dict[str, set[ipaddress.IPv4Address]] = field(default_factory=dict)  # held by finished tasks
    ports: dict[tuple[str, int], str] = field(default_factory=dict)   # (protocol, port) -> service id
    service_names: dict[str, str] = field(default_factory=dict)

    def hold(self, network_id: str, ip: ipaddress.IPv4Address, owner: str) -> None:
        self.addresses.setdefault(network_id, {})[ip] = owner

    def owner(self, network_id: str, ip: ipaddress.IPv4Address) -> str | None:
        return self.addresses.get(network_id, {}).get(ip)


def _ip_of(addr: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(addr.split("/")[0])


def vni_offset(cluster_id: str) -> int:
    """Where a cluster's VXLAN ids start, past Docker's 4096. Two clusters whose nodes share a
    network namespace (test daemons on one host) would collide on a VNI, which the kernel
    refuses; a per-cluster start makes that unlikely, and costs a real cluster nothing."""
    if not cluster_id:
        return 0
    return int(hashlib.sha256(cluster_id.encode()).hexdigest()[:8], 16) % VNI_SPREAD


def collect_pools(networks: list[Network], services: list[Service], tasks: list[Task], nodes: list[Node],
                  cluster_id: str = "") -> Pools:
    pools = Pools(vni_offset=vni_offset(cluster_id))
    for node in nodes:
        if node.status.addr:
            try:
                pools.reserved.append(ipaddress.IPv4Network(f"{node.status.addr}/{DEFAULT_SUBNET_PREFIX}", strict=False))
            except ValueError:
                pass
    embedded = {a.network.id: a.network for t in tasks if not is_terminal(t.status.state)
                for a in t.networks_attachments}
    for net in list(networks) + [n for nid, n in embedded.items() if nid not in {x.id for x in networks}]:
        vni = network_vni(net)
        if vni is not None:
            pools.vnis.add(vni)
        got = network_subnet(net)
        if got:
            pools.subnets.append(got[0])
            pools.hold(net.id, got[1], "gateway")
            cfg = net.ipam_options.config[0]
            for aux in cfg.auxiliary_addresses.values():
                pools.hold(net.id, ipaddress.IPv4Address(aux), "auxiliary")
    for svc in services:
        pools.service_names[svc.id] = svc.spec.name
        if svc.endpoint is None:
            continue
        for vip in svc.endpoint.virtual_ips:
            pools.hold(vip.network_id, _ip_of(vip.addr), "service:" + svc.id)
        for p in svc.endpoint.ports:
            if p.publish_mode == "ingress" and p.published_port:
                pools.ports[(p.protocol, p.published_port)] = svc.id
    for node in nodes:
        for att in node.attachments:
            for addr in att.addresses:
                pools.hold(att.network.id, _ip_of(addr), "node:" + node.id)
    for t in tasks:
        for att in t.networks_attachments:
            for addr in att.addresses:
                if is_terminal(t.status.state):
                    pools.history.setdefault(att.network.id, set()).add(_ip_of(addr))
                else:
                    pools.hold(att.network.id, _ip_of(addr), "task:" + t.id)
    return pools


def allocate_address(net: Network, pools: Pools, owner: str) -> ipaddress.IPv4Address:
    """A free host address of the network (inside its IPRange, if any). Addresses that finished
    tasks held come last, so a stale entry somewhere rarely meets a new task at the same address."""
    got = network_subnet(net)
    assert got is not None, "network not allocated"
    subnet, _ = got
    cfg = net.ipam_options.config[0]
    space = ipaddress.IPv4Network(cfg.ip_range) if cfg.ip_range else subnet
    taken = pools.addresses.get(net.id, {})
    used_before = pools.history.get(net.id, set())
    fallback = None
    for ip in space.hosts() if space.prefixlen < 31 else iter(space):
        if ip in (subnet.network_address, subnet.broadcast_address) or ip in taken:
            continue
        if ip not in used_before:
            pools.hold(net.id, ip, owner)
            return ip
        if fallback is None:
            fallback = ip
    if fallback is None:
        raise AllocationError(f"network {net.spec.name}: no free address left in {space}")
    pools.hold(net.id, fallback, owner)
    return fallback


def address_cidr(net: Network, ip: ipaddress.IPv4Address) -> str:
    got = network_subnet(net)
    assert got is not None
    return f"{ip}/{got[0].prefixlen}"


# --------------------------------------------------------------------------- networks

def allocate_network(net: Network, pools: Pools) -> Network:
    """The network with its VXLAN id, subnet and gateway."""
    out = copy.deepcopy(net)
    opts = net.spec.options
    if VXLAN_ID_OPTION in opts:
        vni = int(opts[VXLAN_ID_OPTION])
        if vni in pools.vnis:
            raise AllocationError(f"Options.{VXLAN_ID_OPTION}: VXLAN id {vni} is already in use")
    elif net.spec.ingress and INGRESS_VNI + pools.vni_offset not in pools.vnis:
        vni = INGRESS_VNI + pools.vni_offset
    else:
        vni = next((v for v in range(FIRST_VNI + pools.vni_offset, LAST_VNI + 1) if v not in pools.vnis), 0)
        vni = vni or next((v for v in range(FIRST_VNI, LAST_VNI + 1) if v not in pools.vnis), 0)
        if not vni:
            raise AllocationError("VNI: every VXLAN id is in use")
    cfg = copy.deepcopy(net.spec.ipam.config[0]) if net.spec.ipam and net.spec.ipam.config else IPAMConfig()
    if cfg.subnet:
        subnet = ipaddress.IPv4Network(cfg.subnet)
        clash = next((s for s in pools.subnets if s.overlaps(subnet)), None)
        if clash is not None:
            raise AllocationError(f"IPAM.Config[0].Subnet: {subnet} overlaps {clash}, which is in use")
    else:
        subnet = next_subnet(pools, ingress=net.spec.ingress)
        cfg.subnet = str(subnet)
    if not cfg.gateway:
        cfg.gateway = str(subnet.network_address + 1)
    out.driver_state = Driver(name="overlay", options={VXLAN_ID_OPTION: str(vni)})
    out.ipam_options = IPAM(driver="default", config=[cfg])
    pools.vnis.add(vni)
    pools.subnets.append(subnet)
    pools.hold(net.id, ipaddress.IPv4Address(cfg.gateway), "gateway")
    for aux in cfg.auxiliary_addresses.values():
        pools.hold(net.id, ipaddress.IPv4Address(aux), "auxiliary")
    return out


def next_subnet(pools: Pools, ingress: bool = False) -> ipaddress.IPv4Network:
    """The first /24 of the default pool that overlaps nothing in use nor a node's own network;
    the ingress network's fixed subnet is kept for it."""
    ingress_subnet = ipaddress.IPv4Network(INGRESS_SUBNET)
    taken = pools.subnets + pools.reserved
    if ingress and not any(s.overlaps(ingress_subnet) for s in pools.subnets):
        return ingress_subnet
    for candidate in DEFAULT_POOL.subnets(new_prefix=DEFAULT_SUBNET_PREFIX):
        if candidate == ingress_subnet and not ingress:
            continue
        if not any(s.overlaps(candidate) for s in taken):
            return candidate
    raise AllocationError(f"IPAM.Config: the default address pool {DEFAULT_POOL} is exhausted")


def new_ingress(network_id: str) -> Network:
    return Network(id=network_id, spec=NetworkSpec(
        name=INGRESS_NAME, driver="overlay", ingress=True, labels={INTERNAL_LABEL: "true"},
        ipam=IPAM(driver="default", config=[IPAMConfig(subnet=INGRESS_SUBNET, gateway=INGRESS_GATEWAY)])))


# --------------------------------------------------------------------------- services

def allocate_endpoint(svc: Service, networks: list[Network], pools: Pools) -> Endpoint | None:
    """The service's endpoint for its current spec, reusing what it holds; None while one of its
    networks is not allocated yet. AllocationError names the offending field."""
    # Read only (the endpoint shares it with the service): no copy on every pass.
    spec = endpoint_spec(svc)
    if spec.mode not in ("vip", "dnsrr"):
        raise AllocationError(f"EndpointSpec.Mode: must be vip or dnsrr, got {spec.mode!r}")
    previous = svc.endpoint.ports if svc.endpoint else []
    ports: list[PortConfig] = []
    seen: dict[tuple[str, int], int] = {}
    for i, p in enumerate(spec.ports):
        where = f"EndpointSpec.Ports[{i}]"
        proto = p.protocol or "tcp"
        if proto not in _PROTOCOLS:
            raise AllocationError(f"{where}.Protocol: must be tcp or udp, got {p.protocol!r}")
        if not 1 <= p.target_port <= 65535:
            raise AllocationError(f"{where}.TargetPort: {p.target_port} is not a port number (1..65535)")
        if p.publish_mode not in ("ingress", "host"):
            raise AllocationError(f"{where}.PublishMode: must be ingress or host, got {p.publish_mode!r}")
        if p.published_port and not 1 <= p.published_port <= 65535:
            raise AllocationError(f"{where}.PublishedPort: {p.published_port} is not a port number (1..65535)")
        if p.publish_mode == "ingress" and spec.mode == "dnsrr":
            raise AllocationError(f"{where}.PublishMode: ingress ports need endpoint mode vip (publish with mode=host)")
        port = p.published_port
        if p.publish_mode == "ingress":
            if port:
                holder = pools.ports.get((proto, port))
                if holder not in (None, svc.id):
                    raise AllocationError(f"{where}.PublishedPort: {port}/{proto} is already in use by service "
                                          f"{pools.service_names.get(holder, holder)}")
            else:
                port = next((q.published_port for q in previous if (q.protocol, q.target_port, q.publish_mode) ==
                             (proto, p.target_port, "ingress") and q.published_port
                             and pools.ports.get((proto, q.published_port)) in (None, svc.id)
                             and (proto, q.published_port) not in seen), 0)
                port = port or next((q for q in range(FIRST_PORT, LAST_PORT + 1)
                                     if (proto, q) not in pools.ports and (proto, q) not in seen), 0)
                if not port:
                    raise AllocationError(f"{where}.PublishedPort: no free port left in {FIRST_PORT}-{LAST_PORT}")
        if port:
            if (proto, port) in seen:
                raise AllocationError(f"{where}.PublishedPort: {port}/{proto} is published twice (also by "
                                      f"EndpointSpec.Ports[{seen[(proto, port)]}])")
            seen[(proto, port)] = i
        ports.append(PortConfig(name=p.name, protocol=proto, target_port=p.target_port, published_port=port,
                                publish_mode=p.publish_mode))
    nets = resolve_service_networks(svc, networks)
    if nets is None or any(not is_allocated(n) for n in nets):
        return None
    vips: list[EndpointVirtualIP] = []
    if spec.mode == "vip":
        held = {v.network_id: _ip_of(v.addr) for v in (svc.endpoint.virtual_ips if svc.endpoint else [])}
        owner = "service:" + svc.id
        for net in nets:
            ip = held.get(net.id)
            subnet = network_subnet(net)[0]   # type: ignore[index]
            if ip is None or ip not in subnet or pools.owner(net.id, ip) not in (None, owner):
                ip = allocate_address(net, pools, owner)
            else:
                pools.hold(net.id, ip, owner)
            vips.append(EndpointVirtualIP(network_id=net.id, addr=address_cidr(net, ip)))
    for p in ports:
        if p.publish_mode == "ingress":
            pools.ports[(p.protocol, p.published_port)] = svc.id
    return Endpoint(spec=spec, ports=ports, virtual_ips=vips)


def resolve_service_networks(svc: Service, networks: list[Network]) -> list[Network] | None:
    return resolve_networks(service_networks(svc), needs_ingress(svc), networks)


def resolve_networks(attachments: list, with_ingress: bool, networks: list[Network]) -> list[Network] | None:
    """The networks of attachments in order (duplicates dropped), then ingress if wanted; None
    while ingress is wanted but does not exist yet. AllocationError for a network that does not
    exist."""
    out: list[Network] = []
    for i, att in enumerate(attachments):
        net = resolve_network(att.target, networks)
        if net is None:
            raise AllocationError(f"TaskTemplate.Networks[{i}].Target: network {att.target!r} not found")
        if net.spec.ingress:
            raise AllocationError(f"TaskTemplate.Networks[{i}].Target: the ingress network is for published "
                                  f"ports only")
        if all(n.id != net.id for n in out):
            out.append(net)
    if with_ingress:
        ingress = ingress_network(networks)
        if ingress is None:
            return None
        out.append(ingress)
    return out


# --------------------------------------------------------------------------- tasks and nodes

def allocate_task(task: Task, svc: Service, networks: list[Network], pools: Pools, now: str) -> Task | None:
    """The task with an address on each of its networks (those of its own spec: it may be of
    an older spec than the service's during an update), moved to pending; None if a network is
    not there yet."""
    nets = resolve_networks(list(task.spec.networks or svc.spec.networks), needs_ingress(svc), networks)
    if nets is None or any(not is_allocated(n) for n in nets):
        return None
    out = copy.deepcopy(task)
    owner = "task:" + task.id
    attachments = []
    for net in nets:
        ip = allocate_address(net, pools, owner)
        attachments.append(NetworkAttachment(network=copy.deepcopy(net), addresses=[address_cidr(net, ip)]))
    out.networks_attachments = attachments
    out.status = TaskStatus(timestamp=now, state="pending", message="pending task scheduling")
    return out


def allocate_node(node: Node, ingress: Network | None, pools: Pools) -> Node | None:
    """The node with its address on the ingress network (and none on networks that are gone),
    or None if nothing changes."""
    keep = [a for a in node.attachments if ingress is not None and a.network.id == ingress.id]
    if ingress is not None and not keep:
        ip = allocate_address(ingress, pools, "node:" + node.id)
        keep = [NetworkAttachment(network=copy.deepcopy(ingress), addresses=[address_cidr(ingress, ip)])]
    if keep == node.attachments:
        return None
    out = copy.deepcopy(node)
    out.attachments = keep
    return out


# --------------------------------------------------------------------------- encryption keys

def key_plan(current: NetworkKeys | None, needed: bool, now: float, make_key: Callable[[int], bytes],
             period: float = KEY_ROTATION_S, step: float = KEY_STEP_S) -> NetworkKeys | None:
    """The keys after this moment, or None if nothing changes. The first key is made when an
    encrypted network first exists. A rotation takes three steps, `step` apart, so that no
    node ever receives a packet under a key it does not hold yet: a new key joins (every
    node decrypts with it), then it becomes the first (every node encrypts with it), then the
    old one goes."""
    if current is None or not current.keys:
        if not needed:
            return None
        base = current or NetworkKeys(id=KEYS_ID)
        new = copy.deepcopy(base)
        new.keys = [_new_key(1, now, make_key)]
        new.step_at = timestamp(now)
        return new
    since = now - parse_timestamp(current.step_at)
    keys = current.keys
    if len(keys) == 1 and since >= period:
        keys = [keys[0], _new_key(keys[0].key_id % 255 + 1, now, make_key)]
    elif len(keys) >= 2 and since >= step:
        newer = parse_timestamp(keys[1].created_at) > parse_timestamp(keys[0].created_at)
        keys = [keys[1], keys[0]] if newer else [keys[0]]
    else:
        return None
    new = copy.deepcopy(current)
    new.keys = keys
    new.step_at = timestamp(now)
    return new


def _new_key(key_id: int, now: float, make_key: Callable[[int], bytes]) -> NetworkKey:
    return NetworkKey(key_id=key_id, key=base64.b64encode(make_key(KEY_BYTES)).decode(), created_at=timestamp(now))


def key_actions(store: Store, now: float, make_key: Callable[[int], bytes] = os.urandom) -> list[Action]:
    current = store.get("networkkeys", KEYS_ID)
    needed = any(is_encrypted(n) for n in store.list("network"))
    new = key_plan(current, needed, now, make_key)
    if new is None:
        return []
    return [Action("update" if current is not None else "create", "networkkeys", new)]


async def key_rotation_loop(manager, interval: float = 5.0) -> None:
    """On the leader: the steps of key rotation as their time comes."""
    while True:
        await asyncio.sleep(interval)
        if not manager.is_leader:
            continue
        actions = key_actions(manager.store, time.time())
        if actions:
            try:
                await manager.propose(actions)
            except StoreError as exc:
                log.debug("network key rotation postponed: %s", exc)


# --------------------------------------------------------------------------- the pass

def allocation_actions(store: Store, new_id: Callable[[], str], now: str | None = None) -> list[list[Action]]:
    """What to propose, in order: networks and nodes, then services, then tasks (a later group
    relies on the earlier ones; if one is refused, the next pass starts over)."""
    now = now or timestamp()
    networks = store.list("network")
    services = store.list("service")
    tasks = store.list("task")
    nodes = store.list("node")
    clusters = store.list("cluster")
    pools = collect_pools(networks, services, tasks, nodes, clusters[0].id if clusters else "")
    first: list[Action] = []

    nets: dict[str, Network] = {n.id: n for n in networks}
    if ingress_network(networks) is None and any(needs_ingress(s) for s in services):
        ingress = new_ingress(new_id())
        try:
            nets[ingress.id] = allocate_network(ingress, pools)
            first.append(Action("create", "network", nets[ingress.id]))
        except AllocationError as exc:
            log.warning("ingress network: %s", exc)
    # Networks that ask for a subnet or a VXLAN id first: a default one must not take it.
    for net in sorted(networks, key=lambda n: (_requested_or_allocated_subnet(n) is None,
                                               VXLAN_ID_OPTION not in n.spec.options, n.created_at)):
        if not is_allocated(net):
            try:
                nets[net.id] = allocate_network(net, pools)
                first.append(Action("update", "network", nets[net.id]))
            except AllocationError as exc:
                log.warning("network %s: %s", net.spec.name, exc)
    first += key_actions(store, parse_timestamp(now)) if any(is_encrypted(n) for n in nets.values()) else []
    networks = [n for n in nets.values() if is_allocated(n)] + [n for n in nets.values() if not is_allocated(n)]
    ingress = ingress_network(networks)
    ingress = ingress if ingress is not None and is_allocated(ingress) else None
    for node in nodes:
        try:
            changed = allocate_node(node, ingress, pools)
        except AllocationError as exc:
            log.warning("node %s on ingress: %s", node.id, exc)
            continue
        if changed is not None:
            first.append(Action("update", "node", changed))

    second: list[Action] = []
    ready: dict[str, Service] = {}
    failed: dict[str, str] = {}
    for svc in sorted(services, key=lambda s: s.id):
        try:
            endpoint = allocate_endpoint(svc, networks, pools)
        except AllocationError as exc:
            failed[svc.id] = str(exc)
            continue
        if endpoint is None:
            continue
        if endpoint != svc.endpoint:
            # A shallow copy: `new` is only proposed (encoded) and read, and stored objects are
            # never changed in place, so sharing their parts is safe; a deep copy of every new
            # service was most of the leader's CPU under a stream of service creations.
            new = copy.copy(svc)
            new.endpoint = endpoint
            second.append(Action("update", "service", new))
            svc = new
        ready[svc.id] = svc

    third: list[Action] = []
    for t in sorted(tasks, key=lambda t: (t.service_id, t.slot, t.id)):
        if t.status.state != "new" or t.desired_state not in ("ready", "running"):
            continue
        reason = failed.get(t.service_id)
        svc = ready.get(t.service_id)
        if svc is not None:
            try:
                allocated = allocate_task(t, svc, networks, pools, now)
                if allocated is not None:
                    third.append(Action("update", "task", allocated))
                continue
            except AllocationError as exc:
                reason = str(exc)
        if reason and t.status.err != reason:
            new = copy.deepcopy(t)
            new.status = TaskStatus(timestamp=now, state="new", message="allocation failed", err=reason)
            third.append(Action("update", "task", new))
    return [first, second, third]


async def allocate(store: Store, propose: Callable[[list[Action]], Awaitable[Any]],
                   new_id: Callable[[], str]) -> None:
    """The leader's allocation pass."""
    for group in allocation_actions(store, new_id):
        if not group:
            continue
        try:
            await propose(group)
        except StoreError as exc:  # raced with another change: the next pass starts over
            log.debug("allocation refused: %s", exc)
            return


# --------------------------------------------------------------------------- what a node is told

def node_view(store: Store, node_id: str) -> dict:
    """The networks part of a node's assignment message (msgpack-ready): its own address, the
    networks of its tasks (and ingress), every endpoint on them wherever it runs, the services'
    names, VIPs and backends there, and the ports published on this node."""
    node = store.get("node", node_id)
    if node is None:
        return {}
    networks = {n.id: n for n in store.list("network")}
    nodes = {n.id: n for n in store.list("node")}
    services = {s.id: s for s in store.list("service")}
    tasks = [t for t in store.list("task") if live(t)]
    mine = [t for t in tasks if t.node_id == node_id]
    specs: dict[str, dict] = {}
    for t in mine:
        for att in t.networks_attachments:
            net = networks.get(att.network.id, att.network)
            if not net.spec.ingress:
                specs.setdefault(net.id, network_wire(net))
    ingress = ingress_network(networks.values())
    node_ip = next((a.addresses[0] for a in node.attachments if ingress and a.network.id == ingress.id
                    and a.addresses), "")
    if ingress is not None and is_allocated(ingress) and node_ip:
        specs[ingress.id] = dict(network_wire(ingress), NodeIP=node_ip)

    endpoints = []
    for t in tasks:
        addr = nodes[t.node_id].status.addr if t.node_id in nodes else ""
        for att in t.networks_attachments:
            if att.network.id in specs and att.addresses and addr:
                endpoints.append(_endpoint_wire(t.id, att.network.id, att.addresses[0], addr))
    if ingress is not None and ingress.id in specs:
        for other in nodes.values():
            for att in other.attachments:
                if att.network.id == ingress.id and att.addresses and other.status.addr:
                    endpoints.append(_endpoint_wire("node:" + other.id, ingress.id, att.addresses[0],
                                                    other.status.addr))

    by_service: dict[str, list[Task]] = {}
    for t in tasks:
        by_service.setdefault(t.service_id, []).append(t)
    dns, vips, ports = [], [], []
    for svc in sorted(services.values(), key=lambda s: s.spec.name):
        ep = svc.endpoint
        if ep is None:
            continue
        serving_tasks = [t for t in by_service.get(svc.id, []) if serving(t)]
        vip_of = {v.network_id: v.addr for v in ep.virtual_ips}
        aliases = _aliases(svc, list(networks.values()))
        on: set[str] = set(vip_of) | {a.network.id for t in by_service.get(svc.id, []) for a in t.networks_attachments}
        for nid in sorted(on & set(specs)):
            ips = [(t, a.addresses[0]) for t in serving_tasks for a in t.networks_attachments
                   if a.network.id == nid and a.addresses]
            if ingress is not None and nid == ingress.id:
                continue  # no names and no VIP on the routing mesh: published ports go to task addresses
            mode = ep.spec.mode if ep.spec else "vip"
            dns.append({"NetworkID": nid, "Name": svc.spec.name, "VIP": vip_of.get(nid, "") if mode == "vip" else "",
                        "TaskIPs": [ip for _, ip in ips], "Aliases": aliases.get(nid, []),
                        "Stack": svc.spec.labels.get(STACK_LABEL, ""), "EndpointMode": mode,
                        "TaskNames": [[task_name(svc, t), ip] for t, ip in ips]})
            if mode == "vip" and nid in vip_of:
                vips.append({"ServiceID": svc.id, "NetworkID": nid, "VIP": vip_of[nid],
                             "Backends": [ip for _, ip in ips]})
        if ingress is not None and ingress.id in specs:
            backends = [a.addresses[0] for t in serving_tasks for a in t.networks_attachments
                        if a.network.id == ingress.id and a.addresses]
            for p in ep.ports:
                if p.publish_mode == "ingress" and p.published_port:
                    ports.append({"Protocol": p.protocol, "PublishedPort": p.published_port,
                                  "TargetPort": p.target_port, "NetworkID": ingress.id, "Backends": backends,
                                  "Mode": "ingress"})
        for t in serving_tasks:
            if t.node_id != node_id or not t.networks_attachments:
                continue
            first = t.networks_attachments[0]
            for p in ep.ports:
                if p.publish_mode == "host" and p.published_port and first.addresses:
                    ports.append({"Protocol": p.protocol, "PublishedPort": p.published_port,
                                  "TargetPort": p.target_port, "NetworkID": first.network.id,
                                  "Backends": [first.addresses[0]], "Mode": "host"})
    view = {"NodeAddr": node.status.addr, "Networks": list(specs.values()), "Endpoints": endpoints,
            "Services": dns, "VIPs": vips, "Ports": ports}
    keys = store.get("networkkeys", KEYS_ID)
    if keys is not None and any(s["Encrypted"] for s in specs.values()):
        view["EncryptionKeys"] = [{"ID": k.key_id, "Key": k.key} for k in keys.keys]  # over the node's mTLS session
    return view


def network_wire(net: Network) -> dict:
    subnet, gateway = network_subnet(net) or (None, None)
    return {"ID": net.id, "Name": net.spec.name, "VNI": network_vni(net) or 0, "Subnet": str(subnet or ""),
            "Gateway": str(gateway or ""), "MTU": network_mtu(net) or 0, "Internal": net.spec.internal,
            "Encrypted": is_encrypted(net), "Ingress": net.spec.ingress}


def _endpoint_wire(owner: str, network_id: str, addr: str, node_addr: str) -> dict:
    return {"TaskID": owner, "NetworkID": network_id, "IP": addr, "MAC": mac_for_ip(addr), "NodeAddr": node_addr}


def _aliases(svc: Service, networks: list[Network]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for att in service_networks(svc):
        net = resolve_network(att.target, networks)
        if net is not None:
            out.setdefault(net.id, []).extend(a for a in att.aliases if a != svc.spec.name)
    return out


def task_name(svc: Service, task: Task) -> str:
    """Docker's: <service>.<slot>.<task id>, or <service>.<node id>.<task id> for global tasks."""
    return task.name or f"{svc.spec.name}.{task.slot or task.node_id}.{task.id}"


def iter_attachments(task: Task) -> Iterator[tuple[Network, str]]:
    for att in task.networks_attachments:
        for addr in att.addresses:
            yield att.network, addr
