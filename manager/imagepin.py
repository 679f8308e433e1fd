"""Which image reference a service's tasks get: Swarm's `--resolve-image always|changed|never`.

Pinning a tag to the digest the registry holds for it now (`name:tag@sha256:…`) makes every
replica run the same bits, however the tag moves later; the workers then pull by digest.

- always:  ask the registry for the tag's digest (a reference that already has a digest is
           pinned as it is; nothing to ask).
- changed: the same, but only when the image differs from the service's current one; an
           unchanged image keeps its current pin (what `docker stack deploy` does with a
           compose file that names the tag only).
- never:   no registry is contacted; the reference is kept as given, except that an unchanged
           image keeps its current pin too, so that a redeploy or a scale does not unpin it.

An image this node holds without a registry digest (imported or loaded, not pulled) is
used as it is: no registry is asked about bits no registry gave.

When the registry cannot say (unreachable, unknown image, refused credentials), Docker's
fallback applies: an unchanged image keeps its current pin, an image in this manager's own
store is pinned from there (to its repo digest when it was pulled), and otherwise the service
is created with the reference as given, with Docker's warning.

The registry and the local store come in through `ImageSource`, so this module holds the
decisions only and is tested without a network.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from worker.images.reference import normalize_reference, parse_reference

_IMAGE_ID = re.compile(r"^[a-f0-9]{64}$")
RESOLVE_MODES = ("always", "changed", "never")
DEFAULT_API_MODE = "never"  # Docker's API: the daemon asks no registry unless told to


class ImageSource(Protocol):
    """What the node that received the call knows of registries and images (daemon/serviceimages.py)."""

    async def registry_digest(self, reference: str, registry_auth: str) -> str:
        """The digest the registry holds for reference now; LookupError (one line) if it cannot."""
        ...

    def local_pin(self, reference: str) -> str | None:
        """The reference pinned from this node's own store, or None if the image is not there."""
        ...

    def stored_auth(self, reference: str) -> str:
        """This node's login (`shoal login`) for the image's registry as an encoded auth config,
        or "" when it holds none."""
        ...


@dataclass
class Pinned:
    image: str
    warnings: list[str] = field(default_factory=list)


def parse_mode(text: str | None, name: str = "resolveImage") -> str:
    if text is None or text == "":
        return DEFAULT_API_MODE
    if text not in RESOLVE_MODES:
        raise ValueError(f"{name}: must be always, changed or never, got {text!r}")
    return text


def has_digest(reference: str) -> bool:
    """Pinned already: by digest, or an image id (which no registry could resolve anyway)."""
    return "@" in reference or reference.startswith("sha256:") or bool(_IMAGE_ID.match(reference))


def strip_digest(reference: str) -> str:
    """`app:1@sha256:…` -> `app:1`; a digest-only reference keeps its digest (there is no tag)."""
    name, _, digest = reference.partition("@")
    if not digest:
        return reference
    return name if parse_reference(name).tag else reference


def _normalized(reference: str) -> str:
    try:
        return normalize_reference(reference)
    except ValueError:
        return reference


def unchanged(image: str, current: str | None) -> bool:
    """Whether `image` names what the service runs now: the same reference, or its tag before
    it was pinned (`app:1` and the current `app:1@sha256:…`; `busybox` and `busybox:latest`)."""
    if current is None:
        return False
    return _normalized(image) in (_normalized(current), _normalized(strip_digest(current)))


def digest_warning(image: str, reason: str = "") -> str:
    """Docker's warning, on one line, with the registry's reason."""
    text = (f"image {image} could not be accessed on a registry to record its digest. Each node will access "
            f"{image} independently, possibly leading to different nodes running different versions of the image.")
    return f"{text} ({reason})" if reason else text


async def pin_image(image: str, mode: str, current: str | None, source: ImageSource | None,
                    registry_auth: str = "") -> Pinned:
    """The reference to record for `image`, given the mode, the service's current reference
    (None on create) and the credentials to ask the registry with."""
    same = unchanged(image, current)
    if has_digest(image):
        return Pinned(image)
    if mode == "never" or (mode == "changed" and same) or source is None:
        return Pinned(current if same and current is not None else image)
    local = source.local_pin(image)
    if local is not None and not has_digest(local):
        # Imported or loaded here, never pulled: no registry knows these bits, so none is asked
        # (Docker would ask Docker Hub for `busybox` and warn); each node resolves the tag itself.
        return Pinned(local)
    try:
        digest = await source.registry_digest(image, registry_auth)
    except LookupError as exc:
        reason = str(exc.args[0]) if exc.args else str(exc)
        if same and current is not None and has_digest(current):
            return Pinned(current, [f"image {image} could not be accessed on a registry to check its digest: "
                                    f"keeping the digest recorded before ({current}). ({reason})"])
        local = source.local_pin(image)
        if local is not None:
            return Pinned(local)
        return Pinned(image, [digest_warning(image, reason)])
    return Pinned(f"{_normalized(image)}@{digest}")
