"""Raft messages between managers: one websocket per peer over the cluster port's mutual TLS,
msgpack frames each carrying a batch of messages. Sending never blocks the Raft loop: a peer
that cannot keep up or cannot be reached loses messages, which Raft tolerates, and is reported
unreachable so the leader probes it gently."""
from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Callable

import aiohttp
import msgpack

from manager.raft.messages import Message

log = logging.getLogger("shoal.raft.transport")

QUEUE_LIMIT = 4096


class Peer:
    def __init__(self, transport: "RaftTransport", peer_id: str):
        self.transport = transport
        self.peer_id = peer_id
        self.queue: asyncio.Queue[list[dict]] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.task = asyncio.create_task(self._run(), name=f"raft-peer-{peer_id}")
        self.connected = False

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            addr = self.transport.address_of(self.peer_id)
            if not addr:
                await asyncio.sleep(0.2)
                continue
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=2)) as http:
                    async with http.ws_connect(f"https://{addr}/raft", ssl=self.transport.ssl_context(),
                                               heartbeat=None, max_msg_size=256 << 20) as ws:
                        self.connected = True
                        backoff = 0.05
                        while True:
                            batch = await self.queue.get()
                            while not self.queue.empty() and len(batch) < 1024:
                                batch.extend(self.queue.get_nowait())
                            await ws.send_bytes(msgpack.packb(batch, use_bin_type=True))
                            self.transport.last_contact[self.peer_id] = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                (log.info if self.connected else log.debug)(
                    "raft peer %s (%s) unreachable: %s", self.peer_id, addr, exc or type(exc).__name__)
                self.connected = False
                self.transport.unreachable(self.peer_id)
                # Drop what queued up meanwhile: stale Raft messages are worse than none.
                while not self.queue.empty():
                    self.queue.get_nowait()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.2)

    def send(self, wires: list[dict]) -> None:
        try:
            self.queue.put_nowait(wires)
        except asyncio.QueueFull:
            self.transport.unreachable(self.peer_id)

    def close(self) -> None:
        self.task.cancel()


class RaftTransport:
    def __init__(self, ssl_context: Callable[[], ssl.SSLContext], address_of: Callable[[str], str],
                 on_unreachable: Callable[[str], None]):
        self.ssl_context = ssl_context
        self.address_of = address_of
        self.on_unreachable = on_unreachable
        self.peers: dict[str, Peer] = {}
        self.last_contact: dict[str, float] = {}

    def send(self, messages: list[Message]) -> None:
        by_peer: dict[str, list[dict]] = {}
        for m in messages:
            by_peer.setdefault(m.to, []).append(m.to_wire())
        for peer_id, wires in by_peer.items():
            peer = self.peers.get(peer_id)
            if peer is None:
                peer = self.peers[peer_id] = Peer(self, peer_id)
            peer.send(wires)

    def unreachable(self, peer_id: str) -> None:
        try:
            self.on_unreachable(peer_id)
        except Exception:
            pass

    def heard_from(self, peer_id: str) -> None:
        self.last_contact[peer_id] = time.monotonic()

    def reachable(self, peer_id: str, within: float = 3.0) -> bool:
        last = self.last_contact.get(peer_id)
        return last is not None and time.monotonic() - last <= within

    def forget(self, peer_id: str) -> None:
        peer = self.peers.pop(peer_id, None)
        if peer:
            peer.close()

    def close(self) -> None:
        for p in self.peers.values():
            p.close()
        self.peers.clear()


def decode_batch(data: bytes) -> list[Message]:
    """A frame from a peer: a list of wire messages. Raises ValueError naming what is wrong."""
    try:
        obj = msgpack.unpackb(data, raw=False)
    except Exception:
        raise ValueError("raft frame: not valid msgpack") from None
    if not isinstance(obj, list):
        raise ValueError("raft frame: must be a list of messages")
    return [Message.from_wire(w) for w in obj]
