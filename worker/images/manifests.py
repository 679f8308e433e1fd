"""Registry manifests, parsed and checked without I/O: Docker schema 2 and OCI image
manifests, Docker manifest lists and OCI image indexes, and the choice of one platform's
manifest from a list.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .blobs import check_digest
from .image import (MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_SCHEMA1, MEDIA_INDEX,
                    MEDIA_MANIFEST, host_architecture)

MANIFEST_TYPES = (MEDIA_MANIFEST, MEDIA_DOCKER_MANIFEST)
INDEX_TYPES = (MEDIA_INDEX, MEDIA_DOCKER_LIST)
# What a client accepts when it asks for a manifest, best first.
ACCEPT = ", ".join([MEDIA_INDEX, MEDIA_DOCKER_LIST, MEDIA_MANIFEST, MEDIA_DOCKER_MANIFEST])

# Variants an architecture has when a list leaves them out (as containerd's platforms package).
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """"linux/arm64/v8", "linux/amd64" or just "arm64" (os linux)."""
        parts = text.strip().split("/") if isinstance(text, str) else []
        if not parts or not all(parts) or len(parts) > 3:
            raise ValueError(f"platform: {text!r} is not os/arch[/variant]")
        if len(parts) == 1:
            parts = ["linux", *parts]
        os_, arch = parts[0].lower(), parts[1].lower()
        arch = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64"}.get(arch, arch)
        return cls(os_, arch, parts[2].lower() if len(parts) == 3 else "")

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, other: "Platform") -> bool:
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        default = _DEFAULT_VARIANT.get(self.architecture, "")
        return (self.variant or default) == (other.variant or default) or not self.variant


def host_platform() -> Platform:
    return Platform("linux", host_architecture())


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]

    def blobs(self) -> list[Descriptor]:
        return [self.config, *self.layers]


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: list[Descriptor]


def parse_descriptor(obj: Any, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: must be an object")
    media_type = obj.get("mediaType", "")
    if not isinstance(media_type, str):
        raise ValueError(f"{where}.mediaType: must be a string")
    try:
        digest = check_digest(obj.get("digest"))
    except ValueError:
        raise ValueError(f"{where}.digest: invalid digest {obj.get('digest')!r}") from None
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"{where}.size: must be a non-negative integer, got {size!r}")
    platform = None
    if isinstance(obj.get("platform"), dict):
        p = obj["platform"]
        platform = Platform(str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", "")))
    annotations = obj.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise ValueError(f"{where}.annotations: must be an object")
    return Descriptor(media_type, digest, size, platform, {str(k): str(v) for k, v in annotations.items()})


def parse_manifest(data: bytes, content_type: str = "") -> Manifest | Index:
    """Parse a manifest or a list; the body's mediaType wins over the HTTP Content-Type."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"manifest: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError("manifest: must be a JSON object")
    media_type = obj.get("mediaType") or content_type.split(";", 1)[0].strip()
    if obj.get("schemaVersion") == 1 or media_type in MEDIA_DOCKER_SCHEMA1:
        raise ValueError("manifest: schema 1 manifests are not supported (push the image again with a "
                         "current client)")
    if obj.get("schemaVersion") != 2:
        raise ValueError(f"manifest.schemaVersion: must be 2, got {obj.get('schemaVersion')!r}")
    if not media_type:
        # OCI allows leaving mediaType out: a list has "manifests", an image has "config".
        media_type = MEDIA_INDEX if "manifests" in obj else MEDIA_MANIFEST
    if media_type in INDEX_TYPES:
        entries = obj.get("manifests")
        if not isinstance(entries, list):
            raise ValueError("manifest.manifests: must be a list")
        return Index(media_type, [parse_descriptor(d, f"manifest.manifests[{i}]") for i, d in enumerate(entries)])
    if media_type not in MANIFEST_TYPES:
        raise ValueError(f"manifest.mediaType: unsupported media type {media_type!r}")
    layers = obj.get("layers")
    if not isinstance(layers, list):
        raise ValueError("manifest.layers: must be a list")
    return Manifest(media_type, parse_descriptor(obj.get("config"), "manifest.config"),
                    [parse_descriptor(d, f"manifest.layers[{i}]") for i, d in enumerate(layers)])


def select_platform(index: Index, want: Platform) -> Descriptor:
    """The entry of a list for one platform; an exact variant match beats a bare one."""
    candidates = [d for d in index.manifests
                  if d.media_type in MANIFEST_TYPES or not d.media_type]
    exact = [d for d in candidates if d.platform and d.platform.matches(want) and want.matches(d.platform)]
    loose = [d for d in candidates if d.platform and want.matches(d.platform)]
    if exact or loose:
        return (exact or loose)[0]
    available = ", ".join(sorted({str(d.platform) for d in candidates if d.platform})) or "none"
    raise ValueError(f"platform: no manifest for {want} in the list (available: {available})")
