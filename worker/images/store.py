"""The node's image content store, an OCI image layout under one root directory:

    oci-layout, index.json            OCI layout marker and index; each index entry carries the
                                      reference ("name:tag") in org.opencontainers.image.ref.name,
                                      an entry without it is an untagged (dangling) image
    blobs/sha256/<hex>                layer tars, config and manifest JSON
    layers/<diff-id hex>/             layers unpacked once, shared by every container

Every write is temp file + rename, and index.json is rewritten last on import and first on
removal, so a crash leaves unreferenced blobs at worst, never a reference to a missing one.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tarfile
import threading
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .blobs import BlobStore, atomic_write, canonical_json
from .image import (MEDIA_CONFIG, MEDIA_INDEX, MEDIA_LAYER, MEDIA_MANIFEST, REF_ANNOTATION, Image,
                    descriptor, import_config, manifest, now_rfc3339,
                    validate_changes)
from .reference import normalize_reference, parse_reference
from .unpack import member_path, open_decompressed, unpack_layer

_ID = re.compile(r"^(sha256:)?([a-f0-9]{12,64})$")


class ImageNotFoundError(LookupError):
    pass


class ImageInUseError(RuntimeError):
    pass


def _mounted_lowerdirs(mountinfo: Path = Path("/proc/self/mountinfo")) -> set[str]:
    dirs: set[str] = set()
    for line in mountinfo.read_text().splitlines():
        _, _, post = line.partition(" - ")
        fields = post.split(" ")
        if len(fields) < 3 or fields[0] != "overlay":
            continue
        for opt in fields[2].split(","):
            if opt.startswith("lowerdir="):
                dirs.update(d.replace("\\040", " ") for d in opt[len("lowerdir="):].split(":"))
    return dirs


class ImageStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.root)
        self.layers_dir = self.root / "layers"
        self.layers_dir.mkdir(exist_ok=True)
        for stray in self.layers_dir.glob(".tmp-*"):
            shutil.rmtree(stray, ignore_errors=True)
        if not (self.root / "oci-layout").exists():
            atomic_write(self.root / "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
        self._mutex = threading.RLock()

    # -- index ---------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time, across threads and processes sharing the root."""
        with self._mutex:
            with open(self.root / ".lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> tuple[dict[str, str], set[str]]:
        """(reference -> manifest digest, all manifest digests)."""
        path = self.root / "index.json"
        if not path.exists():
            return {}, set()
        index = json.loads(path.read_text())
        refs: dict[str, str] = {}
        manifests: set[str] = set()
        for desc in index.get("manifests", []):
            manifests.add(desc["digest"])
            ref = (desc.get("annotations") or {}).get(REF_ANNOTATION)
            if ref:
                refs[ref] = desc["digest"]
        return refs, manifests

    def _save(self, refs: dict[str, str], manifests: set[str]) -> None:
        entries: list[dict[str, Any]] = []
        for digest in sorted(manifests):
            names = sorted(r for r, d in refs.items() if d == digest)
            base = descriptor(MEDIA_MANIFEST, digest, self.blobs.size(digest))
            for name in names:
                entries.append({**base, "annotations": {REF_ANNOTATION: name}})
            if not names:
                entries.append(base)
        index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": entries}
        atomic_write(self.root / "index.json", canonical_json(index))

    def _image(self, manifest_digest: str, refs: dict[str, str]) -> Image:
        man = self.blobs.read_json(manifest_digest)
        config_digest = man["config"]["digest"]
        config = self.blobs.read_json(config_digest)
        return Image(
            id=config_digest,
            references=sorted(r for r, d in refs.items() if d == manifest_digest),
            manifest_digest=manifest_digest,
            created=config.get("created", ""),
            size=sum(int(layer.get("size", 0)) for layer in man.get("layers", [])),
            config=config,
        )

    # -- public --------------------------------------------------------------------------

    def import_rootfs(self, tar_path: Path, reference: str, changes: dict[str, Any] | None = None) -> Image:
        """Make a one-layer image from a root filesystem tar (plain, gzip, bzip2 or xz)."""
        ref = normalize_reference(reference)
        if "@" in ref:
            raise ValueError(f"reference: cannot import to a digest reference {reference!r}")
        tar_path = Path(tar_path)
        if not tar_path.is_file():
            raise ValueError(f"import: {tar_path}: no such file")
        created = now_rfc3339()
        validate_changes(changes or {})  # before any blob is written
        try:
            with open_decompressed(tar_path) as raw:
                diff_id, size = self.blobs.put_stream(raw)
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            raise ValueError(f"import: {tar_path} is not a readable tar archive ({exc})") from None
        try:
            with open(self.blobs.path(diff_id), "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
                for member in tar:
                    member_path(member.name)
        except (tarfile.TarError, ValueError, EOFError) as exc:
            self._drop_unreferenced_blob(diff_id)
            raise ValueError(f"import: {tar_path} is not a tar archive ({exc})") from None
        config = import_config(diff_id, created, changes, f"Imported from {tar_path.name}")
        config_digest, config_size = self.blobs.put_json(config)
        man = manifest(descriptor(MEDIA_CONFIG, config_digest, config_size),
                       [descriptor(MEDIA_LAYER, diff_id, size)])
        manifest_digest, _ = self.blobs.put_json(man)
        with self._locked():
            refs, manifests = self._load()
            manifests.add(manifest_digest)
            refs[ref] = manifest_digest
            self._save(refs, manifests)
            return self._image(manifest_digest, refs)

    def tag(self, ref: str, new_ref: str) -> Image:
        """Point new_ref ("name[:tag]") at the image ref resolves to, like `docker tag`."""
        target = normalize_reference(new_ref)
        if "@" in target:
            raise ValueError(f"reference: cannot tag with a digest reference {new_ref!r}")
        with self._locked():
            image = self.resolve(ref)
            if image is None:
                raise ImageNotFoundError(f"image: no such image {ref!r}")
            refs, manifests = self._load()
            refs[target] = image.manifest_digest
            self._save(refs, manifests)
            return self._image(image.manifest_digest, refs)

    def _drop_unreferenced_blob(self, digest: str) -> None:
        with self._locked():
            _, manifests = self._load()
            for m in manifests:
                man = self.blobs.read_json(m)
                if digest in {m, man["config"]["digest"], *(l["digest"] for l in man["layers"])}:
                    return
            self.blobs.delete(digest)

    def list(self) -> list[Image]:
        refs, manifests = self._load()
        images = [self._image(m, refs) for m in manifests]
        return sorted(images, key=lambda i: (i.created, i.id), reverse=True)

    def resolve(self, ref: str) -> Image | None:
        """By name[:tag], name@digest, full id, or id prefix of at least 12 hex digits."""
        if not isinstance(ref, str) or not ref.strip():
            raise ValueError("reference: empty image reference")
        refs, manifests = self._load()
        id_match = _ID.match(ref)
        if id_match and (id_match.group(1) or len(id_match.group(2)) == 64):
            return self._by_id_prefix(id_match.group(2), refs, manifests)
        parsed = parse_reference(ref)
        if parsed.digest:
            return self._image(parsed.digest, refs) if parsed.digest in manifests else None
        name = normalize_reference(ref)
        if name in refs:
            return self._image(refs[name], refs)
        if id_match:
            return self._by_id_prefix(id_match.group(2), refs, manifests)
        return None

    def _by_id_prefix(self, prefix: str, refs: dict[str, str], manifests: set[str]) -> Image | None:
        found: dict[str, str] = {}
        for m in sorted(manifests):
            config_digest = self.blobs.read_json(m)["config"]["digest"]
            if config_digest.split(":", 1)[1].startswith(prefix):
                found.setdefault(config_digest, m)
        if len(found) > 1:
            raise ValueError(f"reference: id prefix {prefix!r} matches {len(found)} images")
        return self._image(next(iter(found.values())), refs) if found else None

    def layer_dirs(self, image: Image) -> list[Path]:
        """Unpacked layer directories, lowest first; unpacks layers on first use."""
        man = self.blobs.read_json(image.manifest_digest)
        diff_ids = image.diff_ids
        if len(diff_ids) != len(man["layers"]):
            raise ValueError(f"image: {image.id} has {len(man['layers'])} layers but "
                             f"{len(diff_ids)} diff ids")
        dirs = []
        for desc, diff_id in zip(man["layers"], diff_ids):
            dest = self.layers_dir / diff_id.split(":", 1)[1]
            if not dest.is_dir():
                unpack_layer(self.blobs.path(desc["digest"]), dest, diff_id)
            dirs.append(dest)
        return dirs

    def remove(self, ref: str, force: bool = False) -> list[str]:
        """Untag, and delete the image once no tag is left. Returns what was done, Docker-style
        ("Untagged: busybox:latest", "Deleted: sha256:...")."""
        with self._locked():
            refs, manifests = self._load()
            image = self.resolve(ref)
            if image is None:
                raise ImageNotFoundError(f"image: no such image {ref!r}")
            done: list[str] = []
            by_name = "@" not in ref and not _ID.match(ref) and normalize_reference(ref) in refs
            if by_name:
                name = normalize_reference(ref)
                del refs[name]
                done.append(f"Untagged: {name}")
                if any(d == image.manifest_digest for d in refs.values()):
                    self._save(refs, manifests)
                    return done
            else:
                if len(image.references) > 1 and not force:
                    raise ValueError(f"image: {ref!r} is tagged as {', '.join(image.references)}; "
                                     f"remove a tag, or force")
                for name in image.references:
                    del refs[name]
                    done.append(f"Untagged: {name}")
            done += self._delete_content(image, refs, manifests - {image.manifest_digest})
            return done

    def _delete_content(self, image: Image, refs: dict[str, str], remaining: set[str]) -> list[str]:
        keep_blobs: set[str] = set()
        keep_diffs: set[str] = set()
        for m in remaining:
            man = self.blobs.read_json(m)
            keep_blobs |= {m, man["config"]["digest"], *(layer["digest"] for layer in man["layers"])}
            keep_diffs |= set(self.blobs.read_json(man["config"]["digest"])["rootfs"]["diff_ids"])
        man = self.blobs.read_json(image.manifest_digest)
        doomed_blobs = {image.manifest_digest, man["config"]["digest"],
                        *(layer["digest"] for layer in man["layers"])} - keep_blobs
        doomed_dirs = [self.layers_dir / d.split(":", 1)[1] for d in image.diff_ids if d not in keep_diffs]
        in_use = _mounted_lowerdirs() & {str(d) for d in doomed_dirs}
        if in_use:
            raise ImageInUseError(f"image: {image.short_id} is in use by a container "
                                  f"(layer {sorted(in_use)[0]} is mounted)")
        self._save(refs, remaining)
        for digest in doomed_blobs:
            self.blobs.delete(digest)
        for d in doomed_dirs:
            if d.is_dir():
                trash = self.layers_dir / f".tmp-rm-{d.name}-{uuid.uuid4().hex[:8]}"
                os.rename(d, trash)  # never leave a half-deleted dir that looks unpacked
                shutil.rmtree(trash)
        return [f"Deleted: {image.id}"]
