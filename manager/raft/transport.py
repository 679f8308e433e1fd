"""Raft messages between managers: one websocket per peer over the cluster port's mutual TLS,
msgpack frames each carrying a batch of messages. Sending never blocks the Raft loop: a frame
is written to the connection at once when it takes it without waiting, else queued for the
peer's task; a peer that cannot keep up or cannot be reached loses messages, which Raft
tolerates, and is reported unreachable so the leader probes it gently."""
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
# Reconnection attempts to a peer that is down: a restarted manager is reached within
# MAX_BACKOFF_S of listening again (its catch-up time counts from its restart).
MIN_BACKOFF_S = 0.02
MAX_BACKOFF_S = 0.05


class Peer:
    def __init__(self, transport: "RaftTransport", peer_id: str):
        self.transport = transport
        self.peer_id = peer_id
        self.queue: asyncio.Queue[list[dict]] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.task = asyncio.create_task(self._run(), name=f"raft-peer-{peer_id}")
        self.connected = False
        self._ws = None  # the open connection, for writes without the task (see `send`)
        self._waiting = 0  # writes waiting for the connection to drain

    async def _run(self) -> None:
        # One session for every attempt: a refused connection then costs little.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=2)) as http:
            backoff = MIN_BACKOFF_S
            while True:
                addr = self.transport.address_of(self.peer_id)
                if not addr:
                    await asyncio.sleep(0.2)
                    continue
                try:
                    async with http.ws_connect(f"https://{addr}/raft", ssl=self.transport.ssl_context(),
                                               heartbeat=None, max_msg_size=256 << 20) as ws:
                        self.connected = True
                        backoff = MIN_BACKOFF_S
                        self._ws = ws
                        self.transport.connected(self.peer_id)
                        try:
                            await self._send_loop(ws)
                        finally:
                            self._ws = None
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
                    backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _send_loop(self, ws) -> None:
        while True:
            batch = await self.queue.get()
            while not self.queue.empty() and len(batch) < 1024:
                batch.extend(self.queue.get_nowait())
            self._waiting += 1
            try:
                await ws.send_bytes(msgpack.packb(batch, use_bin_type=True))
            finally:
                self._waiting -= 1
            self.transport.last_contact[self.peer_id] = time.monotonic()

    def send(self, wires: list[dict]) -> None:
        ws = self._ws
        if ws is not None and not self._waiting and self.queue.empty():
            # Written here and now rather than by the task: under load an event-loop round is
            # long, and a Raft round trip (append, acknowledgement) would wait for the task's
            # turn at each end.
            try:
                self._write_now(ws, msgpack.packb(wires, use_bin_type=True))
                self.transport.last_contact[self.peer_id] = time.monotonic()
                return
            except Exception:  # the connection broke: the task finds out and reconnects
                pass
        try:
            self.queue.put_nowait(wires)
        except asyncio.QueueFull:
            self.transport.unreachable(self.peer_id)

    def _write_now(self, ws, data: bytes) -> None:
        """`await ws.send_bytes(data)` without awaiting when it need not wait. It writes the frame
        at once and waits only when the connection is congested (flow control): that wait is then
        left to a task, and the writes after it queue for the peer's task meanwhile."""
        coro = ws.send_bytes(data)
        try:
            awaited = coro.send(None)
        except StopIteration:
            return
        self._waiting += 1
        task = asyncio.ensure_future(_finish(coro, awaited))
        task.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Future) -> None:
        self._waiting -= 1
        if not task.cancelled() and task.exception() is not None:
            log.debug("raft peer %s: write failed: %s", self.peer_id, task.exception())

    def close(self) -> None:
        self.task.cancel()


class RaftTransport:
    def __init__(self, ssl_context: Callable[[], ssl.SSLContext], address_of: Callable[[str], str],
                 on_unreachable: Callable[[str], None], on_connected: Callable[[str], None] = lambda peer: None):
        self.ssl_context = ssl_context
        self.address_of = address_of
        self.on_unreachable = on_unreachable
        self.on_connected = on_connected
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

    def connected(self, peer_id: str) -> None:
        try:
            self.on_connected(peer_id)
        except Exception:
            log.exception("raft peer %s: connection callback failed", peer_id)

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


async def _finish(coro, awaited) -> None:
    """Run a coroutine that was started by hand (`coro.send(None)` gave `awaited`) to its end,
    as a task would have: wait for what it awaits, then resume it."""
    while True:
        if awaited is None:  # a bare yield (asyncio.sleep(0))
            await asyncio.sleep(0)
        else:
            await asyncio.wait([awaited])
        try:
            awaited = coro.send(None)
        except StopIteration:
            return


def decode_batch(data: bytes) -> list[Message]:
    """A frame from a peer: a list of wire messages. Raises ValueError naming what is wrong."""
    try:
        obj = msgpack.unpackb(data, raw=False)
    except Exception:
        raise ValueError("raft frame: not valid msgpack") from None
    if not isinstance(obj, list):
        raise ValueError("raft frame: must be a list of messages")
    return [Message.from_wire(w) for w in obj]
