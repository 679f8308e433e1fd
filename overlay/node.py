"""NodeNetworks: everything one node does for its overlay networks, driven by the values the
worker agent receives from the managers.

Per network, as Docker's overlay driver does it: a namespace `<prefix>-ov-<id>` holding a
bridge br0 (with the gateway address, where the node's DNS server listens), a VXLAN device
vxlan0 (its UDP socket in the underlay, `local <node_addr>`, no learning, ARP proxy) and gw0,
a veth link to the underlay for egress and published ports. Each container gets a veth from
br0 into its own namespace. Remote endpoints are static FDB and neighbour entries.

All methods are synchronous and serialised by a lock; an asyncio caller wraps them in
`asyncio.to_thread`. Every kernel object is named from `prefix`, so close() and purge() find it.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from overlay import names, nftrules, peers, sh
from overlay.dnsnames import service_records
from overlay.dnsserver import DNS_PORT, DnsServer
from overlay.model import (ESP_OVERHEAD, VXLAN_OVERHEAD, VXLAN_PORT, EncryptionKey, Endpoint, NetworkSpec,
                           PublishedPort, ServiceDNS, ServiceVIP, mac_for_ip, normalize_mac)
from overlay.sh import OverlayError

DEFAULT_LINK_POOL = "169.254.0.0/17"   # clear of 169.254.169.254, the cloud metadata address


@dataclass
class _Attachment:
    network_id: str
    pid: int
    ifname: str
    ip: str            # with prefix length
    mac: str
    host_if: str
    vip_table: bool = False
    dns_upstreams: tuple[tuple[str, int], ...] = ()   # the container's own resolvers, if it has any

    @property
    def address(self) -> str:
        return self.ip.split("/")[0]


@dataclass
class _Network:
    spec: NetworkSpec
    ns: str
    mtu: int
    link_index: int
    node_ip: str | None
    peers: dict[str, peers.Peer] = field(default_factory=dict)
    vips: list[ServiceVIP] = field(default_factory=list)
    attachments: dict[int, _Attachment] = field(default_factory=dict)   # by container pid


def _upstreams(addresses: list[str]) -> tuple[tuple[str, int], ...]:
    out = []
    for a in addresses:
        try:
            out.append((str(ipaddress.ip_address(a)), DNS_PORT))
        except ValueError:
            raise ValueError(f"dns_upstreams: {a!r} is not an IP address") from None
    return tuple(out)


class NodeNetworks:
    def __init__(self, node_addr: str, prefix: str = "shl", run_dir: Path | str | None = None, *,
                 underlay_netns: str | None = None, dns_upstreams: list[tuple[str, int]] | None = None,
                 link_pool: str = DEFAULT_LINK_POOL):
        """underlay_netns: the name of the namespace holding node_addr, or None for this
        process's own (a real node). dns_upstreams: where unknown names go (default: the
        nameservers of /etc/resolv.conf). run_dir: kept for the caller's layout; nothing is
        written there (keys in particular never touch the disk) and no state survives the
        process: after a restart, purge(prefix) and program the node again."""
        if not prefix or not all(c.isalnum() or c in "-_" for c in prefix) or len(prefix) > 40:
            raise ValueError(f"prefix: {prefix!r} must be 1-40 letters, digits, '-' or '_'")
        try:
            self.node_addr = str(ipaddress.IPv4Address(node_addr))
        except ValueError:
            raise ValueError(f"node_addr: {node_addr!r} is not an IPv4 address") from None
        self.prefix = prefix
        self.run_dir = Path(run_dir) if run_dir else None
        self.underlay = sh.named(underlay_netns) if underlay_netns else None
        self.link_pool = ipaddress.IPv4Network(link_pool)
        self._lock = threading.RLock()
        self._networks: dict[str, _Network] = {}
        self._ports: list[PublishedPort] = []
        self._keys: list[EncryptionKey] = []
        self._espd: subprocess.Popen | None = None
        self._dns = DnsServer(dns_upstreams)
        self._dns_started = False
        self._underlay_mtu = self._find_underlay_mtu()

    # ------------------------------------------------------------------ networks
    def ensure_network(self, spec: NetworkSpec, node_ip: str | None = None) -> None:
        """Create the network's namespace and devices, or nothing if it is already there.
        node_ip: for the ingress network only, this node's own address on it (unique per
        node, allocated by the managers; other nodes learn it as an Endpoint with MAC
        mac_for_ip(node_ip)): published-port connections leave this node from it."""
        with self._lock:
            if spec.ingress and not node_ip:
                raise ValueError(f"node_ip: the ingress network {spec.id} needs this node's address on it")
            if node_ip is not None:
                addr = ipaddress.IPv4Interface(node_ip if "/" in node_ip else f"{node_ip}/{spec.network.prefixlen}")
                if addr.ip not in spec.network or str(addr.ip) == spec.gateway:
                    raise ValueError(f"node_ip: {node_ip} is not a free host address of {spec.subnet}")
                node_ip = f"{addr.ip}/{spec.network.prefixlen}"
            have = self._networks.get(spec.id)
            if have:
                if (have.spec, have.node_ip) != (spec, node_ip):
                    raise ValueError(f"network.id: {spec.id} exists with another spec; remove it first")
                return
            for other in self._networks.values():
                if other.spec.vni == spec.vni:
                    raise ValueError(f"network.vni: {spec.vni} is already used by network {other.spec.id}")
                if other.spec.network.overlaps(spec.network):
                    raise ValueError(f"network.subnet: {spec.subnet} overlaps network {other.spec.id}")
            mtu = spec.mtu or self._underlay_mtu - VXLAN_OVERHEAD - (ESP_OVERHEAD if spec.encrypted else 0)
            used = {n.link_index for n in self._networks.values()}
            index = next(i for i in range(len(used) + 1) if i not in used)
            if (index + 2) * 4 > self.link_pool.num_addresses:   # the last /30 is the ESP device's
                raise OverlayError(f"link_pool: {self.link_pool} has no room for another network")
            net = _Network(spec, names.netns(self.prefix, spec.id), mtu, index, node_ip)
            self._networks[spec.id] = net
            try:
                self._build_network(net)
                if spec.encrypted:
                    self._ensure_espd()
                self._apply_underlay()
            except BaseException:
                self._teardown_network(net)
                del self._networks[spec.id]
                raise

    def remove_network(self, network_id: str) -> None:
        """Remove the network from this node; its containers lose their interface on it."""
        with self._lock:
            net = self._networks.pop(network_id, None)
            if net is None:
                return
            self._ports = [p for p in self._ports if p.network_id != network_id]
            try:
                self._teardown_network(net)
            finally:
                self._apply_underlay()
                if not any(n.spec.encrypted for n in self._networks.values()):
                    self._stop_espd()

    def networks(self) -> list[str]:
        with self._lock:
            return list(self._networks)

    def network_namespace(self, network_id: str) -> str:
        return self._net(network_id).ns

    def mtu(self, network_id: str) -> int:
        return self._net(network_id).mtu

    def resolver(self, network_id: str) -> str:
        """The nameserver address for the resolv.conf of a container whose first network this is."""
        return self._net(network_id).spec.gateway

    # ------------------------------------------------------------------ containers
    def attach(self, network_id: str, container_pid: int, ifname: str, ip: str, mac: str | None = None,
               default_route: bool = False, dns_upstreams: list[str] | None = None) -> str:
        """Give the container (any process in its network namespace) an interface ifname on the
        network with ip (a.b.c.d/n) and mac (default: derived from ip). Returns the mac.
        dns_upstreams: the container's own name servers (Docker's --dns): the names the node's
        DNS server does not know, asked from this address, go to them instead of the host's."""
        with self._lock:
            net = self._net(network_id)
            spec = net.spec
            iface = ipaddress.IPv4Interface(ip if "/" in ip else f"{ip}/{spec.network.prefixlen}")
            if iface.network != spec.network or str(iface.ip) in (spec.gateway, (net.node_ip or "/").split("/")[0]):
                raise ValueError(f"ip: {ip} is not a free host address of {spec.subnet}")
            if not ifname or len(ifname) > 15 or "/" in ifname:
                raise ValueError(f"ifname: {ifname!r} is not an interface name (1-15 characters)")
            if not os.path.exists(sh.of_pid(container_pid)):
                raise ValueError(f"container_pid: no process {container_pid}")
            if container_pid in net.attachments:
                raise ValueError(f"container_pid: {container_pid} is already attached to {network_id}")
            mac = normalize_mac("mac", mac or mac_for_ip(str(iface.ip)))
            key = str(container_pid)
            host_if, tmp = names.veth_host(network_id, key, ifname), names.veth_tmp(network_id, key, ifname)
            upstreams = _upstreams(dns_upstreams or [])
            att = _Attachment(network_id, container_pid, ifname, str(iface), mac, host_if, dns_upstreams=upstreams)
            cns = sh.of_pid(container_pid)
            sh.run(["ip", "-n", net.ns, "link", "add", host_if, "mtu", str(net.mtu), "type", "veth",
                    "peer", "name", tmp, "netns", str(container_pid)], what=f"attach {network_id}: veth")
            try:
                sh.batch("ip", [f"link set {host_if} master {names.BRIDGE} up"], sh.named(net.ns))
                lines = ["link set lo up", f"link set {tmp} name {ifname}",
                         f"link set {ifname} address {mac} mtu {net.mtu}",
                         f"addr add {iface} dev {ifname}", f"link set {ifname} up"]
                if default_route:
                    lines.append(f"route replace default via {spec.gateway} dev {ifname}")
                sh.batch("ip", lines, cns, what=f"attach {network_id}: container side")
                net.attachments[container_pid] = att
                if net.vips:
                    self._apply_vips_in(net, att)
            except BaseException:
                net.attachments.pop(container_pid, None)
                sh.run(["ip", "-n", net.ns, "link", "del", host_if], check=False)
                raise
            self._update_dns_members()
            return mac

    def detach(self, network_id: str, container_pid: int) -> None:
        with self._lock:
            net = self._networks.get(network_id)
            att = net.attachments.pop(container_pid, None) if net else None
            if att is None:
                return
            sh.run(["ip", "-n", net.ns, "link", "del", att.host_if], check=False)   # takes the peer along
            if att.vip_table and os.path.exists(sh.of_pid(att.pid)):
                sh.nft(nftrules.delete_table(names.nft_container_table(self.prefix, network_id)),
                       sh.of_pid(att.pid))
            self._update_dns_members()

    def attachments(self, network_id: str) -> dict[int, str]:
        """pid -> address of the containers attached to the network on this node."""
        return {pid: a.address for pid, a in self._net(network_id).attachments.items()}

    # ------------------------------------------------------------------ control plane input
    def set_remote_endpoints(self, network_id: str, endpoints: list[Endpoint]) -> None:
        """The full list of the network's endpoints (local ones are skipped). Programs only the
        difference from the previous call, so calling it again with the same list does nothing."""
        with self._lock:
            net = self._net(network_id)
            want = peers.desired(endpoints, network_id, self.node_addr)
            ip_lines, br_lines = peers.diff(net.peers, want, names.VXLAN)
            ns = sh.named(net.ns)
            removals = [line for line in br_lines if line.startswith("fdb del")]
            additions = [line for line in br_lines if not line.startswith("fdb del")]
            sh.batch("bridge", removals, ns, what=f"endpoints of {network_id}: fdb")
            sh.batch("ip", ip_lines, ns, what=f"endpoints of {network_id}: neighbours")
            sh.batch("bridge", additions, ns, what=f"endpoints of {network_id}: fdb")
            net.peers = want

    def set_dns_records(self, network_id: str, services: list[ServiceDNS]) -> None:
        """All the services with tasks on the network (names seen by its containers)."""
        with self._lock:
            self._net(network_id)
            self._dns.set_records(network_id, service_records(services))

    def set_service_vips(self, network_id: str, vips: list[ServiceVIP]) -> None:
        """All the VIPs of the network with their current healthy backends."""
        with self._lock:
            net = self._net(network_id)
            for i, v in enumerate(vips):
                if v.network_id != network_id:
                    raise ValueError(f"vips[{i}].network_id: {v.network_id!r} is not network {network_id!r}")
            net.vips = list(vips)
            for att in net.attachments.values():
                self._apply_vips_in(net, att)

    def set_published_ports(self, ports: list[PublishedPort]) -> None:
        """All the ports published on this node: mode ingress (every node, for the swarm's
        services) and mode host (the tasks on this node)."""
        with self._lock:
            seen: dict[tuple[str, int], int] = {}
            for i, p in enumerate(ports):
                net = self._networks.get(p.network_id)
                if net is None:
                    raise ValueError(f"ports[{i}].network_id: {p.network_id!r} is not a network of this node")
                if p.mode == "ingress" and not net.spec.ingress:
                    raise ValueError(f"ports[{i}].network_id: {p.network_id} is not the ingress network")
                k = (p.protocol, p.published_port)
                if k in seen:
                    raise ValueError(f"ports[{i}].published_port: {p.protocol}/{p.published_port} "
                                     f"is already published by ports[{seen[k]}]")
                seen[k] = i
            self._ports = list(ports)
            for net in self._networks.values():
                self._apply_netns_nft(net)
            self._apply_underlay()

    def set_encryption_keys(self, keys: list[EncryptionKey]) -> None:
        """keys[0] encrypts; all decrypt. Rotation: add the new key everywhere, then make it
        first everywhere, then drop the old one. With no key, encrypted networks send nothing."""
        with self._lock:
            ids = [k.key_id for k in keys]
            if len(set(ids)) != len(ids):
                raise ValueError("keys: key_id values must be distinct")
            self._keys = list(keys)
            if self._espd:
                self._send_keys()

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Remove everything this node made; safe to call twice."""
        with self._lock:
            errors = []
            for nid in list(self._networks):
                try:
                    self.remove_network(nid)
                except Exception as exc:
                    errors.append(exc)
            self._stop_espd()
            if self._dns_started:
                self._dns.stop()
                self._dns_started = False
            try:
                sh.nft(nftrules.delete_table(names.nft_table(self.prefix)), self.underlay)
            except OverlayError as exc:
                errors.append(exc)
            purge(self.prefix, self.underlay)
            if errors:
                raise errors[0]

    # ------------------------------------------------------------------ internals
    def _net(self, network_id: str) -> _Network:
        net = self._networks.get(network_id)
        if net is None:
            raise ValueError(f"network_id: {network_id!r} is not a network of this node")
        return net

    def _find_underlay_mtu(self) -> int:
        out = sh.run(["ip", "-j", "addr", "show"], self.underlay, what="underlay addresses").stdout
        for link in json.loads(out):
            if any(a.get("local") == self.node_addr for a in link.get("addr_info", [])):
                return int(link["mtu"])
        raise ValueError(f"node_addr: {self.node_addr} is not an address of this node")

    def _link_addrs(self, net: _Network) -> tuple[str, str]:
        base = self.link_pool.network_address + 4 * net.link_index
        return str(base + 1), str(base + 2)    # underlay end, namespace end (a /30)

    def _build_network(self, net: _Network) -> None:
        spec, ns = net.spec, net.ns
        nsp = sh.named(ns)
        if sh.netns_exists(ns):   # left by an earlier process of this node: start clean
            sh.run(["ip", "link", "del", names.gw_outer(self.prefix, spec.id)], self.underlay, check=False)
            sh.netns_del(ns)
        sh.netns_add(ns)
        sh.sysctl(nsp, "net.ipv4.ip_forward", "1")
        # Bridged frames must not go through this namespace's IP firewall (the forward
        # policy there is drop); only routed traffic, via gw0, is filtered.
        for key in ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-arptables"):
            if os.path.exists("/proc/sys/" + key.replace(".", "/")):
                sh.sysctl(nsp, key, "0")
        lines = [f"link add {names.BRIDGE} mtu {net.mtu} type bridge",
                 f"addr add {spec.gateway_cidr} dev {names.BRIDGE}"]
        if net.node_ip:
            lines += [f"link set {names.BRIDGE} address {mac_for_ip(net.node_ip)}",
                      f"addr add {net.node_ip} dev {names.BRIDGE}"]
        sh.batch("ip", lines, nsp, what=f"network {spec.id}: bridge")
        # Made from the underlay straight into the namespace: the device lives there, its UDP
        # socket stays in the underlay, and nothing appears in the underlay's link list.
        sh.run(["ip", "link", "add", names.VXLAN, "netns", ns, "type", "vxlan", "id", str(spec.vni),
                "dstport", str(VXLAN_PORT), "local", self.node_addr, "nolearning", "proxy"],
               self.underlay, what=f"network {spec.id}: vxlan")
        outer, inner = self._link_addrs(net)
        gw_out = names.gw_outer(self.prefix, spec.id)
        sh.run(["ip", "link", "add", gw_out, "type", "veth", "peer", "name", names.GW_INNER, "netns", ns],
               self.underlay, what=f"network {spec.id}: link to the underlay")
        sh.batch("ip", [f"addr add {outer}/30 dev {gw_out}", f"link set {gw_out} up"], self.underlay)
        sh.batch("ip", [f"link set {names.VXLAN} mtu {net.mtu} master {names.BRIDGE} up",
                        f"link set {names.BRIDGE} up",
                        f"addr add {inner}/30 dev {names.GW_INNER}", f"link set {names.GW_INNER} up",
                        f"route add default via {outer} dev {names.GW_INNER}"], nsp,
                 what=f"network {spec.id}: devices")
        sh.sysctl(self.underlay, "net.ipv4.ip_forward", "1")
        self._apply_netns_nft(net)
        if not self._dns_started:
            self._dns.start()
            self._dns_started = True
        self._dns.add_listener(spec.id, nsp, spec.gateway)
        self._update_dns_members()

    def _teardown_network(self, net: _Network) -> None:
        doomed = []
        for pid in list(net.attachments):
            att = net.attachments.pop(pid)
            doomed.append(f"link del {att.host_if}")
            if att.vip_table and os.path.exists(sh.of_pid(pid)):
                sh.nft(nftrules.delete_table(names.nft_container_table(self.prefix, net.spec.id)),
                       sh.of_pid(pid))
        # The DNS sockets hold the namespace alive: close them before deleting it.
        self._dns.remove_listener(net.spec.id)
        self._update_dns_members()
        # A namespace is destroyed asynchronously once unmounted; deleting its devices first
        # makes the containers' interfaces and the VXLAN socket go before this returns.
        if sh.netns_exists(net.ns):
            doomed += [f"link del {names.GW_INNER}", f"link del {names.VXLAN}", f"link del {names.BRIDGE}"]
            sh.run(["ip", "-force", "-batch", "-"], sh.named(net.ns), input="\n".join(doomed) + "\n", check=False)
        sh.run(["ip", "link", "del", names.gw_outer(self.prefix, net.spec.id)], self.underlay, check=False)
        sh.netns_del(net.ns)

    def _apply_netns_nft(self, net: _Network) -> None:
        state = nftrules.NetnsNat(
            egress=not net.spec.internal,
            snat_to=(net.node_ip or net.spec.gateway).split("/")[0],
            ports=tuple(p for p in self._ports if p.network_id == net.spec.id))
        sh.nft(nftrules.network_namespace(names.nft_table(self.prefix), names.BRIDGE, names.GW_INNER, state),
               sh.named(net.ns), what=f"network {net.spec.id}: nftables")

    def _apply_underlay(self) -> None:
        published = tuple((p.protocol, p.published_port, self._link_addrs(self._networks[p.network_id])[1])
                          for p in self._ports if p.network_id in self._networks)
        state = nftrules.UnderlayState(
            link_pool=str(self.link_pool), link_glob=names.gw_outer_glob(self.prefix), published=published,
            encrypted_vnis=tuple(n.spec.vni for n in self._networks.values() if n.spec.encrypted),
            esp_device=names.tun(self.prefix), esp_mark=names.fwmark(self.prefix))
        if not self._networks:
            sh.nft(nftrules.delete_table(names.nft_table(self.prefix)), self.underlay)
            return
        sh.nft(nftrules.underlay(names.nft_table(self.prefix), state), self.underlay, what="underlay nftables")

    def _apply_vips_in(self, net: _Network, att: _Attachment) -> None:
        table = names.nft_container_table(self.prefix, net.spec.id)
        sh.nft(nftrules.container_vips(table, net.vips), sh.of_pid(att.pid),
               what=f"VIPs of {net.spec.id} in container {att.pid}")
        att.vip_table = True

    def _update_dns_members(self) -> None:
        by_pid: dict[int, list[str]] = {}
        for nid, net in self._networks.items():
            for pid in net.attachments:
                by_pid.setdefault(pid, []).append(nid)
        for nid, net in self._networks.items():
            self._dns.set_members(nid, {
                att.address: (nid, *[o for o in by_pid[pid] if o != nid])
                for pid, att in net.attachments.items()})
            self._dns.set_upstreams(nid, {
                att.address: list(att.dns_upstreams) for att in net.attachments.values() if att.dns_upstreams})

    # --- encryption ---------------------------------------------------------------------------
    def _ensure_espd(self) -> None:
        if self._espd and self._espd.poll() is None:
            return
        tun = names.tun(self.prefix)
        preexec = (lambda: sh.enter(self.underlay)) if self.underlay else None
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen([sys.executable, "-m", "overlay.espd", tun, self.node_addr, str(self._underlay_mtu)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=preexec,
                                env=env, start_new_session=True)
        self._espd = proc
        if proc.stdout.readline().strip() != "ready":
            self._stop_espd()
            raise OverlayError("encryption: the ESP engine did not start")
        mark, table = names.fwmark(self.prefix), names.route_table(self.prefix)
        # An address, any: reverse-path filtering in loose mode (the usual host setting) drops
        # every packet that comes in on a device without one.
        esp_addr = self.link_pool.broadcast_address - 1
        sh.batch("ip", [f"addr replace {esp_addr}/32 dev {tun}", f"link set {tun} up mtu {self._underlay_mtu}",
                        f"route replace default dev {tun} table {table}"], self.underlay, what="encryption: device")
        sh.run(["ip", "rule", "del", "fwmark", hex(mark), "lookup", str(table)], self.underlay, check=False)
        sh.run(["ip", "rule", "add", "fwmark", hex(mark), "lookup", str(table), "pref", "100"], self.underlay,
               what="encryption: rule")
        # Decrypted datagrams come in on the TUN device from a peer routed elsewhere.
        sh.sysctl(self.underlay, f"net.ipv4.conf.{tun}.rp_filter", "2")
        self._send_keys()

    def _send_keys(self) -> None:
        assert self._espd and self._espd.stdin and self._espd.stdout
        self._espd.stdin.write(json.dumps({"keys": [[k.key_id, k.key.hex()] for k in self._keys]}) + "\n")
        self._espd.stdin.flush()
        if self._espd.stdout.readline().strip() != "ok":
            raise OverlayError("encryption: the ESP engine refused the keys")

    def _stop_espd(self) -> None:
        proc, self._espd = self._espd, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(3)
        except (subprocess.TimeoutExpired, OSError):
            proc.kill()
            proc.wait(3)
        mark, table = names.fwmark(self.prefix), names.route_table(self.prefix)
        sh.run(["ip", "rule", "del", "fwmark", hex(mark), "lookup", str(table)], self.underlay, check=False)
        sh.run(["ip", "route", "flush", "table", str(table)], self.underlay, check=False)


def purge(prefix: str, underlay: str | None = None) -> list[str]:
    """Remove whatever a NodeNetworks with this prefix left (after a crash): its network
    namespaces, its links and nftables table in the underlay (a nsfs path, None for this
    process's namespace). Returns what it removed."""
    removed = []
    for ns in sorted(os.listdir(sh.NETNS_DIR)) if sh.NETNS_DIR.exists() else []:
        if ns.startswith(names.netns_prefix(prefix)):
            sh.netns_del(ns)
            removed.append(f"netns {ns}")
    out = sh.run(["ip", "-o", "link", "show"], underlay, check=False).stdout
    tag = names.tag(prefix)
    for line in out.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(tag):
            sh.run(["ip", "link", "del", name], underlay, check=False)
            removed.append(f"link {name}")
    table = names.nft_table(prefix)
    if sh.run(["nft", "list", "table", "ip", table], underlay, check=False).returncode == 0:
        sh.nft(nftrules.delete_table(table), underlay)
        removed.append(f"nft table {table}")
    mark, rt = names.fwmark(prefix), names.route_table(prefix)
    while sh.run(["ip", "rule", "del", "fwmark", hex(mark), "lookup", str(rt)], underlay, check=False).returncode == 0:
        removed.append(f"rule fwmark {mark:#x}")
    sh.run(["ip", "route", "flush", "table", str(rt)], underlay, check=False)
    return removed
