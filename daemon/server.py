"""The daemon's HTTP server on its root-only unix socket."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from aiohttp import web

from daemon.engineapi import EngineAPI
from daemon.imageapi import ImageAPI, container_image_ids
from daemon.node import NodeDaemon, NodeError
from daemon.serviceimages import NodeImages
from manager.controlapi import ControlAPI, error_middleware, error_response
from manager import secretapi
from manager.networkapi import NetworkAPI

log = logging.getLogger("shoal.api")


@web.middleware
async def errors(request: web.Request, handler):
    try:
        return await handler(request)
    except NodeError as exc:
        return error_response(exc.status, str(exc))


# Writes every node answers itself; every other write is the leader's.
LOCAL_WRITES = ("/swarm/init", "/swarm/join", "/swarm/leave", "/swarm/unlock", "/images/", "/auth")
# Service creates and updates are prepared on this node first (the image pinned with this
# node's registry logins) and then forwarded by the control API itself.
SELF_FORWARDED = re.compile(r"^/services/(create|[^/]+/update)$")


def forward_writes(node: NodeDaemon):
    @web.middleware
    async def middleware(request: web.Request, handler):
        m = node.manager
        if (request.method in ("POST", "DELETE") and m is not None and not m.is_leader
                and not request.path.startswith(LOCAL_WRITES) and not SELF_FORWARDED.match(request.path)):
            body = await request.read()
            status, payload, ctype = await m.forward(request.method, request.path_qs, body,
                                                     request.content_type or "application/json")
            return web.Response(status=status, body=payload, content_type=ctype or "application/json")
        return await handler(request)
    return middleware


def make_app(node: NodeDaemon) -> web.Application:
    app = web.Application(middlewares=[error_middleware, errors, forward_writes(node)], client_max_size=1 << 34)
    app.add_routes(EngineAPI(node).routes())
    app.add_routes(ImageAPI(node.images, node.state_dir,
                            in_use=lambda: container_image_ids(node.images, node.runtime.root)).routes())
    app.add_routes(ControlAPI(node.require_manager, NodeImages(node.images, node.state_dir), node.load_ca,
                              node.start_ca_rotation, forwards=True).routes())
    app.add_routes(NetworkAPI(node.require_manager).routes())
    app.add_routes(secretapi.routes(node.require_manager))
    return app


async def serve_unix(app: web.Application, path: Path) -> web.AppRunner:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700) if path.parent != Path("/run") else None
    if path.exists() or path.is_symlink():
        path.unlink()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    old = os.umask(0o177)  # the socket is born root-only, never briefly open to others
    try:
        site = web.UnixSite(runner, str(path))
        await site.start()
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return runner
