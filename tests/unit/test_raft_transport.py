"""The Raft transport's writes: at once when the connection takes them, queued when it is congested."""
from __future__ import annotations

import asyncio

import msgpack

from manager.raft.transport import Peer, RaftTransport


class FakeWS:
    def __init__(self):
        self.frames: list[list] = []
        self.congested: asyncio.Future | None = None

    async def send_bytes(self, data: bytes) -> None:
        self.frames.append(msgpack.unpackb(data))  # written before any wait, as aiohttp does
        if self.congested is not None:
            await self.congested  # flow control: wait for the connection to drain


def test_writes_go_out_at_once_and_queue_behind_a_congested_connection():
    async def main():
        transport = RaftTransport(lambda: None, lambda peer: "", lambda peer: None)
        peer = transport.peers["b"] = Peer(transport, "b")
        ws = FakeWS()
        peer._ws = ws
        peer.send([{"n": 1}])
        assert ws.frames == [[{"n": 1}]]  # synchronously, no event-loop round needed
        ws.congested = asyncio.get_running_loop().create_future()
        peer.send([{"n": 2}])
        assert ws.frames[-1] == [{"n": 2}] and peer._waiting == 1
        drained, ws.congested = ws.congested, None
        peer.send([{"n": 3}])  # behind the congested write: queued for the peer's task
        assert len(ws.frames) == 2 and peer.queue.qsize() == 1
        drained.set_result(None)
        await asyncio.sleep(0.01)
        assert peer._waiting == 0  # the wait was finished by a task
        # (the task itself is not connected in this test; the queued batch waits for it)
        peer._ws = None
        transport.close()

    asyncio.run(main())
