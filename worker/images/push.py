"""Push an image from the store to a registry: blobs the registry lacks, then the manifest,
byte for byte, so the pushed digest is the one the store already knows."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from .image import Image
from .manifests import Descriptor, Manifest, parse_manifest
from .pull import CONCURRENT_LAYERS, Progress, message
from .reference import DEFAULT_TAG, parse_reference, registry_location
from .registry import RegistryClient
from .store import ImageNotFoundError, ImageStore

_PROGRESS_INTERVAL = 0.1


async def push(store: ImageStore, reference: str, client: RegistryClient, progress: Progress | None = None,
               chunk_size: int | None = None) -> tuple[Image, str, int]:
    """Push "name[:tag]" (tag defaults to latest). Returns (image, manifest digest, manifest size)
    and records name@digest as a repo digest of the image."""
    emit = progress or (lambda msg: None)
    ref = parse_reference(reference)
    if ref.digest:
        raise ValueError(f"reference: cannot push a digest reference {reference!r}; push a tag")
    tag = ref.tag or DEFAULT_TAG
    image = store.resolve(f"{ref.name}:{tag}")
    if image is None:
        raise ImageNotFoundError(f"image: no such image {ref.name}:{tag}")
    host, repository = registry_location(ref.name)
    data = store.manifest_bytes(image)
    man = parse_manifest(data)
    assert isinstance(man, Manifest)
    emit(message(f"The push refers to repository [{host}/{repository}]"))

    async def upload(desc: Descriptor) -> None:
        short = desc.digest.split(":", 1)[1][:12]
        emit(message("Preparing", id=short))
        if await client.blob_exists(host, repository, desc.digest):
            emit(message("Layer already exists", id=short))
            return
        last = [0.0]

        def on_bytes(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= _PROGRESS_INTERVAL or done == total:
                last[0] = now
                emit(message("Pushing", id=short, current=done, total=total))

        await client.upload_blob(host, repository, desc.digest, store.blobs.path(desc.digest), desc.size,
                                 chunk_size=chunk_size, on_bytes=on_bytes)
        emit(message("Pushed", id=short))

    sem = asyncio.Semaphore(CONCURRENT_LAYERS)

    async def limited(desc: Descriptor) -> None:
        async with sem:
            await upload(desc)

    try:
        async with asyncio.TaskGroup() as group:
            for desc in man.blobs():
                group.create_task(limited(desc))
    except* Exception as group_error:
        raise group_error.exceptions[0] from None
    digest = await client.put_manifest(host, repository, tag, data, man.media_type)
    image = await asyncio.to_thread(store.add_repo_digest, image, f"{ref.name}@{digest}")
    emit(message(f"{tag}: digest: {digest} size: {len(data)}"))
    aux: dict[str, Any] = {"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": len(data)}}
    emit(aux)
    return image, digest, len(data)
