"""The worker's session with the managers over mutual TLS: a websocket of msgpack messages
that carries heartbeats and status reports up and assignment sets down. It reconnects with
backoff, so it survives a manager restart."""
from __future__ import annotations

import asyncio
import logging
import random
import ssl
from typing import Any, Callable

import aiohttp
import msgpack

from api import codec
from api.objects import SECOND, NodeDescription

log = logging.getLogger("shoal.session")


class SessionRefused(Exception):
    """The managers refused this node for good (removed, or from another cluster)."""


class RemoteSession:
    def __init__(self, managers: list[str], ssl_context: Callable[[], ssl.SSLContext],
                 describe: Callable[[], NodeDescription], advertise_addr: str = "",
                 on_ca: Callable[[dict], Any] | None = None,
                 on_managers: Callable[[list[str]], Any] | None = None,
                 on_role: Callable[[str], Any] | None = None, manager_addr: str = "",
                 on_request: Callable[[dict], Any] | None = None):
        self.on_request = on_request
        self.on_ca = on_ca
        self.on_role = on_role
        self.manager_addr = manager_addr
        self.raft_peers: dict[str, str] = {}
        self.on_managers = on_managers
        self._redirect: str = ""
        self.current_manager = managers[0] if managers else ""
        self.managers = list(managers)
        self.ssl_context = ssl_context
        self.describe = describe
        self.advertise_addr = advertise_addr
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._latest: dict | None = None
        self._have_latest = asyncio.Event()
        self.connected = asyncio.Event()
        self.refused: str = ""
        self.heartbeat_period = 2.0

    # --- what the agent uses ----------------------------------------------------------

    async def next_assignments(self) -> dict:
        await self._have_latest.wait()
        self._have_latest.clear()
        assert self._latest is not None
        return self._latest

    async def report(self, message: Any) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise ConnectionError("no session with a manager")
        await ws.send_bytes(msgpack.packb(message, use_bin_type=True))

    def heartbeat(self) -> None:
        pass  # the session sends its own heartbeats

    async def reconnect(self) -> None:
        """Start a new session (e.g. to present a renewed certificate)."""
        ws = self._ws
        if ws is not None and not ws.closed:
            await ws.close()

    # --- connection loop ----------------------------------------------------------------

    async def run(self) -> None:
        backoff = 0.1
        index = 0
        while True:
            addr = self._redirect or self.managers[index % len(self.managers)]
            self._redirect = ""
            self.current_manager = addr
            try:
                await self._connect_once(addr)
                backoff = 0.1
            except SessionRefused as exc:
                self.refused = str(exc)
                log.error("the managers refused this node: %s", exc)
                raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("session with %s lost: %s", addr, exc or type(exc).__name__)
            self.connected.clear()
            index += 1
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 2.0)

    async def _connect_once(self, addr: str) -> None:
        # A manager that does not answer within a heartbeat or so is down or cut off: try the
        # next one soon, well inside the window after which the leader marks this node down.
        connect_s = min(5.0, max(1.0, 1.5 * self.heartbeat_period))
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_s, sock_connect=connect_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            try:
                ws = await http.ws_connect(f"https://{addr}/session", ssl=self.ssl_context(), heartbeat=None,
                                           max_msg_size=64 << 20)
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 403:
                    raise SessionRefused(await self._refusal(http, addr)) from None
                if exc.status == 421:  # a follower: it names the leader
                    self._redirect = await self._leader_hint(http, addr)
                    raise ConnectionError(f"{addr} is not the leader; leader: {self._redirect or 'unknown'}") from None
                raise
            async with ws:
                self._ws = ws
                await ws.send_bytes(msgpack.packb({"Type": "hello", "Description": codec.encode(self.describe()),
                                                   "Addr": self.advertise_addr, "ManagerAddr": self.manager_addr}))
                first = await asyncio.wait_for(ws.receive(), timeout=10)
                if first.type != aiohttp.WSMsgType.BINARY:
                    raise ConnectionError(f"session refused: {first.extra or first.type}")
                hello = msgpack.unpackb(first.data, raw=False)
                self.heartbeat_period = max(0.1, hello.get("HeartbeatPeriod", 2 * SECOND) / SECOND)
                peers = hello.get("RaftPeers")
                if isinstance(peers, dict):
                    self.raft_peers = {k: v for k, v in peers.items() if isinstance(k, str) and isinstance(v, str)}
                managers = [m for m in hello.get("Managers", []) if isinstance(m, str) and m]
                if managers:
                    self.managers = managers
                    if self.on_managers:
                        self.on_managers(managers)
                self.connected.set()
                beat = asyncio.create_task(self._heartbeats(ws))
                try:
                    while True:
                        # The manager answers every heartbeat: silence means a dead link (a cut,
                        # or a deposed leader behind one), so go find the leader again.
                        try:
                            frame = await asyncio.wait_for(ws.receive(), timeout=3 * self.heartbeat_period)
                        except asyncio.TimeoutError:
                            raise ConnectionError("the manager stopped answering heartbeats") from None
                        if frame.type != aiohttp.WSMsgType.BINARY:
                            break
                        msg = msgpack.unpackb(frame.data, raw=False)
                        if isinstance(msg, dict) and msg.get("Type") in ("logs", "logs-cancel", "exec", "stats"):
                            if self.on_request:
                                self.on_request(msg)
                            continue
                        if isinstance(msg, dict) and msg.get("Type") == "assignments":
                            self._latest = msg
                            self._have_latest.set()
                            if self.on_ca and isinstance(msg.get("CA"), dict):
                                self.on_ca(msg["CA"])
                            if self.on_role and isinstance(msg.get("Role"), str):
                                members = msg.get("RaftMembers")
                                self.on_role(msg["Role"], members if isinstance(members, list) else [])
                finally:
                    beat.cancel()
                    self._ws = None

    async def _leader_hint(self, http: aiohttp.ClientSession, addr: str) -> str:
        try:
            async with http.get(f"https://{addr}/session", ssl=self.ssl_context()) as resp:
                return (await resp.json(content_type=None)).get("Leader", "")
        except Exception:
            return ""

    async def _refusal(self, http: aiohttp.ClientSession, addr: str) -> str:
        """The manager's reason for refusing us (the websocket handshake only carries a status)."""
        try:
            async with http.get(f"https://{addr}/session", ssl=self.ssl_context()) as resp:
                return (await resp.json(content_type=None)).get("message", f"HTTP {resp.status}")
        except Exception as exc:
            return f"refused ({exc})"

    async def _heartbeats(self, ws) -> None:
        while not ws.closed:
            await ws.send_bytes(msgpack.packb({"Type": "heartbeat"}))
            await asyncio.sleep(self.heartbeat_period)
