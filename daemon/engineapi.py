"""Node-local API: the daemon itself, and joining or creating a swarm (images: daemon/imageapi.py)."""
from __future__ import annotations

from aiohttp import web

from api import codec
from api.ids import timestamp
from api.objects import SwarmSpec
from daemon.node import VERSION, NodeDaemon, NodeError
from manager.controlapi import APIError, read_json, validate_swarm_spec


class EngineAPI:
    def __init__(self, node: NodeDaemon):
        self.node = node

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_ping", self.ping),
            web.get("/info", self.info),
            web.post("/swarm/init", self.swarm_init),
            web.post("/swarm/join", self.swarm_join),
            web.post("/swarm/leave", self.swarm_leave),
            web.post("/swarm/unlock", self.swarm_unlock),
        ]

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def info(self, request: web.Request) -> web.Response:
        n = self.node
        state = "locked" if n.locked else "active" if n.node_id else "inactive"
        swarm = {"NodeID": n.node_id, "LocalNodeState": state,
                 "ControlAvailable": n.manager is not None, "ClusterID": n.identity.get("ClusterID", ""),
                 "Role": n.identity.get("Role", ""), "Managers": n.identity.get("Managers", []),
                 "SessionConnected": bool(n.session and n.session.connected.is_set()) if n.manager is None else True}
        security = ["name=seccomp,profile=builtin"]
        if n.config.userns_remap is not None:  # as `docker info` shows it
            security.append("name=userns")
        return web.json_response({"Name": n.config.hostname, "ServerVersion": VERSION,
                                  "Swarm": swarm, "Images": len(n.images.list()), "SecurityOptions": security})

    async def swarm_init(self, request: web.Request) -> web.Response:
        body = await read_json(request) if request.can_read_body else {}
        if not isinstance(body, dict):
            raise APIError(400, "body: must be an object")
        for key in body:
            if key not in ("AdvertiseAddr", "ListenAddr", "ForceNewCluster", "Spec"):
                raise APIError(400, f"{key}: unknown field")
        spec = None
        if body.get("Spec") is not None:  # Docker's init request: the new swarm's spec (autolock...)
            try:
                spec = codec.decode(SwarmSpec, body["Spec"], "Spec")
            except codec.DecodeError as exc:
                raise APIError(400, str(exc)) from None
            validate_swarm_spec(spec)
        try:
            node_id = await self.node.swarm_init(body.get("AdvertiseAddr", ""), body.get("ListenAddr", ""), spec)
        except NodeError as exc:
            raise APIError(exc.status, str(exc)) from None
        return web.json_response(node_id)

    async def swarm_join(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise APIError(400, "body: must be an object")
        for key in body:
            if key not in ("RemoteAddrs", "JoinToken", "AdvertiseAddr", "ListenAddr"):
                raise APIError(400, f"{key}: unknown field")
        remotes = body.get("RemoteAddrs")
        if not isinstance(remotes, list) or not remotes or not all(isinstance(r, str) and r for r in remotes):
            raise APIError(400, "RemoteAddrs: must list at least one manager address")
        token = body.get("JoinToken")
        if not isinstance(token, str) or not token:
            raise APIError(400, "JoinToken: required")
        try:
            node_id = await self.node.swarm_join(remotes[0], token, body.get("AdvertiseAddr", ""), body.get("ListenAddr", ""))
        except NodeError as exc:
            raise APIError(exc.status, str(exc)) from None
        return web.json_response({"NodeID": node_id})

    async def swarm_unlock(self, request: web.Request) -> web.Response:
        """Docker's POST /swarm/unlock {"UnlockKey": "SWMKEY-1-..."}."""
        body = await read_json(request)
        if not isinstance(body, dict):
            raise APIError(400, "body: must be an object")
        for key in body:
            if key != "UnlockKey":
                raise APIError(400, f"{key}: unknown field")
        key = body.get("UnlockKey")
        if not isinstance(key, str) or not key.strip():
            raise APIError(400, "UnlockKey: required")
        try:
            await self.node.unlock(key)
        except NodeError as exc:
            raise APIError(exc.status, str(exc)) from None
        return web.Response(status=200)

    async def swarm_leave(self, request: web.Request) -> web.Response:
        force = request.query.get("force", "false").lower() in ("1", "true")
        try:
            await self.node.swarm_leave(force)
        except NodeError as exc:
            raise APIError(exc.status, str(exc)) from None
        return web.Response(status=200)
