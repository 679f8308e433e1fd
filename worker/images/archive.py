"""Image archives: `docker save` tars and OCI layout tars, loaded into and saved from the store.

Load reads either kind: a docker-archive (manifest.json listing Config, RepoTags and
Layers by path) or an OCI image layout (oci-layout, index.json, blobs/). Every layer is
checked against the diff id its config names (and, in an OCI layout, against its digest)
before the store sees it; a bad archive stores nothing.

Save writes what Docker 25 writes: one tar that is both an OCI image layout and a
docker-archive (its manifest.json points into blobs/), so `docker load`, `podman load`,
`skopeo` (docker-archive: or oci-archive:) and `shoal image load` all read it.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .blobs import canonical_json, sha256_digest
from .image import (MEDIA_CONFIG, MEDIA_INDEX, MEDIA_LAYER, MEDIA_LAYER_GZIP, NAME_ANNOTATION, REF_ANNOTATION, Image,
                    descriptor, manifest)
from .manifests import Index, Manifest, Platform, host_platform, parse_manifest, select_platform
from .reference import familiar_name, normalize_reference, parse_reference, qualified_name
from .store import ImageStore
from .unpack import HashingReader, member_path, open_decompressed, sniff_compression

_COPY = 1 << 20


@dataclass
class _Staging:
    """Layer files copied out of an archive; whatever the store did not adopt is removed."""
    store: ImageStore
    paths: list[Path] = field(default_factory=list)
    by_digest: dict[str, Path] = field(default_factory=dict)

    def cleanup(self) -> None:
        for path in self.paths:
            path.unlink(missing_ok=True)


class _Archive:
    def __init__(self, path: Path):
        try:
            self.tar = tarfile.open(path, "r:*")
            self.members = {member_path(m.name): m for m in self.tar.getmembers()}
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ValueError(f"load: {path} is not a tar archive ({exc})") from None

    def has(self, name: str) -> bool:
        return member_path(name) in self.members

    def open(self, name: str) -> BinaryIO:
        member = self.members.get(member_path(name))
        if member is None:
            raise ValueError(f"load: the archive has no {name!r}")
        f = self.tar.extractfile(member)  # follows hard and symbolic links inside the archive
        if f is None:
            raise ValueError(f"load: {name!r} in the archive is not a file")
        return f  # type: ignore[return-value]

    def read(self, name: str, limit: int = 16 << 20) -> bytes:
        data = self.open(name).read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"load: {name!r} is larger than {limit} bytes")
        return data

    def close(self) -> None:
        self.tar.close()


def _stage_layer(archive: _Archive, name: str, staging: _Staging) -> tuple[str, int, str, str]:
    """Copy a layer out of the archive; (digest, size, diff id, media type)."""
    tmp = staging.store.downloads_dir / f".load-{uuid.uuid4().hex}"
    staging.paths.append(tmp)
    hasher, size, head = hashlib.sha256(), 0, b""
    with archive.open(name) as src, open(tmp, "wb") as out:
        while chunk := src.read(_COPY):
            head = head or chunk[:8]
            hasher.update(chunk)
            out.write(chunk)
            size += len(chunk)
    digest = "sha256:" + hasher.hexdigest()
    staging.by_digest.setdefault(digest, tmp)
    kind = sniff_compression(head)
    if kind is None:
        return digest, size, digest, MEDIA_LAYER
    if kind == "gzip":
        with open_decompressed(tmp) as raw:
            return digest, size, HashingReader(raw).drain(), MEDIA_LAYER_GZIP
    raise ValueError(f"load: layer {name!r} is {kind}-compressed; only plain and gzip layers are supported")


def _config(data: bytes, where: str) -> list[str]:
    try:
        config = json.loads(data)
        diff_ids = config["rootfs"]["diff_ids"]
        if not isinstance(diff_ids, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"load: {where}: not an image config with rootfs.diff_ids") from None
    return diff_ids


def _names(tags: Any, where: str) -> list[str]:
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError(f"load: {where}: must be a list of strings")
    out = []
    for tag in tags:
        try:
            out.append(normalize_reference(familiar_name(tag)))
        except ValueError as exc:
            raise ValueError(f"load: {where}: {exc}") from None
    return out


def _oci_manifest_for(archive: _Archive, config_digest: str, layers: list[str]) -> bytes | None:
    """The archive's own OCI manifest for this config and these layers, if it has one, so a
    save/load round trip keeps the manifest digest."""
    if not archive.has("index.json"):
        return None
    try:
        index = parse_manifest(archive.read("index.json"))
    except ValueError:
        return None
    if not isinstance(index, Index):
        return None
    for desc in index.manifests:
        path = f"blobs/sha256/{desc.digest.split(':', 1)[1]}"
        if not archive.has(path):
            continue
        data = archive.read(path)
        try:
            man = parse_manifest(data)
        except ValueError:
            continue
        if sha256_digest(data) == desc.digest and isinstance(man, Manifest) \
                and man.config.digest == config_digest and [l.digest for l in man.layers] == layers:
            return data
    return None


def _load_docker(store: ImageStore, archive: _Archive) -> list[Image]:
    try:
        entries = json.loads(archive.read("manifest.json"))
    except ValueError as exc:
        raise ValueError(f"load: manifest.json is not valid JSON ({exc})") from None
    if not isinstance(entries, list) or not entries:
        raise ValueError("load: manifest.json must be a non-empty list")
    loaded = []
    for i, entry in enumerate(entries):
        where = f"manifest.json[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers"), list):
            raise ValueError(f"load: {where}: needs Config and Layers")
        config_bytes = archive.read(entry["Config"])
        diff_ids = _config(config_bytes, f"{where}.Config")
        if len(diff_ids) != len(entry["Layers"]):
            raise ValueError(f"load: {where}: {len(entry['Layers'])} layers but the config lists "
                             f"{len(diff_ids)} diff ids")
        names = _names(entry.get("RepoTags"), f"{where}.RepoTags")
        staging = _Staging(store)
        try:
            descs = []
            for layer, diff_id in zip(entry["Layers"], diff_ids):
                digest, size, actual, media = _stage_layer(archive, layer, staging)
                if actual != diff_id:
                    raise ValueError(f"load: layer {layer!r} has diff id {actual}, the config says {diff_id}")
                descs.append(descriptor(media, digest, size))
            config_digest = sha256_digest(config_bytes)
            data = _oci_manifest_for(archive, config_digest, [d["digest"] for d in descs]) or canonical_json(
                manifest(descriptor(MEDIA_CONFIG, config_digest, len(config_bytes)), descs))
            loaded.append(store.add_image(data, config_bytes, staging.by_digest, names))
        finally:
            staging.cleanup()
    return loaded


def _oci_name(desc_annotations: dict[str, str]) -> list[str]:
    full = desc_annotations.get(NAME_ANNOTATION)
    ref = desc_annotations.get(REF_ANNOTATION, "")
    candidate = full or (ref if ("/" in ref or ":" in ref) else "")  # a bare "latest" is only a tag
    if not candidate:
        return []
    try:
        parsed = parse_reference(familiar_name(candidate))
    except ValueError:
        return []
    return [] if parsed.digest else [normalize_reference(str(parsed))]


def _load_oci(store: ImageStore, archive: _Archive, platform: Platform) -> list[Image]:
    top = parse_manifest(archive.read("index.json"))
    if not isinstance(top, Index):
        raise ValueError("load: index.json is not an image index")

    def blob(digest: str) -> bytes:
        data = archive.read(f"blobs/sha256/{digest.split(':', 1)[1]}")
        if sha256_digest(data) != digest:
            raise ValueError(f"load: blob {digest} has content with digest {sha256_digest(data)}")
        return data

    loaded = []
    for desc in top.manifests:
        data = blob(desc.digest)
        man = parse_manifest(data, desc.media_type)
        if isinstance(man, Index):
            data = blob(select_platform(man, platform).digest)
            man = parse_manifest(data)
            if isinstance(man, Index):
                raise ValueError(f"load: {desc.digest} nests an index in an index")
        config_bytes = blob(man.config.digest)
        diff_ids = _config(config_bytes, f"config {man.config.digest}")
        if len(diff_ids) != len(man.layers):
            raise ValueError(f"load: manifest {desc.digest} has {len(man.layers)} layers, its config "
                             f"{len(diff_ids)} diff ids")
        staging = _Staging(store)
        try:
            for layer, diff_id in zip(man.layers, diff_ids):
                if store.blobs.exists(layer.digest) or layer.digest in staging.by_digest:
                    continue
                digest, _, actual, _ = _stage_layer(archive, f"blobs/sha256/{layer.digest.split(':', 1)[1]}",
                                                    staging)
                if digest != layer.digest:
                    raise ValueError(f"load: layer blob {layer.digest} has content with digest {digest}")
                if actual != diff_id:
                    raise ValueError(f"load: layer {layer.digest} has diff id {actual}, the config says {diff_id}")
            loaded.append(store.add_image(data, config_bytes, staging.by_digest, _oci_name(desc.annotations)))
        finally:
            staging.cleanup()
    return loaded


def load(store: ImageStore, path: Path, platform: Platform | None = None) -> list[Image]:
    """Load every image of a docker-archive or OCI layout tar (plain or compressed)."""
    archive = _Archive(Path(path))
    try:
        if archive.has("manifest.json"):
            return _load_docker(store, archive)
        if archive.has("index.json"):
            return _load_oci(store, archive, platform or host_platform())
        raise ValueError(f"load: {Path(path).name} has neither manifest.json (docker save) "
                         f"nor index.json (OCI layout)")
    finally:
        archive.close()


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, src: Path | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    if data is None and src is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        return
    info.mode = 0o644
    if src is not None:
        info.size = src.stat().st_size
        with open(src, "rb") as f:
            tar.addfile(info, f)
    else:
        info.size = len(data or b"")
        tar.addfile(info, io.BytesIO(data or b""))


def save(store: ImageStore, refs: list[str], out: BinaryIO) -> None:
    """Write the images refs name as one archive to out (a stream: nothing is seeked)."""
    if not refs:
        raise ValueError("names: give at least one image")
    chosen: dict[str, tuple[Image, list[str]]] = {}
    for ref in refs:
        image = store.resolve(ref)
        if image is None:
            raise ValueError(f"names: no such image {ref!r}")
        tags = []
        if not ref.startswith("sha256:") and "@" not in ref and normalize_reference(ref) in image.references:
            tags = [normalize_reference(ref)]
        entry = chosen.setdefault(image.manifest_digest, (image, []))
        entry[1].extend(t for t in tags if t not in entry[1])
    index_entries: list[dict[str, Any]] = []
    docker_entries: list[dict[str, Any]] = []
    blobs: list[str] = []
    for digest, (image, tags) in chosen.items():
        man = parse_manifest(store.manifest_bytes(image))
        assert isinstance(man, Manifest)
        for d in [digest, *(b.digest for b in man.blobs())]:
            if d not in blobs:
                blobs.append(d)
        base = descriptor(man.media_type, digest, store.blobs.size(digest))
        for tag in tags:
            parsed = parse_reference(tag)
            index_entries.append({**base, "annotations": {
                NAME_ANNOTATION: f"{qualified_name(parsed.name)}:{parsed.tag}", REF_ANNOTATION: parsed.tag}})
        if not tags:
            index_entries.append(base)
        docker_entries.append({"Config": f"blobs/sha256/{man.config.digest.split(':', 1)[1]}",
                               "RepoTags": tags,
                               "Layers": [f"blobs/sha256/{l.digest.split(':', 1)[1]}" for l in man.layers]})
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "blobs")
        _add(tar, "blobs/sha256")
        for d in blobs:
            _add(tar, f"blobs/sha256/{d.split(':', 1)[1]}", src=store.blobs.path(d))
        _add(tar, "index.json", canonical_json({"schemaVersion": 2, "mediaType": MEDIA_INDEX,
                                                "manifests": index_entries}))
        _add(tar, "manifest.json", json.dumps(docker_entries).encode())
        _add(tar, "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
