"""HTTP client for the daemon's unix socket."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp

DEFAULT_HOST = "unix:///run/shoal/shoal.sock"


class CLIError(Exception):
    """Printed as one line; the command exits non-zero."""

    def __init__(self, message: str, code: int = 1, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status  # the daemon's HTTP status, when the daemon answered with an error


def socket_path(host: str) -> str:
    if host.startswith("unix://"):
        return host[len("unix://"):]
    if "://" in host:
        raise CLIError(f"--host: unsupported address {host!r} (use unix:///path/to/shoal.sock)", 2)
    return host


class Client:
    def __init__(self, host: str | None = None):
        self.host = host or os.environ.get("SHOAL_HOST") or DEFAULT_HOST
        self.path = socket_path(self.host)

    def _unreachable(self, exc: Exception) -> CLIError:
        reason = "permission denied (run as root)" if isinstance(exc, PermissionError) or "ermission" in str(exc) else "is shoald running?"
        return CLIError(f"Cannot connect to the Shoal daemon at unix://{self.path}: {reason}")

    async def _request(self, method: str, path: str, *, body: Any = None, params: dict | None = None,
                       data: Any = None, stream_file: Path | None = None) -> Any:
        if not os.path.exists(self.path):
            raise self._unreachable(FileNotFoundError(self.path))
        conn = aiohttp.UnixConnector(path=self.path)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        try:
            async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
                kwargs: dict[str, Any] = {"params": params}
                if body is not None:
                    kwargs["json"] = body
                if stream_file is not None:
                    kwargs["data"] = _file_chunks(stream_file)
                elif data is not None:
                    kwargs["data"] = data
                async with session.request(method, "http://shoal" + path, **kwargs) as resp:
                    text = await resp.text()
                    payload = json.loads(text) if text and resp.content_type == "application/json" else text
                    if resp.status >= 400:
                        msg = payload.get("message") if isinstance(payload, dict) else str(payload)
                        raise CLIError(f"Error response from daemon: {msg}", status=resp.status)
                    return payload
        except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:
            raise self._unreachable(exc) from None

    async def stream_lines(self, path: str, params: dict | None = None, on_line=None) -> None:
        """GET a streaming endpoint and hand each line to `on_line` as it arrives."""
        if not os.path.exists(self.path):
            raise self._unreachable(FileNotFoundError(self.path))
        conn = aiohttp.UnixConnector(path=self.path)
        try:
            async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None)) as session:
                async with session.get("http://shoal" + path, params=params) as resp:
                    if resp.status >= 400:
                        text = await resp.text()
                        try:
                            msg = json.loads(text).get("message", text)
                        except ValueError:
                            msg = text
                        raise CLIError(f"Error response from daemon: {msg}")
                    async for raw in resp.content:
                        on_line(raw.decode(errors="replace").rstrip("\n"))
        except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:
            raise self._unreachable(exc) from None

    def call(self, method: str, path: str, **kwargs) -> Any:
        return asyncio.run(self._request(method, path, **kwargs))

    def get(self, path: str, **kwargs) -> Any:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> Any:
        return self.call("POST", path, **kwargs)

    def delete(self, path: str, **kwargs) -> Any:
        return self.call("DELETE", path, **kwargs)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return
            yield chunk
