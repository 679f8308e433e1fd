"""Runs the Raft storage writes (WAL append + fsync) for the runner, inline or in a thread.

Handing each Ready's write to a thread (`asyncio.to_thread`) costs more CPU than the write
itself on a fast disk (measured here: ~90 µs of thread handoff around a ~50 µs append with a
~0.1 ms fdatasync), and every manager does it for every batch of entries. So while the
writes are fast they run inline, blocking the event loop for as long as the fsync takes
(meanwhile the other processes on the machine get the CPU). A slow disk (an fsync of
milliseconds) would stall the loop for too long, so once writes get slow they go to a
dedicated thread, and come back inline when they are fast again. (Under the benchmark's write
load the three managers' fsyncs queue in one journal and take ~0.8 ms; a lower threshold that
sends those to the thread measured no better within the noise, and costs CPU per write.)
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

# Switch to the thread above this average write time, back inline below the lower mark
# (hysteresis, so one slow fsync does not flip the mode back and forth).
SLOW_S = 0.005
FAST_S = 0.002
_WEIGHT = 0.2  # of the newest sample in the moving average


class Persister:
    def __init__(self) -> None:
        self.average_s = 0.0
        self.threaded = False
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, write: Callable[..., None], *args) -> None:
        """`write(*args)`, durable when this returns."""
        if not self.threaded:
            self.run_inline(write, *args)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raft-wal")
        elapsed = await asyncio.get_running_loop().run_in_executor(self._executor, _timed, write, args)
        self._note(elapsed)

    def run_inline(self, write: Callable[..., None], *args) -> None:
        """`write(*args)` here and now (only while not `threaded`)."""
        t0 = time.perf_counter()
        write(*args)
        self._note(time.perf_counter() - t0)

    def _note(self, elapsed: float) -> None:
        self.average_s += _WEIGHT * (elapsed - self.average_s)
        if self.threaded and self.average_s < FAST_S:
            self.threaded = False
        elif not self.threaded and self.average_s > SLOW_S:
            self.threaded = True

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


def _timed(write: Callable[..., None], args: tuple) -> float:
    t0 = time.perf_counter()
    write(*args)
    return time.perf_counter() - t0
