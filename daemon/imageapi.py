"""The node's image API, in the Docker Engine API's shapes: import, list, inspect, tag,
remove, pull (POST /images/create) and push with streamed JSON progress, save
(GET /images/get) and load, prune, and registry login (POST /auth)."""
from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

from aiohttp import web

from manager.controlapi import APIError, read_json
from worker.images import archive
from worker.images.auth import Credentials, decode_auth_config, registry_key
from worker.images.image import Image
from worker.images.manifests import Platform
from worker.images.pull import pull
from worker.images.push import push
from worker.images.reference import parse_reference
from worker.images.nodeclient import CREDENTIALS_FILE, REGISTRIES_FILE, node_credentials, node_registry_client
from worker.images.registry import RegistryClient, RegistryError
from worker.images.store import ImageInUseError, ImageNotFoundError, ImageStore

__all__ = ["CREDENTIALS_FILE", "REGISTRIES_FILE", "ImageAPI", "container_image_ids", "inspect_json"]


def container_image_ids(images: ImageStore, containers_root: Path) -> set[str]:
    """Ids of images some container on this node was created from. The runtime records each
    container's lower dirs in <root>/<id>/shoal.json; an image is used when all its layer
    dirs are among them."""
    lowers: list[set[str]] = []
    if containers_root.is_dir():
        for meta in containers_root.glob("*/shoal.json"):
            try:
                lowers.append(set(json.loads(meta.read_text()).get("layers") or []))
            except (OSError, ValueError):
                continue
    used = set()
    for image in images.list():
        paths = {str(p) for p in images.layer_paths(image)}
        if paths and any(paths <= layers for layers in lowers):
            used.add(image.id)
    return used


def inspect_json(image: Image) -> dict[str, Any]:
    cfg = image.config
    return {
        "Id": image.id, "RepoTags": image.references, "RepoDigests": image.repo_digests, "Parent": "",
        "Comment": (cfg.get("history") or [{}])[-1].get("comment", "") if cfg.get("history") else "",
        "Created": image.created, "Author": cfg.get("author", ""), "Config": cfg.get("config") or {},
        "Architecture": cfg.get("architecture", ""), "Variant": cfg.get("variant", ""), "Os": cfg.get("os", ""),
        "Size": image.size, "RootFS": {"Type": "layers", "Layers": image.diff_ids},
        "ManifestDigest": image.manifest_digest,
    }


def _registry_auth(request: web.Request) -> dict[str, Credentials]:
    """Docker's X-Registry-Auth: base64url JSON {username, password, serveraddress}."""
    try:
        decoded = decode_auth_config(request.headers.get("X-Registry-Auth", ""))
    except ValueError as exc:
        raise APIError(400, f"X-Registry-Auth: {exc}") from None
    if decoded is None or not decoded[0]:
        return {}
    return {decoded[0]: decoded[1]}


class _Progress:
    """Streams Docker JSON messages; the HTTP status is only sent with the first one, so an
    error before any progress still gets a real status code."""

    def __init__(self, request: web.Request):
        self.request = request
        self.response: web.StreamResponse | None = None
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def __call__(self, msg: dict[str, Any]) -> None:
        self.queue.put_nowait(msg)

    async def _write(self, msg: dict[str, Any]) -> None:
        if self.response is None:
            self.response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            await self.response.prepare(self.request)
        await self.response.write(json.dumps(msg).encode() + b"\r\n")

    async def run(self, work: Awaitable[Any]) -> web.StreamResponse:
        task = asyncio.ensure_future(work)
        task.add_done_callback(lambda _: self.queue.put_nowait(None))
        try:
            while (msg := await self.queue.get()) is not None:
                await self._write(msg)
            while not self.queue.empty():
                msg = self.queue.get_nowait()
                if msg is not None:
                    await self._write(msg)
            exc = task.exception()
        except BaseException:
            task.cancel()
            raise
        if exc is not None:
            status, text = _status(exc)
            if self.response is None:
                raise APIError(status, text)
            await self._write({"errorDetail": {"message": text}, "error": text})
        assert self.response is not None
        await self.response.write_eof()
        return self.response


def _status(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, APIError):
        return exc.status, str(exc)
    if isinstance(exc, RegistryError):
        return exc.status, str(exc)
    if isinstance(exc, ImageNotFoundError):
        return 404, str(exc)
    if isinstance(exc, ImageInUseError):
        return 409, str(exc)
    if isinstance(exc, ValueError):
        return 400, str(exc)
    return 500, f"internal error: {exc}"


