"""A node's side of pinning service images (manager/imagepin.py's ImageSource): its registry
client (logins, insecure registries, CAs from the state directory) and its image store.

It runs on the manager that received the create/update call, so the registry is asked with
that node's `shoal login` credentials (or the request's X-Registry-Auth), as Docker's CLI asks
with the credentials of the user who typed the command.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from worker.images.auth import encode_auth_config
from worker.images.nodeclient import auth_override, image_registry, node_credentials, node_registry_client
from worker.images.reference import DEFAULT_TAG, normalize_reference, parse_reference, registry_location
from worker.images.registry import RegistryError
from worker.images.store import ImageStore

# A create or update waits for this answer: a registry that does not answer must not hold it
# for long (the service is then created unpinned, with a warning, as Docker does).
CONNECT_TIMEOUT = 5.0
RESOLVE_TIMEOUT = 15.0


def pinned_from_store(images: ImageStore, ref: str) -> str | None:
    """The reference to give the tasks from this node's store, or None if the image is not here.
    A pulled image is pinned to its registry digest (`name:tag@sha256:…`); a locally imported
    image has no registry digest, so every node resolves the tag itself."""
    image = images.resolve(ref)
    if image is None:
        return None
    if "@" in ref or ref.startswith("sha256:"):
        return ref
    normalized = normalize_reference(ref)
    name = normalized.rsplit(":", 1)[0] if ":" in normalized.rsplit("/", 1)[-1] else normalized
    for repo_digest in image.repo_digests or []:
        if repo_digest.split("@", 1)[0] == name:
            return f"{normalized}@{repo_digest.split('@', 1)[1]}"
    return normalized


class NodeImages:
    def __init__(self, images: ImageStore, state_dir: Path):
        self.images = images
        self.state_dir = Path(state_dir)

    async def registry_digest(self, reference: str, registry_auth: str) -> str:
        try:
            ref = parse_reference(reference)
            host, repository = registry_location(ref.name)
            override = auth_override(registry_auth, reference)
            client = node_registry_client(self.state_dir, override, connect_timeout=CONNECT_TIMEOUT)
        except ValueError as exc:
            raise LookupError(str(exc)) from None
        try:
            async with client:
                return await asyncio.wait_for(client.manifest_digest(host, repository, ref.tag or DEFAULT_TAG),
                                              RESOLVE_TIMEOUT)
        except RegistryError as exc:
            raise LookupError(str(exc)) from None
        except asyncio.TimeoutError:
            raise LookupError(f"registry: {host} did not answer within {RESOLVE_TIMEOUT:g}s") from None

    def local_pin(self, reference: str) -> str | None:
        try:
            return pinned_from_store(self.images, reference)
        except ValueError:
            return None

    def stored_auth(self, reference: str) -> str:
        try:
            host = image_registry(reference)
            creds = node_credentials(self.state_dir).get(host)
        except ValueError:
            return ""
        return encode_auth_config(host, creds) if creds is not None else ""
