"""The node's side of `shoal service logs`: the managers ask, over the node's session, for the
logs of some of its containers; the node streams them back in batches."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from worker.logs import read_logs
from worker.runtime import Runtime

log = logging.getLogger("shoal.logs")

BATCH = 256


def parse_request(msg: Any) -> tuple[str, list[tuple[str, str]], int | None, bool, float | None]:
    """(request id, [(task id, container id)], tail, follow, since); ValueError naming the field."""
    if not isinstance(msg, dict):
        raise ValueError("logs: must be a map")
    rid = msg.get("Request")
    if not isinstance(rid, str) or not rid:
        raise ValueError("logs.Request: must be a string")
    containers = msg.get("Containers")
    if not isinstance(containers, list) or not all(
            isinstance(c, list) and len(c) == 2 and all(isinstance(x, str) for x in c) for c in containers):
        raise ValueError("logs.Containers: must be a list of [task id, container id]")
    tail = msg.get("Tail")
    if tail is not None and (not isinstance(tail, int) or tail < 0):
        raise ValueError("logs.Tail: must be a non-negative integer")
    since = msg.get("Since")
    if since is not None and not isinstance(since, (int, float)):
        raise ValueError("logs.Since: must be a number of seconds")
    return rid, [tuple(c) for c in containers], tail, bool(msg.get("Follow")), since


class LogStreamer:
    def __init__(self, runtime: Runtime, send: Callable[[dict], Awaitable[None]]):
        self.runtime = runtime
        self.send = send
        self.streams: dict[str, asyncio.Task] = {}

    def handle(self, msg: dict) -> None:
        if msg.get("Type") == "logs-cancel":
            task = self.streams.pop(str(msg.get("Request")), None)
            if task:
                task.cancel()
            return
        try:
            rid, containers, tail, follow, since = parse_request(msg)
        except ValueError as exc:
            log.warning("bad logs request from the managers: %s", exc)
            return
        self.streams[rid] = asyncio.create_task(self._stream(rid, containers, tail, follow, since))

    async def _stream(self, rid: str, containers, tail, follow, since) -> None:
        queue: asyncio.Queue = asyncio.Queue(maxsize=4 * BATCH)

        async def one(task_id: str, cid: str) -> None:
            bundle = self.runtime.log_path(cid).parent
            if not bundle.exists():
                return
            async for entry in read_logs(bundle, since=since, tail=tail, follow=follow):
                await queue.put([task_id, entry.time, entry.stream, entry.line])

        readers = [asyncio.create_task(one(t, c)) for t, c in containers]
        done_all = asyncio.ensure_future(asyncio.gather(*readers, return_exceptions=True))
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, done_all}, return_when=asyncio.FIRST_COMPLETED)
                batch = []
                if getter.done():
                    batch.append(getter.result())
                else:
                    getter.cancel()
                while not queue.empty() and len(batch) < BATCH:
                    batch.append(queue.get_nowait())
                if batch:
                    await self.send({"Type": "logs", "Request": rid, "Lines": batch})
                if done_all.done() and queue.empty():
                    break
            await self.send({"Type": "logs", "Request": rid, "Lines": [], "Done": True})
        except asyncio.CancelledError:
            for r in readers:
                r.cancel()
            raise
        except Exception as exc:
            log.warning("streaming logs for %s failed: %s", rid, exc)
            try:
                await self.send({"Type": "logs", "Request": rid, "Lines": [], "Done": True, "Error": str(exc)})
            except Exception:
                pass
        finally:
            self.streams.pop(rid, None)
