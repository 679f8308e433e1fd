"""The daemon's HTTP server on its root-only unix socket."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from aiohttp import web

from daemon.engineapi import EngineAPI
from daemon.node import NodeDaemon, NodeError
from manager.controlapi import ControlAPI, error_middleware, error_response

log = logging.getLogger("shoal.api")


@web.middleware
async def errors(request: web.Request, handler):
    try:
        return await handler(request)
    except NodeError as exc:
        return error_response(exc.status, str(exc))


def make_app(node: NodeDaemon) -> web.Application:
    app = web.Application(middlewares=[error_middleware, errors], client_max_size=1 << 34)
    app.add_routes(EngineAPI(node).routes())
    app.add_routes(ControlAPI(node.require_manager, node.pinned_image, node.load_ca, node.start_ca_rotation).routes())
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
