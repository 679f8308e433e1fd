"""The Raft runner's storage writes: inline while fast, in a thread once slow, and back."""
from __future__ import annotations

import asyncio
import threading
import time

from manager.raft import persist
from manager.raft.persist import Persister


def test_fast_writes_inline_slow_ones_in_a_thread_and_back():
    async def main():
        p = Persister()
        threads: list[str] = []

        def write(delay: float) -> None:
            threads.append(threading.current_thread().name)
            time.sleep(delay)

        for _ in range(3):
            await p.run(write, 0.0)
        assert set(threads) == {threading.current_thread().name} and not p.threaded
        for _ in range(20):  # slow writes move to the thread once the average is above SLOW_S
            await p.run(write, 2 * persist.SLOW_S)
        assert p.threaded and threads[-1].startswith("raft-wal")
        for _ in range(40):
            await p.run(write, 0.0)
        assert not p.threaded and threads[-1] == threading.current_thread().name
        p.close()

    asyncio.run(main())
