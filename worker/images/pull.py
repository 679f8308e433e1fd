"""Pull an image from a registry into the store.

Every byte is checked before the store sees it: the manifest against the digest asked for
(or the one the registry announces), a list entry against its descriptor, the config and
each layer against their digests, and each layer's uncompressed content against the diff
id in the config. Layers download concurrently into the store's downloads/ directory and
move into the content store only once the whole image checks out, so a refused or broken
pull stores nothing; an interrupted download keeps its bytes and the next attempt resumes
with a Range request.
"""
from __future__ import annotations

import asyncio
import json
import time
import weakref
import zlib
from pathlib import Path
from typing import Any, Callable

from .blobs import check_digest, sha256_digest
from .image import Image
from .manifests import Descriptor, Index, Manifest, Platform, host_platform, parse_manifest, select_platform
from .reference import DEFAULT_TAG, parse_reference, registry_location
from .registry import DigestMismatchError, RegistryClient
from .store import ImageStore
from .unpack import HashingReader, open_decompressed

Progress = Callable[[dict[str, Any]], None]   # one Docker JSON message: status, id, progressDetail
CONCURRENT_LAYERS = 3
_PROGRESS_INTERVAL = 0.1

# One download of a blob at a time per store, so two pulls never write the same partial file;
# and what one pull verified, another reuses without reading a file the first may be moving.
_locks: "weakref.WeakKeyDictionary[ImageStore, dict[str, asyncio.Lock]]" = weakref.WeakKeyDictionary()
_verified: "weakref.WeakKeyDictionary[ImageStore, dict[str, Path]]" = weakref.WeakKeyDictionary()


def message(status: str, id: str | None = None, current: int | None = None,
            total: int | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"status": status}
    if id:
        msg["id"] = id
    if current is not None:
        msg["progressDetail"] = {"current": current, "total": total}
    return msg


def _short(digest: str) -> str:
    return digest.split(":", 1)[1][:12]


def _blob_lock(store: ImageStore, digest: str) -> asyncio.Lock:
    return _locks.setdefault(store, {}).setdefault(digest, asyncio.Lock())


def _uncompressed_digest(path) -> str:
    with open_decompressed(path) as raw:
        return HashingReader(raw).drain()


def _check_config(data: bytes, man: Manifest) -> dict[str, Any]:
    try:
        config = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"config: not valid JSON ({exc})") from None
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") if isinstance(config, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(man.layers):
        raise ValueError(f"config.rootfs.diff_ids: {len(diff_ids) if isinstance(diff_ids, list) else 'no'} "
                         f"diff ids for {len(man.layers)} layers")
    for d in diff_ids:
        check_digest(d)
    return config


async def resolve_manifest(client: RegistryClient, host: str, repository: str, target: str,
                           platform: Platform) -> tuple[bytes, Manifest, str]:
    """(manifest bytes, parsed manifest, repo digest) for a tag or digest; a list is narrowed
    to one platform, and the repo digest stays the list's, as Docker records it."""
    data, content_type, announced = await client.get_manifest(host, repository, target)
    digest = sha256_digest(data)
    if target.startswith("sha256:") and digest != target:
        raise DigestMismatchError(f"manifest: {repository}@{target} has content with digest {digest}; refused")
    if announced and announced != digest:
        raise DigestMismatchError(f"manifest: {repository}:{target} announced {announced} but its content "
                                  f"has {digest}; refused")
    parsed = parse_manifest(data, content_type)
    if isinstance(parsed, Index):
        entry = select_platform(parsed, platform)
        data, content_type, _ = await client.get_manifest(host, repository, entry.digest)
        if sha256_digest(data) != entry.digest:
            raise DigestMismatchError(f"manifest: {repository}@{entry.digest} has content with digest "
                                      f"{sha256_digest(data)}; refused")
        parsed = parse_manifest(data, content_type)
        if isinstance(parsed, Index):
            raise ValueError(f"manifest: {repository}@{entry.digest} is a list inside a list")
    return data, parsed, digest


