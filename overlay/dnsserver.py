"""The node's DNS server for containers: UDP and TCP on port 53 of each network's gateway
address, inside that network's namespace; an asyncio loop in a thread of its own.

How containers reach it: the gateway address lives on the bridge of the network namespace, so
a container's resolv.conf names it (`nameserver <gateway>`) and the query never leaves the
node. Docker's 127.0.0.11 needs a DNAT inside every container plus a socket in each container's
namespace; a listener per network namespace needs neither, and the source address of a query
tells which container asked, which gives each container its own view: the names of all the
networks it is attached to on this node, and of no other network.

Names the view does not know are relayed, as bytes, to the host's resolvers (read from
/etc/resolv.conf) from this process's own namespace, i.e. the host's. A container with name
servers of its own (the service's DNSConfig.Nameservers, Docker's --dns) has its unknown names
relayed to those instead, as Docker's embedded DNS does; they too are reached from the host's
namespace, so they must be reachable from the node.
"""
from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from overlay import dnsmsg, sh
from overlay.dnsnames import Records, lookup

DNS_PORT = 53


def host_resolvers(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    out = []
    try:
        for line in Path(path).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver" and ":" not in parts[1]:
                out.append((parts[1], DNS_PORT))
    except OSError:
        pass
    return out


@dataclass
class _Listener:
    udp: socket.socket
    tcp: socket.socket
    handles: list = field(default_factory=list)   # transports and servers, closed on removal


class DnsServer:
    def __init__(self, upstreams: list[tuple[str, int]] | None = None, timeout: float = 2.0, ttl: int = 0):
        self.upstreams = host_resolvers() if upstreams is None else list(upstreams)
        self.timeout = timeout
        # TTL 0 by default: a task that stops must vanish from the next lookup, not a cache's.
        self.ttl = ttl
        self._records: dict[str, Records] = {}
        self._members: dict[str, dict[str, tuple[str, ...]]] = {}
        self._own_upstreams: dict[str, dict[str, list[tuple[str, int]]]] = {}   # key -> source -> resolvers
        self._listeners: dict[str, _Listener] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread:
            return
        ready = threading.Event()

        def body() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=body, name="overlay-dns", daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self) -> None:
        for key in list(self._listeners):
            self.remove_listener(key)
        if self._thread and self._loop:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._thread = self._loop = None

    def _call(self, coro_fn, *args):
        assert self._loop is not None, "DnsServer.start() first"
        return asyncio.run_coroutine_threadsafe(coro_fn(*args), self._loop).result(10)

    # --- state -----------------------------------------------------------------------------
    def set_records(self, key: str, records: Records) -> None:
        self._records[key] = dict(records)   # replaced whole: the loop never sees half an update

    def set_members(self, key: str, members: dict[str, tuple[str, ...]]) -> None:
        """Source address on network key -> the networks whose names that container sees."""
        self._members[key] = dict(members)

    def set_upstreams(self, key: str, upstreams: dict[str, list[tuple[str, int]]]) -> None:
        """Source address on network key -> the resolvers of that container (when it has its own)."""
        self._own_upstreams[key] = {src: list(ups) for src, ups in upstreams.items()}

    def upstreams_for(self, key: str, source: str) -> list[tuple[str, int]]:
        return self._own_upstreams.get(key, {}).get(source) or self.upstreams

    def add_listener(self, key: str, netns: str | None, ip: str, port: int = DNS_PORT) -> None:
        if key in self._listeners:
            return

        def make() -> tuple[socket.socket, socket.socket]:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                u.bind((ip, port))
                t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                t.bind((ip, port))
                t.listen(64)
            except OSError:
                u.close()
                t.close()
                raise
            u.setblocking(False)
            t.setblocking(False)
            return u, t

        udp, tcp = sh.in_netns(netns, make)
        lst = _Listener(udp, tcp)
        try:
            self._call(self._serve, key, lst)
        except BaseException:
            udp.close()
            tcp.close()
            raise
        self._listeners[key] = lst

    def remove_listener(self, key: str) -> None:
        """Closes the sockets, so they no longer hold the network namespace alive."""
        lst = self._listeners.pop(key, None)
        self._records.pop(key, None)
        self._members.pop(key, None)
        self._own_upstreams.pop(key, None)
        if lst is None:
            return
        if self._loop:
            try:
                self._call(self._unserve, lst)
            except Exception:
                pass
        lst.udp.close()
        lst.tcp.close()

    # --- answering -------------------------------------------------------------------------
    def answer_local(self, key: str, source: str, data: bytes) -> bytes | None:
        """The reply for a query from source on network key, or None to relay it upstream."""
        try:
            q = dnsmsg.parse_query(data)
        except dnsmsg.DnsFormatError:
            return dnsmsg.error_response(data, dnsmsg.RCODE_FORMERR)
        views = [self._records.get(k, {}) for k in self._members.get(key, {}).get(source, (key,))]
        found = lookup(q.name, views)
        if found is None:
            return None
        if q.qtype in (dnsmsg.TYPE_A, dnsmsg.TYPE_ANY) and q.qclass == dnsmsg.CLASS_IN:
            ips = list(found)
            random.shuffle(ips)   # dnsrr: spread clients that take the first address
            return dnsmsg.response(q, ips, ttl=self.ttl)
        return dnsmsg.response(q, [], ttl=self.ttl)   # the name exists, without that record type

    async def _resolve(self, key: str, source: str, data: bytes, tcp: bool) -> bytes | None:
        local = self.answer_local(key, source, data)
        if local is not None:
            return local
        for host, port in self.upstreams_for(key, source):
            try:
                if tcp:
                    return await asyncio.wait_for(_relay_tcp(host, port, data), self.timeout)
                return await asyncio.wait_for(_relay_udp(host, port, data), self.timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                continue
        return dnsmsg.error_response(data, dnsmsg.RCODE_SERVFAIL)

    async def _serve(self, key: str, lst: _Listener) -> None:
        loop = asyncio.get_running_loop()
        server = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                async def reply():
                    out = await server._resolve(key, addr[0], data, tcp=False)
                    if out is not None and not self.transport.is_closing():
                        self.transport.sendto(out, addr)
                loop.create_task(reply())

        async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername")[0]
            try:
                while True:
                    (n,) = struct.unpack("!H", await reader.readexactly(2))
                    out = await server._resolve(key, peer, await reader.readexactly(n), tcp=True)
                    if out is None:
                        break
                    writer.write(struct.pack("!H", len(out)) + out)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        transport, _ = await loop.create_datagram_endpoint(Udp, sock=lst.udp)
        srv = await asyncio.start_server(on_tcp, sock=lst.tcp)
        lst.handles += [transport, srv]

    async def _unserve(self, lst: _Listener) -> None:
        for h in lst.handles:
            h.close()
        await asyncio.sleep(0)


async def _relay_udp(host: str, port: int, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    qid = data[:2]

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, reply, addr):
            if reply[:2] == qid and not done.done():
                done.set_result(reply)

        def error_received(self, exc):
            if not done.done():
                done.set_exception(exc)

    transport, _ = await loop.create_datagram_endpoint(P, remote_addr=(host, port))
    try:
        transport.sendto(data)
        return await done
    finally:
        transport.close()


async def _relay_tcp(host: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        (n,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(n)
    finally:
        writer.close()
