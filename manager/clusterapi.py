"""The cluster port (2377/tcp, TLS): what other nodes may ask of a manager.

- `GET /ca`: the trusted root certificates; unauthenticated and carries nothing secret (a
  joining node checks them against the digest in its token before sending anything).
- `POST /join`: a join token and a CSR; the token decides the role, the CA decides the
  certificate's subject. Unauthenticated by certificate, authenticated by the token.
- `POST /renew`: a new certificate for the caller's own identity (any member).
- `GET /session`: the worker session, a websocket of msgpack messages (any member).

Every route but the first two requires a certificate from this cluster's CA whose node still
exists in the store: a removed node's certificate is refused from then on.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import logging
import time
from typing import Any, Callable

import msgpack
from aiohttp import WSMsgType, web

from api import codec
from api.ids import new_id
from api.objects import SECOND, ManagerStatus, Node, NodeDescription, NodeSpec, NodeStatus
from manager.ca import (
    CAError, ClusterCA, Identity, PeerRejected, TokenError, check_peer, parse_identity, peer_identity, sign_csr,
)
from manager.ca.tokens import JoinTokens, token_role
from manager.controlapi import ControlAPI, error_middleware
from manager.manager import Manager
from manager import secretapi
from manager.networkapi import NetworkAPI
from manager.raft.transport import decode_batch
from manager.store import Action, StoreError

log = logging.getLogger("shoal.clusterapi")

MEMBER_ROLES = ("worker", "manager")
IDENTITY_CACHE = 4096  # certificates whose parsed identity is kept (one per node, renewals)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


class ClusterAPI:
    def __init__(self, manager: Manager, get_ca: Callable[[], ClusterCA], control: ControlAPI | None = None,
                 cluster_id: str = ""):
        self.manager = manager
        self.cluster_id = cluster_id
        self.get_ca = get_ca
        self.control = control
        self.session_tasks: set[asyncio.Task] = set()
        self.raft_tasks: set[asyncio.Task] = set()
        self._identities: dict[bytes, Identity] = {}  # DER -> identity, oldest first
        manager.on_leadership.append(self._leadership_changed)

    def _leadership_changed(self, leader: bool) -> None:
        if not leader:  # workers must follow the new leader: end their sessions here
            for t in list(self.session_tasks):
                t.cancel()

    def close_all(self) -> None:
        self.manager.on_leadership[:] = [cb for cb in self.manager.on_leadership if cb != self._leadership_changed]
        for t in list(self.session_tasks) + list(self.raft_tasks):
            t.cancel()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.add_routes([
            web.get("/ca", self.ca),
            web.post("/join", self.join),
            web.post("/renew", self.renew),
            web.get("/session", self.session),
            web.get("/raft", self.raft),
        ])
        if self.control is not None:
            # The control API for other managers (forwarded calls); never for workers.
            control = web.Application(middlewares=[self._managers_only, error_middleware])
            control.add_routes(self.control.routes())
            control.add_routes(NetworkAPI(self.control.get_manager).routes())
            control.add_routes(secretapi.routes(self.control.get_manager))
            app.add_subapp("/control", control)
        return app

    @web.middleware
    async def _managers_only(self, request: web.Request, handler):
        try:
            self.authenticate(request, roles=("manager",))
        except PeerRejected as exc:
            return _error(403, str(exc))
        return await handler(request)

    # --- authentication -----------------------------------------------------------------

    def authenticate(self, request: web.Request, roles=MEMBER_ROLES) -> Identity:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        if ssl_object is None:
            raise PeerRejected("peer certificate: none presented")
        ident = self._identity(ssl_object)
        nodes = self.manager.store.tables["node"]
        # A manager that just joined has an empty store until the leader's log reaches it; it
        # then accepts any manager certificate of its cluster (the CA vouches for it).
        removed = () if ident.node_id in nodes or not nodes else (ident.node_id,)
        return check_peer(ident, cluster_id=self.cluster_id, roles=roles, removed_node_ids=removed)

    def _identity(self, ssl_object) -> Identity:
        """The identity in the peer's certificate, parsed once per certificate: parsing it
        (X.509 decoding) cost more than the rest of a forwarded API call's authentication.
        Only the parse is cached; the checks against the store run on every request."""
        der = ssl_object.getpeercert(binary_form=True)
        if not der:
            raise PeerRejected("peer certificate: none presented")
        ident = self._identities.get(der)
        if ident is None:
            ident = peer_identity(ssl_object)
            if len(self._identities) >= IDENTITY_CACHE:
                self._identities.pop(next(iter(self._identities)))
            self._identities[der] = ident
        return ident

    # --- routes -------------------------------------------------------------------------

    async def ca(self, request: web.Request) -> web.Response:
        return web.Response(body=self.get_ca().trust_bundle_pem, content_type="application/x-pem-file")

    def not_leader(self) -> web.Response | None:
        """Joins, renewals and sessions are the leader's; others point the caller to it."""
        if self.manager.is_leader:
            return None
        return web.json_response({"message": "this manager is not the leader", "Leader": self.manager.leader_addr() or ""},
                                 status=421)

    async def join(self, request: web.Request) -> web.Response:
        redirect = self.not_leader()
        if redirect is not None:
            return redirect
        try:
            body = msgpack.unpackb(await request.read(), raw=False)
        except Exception:
            return _error(400, "body: not a msgpack message")
        if not isinstance(body, dict):
            return _error(400, "body: must be a map")
        token, csr = body.get("Token"), body.get("CSR")
        if not isinstance(token, str):
            return _error(400, "Token: must be a string")
        if not isinstance(csr, (bytes, str)):
            return _error(400, "CSR: must be a PEM certificate request")
        try:
            description = codec.decode(NodeDescription, body.get("Description") or {}, "Description")
        except codec.DecodeError as exc:
            return _error(400, str(exc))
        cluster = self.manager.cluster
        if cluster is None:
            return _error(503, "swarm: not initialised")
        try:
            role = token_role(token, JoinTokens(worker=cluster.join_tokens.worker, manager=cluster.join_tokens.manager))
        except (TokenError, ValueError) as exc:
            log.info("join refused from %s: %s", request.remote, exc)
            return _error(401, str(exc))
        manager_addr = body.get("ManagerAddr") if isinstance(body.get("ManagerAddr"), str) else ""
        if role == "manager" and not manager_addr:
            return _error(400, "ManagerAddr: a manager must say where other managers reach it (--advertise-addr / --listen-addr)")
        node_id = new_id()
        expiry = dt.timedelta(seconds=cluster.spec.ca_config.node_cert_expiry / SECOND)
        try:
            cert = sign_csr(self.get_ca(), csr, node_id, role, cluster.id, expiry)
        except CAError as exc:
            return _error(400, str(exc))
        addr = body.get("Addr") if isinstance(body.get("Addr"), str) and body.get("Addr") else (request.remote or "")
        node = Node(id=node_id, spec=NodeSpec(role=role, availability="active"), description=description,
                    status=NodeStatus(state="unknown", message="joined", addr=addr),
                    manager_status=ManagerStatus(reachability="unknown", addr=manager_addr) if role == "manager" else None)
        try:
            await self.manager.propose([Action("create", "node", node)])
            if role == "manager":
                await self.manager.add_manager(node_id, manager_addr)
        except StoreError as exc:
            return _error(exc.status, str(exc))
        log.info("node %s (%s) joined as %s", node_id, description.hostname, role)
        return web.Response(body=msgpack.packb({
            "NodeID": node_id, "ClusterID": cluster.id, "Role": role, "Certificate": cert,
            "CACerts": self.get_ca().trust_bundle_pem, "Managers": self.manager.manager_addrs(),
            "RaftPeers": self.manager.peer_addrs(),
        }), content_type="application/msgpack")

    async def renew(self, request: web.Request) -> web.Response:
        redirect = self.not_leader()
        if redirect is not None:
            return redirect
        try:
            ident = self.authenticate(request)
        except PeerRejected as exc:
            return _error(403, str(exc))
        try:
            body = msgpack.unpackb(await request.read(), raw=False)
            csr = body["CSR"]
        except Exception:
            return _error(400, "CSR: missing or not a msgpack message")
        cluster = self.manager.cluster
        node = self.manager.store.get("node", ident.node_id)
        expiry = dt.timedelta(seconds=cluster.spec.ca_config.node_cert_expiry / SECOND)
        try:
            # The role comes from the store, not the old certificate: a promotion or
            # demotion takes effect at the next renewal.
            cert = sign_csr(self.get_ca(), csr, ident.node_id, node.spec.role, cluster.id, expiry)
        except CAError as exc:
            return _error(400, str(exc))
        return web.Response(body=msgpack.packb({"Certificate": cert, "CACerts": self.get_ca().trust_bundle_pem}),
                            content_type="application/msgpack")

    async def session(self, request: web.Request) -> web.StreamResponse:
        try:
            ident = self.authenticate(request)
        except PeerRejected as exc:
            return _error(403, str(exc))
        redirect = self.not_leader()
        if redirect is not None:
            return redirect
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=64 << 20)
        await ws.prepare(request)
        task = asyncio.current_task()
        self.session_tasks.add(task)
        try:
            await self._serve_session(ident, ws, request.remote or "")
        finally:
            self.session_tasks.discard(task)
        return ws

    async def raft(self, request: web.Request) -> web.StreamResponse:
        """Raft messages from another manager: only managers, and a message may only claim to
        come from the manager whose certificate carries it."""
        try:
            ident = self.authenticate(request, roles=("manager",))
        except PeerRejected as exc:
            return _error(403, str(exc))
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=256 << 20)
        await ws.prepare(request)
        task = asyncio.current_task()
        self.raft_tasks.add(task)
        try:
            async for frame in ws:
                if frame.type != WSMsgType.BINARY:
                    break
                try:
                    messages = decode_batch(frame.data)
                except ValueError as exc:
                    log.warning("bad raft frame from %s: %s", ident.node_id, exc)
                    continue
                valid = []
                for m in messages:
                    if m.frm != ident.node_id or m.to != self.manager.node_id:
                        log.warning("raft message from %s claims %s -> %s; dropped", ident.node_id, m.frm, m.to)
                        continue
                    valid.append(m)
                if valid:
                    self.manager.step_many(valid)
        finally:
            self.raft_tasks.discard(task)
        return ws

    async def _serve_session(self, ident: Identity, ws: web.WebSocketResponse, remote: str) -> None:
        dispatcher = self.manager.dispatcher
        session = dispatcher.open_session(ident.node_id)
        period = self.manager.heartbeat_period()
        sender: asyncio.Task | None = None
        try:
            hello = await asyncio.wait_for(ws.receive(), timeout=10)
            msg = _decode_frame(hello)
            if msg.get("Type") != "hello":
                raise codec.DecodeError("Type", "the first message must be hello")
            description = codec.decode(NodeDescription, msg.get("Description") or {}, "Description")
            addr = msg.get("Addr") if isinstance(msg.get("Addr"), str) and msg.get("Addr") else remote
            if isinstance(msg.get("ManagerAddr"), str) and msg["ManagerAddr"]:
                dispatcher.manager_addrs[ident.node_id] = msg["ManagerAddr"]
            dispatcher.session_roles[ident.node_id] = ident.role
            await dispatcher.node_up(ident.node_id, description, addr)
            await ws.send_bytes(msgpack.packb({"Type": "session", "NodeID": ident.node_id,
                                               "HeartbeatPeriod": period, "Managers": self.manager.manager_addrs(),
                                               "RaftPeers": self.manager.peer_addrs()}))

            async def send_assignments():
                while True:
                    message = await session.next_assignments()
                    await ws.send_bytes(msgpack.packb(message, use_bin_type=True))

            async def send_requests():
                while True:
                    await ws.send_bytes(msgpack.packb(await session.outbox.get(), use_bin_type=True))

            sender = asyncio.create_task(send_assignments())
            requester = asyncio.create_task(send_requests())
            timeout = 3 * period / SECOND
            while True:
                frame = await asyncio.wait_for(ws.receive(), timeout=timeout)
                if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                msg = _decode_frame(frame)
                session.heartbeat()
                if msg.get("Type") == "status":
                    await session.report(msg)
                elif msg.get("Type") == "heartbeat":
                    await ws.send_bytes(_HEARTBEAT_ACK)
                elif msg.get("Type") == "logs":
                    dispatcher.deliver_logs(ident.node_id, msg)
                elif msg.get("Type") == "reply":
                    dispatcher.deliver_reply(ident.node_id, msg)
                elif msg.get("Type") != "heartbeat":
                    raise codec.DecodeError("Type", f"unknown message type {msg.get('Type')!r}")
        except asyncio.TimeoutError:
            log.info("node %s missed its heartbeats", ident.node_id)
        except codec.DecodeError as exc:
            log.warning("bad message from node %s: %s", ident.node_id, exc)
            await ws.close(message=str(exc).encode()[:120])
        except (ConnectionError, StoreError) as exc:
            log.info("session of node %s ended: %s", ident.node_id, exc)
        finally:
            if sender:
                sender.cancel()
            if "requester" in locals():
                requester.cancel()
            dispatcher.close_session(session)
            if not ws.closed:
                await ws.close()


_HEARTBEAT_ACK = msgpack.packb({"Type": "heartbeat"})


def _decode_frame(frame) -> dict:
    if frame.type != WSMsgType.BINARY:
        raise codec.DecodeError("frame", "expected a binary msgpack frame")
    try:
        msg = msgpack.unpackb(frame.data, raw=False)
    except Exception:
        raise codec.DecodeError("frame", "not valid msgpack") from None
    if not isinstance(msg, dict):
        raise codec.DecodeError("frame", "must be a map")
    return msg