async def pull(store: ImageStore, reference: str, client: RegistryClient, platform: Platform | None = None,
               progress: Progress | None = None, retries: int = 3) -> Image:
    """Pull reference ("name[:tag]" or "name[:tag]@sha256:...") and return the stored image.
    A pull by tag tags it; every pull records the repo digest (name@sha256:...)."""
    emit = progress or (lambda msg: None)
    ref = parse_reference(reference)
    tag = None if ref.digest else (ref.tag or DEFAULT_TAG)
    host, repository = registry_location(ref.name)
    target = ref.digest or tag
    assert target
    data, man, list_digest = await resolve_manifest(client, host, repository, target, platform or host_platform())
    config_bytes = await client.get_blob(host, repository, man.config)
    diff_ids = _check_config(config_bytes, man)["rootfs"]["diff_ids"]
    # The first message goes out only once the registry has answered, so an API can still
    # turn a refusal (unknown image, bad credentials) into an HTTP status.
    emit(message(f"Pulling from {repository}", id=tag or ref.digest))
    before = store.resolve(f"{ref.name}:{tag}") if tag else None

    staged: dict[str, Path] = {}

    async def fetch(desc: Descriptor, diff_id: str) -> None:
        short = _short(desc.digest)
        if store.blobs.exists(desc.digest):
            emit(message("Already exists", id=short))
            return
        async with _blob_lock(store, desc.digest):
            if store.blobs.exists(desc.digest):
                emit(message("Already exists", id=short))
                return
            verified = _verified.setdefault(store, {})
            known = verified.pop(desc.digest, None)
            if known is not None and (known.exists() or store.blobs.exists(desc.digest)):
                verified[desc.digest] = staged[desc.digest] = known
                emit(message("Download complete", id=short))
                return
            partial = store.partial_path(desc.digest)
            last = [0.0]

            def on_bytes(done: int, total: int) -> None:
                now = time.monotonic()
                if now - last[0] >= _PROGRESS_INTERVAL or done == total:
                    last[0] = now
                    emit(message("Downloading", id=short, current=done, total=total))

            await client.download_blob(host, repository, desc, partial, on_bytes, retries=retries)
            emit(message("Verifying Checksum", id=short))
            if diff_id != desc.digest:  # a compressed layer: check what it unpacks to
                try:
                    actual = await asyncio.to_thread(_uncompressed_digest, partial)
                except (OSError, EOFError, zlib.error, ValueError) as exc:
                    partial.unlink(missing_ok=True)
                    raise DigestMismatchError(f"layer: {desc.digest} does not decompress ({exc}); refused") from None
                if actual != diff_id:
                    partial.unlink(missing_ok=True)
                    raise DigestMismatchError(f"layer: {desc.digest} uncompresses to {actual}, the config "
                                              f"says {diff_id}; refused")
            verified[desc.digest] = staged[desc.digest] = partial
            emit(message("Download complete", id=short))

    for desc in man.layers:
        if not store.blobs.exists(desc.digest):
            emit(message("Pulling fs layer", id=_short(desc.digest)))
    try:
        async with asyncio.TaskGroup() as group:
            sem = asyncio.Semaphore(CONCURRENT_LAYERS)

            async def limited(desc: Descriptor, diff_id: str) -> None:
                async with sem:
                    await fetch(desc, diff_id)

            for desc, diff_id in zip(man.layers, diff_ids):
                group.create_task(limited(desc, diff_id))
    except* Exception as group_error:
        raise group_error.exceptions[0] from None
    image = await asyncio.to_thread(store.add_image, data, config_bytes, staged,
                                    [f"{ref.name}:{tag}"] if tag else [], f"{ref.name}@{list_digest}")
    for desc in man.layers:
        if desc.digest in staged:
            emit(message("Pull complete", id=_short(desc.digest)))
    emit(message(f"Digest: {list_digest}"))
    shown = f"{ref.name}:{tag}" if tag else f"{ref.name}@{list_digest}"
    if before is not None and before.manifest_digest == image.manifest_digest:
        emit(message(f"Status: Image is up to date for {shown}"))
    else:
        emit(message(f"Status: Downloaded newer image for {shown}"))
    return image
