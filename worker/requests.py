"""The node's side of `shoal exec` and `shoal stats`: the managers ask, over the node's session,
to run a command in one of its containers or to read a container's resource use."""
from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any, Awaitable, Callable

from worker.runtime import Runtime

log = logging.getLogger("shoal.requests")

EXEC_TIMEOUT_S = 300
MAX_OUTPUT = 1 << 20


class NodeRequests:
    def __init__(self, runtime: Runtime, send: Callable[[dict], Awaitable[None]]):
        self.runtime = runtime
        self.send = send

    def handle(self, msg: dict) -> None:
        asyncio.create_task(self._answer(msg))

    async def _answer(self, msg: dict) -> None:
        rid = msg.get("Request")
        if not isinstance(rid, str):
            return
        try:
            reply = await self._run(msg)
        except Exception as exc:  # the caller gets the reason, the node goes on
            reply = {"Error": str(exc) or type(exc).__name__}
        try:
            await self.send({"Type": "reply", "Request": rid, **reply})
        except Exception as exc:
            log.warning("answering request %s: %s", rid, exc)

    async def _run(self, msg: dict) -> dict:
        cid = msg.get("ContainerID")
        if not isinstance(cid, str) or not cid:
            raise ValueError("ContainerID: must be a string")
        if msg.get("Type") == "stats":
            return {"Stats": await asyncio.to_thread(self.runtime.stats, cid)}
        cmd = msg.get("Cmd")
        if not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd):
            raise ValueError("Cmd: must be a non-empty list of strings")
        env = msg.get("Env") or []
        if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
            raise ValueError("Env: must be a list of KEY=VALUE strings")
        res = await self.runtime.exec_run(cid, cmd, env=env or None, timeout=EXEC_TIMEOUT_S, max_output=MAX_OUTPUT)
        return {"ExitCode": res.exit_code, "Stdout": base64.b64encode(res.stdout).decode(),
                "Stderr": base64.b64encode(res.stderr).decode(), "ExecError": res.error}
