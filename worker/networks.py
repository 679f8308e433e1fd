"""A node's overlay networks, driven by the worker agent: the agent hands over what the managers
send (the networks part of each assignment message) and the moments of a task's container
(before it starts, once it runs, once it ended); this module turns them into calls of
overlay.NodeNetworks, the data plane.

A network exists on the node while a task of the node claims it (from just before its
container starts until it has ended), and the ingress network whenever the managers gave this
node an address on it (so a published port answers on every node). Everything else the
managers send (remote endpoints, names, VIPs, published ports, the keys of encrypted networks)
is programmed on the networks present, and only when it changed.

NodeNetworks is synchronous: its calls run in a worker thread, one at a time under an asyncio
lock, so the event loop never waits on the kernel.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import logging
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import overlay
from api.objects import DNSConfig, Network, Task
from overlay import EncryptionKey, Endpoint, NetworkSpec, NodeNetworks, PublishedPort, ServiceDNS, ServiceVIP

log = logging.getLogger("shoal.networks")

VXLAN_ID_OPTION = "com.docker.network.driver.overlay.vxlanid_list"
MTU_OPTION = "com.docker.network.driver.mtu"


def node_prefix(node_id: str) -> str:
    """The names of this node's kernel objects: distinct per node, so several nodes share one
    machine (shoal dev), and stable across restarts, so purge finds what a crash left."""
    return "s" + re.sub(r"[^a-z0-9]", "", node_id.lower())[:10]


def link_pool(prefix: str) -> str:
    """The node's addresses for the links between its network namespaces and the underlay: a
    /22 of 169.254.0.0/16 chosen by the prefix, so that nodes sharing a namespace (test
    daemons on one host) rarely share one, and never the one of 169.254.169.254 (the cloud
    metadata address)."""
    blocks = [b for b in ipaddress.IPv4Network("169.254.0.0/16").subnets(new_prefix=22)
              if ipaddress.IPv4Address("169.254.169.254") not in b]
    return str(blocks[int(hashlib.sha256(prefix.encode()).hexdigest()[:8], 16) % len(blocks)])


# --------------------------------------------------------------------------- what the managers say

@dataclass(frozen=True)
class View:
    """The networks part of an assignment message, validated."""
    node_addr: str = ""
    networks: dict[str, tuple[NetworkSpec, str | None]] = field(default_factory=dict)  # id -> (spec, ingress ip)
    endpoints: dict[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    dns: dict[str, tuple[ServiceDNS, ...]] = field(default_factory=dict)
    vips: dict[str, tuple[ServiceVIP, ...]] = field(default_factory=dict)
    ports: tuple[PublishedPort, ...] = ()
    keys: tuple[EncryptionKey, ...] | None = field(default=None, repr=False)  # None: not sent (no encrypted network)


def _get(d: Any, key: str, where: str, kind: type, default: Any = None) -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: must be a map")
    value = d.get(key, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{where}.{key}: must be {kind.__name__}, got {type(value).__name__}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: must be a list of strings")
    return tuple(value)


def spec_from_wire(d: Any, where: str) -> tuple[NetworkSpec, str | None]:
    spec = NetworkSpec(
        id=_get(d, "ID", where, str), name=_get(d, "Name", where, str, ""), vni=_get(d, "VNI", where, int),
        subnet=_get(d, "Subnet", where, str), gateway=_get(d, "Gateway", where, str),
        mtu=_get(d, "MTU", where, int, 0) or None, internal=_get(d, "Internal", where, bool, False),
        encrypted=_get(d, "Encrypted", where, bool, False), ingress=_get(d, "Ingress", where, bool, False))
    node_ip = _get(d, "NodeIP", where, str, "") or None
    return spec, node_ip


def parse_view(message: Any) -> View:
    """ValueError naming the field if anything is malformed."""
    if not isinstance(message, dict):
        raise ValueError("message: must be a map")
    networks = {}
    for i, d in enumerate(_get(message, "Networks", "message", list, [])):
        spec, node_ip = spec_from_wire(d, f"Networks[{i}]")
        networks[spec.id] = (spec, node_ip)
    endpoints: dict[str, list[Endpoint]] = {}
    for i, d in enumerate(_get(message, "Endpoints", "message", list, [])):
        w = f"Endpoints[{i}]"
        ep = Endpoint(_get(d, "TaskID", w, str), _get(d, "NetworkID", w, str), _get(d, "IP", w, str),
                      _get(d, "MAC", w, str), _get(d, "NodeAddr", w, str))
        endpoints.setdefault(ep.network_id, []).append(ep)
    dns: dict[str, list[ServiceDNS]] = {}
    for i, d in enumerate(_get(message, "Services", "message", list, [])):
        w = f"Services[{i}]"
        names = []
        for j, pair in enumerate(_get(d, "TaskNames", w, list, [])):
            names.append(tuple(_strings(pair, f"{w}.TaskNames[{j}]")[:2]))
        dns.setdefault(_get(d, "NetworkID", w, str), []).append(ServiceDNS(
            name=_get(d, "Name", w, str), vip=_get(d, "VIP", w, str, "") or None,
            task_ips=_strings(_get(d, "TaskIPs", w, list, []), f"{w}.TaskIPs"),
            aliases=_strings(_get(d, "Aliases", w, list, []), f"{w}.Aliases"),
            stack=_get(d, "Stack", w, str, "") or None, endpoint_mode=_get(d, "EndpointMode", w, str, "vip"),
            task_names=tuple(names)))
    vips: dict[str, list[ServiceVIP]] = {}
    for i, d in enumerate(_get(message, "VIPs", "message", list, [])):
        w = f"VIPs[{i}]"
        vip = ServiceVIP(_get(d, "ServiceID", w, str), _get(d, "NetworkID", w, str), _get(d, "VIP", w, str),
                         backends=_strings(_get(d, "Backends", w, list, []), f"{w}.Backends"))
        vips.setdefault(vip.network_id, []).append(vip)
    ports = []
    for i, d in enumerate(_get(message, "Ports", "message", list, [])):
        w = f"Ports[{i}]"
        ports.append(PublishedPort(_get(d, "Protocol", w, str), _get(d, "PublishedPort", w, int),
                                   _get(d, "TargetPort", w, int), _get(d, "NetworkID", w, str),
                                   _strings(_get(d, "Backends", w, list, []), f"{w}.Backends"),
                                   _get(d, "Mode", w, str, "ingress")))
    keys = None
    if "EncryptionKeys" in message:
        keys = []
        for i, d in enumerate(_get(message, "EncryptionKeys", "message", list)):
            w = f"EncryptionKeys[{i}]"
            try:
                secret = base64.b64decode(_get(d, "Key", w, str), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"{w}.Key: not base64") from None
            keys.append(EncryptionKey(_get(d, "ID", w, int), secret))
    return View(node_addr=_get(message, "NodeAddr", "message", str, ""), networks=networks,
                endpoints={k: tuple(v) for k, v in endpoints.items()}, dns={k: tuple(v) for k, v in dns.items()},
                vips={k: tuple(v) for k, v in vips.items()}, ports=tuple(ports),
                keys=tuple(keys) if keys is not None else None)


def spec_of(net: Network) -> NetworkSpec:
    """The data-plane spec of a network as a task carries it (Task.NetworksAttachments)."""
    opts = net.driver_state.options if net.driver_state else {}
    cfg = net.ipam_options.config[0] if net.ipam_options and net.ipam_options.config else None
    if cfg is None or not opts.get(VXLAN_ID_OPTION, "").isdigit():
        raise ValueError(f"network {net.spec.name or net.id}: not allocated")
    mtu = net.spec.options.get(MTU_OPTION, "")
    encrypted = "encrypted" in net.spec.options and net.spec.options["encrypted"].lower() not in ("false", "0")
    return NetworkSpec(id=net.id, name=net.spec.name, vni=int(opts[VXLAN_ID_OPTION]), subnet=cfg.subnet,
                       gateway=cfg.gateway, mtu=int(mtu) if mtu.isdigit() else None, internal=net.spec.internal,
                       encrypted=encrypted, ingress=net.spec.ingress)


def task_interfaces(task: Task, view: View) -> list[tuple[NetworkSpec, str]]:
    """(network, address) per interface, eth0 first, as the managers allocated them."""
    out = []
    for att in task.networks_attachments:
        if not att.addresses:
            continue
        known = view.networks.get(att.network.id)
        out.append((known[0] if known else spec_of(att.network), att.addresses[0]))
    return out


def resolv_conf(nameserver: str, search: list[str] | tuple[str, ...] = (),
                options: list[str] | tuple[str, ...] = ()) -> str:
    """The resolv.conf of a container on an overlay network: the node's DNS server for the
    network (the gateway address), with the service's DNSConfig search domains and options kept.
    Its DNSConfig nameservers are not listed: the node's DNS server forwards the names it does
    not know to them instead of to the host's resolvers, as Docker's embedded DNS does (see
    NodeNetworks.attach's dns_upstreams). ndots:0 unless the service sets ndots, as Docker's
    embedded DNS: service names have no dot and must not be tried against search domains first."""
    lines = []
    domains = [d for d in search if d != "."]  # "." means no search domains, as in Docker
    if domains:
        lines.append("search " + " ".join(domains))
    lines.append(f"nameserver {nameserver}")
    opts = list(options)
    if not any(o.startswith("ndots:") for o in opts):
        opts.append("ndots:0")
    lines.append("options " + " ".join(opts))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the node's side

@dataclass
class _Claim:
    task_id: str
    interfaces: list[tuple[NetworkSpec, str]]
    pid: int = 0
    dns: DNSConfig = field(default_factory=DNSConfig)  # the service's, for resolv.conf and forwarding


def _claim(task: Task, interfaces: list[tuple[NetworkSpec, str]]) -> _Claim:
    return _Claim(task.id, interfaces, dns=task.spec.container_spec.dns_config or DNSConfig())


class NodeNetworking:
    def __init__(self, node_id: str, runtime, node_addr: str = "",
                 factory: Callable[[str, str], NodeNetworks] | None = None):
        """node_addr: this node's underlay address if known here (its advertise address); the
        managers' word (NodeAddr) comes first."""
        self.prefix = node_prefix(node_id)
        self.runtime = runtime
        self.addr_hint = node_addr
        self._factory = factory or (lambda addr, prefix: NodeNetworks(addr, prefix, link_pool=link_pool(prefix)))
        self._last_error = ""
        self._nn: NodeNetworks | None = None
        self._view = View()
        self._claims: dict[str, _Claim] = {}
        self._applied: dict[tuple[str, str], Any] = {}
        self._lock = asyncio.Lock()
        self._kick = asyncio.Event()
        self._loop_task: asyncio.Task | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Remove what an earlier daemon of this node left (its state died with it), then
        follow the managers."""
        removed = await asyncio.to_thread(overlay.purge, self.prefix)
        if removed:
            log.info("removed %d leftover overlay objects: %s", len(removed), ", ".join(removed[:5]))
        self._loop_task = asyncio.create_task(self._sync_loop(), name="overlay-sync")

    async def close(self) -> None:
        """Remove every network of this node (leaving the swarm)."""
        if self._loop_task:
            self._loop_task.cancel()
        async with self._lock:
            self._claims.clear()
            if self._nn is not None:
                nn, self._nn = self._nn, None
                await asyncio.to_thread(nn.close)

    async def stop(self) -> None:
        """Daemon exit: stop following; the kernel state stays for the containers that keep
        running, and the next daemon rebuilds it."""
        if self._loop_task:
            self._loop_task.cancel()

    def update(self, message: Any) -> None:
        try:
            view = parse_view(message)
        except ValueError as exc:
            log.warning("the networks of an assignment message are malformed, ignored: %s", exc)
            return
        if view != self._view:
            self._view = view
            self._kick.set()

    # --- a task's container -----------------------------------------------------------------

    async def start_container(self, task: Task, cid: str, start: Callable[[], Awaitable[int]]) -> int:
        """Create the task's networks and its resolv.conf, start the container with `start`,
        then give it its interfaces (eth0, eth1, ... in the order of its networks; the default
        route through the first). Returns the container's pid. If the networks fail, the
        container does not keep running."""
        interfaces = task_interfaces(task, self._view)
        if not interfaces:
            return await start()
        claim = _claim(task, interfaces)
        async with self._lock:
            self._claims[task.id] = claim
            try:
                await asyncio.to_thread(self._ensure_claimed, claim)
                await asyncio.to_thread(self._write_etc, claim, cid)
            except BaseException:
                self._claims.pop(task.id, None)
                raise
        try:
            pid = await start()
        except BaseException:
            await self.release(task.id)
            raise
        try:
            async with self._lock:
                await asyncio.to_thread(self._attach, claim, pid)
        except BaseException:
            try:
                await asyncio.to_thread(self.runtime.kill, cid, signal.SIGKILL)
            except Exception as exc:
                log.warning("container %s: kill after a failed network attach: %s", cid[:12], exc)
            await self.release(task.id)
            raise
        return pid

    async def readopt(self, task: Task, pid: int) -> None:
        """A container that outlived a daemon restart gets its interfaces back."""
        interfaces = task_interfaces(task, self._view)
        if not interfaces or not pid:
            return
        claim = _claim(task, interfaces)
        try:
            async with self._lock:
                self._claims[task.id] = claim
                await asyncio.to_thread(self._ensure_claimed, claim)
                await asyncio.to_thread(self._attach, claim, pid)
        except Exception as exc:
            log.warning("task %s: re-attaching its networks failed: %s", task.id, exc)

    async def release(self, task_id: str) -> None:
        """The task's container ended: its interfaces go, and a network no task claims any more
        goes with them."""
        async with self._lock:
            claim = self._claims.pop(task_id, None)
            if claim is None:
                return
            try:
                await asyncio.to_thread(self._detach, claim)
                await asyncio.to_thread(self._sync)
            except Exception as exc:  # the sync loop tries again
                log.warning("task %s: releasing its networks: %s", task_id, exc)
                self._kick.set()

    # --- internals (worker thread, under the lock) ------------------------------------------

    async def _sync_loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            try:
                async with self._lock:
                    await asyncio.to_thread(self._sync)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if str(exc) != self._last_error:   # once per distinct error, not every retry
                    log.warning("overlay networks: %s (retrying)", exc)
                self._last_error = str(exc)
                await asyncio.sleep(1.0)
                self._kick.set()
            else:
                self._last_error = ""

    def _networks(self) -> NodeNetworks:
        if self._nn is None:
            errors = []
            for addr in dict.fromkeys(a for a in (self._view.node_addr, self.addr_hint) if a):
                try:
                    self._nn = self._factory(addr, self.prefix)
                    break
                except ValueError as exc:
                    errors.append(str(exc))
            if self._nn is None:
                raise overlay.OverlayError("node_addr: this node's underlay address is not known yet"
                                           + (f" ({'; '.join(errors)})" if errors else ""))
        return self._nn

    def _wanted(self) -> dict[str, NetworkSpec]:
        out: dict[str, NetworkSpec] = {}
        for claim in self._claims.values():
            for spec, _ in claim.interfaces:
                out.setdefault(spec.id, spec)
        for nid, (spec, node_ip) in self._view.networks.items():
            if spec.ingress and node_ip:
                out[nid] = spec
        return out

    def _ensure(self, nn: NodeNetworks, spec: NetworkSpec) -> None:
        if spec.id in nn.networks():   # made earlier: its spec never changes, only what is on it
            self._program(nn, spec.id)
            return
        node_ip = None
        if spec.ingress:
            known = self._view.networks.get(spec.id)
            node_ip = known[1] if known else None
            if not node_ip:
                raise overlay.OverlayError(f"network {spec.name}: this node has no address on the ingress "
                                           f"network yet")
        self._forget(spec.id)
        nn.ensure_network(spec, node_ip)
        self._program(nn, spec.id)

    def _ensure_claimed(self, claim: _Claim) -> None:
        nn = self._networks()
        self._apply_keys(nn)
        for spec, _ in claim.interfaces:
            self._ensure(nn, spec)

    def _program(self, nn: NodeNetworks, nid: str) -> None:
        """What the managers say of the network, if they said anything of it yet."""
        view = self._view
        if nid not in view.networks:
            return
        for kind, value, apply in (
                ("endpoints", view.endpoints.get(nid, ()), nn.set_remote_endpoints),
                ("dns", view.dns.get(nid, ()), nn.set_dns_records),
                ("vips", view.vips.get(nid, ()), nn.set_service_vips)):
            if self._applied.get((kind, nid)) != value:
                apply(nid, list(value))
                self._applied[(kind, nid)] = value

    def _apply_keys(self, nn: NodeNetworks) -> None:
        """Before any encrypted network needs them; kept when the managers say nothing of keys."""
        keys = self._view.keys
        if keys is not None and self._applied.get(("keys", "")) != keys:
            nn.set_encryption_keys(list(keys))
            self._applied[("keys", "")] = keys

    def _forget(self, nid: str) -> None:
        for key in [k for k in self._applied if k[1] == nid]:
            del self._applied[key]

    def _sync(self) -> None:
        wanted = self._wanted()
        if self._nn is None and not wanted:
            return
        nn = self._networks()
        errors: list[Exception] = []
        self._apply_keys(nn)
        for nid in set(nn.networks()) - set(wanted):
            try:
                nn.remove_network(nid)
            except Exception as exc:
                errors.append(exc)
            self._forget(nid)
        for spec in wanted.values():
            try:
                self._ensure(nn, spec)
            except Exception as exc:
                errors.append(exc)
        present = set(nn.networks())
        ports = tuple(p for p in self._view.ports if p.network_id in present and p.published_port)
        if self._applied.get(("ports", "")) != ports:
            try:
                nn.set_published_ports(list(ports))
                self._applied[("ports", "")] = ports
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _write_etc(self, claim: _Claim, cid: str) -> None:
        """resolv.conf and hosts of the container's bundle, bound over its /etc files at start."""
        bundle = Path(self.runtime.log_path(cid)).parent
        spec, addr = claim.interfaces[0]
        (bundle / "resolv.conf").write_text(resolv_conf(spec.gateway, claim.dns.search, claim.dns.options))
        hosts = bundle / "hosts"
        hostname_file = bundle / "hostname"
        if hosts.exists() and hostname_file.exists():
            hostname = hostname_file.read_text().strip()
            ip = ipaddress.IPv4Interface(addr).ip
            with open(hosts, "a") as f:
                f.write(f"{ip}\t{hostname}\n")

    def _attach(self, claim: _Claim, pid: int) -> None:
        nn = self._networks()
        done = []
        try:
            for i, (spec, addr) in enumerate(claim.interfaces):
                nn.attach(spec.id, pid, f"eth{i}", addr, default_route=i == 0,
                          dns_upstreams=list(claim.dns.nameservers) or None)
                done.append(spec.id)
        except BaseException:
            for nid in done:
                nn.detach(nid, pid)
            raise
        claim.pid = pid

    def _detach(self, claim: _Claim) -> None:
        if not claim.pid or self._nn is None:
            return
        for spec, _ in claim.interfaces:
            self._nn.detach(spec.id, claim.pid)