class ImageAPI:
    def __init__(self, images: ImageStore, state_dir: Path,
                 in_use: Callable[[], Iterable[str]] | None = None, chunk_size: int | None = None):
        self.images = images
        self.state_dir = Path(state_dir)
        self.credentials = node_credentials(self.state_dir)
        self.in_use = in_use or (lambda: ())
        self.chunk_size = chunk_size

    def routes(self) -> list[web.RouteDef]:
        # Order matters: fixed paths before the {name} patterns that would swallow them.
        return [
            web.post("/images/import", self.image_import),
            web.get("/images/json", self.image_list),
            web.get("/images/get", self.image_save),
            web.post("/images/create", self.image_pull),
            web.post("/images/load", self.image_load),
            web.post("/images/prune", self.image_prune),
            web.post("/auth", self.login),
            web.get("/distribution/{name:.+}/json", self.distribution_inspect),
            web.get("/images/{name:.+}/json", self.image_inspect),
            web.post("/images/{name:.+}/push", self.image_push),
            web.post("/images/{name:.+}/tag", self.image_tag),
            web.delete("/images/{name:.+}", self.image_remove),
        ]

    async def distribution_inspect(self, request: web.Request) -> web.Response:
        """Docker's GET /distribution/{name}/json: what the registry holds for a tag now (the
        digest `--resolve-image` pins), asked with this node's login or the X-Registry-Auth
        header. Nothing is pulled or stored."""
        from daemon.serviceimages import NodeImages
        from manager import pullauth
        name = request.match_info["name"]
        try:
            auth = pullauth.parse_registry_auth(request.headers.get("X-Registry-Auth", ""))
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        source = NodeImages(self.images, self.state_dir)
        try:
            digest = await source.registry_digest(name, auth or source.stored_auth(name))
        except LookupError as exc:
            raise APIError(404, f"{name}: {exc}") from None
        return web.json_response({"Descriptor": {"Digest": digest}})

    def _client(self, override: dict[str, Credentials] | None = None) -> RegistryClient:
        try:
            return node_registry_client(self.state_dir, override)
        except ValueError as exc:
            raise APIError(500, str(exc)) from None

    async def _upload(self, request: web.Request) -> str:
        tmpdir = self.state_dir / "tmp"
        tmpdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=tmpdir, suffix=".tar")
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in request.content.iter_chunked(1 << 20):
                    f.write(chunk)
        except BaseException:
            os.unlink(path)
            raise
        return path

    # -- the three routes that predate this module, unchanged -------------------------

    async def image_import(self, request: web.Request) -> web.Response:
        repo = request.query.get("repo", "")
        tag = request.query.get("tag", "")
        if not repo:
            raise APIError(400, "repo: required, the NAME of NAME:TAG")
        reference = f"{repo}:{tag}" if tag else repo
        path = await self._upload(request)
        try:
            try:
                image = await asyncio.to_thread(self.images.import_rootfs, path, reference)
            except ValueError as exc:
                raise APIError(400, str(exc)) from None
        finally:
            os.unlink(path)
        return web.json_response({"ID": image.id, "RepoTags": image.references})

    async def image_list(self, request: web.Request) -> web.Response:
        out = []
        for img in self.images.list():
            out.append({"Id": img.id, "RepoTags": img.references, "Created": img.created,
                        "Size": img.size, "ManifestDigest": img.manifest_digest,
                        "RepoDigests": img.repo_digests})
        return web.json_response(out)

    async def image_remove(self, request: web.Request) -> web.Response:
        ref = request.match_info["name"]
        try:
            if self.images.resolve(ref) is None:
                raise APIError(404, f"No such image: {ref}")
            await asyncio.to_thread(self.images.remove, ref)
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        return web.json_response([{"Untagged": ref}])

    # -- registry ------------------------------------------------------------------------

    async def image_pull(self, request: web.Request) -> web.StreamResponse:
        name = request.query.get("fromImage", "")
        tag = request.query.get("tag", "")
        if not name:
            raise APIError(400, "fromImage: required, the image to pull")
        if tag:
            name = f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag}"
        try:
            parse_reference(name)
            platform = Platform.parse(request.query["platform"]) if request.query.get("platform") else None
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        override = _registry_auth(request)
        progress = _Progress(request)

        async def work() -> None:
            async with self._client(override) as client:
                await pull(self.images, name, client, platform=platform, progress=progress)

        return await progress.run(work())

    async def image_push(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        tag = request.query.get("tag", "")
        reference = f"{name}:{tag}" if tag else name
        try:
            parse_reference(reference)
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        override = _registry_auth(request)
        progress = _Progress(request)

        async def work() -> None:
            async with self._client(override) as client:
                await push(self.images, reference, client, progress=progress, chunk_size=self.chunk_size)

        return await progress.run(work())

    async def login(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise APIError(400, "body: must be an object")
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not username:
            raise APIError(400, "username: required")
        if not isinstance(password, str):
            raise APIError(400, "password: required")
        try:
            host = registry_key(body.get("serveraddress") or "docker.io")
            creds = Credentials(username, password)
            async with self._client({host: creds}) as client:
                await client.login(host)
            await asyncio.to_thread(self.credentials.put, host, creds)
        except (ValueError, RegistryError) as exc:
            status, text = _status(exc)
            raise APIError(status, text) from None
        return web.json_response({"Status": "Login Succeeded", "IdentityToken": ""})

    # -- local ---------------------------------------------------------------------------

    async def image_inspect(self, request: web.Request) -> web.Response:
        ref = request.match_info["name"]
        try:
            image = self.images.resolve(ref)
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        if image is None:
            raise APIError(404, f"No such image: {ref}")
        return web.json_response(inspect_json(image))

    async def image_tag(self, request: web.Request) -> web.Response:
        ref = request.match_info["name"]
        repo = request.query.get("repo", "")
        if not repo:
            raise APIError(400, "repo: required, the NAME of the new NAME:TAG")
        tag = request.query.get("tag", "")
        try:
            await asyncio.to_thread(self.images.tag, ref, f"{repo}:{tag}" if tag else repo)
        except ImageNotFoundError:
            raise APIError(404, f"No such image: {ref}") from None
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        return web.Response(status=201)

    async def image_save(self, request: web.Request) -> web.StreamResponse:
        names = request.query.getall("names", [])
        if not names:
            raise APIError(400, "names: give at least one image")
        tmpdir = self.state_dir / "tmp"
        tmpdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=tmpdir, suffix=".tar")
        try:
            with os.fdopen(fd, "wb") as f:
                try:
                    await asyncio.to_thread(archive.save, self.images, names, f)
                except ValueError as exc:
                    raise APIError(404 if "no such image" in str(exc) else 400, str(exc)) from None
            response = web.StreamResponse(status=200, headers={"Content-Type": "application/x-tar"})
            response.content_length = os.path.getsize(path)
            await response.prepare(request)
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            os.unlink(path)

    async def image_load(self, request: web.Request) -> web.Response:
        path = await self._upload(request)
        try:
            try:
                loaded = await asyncio.to_thread(archive.load, self.images, Path(path))
            except ValueError as exc:
                raise APIError(400, str(exc)) from None
        finally:
            os.unlink(path)
        lines = []
        for image in loaded:
            if image.references:
                lines += [{"stream": f"Loaded image: {ref}\n"} for ref in image.references]
            else:
                lines.append({"stream": f"Loaded image ID: {image.id}\n"})
        return web.Response(text="".join(json.dumps(line) + "\r\n" for line in lines),
                            content_type="application/json")

    async def image_prune(self, request: web.Request) -> web.Response:
        all_images = False
        if request.query.get("filters"):
            try:
                filters = json.loads(request.query["filters"])
                dangling = filters.get("dangling", [])
                dangling = list(dangling) if isinstance(dangling, (list, dict)) else [dangling]
            except (ValueError, AttributeError):
                raise APIError(400, "filters: must be a JSON object such as {\"dangling\": [\"false\"]}") from None
            unknown = set(filters) - {"dangling"}
            if unknown:
                raise APIError(400, f"filters: unsupported filter {sorted(unknown)[0]!r}")
            all_images = any(str(v).lower() in ("false", "0") for v in dangling)
        in_use = await asyncio.to_thread(lambda: set(self.in_use()))
        result = await asyncio.to_thread(self.images.prune, in_use, all_images)
        deleted = [{"Untagged" if line.startswith("Untagged: ") else "Deleted": line.split(": ", 1)[1]}
                   for line in result.deleted]
        return web.json_response({"ImagesDeleted": deleted, "SpaceReclaimed": result.space_reclaimed})

