"""Image metadata: the Image record and the pure builders of OCI config and manifest."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.v1+prettyjws")
REF_ANNOTATION = "org.opencontainers.image.ref.name"
# containerd's (and Docker 25's) annotation for the full image name in an OCI layout.
NAME_ANNOTATION = "io.containerd.image.name"

DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm",
         "i686": "386", "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}

# Keys `docker import --change` can set, with the type each must have.
_CHANGE_KEYS = {
    "Cmd": "argv", "Entrypoint": "argv", "Env": "env", "WorkingDir": "str", "User": "str",
    "Labels": "labels", "ExposedPorts": "set", "Volumes": "set", "StopSignal": "str",
}


@dataclass
class Image:
    id: str                       # "sha256:<config digest hex>"
    references: list[str]         # "name:tag", sorted; empty for a dangling image
    manifest_digest: str
    created: str                  # RFC 3339
    size: int                     # bytes of layer blobs
    config: dict[str, Any] = field(default_factory=dict)
    repo_digests: list[str] = field(default_factory=list)  # "name@sha256:<manifest digest>", sorted

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config.get("rootfs", {}).get("diff_ids", []))


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def host_architecture() -> str:
    machine = os.uname().machine
    return _ARCH.get(machine, machine)


def _argv(key: str, value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return ["/bin/sh", "-c", value]  # shell form, as in a Dockerfile
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"changes.{key}: must be a list of strings or a string")


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    """Later entries override earlier ones with the same name; order of first appearance kept."""
    merged: dict[str, str] = {}
    for item in [*base, *extra]:
        name = item.split("=", 1)[0]
        merged[name] = item
    return list(merged.values())


def validate_changes(changes: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in changes.items():
        kind = _CHANGE_KEYS.get(key)
        if kind is None:
            raise ValueError(f"changes: unknown key {key!r} (allowed: {', '.join(sorted(_CHANGE_KEYS))})")
        if kind == "argv":
            out[key] = _argv(key, value)
        elif kind == "env":
            if not (isinstance(value, list) and all(isinstance(v, str) and "=" in v and not v.startswith("=")
                                                    for v in value)):
                raise ValueError(f"changes.{key}: must be a list of NAME=VALUE strings")
            out[key] = list(value)
        elif kind == "str":
            if not isinstance(value, str):
                raise ValueError(f"changes.{key}: must be a string")
            if key == "WorkingDir" and value and not value.startswith("/"):
                raise ValueError(f"changes.{key}: must be an absolute path, got {value!r}")
            out[key] = value
        elif kind == "labels":
            if not (isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in value.items())):
                raise ValueError(f"changes.{key}: must be a mapping of strings to strings")
            out[key] = dict(value)
        else:  # set: Docker encodes sets as {item: {}}
            items = value if isinstance(value, (list, tuple)) else list(value or {})
            if not all(isinstance(v, str) for v in items):
                raise ValueError(f"changes.{key}: must be a list of strings")
            out[key] = {v: {} for v in items}
    return out


def import_config(diff_id: str, created: str, changes: dict[str, Any] | None, comment: str) -> dict[str, Any]:
    """The OCI image config of a single-layer image made by `image import`."""
    inner: dict[str, Any] = {"Env": list(DEFAULT_ENV), "Cmd": None, "Entrypoint": None,
                             "WorkingDir": "", "User": ""}
    for key, value in validate_changes(changes or {}).items():
        inner[key] = merge_env(DEFAULT_ENV, value) if key == "Env" else value
    return {
        "created": created,
        "architecture": host_architecture(),
        "os": "linux",
        "config": inner,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "shoal image import", "comment": comment}],
    }


def descriptor(media_type: str, digest: str, size: int) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def manifest(config_desc: dict[str, Any], layer_descs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": config_desc, "layers": layer_descs}
