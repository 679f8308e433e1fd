"""The node's image content store, an OCI image layout under one root directory:

    oci-layout, index.json            OCI layout marker and index; each index entry carries the
                                      reference ("name:tag") in org.opencontainers.image.ref.name,
                                      an entry without it is an untagged (dangling) image
                                      and, in io.shoal.image.repo-digests, the registry digests
                                      ("name@sha256:...") the image was pulled or pushed as
    blobs/sha256/<hex>                layer tars, config and manifest JSON
    layers/<diff-id hex>/             layers unpacked once, shared by every container
    downloads/<hex>                   blobs being pulled, kept across failures to resume them

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
import time
import uuid
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .blobs import BlobStore, atomic_write, canonical_json, sha256_digest
from .image import (MEDIA_CONFIG, MEDIA_INDEX, MEDIA_LAYER, MEDIA_MANIFEST, REF_ANNOTATION, Image,
                    descriptor, import_config, manifest, now_rfc3339,
                    validate_changes)
from .manifests import Manifest, parse_manifest
from .reference import normalize_reference, parse_reference
from .unpack import member_path, open_decompressed, unpack_layer

_ID = re.compile(r"^(sha256:)?([a-f0-9]{12,64})$")
DIGESTS_ANNOTATION = "io.shoal.image.repo-digests"
STALE_DOWNLOAD = 24 * 3600  # a partial download untouched this long is swept by prune


class ImageNotFoundError(LookupError):
    pass


class ImageInUseError(RuntimeError):
    pass


def _check_repo_digest(text: str) -> str:
    parsed = parse_reference(text)
    if not parsed.digest or parsed.tag:
        raise ValueError(f"repo_digest: {text!r} is not name@sha256:<hex>")
    return str(parsed)


@dataclass
class _Index:
    refs: dict[str, str] = field(default_factory=dict)         # "name:tag" -> manifest digest
    manifests: set[str] = field(default_factory=set)
    digests: dict[str, set[str]] = field(default_factory=dict)  # manifest digest -> repo digests

    def repo_digests(self, manifest_digest: str) -> list[str]:
        return sorted(self.digests.get(manifest_digest, ()))


@dataclass
class PruneResult:
    deleted: list[str]          # "Untagged: ..." and "Deleted: sha256:..." lines
    space_reclaimed: int        # bytes of blobs removed


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
        self.downloads_dir = self.root / "downloads"
        self.downloads_dir.mkdir(exist_ok=True)
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

    def _load(self) -> _Index:
        path = self.root / "index.json"
        index = _Index()
        if not path.exists():
            return index
        for desc in json.loads(path.read_text()).get("manifests", []):
            digest = desc["digest"]
            index.manifests.add(digest)
            annotations = desc.get("annotations") or {}
            ref = annotations.get(REF_ANNOTATION)
            if ref:
                index.refs[ref] = digest
            repo_digests = [d for d in annotations.get(DIGESTS_ANNOTATION, "").split(",") if d]
            if repo_digests:
                index.digests.setdefault(digest, set()).update(repo_digests)
        return index

    def _save(self, index: _Index) -> None:
        entries: list[dict[str, Any]] = []
        for digest in sorted(index.manifests):
            names = sorted(r for r, d in index.refs.items() if d == digest)
            media_type = self.blobs.read_json(digest).get("mediaType") or MEDIA_MANIFEST
            base = descriptor(media_type, digest, self.blobs.size(digest))
            extra = {DIGESTS_ANNOTATION: ",".join(index.repo_digests(digest))} if index.digests.get(digest) else {}
            for name in names:
                entries.append({**base, "annotations": {REF_ANNOTATION: name, **extra}})
            if not names:
                entries.append({**base, "annotations": extra} if extra else base)
        doc = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": entries}
        atomic_write(self.root / "index.json", canonical_json(doc))

    def _image(self, manifest_digest: str, index: _Index) -> Image:
        man = self.blobs.read_json(manifest_digest)
        config_digest = man["config"]["digest"]
        config = self.blobs.read_json(config_digest)
        return Image(
            id=config_digest,
            references=sorted(r for r, d in index.refs.items() if d == manifest_digest),
            manifest_digest=manifest_digest,
            created=config.get("created", ""),
            size=sum(int(layer.get("size", 0)) for layer in man.get("layers", [])),
            config=config,
            repo_digests=index.repo_digests(manifest_digest),
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
            index = self._load()
            index.manifests.add(manifest_digest)
            index.refs[ref] = manifest_digest
            self._save(index)
            return self._image(manifest_digest, index)

    def partial_path(self, digest: str) -> Path:
        """Where a blob being downloaded accumulates; it survives failures so a pull can resume."""
        return self.downloads_dir / self.blobs.path(digest).name

    def add_image(self, manifest_bytes: bytes, config_bytes: bytes | None = None,
                  staged: Mapping[str, Path] | None = None, references: Sequence[str] = (),
                  repo_digest: str | None = None) -> Image:
        """Record an image whose blobs the caller has verified: `staged` maps layer digests to
        files to move into the store (blobs already present are kept). The manifest is kept
        byte for byte, so its digest stays the one the registry or archive gave it."""
        man = parse_manifest(manifest_bytes)
        if not isinstance(man, Manifest):
            raise ValueError("manifest: an image index is not an image; pick one platform's manifest")
        refs = [normalize_reference(r) for r in references]
        for reference, ref in zip(references, refs):
            if "@" in ref:
                raise ValueError(f"reference: cannot tag an image with a digest reference {reference!r}")
        repo_digest = _check_repo_digest(repo_digest) if repo_digest is not None else None
        staged = dict(staged or {})
        # Under the lock from the first check on: a concurrent prune must not delete a blob
        # this image is about to share before index.json names it.
        with self._locked():
            # Everything is checked before anything is written, so a refusal stores nothing.
            if config_bytes is not None and sha256_digest(config_bytes) != man.config.digest:
                raise ValueError(f"config: content has {sha256_digest(config_bytes)}, the manifest says "
                                 f"{man.config.digest}")
            if config_bytes is None and not self.blobs.exists(man.config.digest):
                raise ValueError(f"image: config {man.config.digest} is not stored")
            for desc in man.layers:
                if not self.blobs.exists(desc.digest) and not (desc.digest in staged and staged[desc.digest].exists()):
                    raise ValueError(f"image: layer {desc.digest} is neither stored nor staged")
            if config_bytes is not None:
                self.blobs.put_bytes(config_bytes)
            for desc in man.layers:
                src = staged.get(desc.digest)
                if self.blobs.exists(desc.digest):
                    if src is not None and src.parent == self.downloads_dir:
                        src.unlink(missing_ok=True)
                elif src is not None and src.exists():
                    self.blobs.adopt(src, desc.digest)
                else:  # the staged file went away under us (removed by hand)
                    raise ValueError(f"image: layer {desc.digest} vanished while being stored")
            manifest_digest, _ = self.blobs.put_bytes(manifest_bytes)
            index = self._load()
            index.manifests.add(manifest_digest)
            for ref in refs:
                index.refs[ref] = manifest_digest
            if repo_digest:
                index.digests.setdefault(manifest_digest, set()).add(repo_digest)
            self._save(index)
            return self._image(manifest_digest, index)

    def add_repo_digest(self, image: Image, repo_digest: str) -> Image:
        """Remember that a registry holds this image as repo_digest ("name@sha256:...")."""
        repo_digest = _check_repo_digest(repo_digest)
        with self._locked():
            index = self._load()
            if image.manifest_digest not in index.manifests:
                raise ImageNotFoundError(f"image: no such image {image.id}")
            index.digests.setdefault(image.manifest_digest, set()).add(repo_digest)
            self._save(index)
            return self._image(image.manifest_digest, index)

    def manifest_bytes(self, image: Image) -> bytes:
        return self.blobs.read_bytes(image.manifest_digest)

    def tag(self, ref: str, new_ref: str) -> Image:
        """Point new_ref ("name[:tag]") at the image ref resolves to, like `docker tag`."""
        target = normalize_reference(new_ref)
        if "@" in target:
            raise ValueError(f"reference: cannot tag with a digest reference {new_ref!r}")
        with self._locked():
            image = self.resolve(ref)
            if image is None:
                raise ImageNotFoundError(f"image: no such image {ref!r}")
            index = self._load()
            index.refs[target] = image.manifest_digest
            self._save(index)
            return self._image(image.manifest_digest, index)

    def _drop_unreferenced_blob(self, digest: str) -> None:
        with self._locked():
            for m in self._load().manifests:
                man = self.blobs.read_json(m)
                if digest in {m, man["config"]["digest"], *(l["digest"] for l in man["layers"])}:
                    return
            self.blobs.delete(digest)

    def list(self) -> list[Image]:
        index = self._load()
        images = [self._image(m, index) for m in index.manifests]
        return sorted(images, key=lambda i: (i.created, i.id), reverse=True)

    def resolve(self, ref: str) -> Image | None:
        """By name[:tag], name[:tag]@digest (a repo digest of that name, or any image's manifest
        digest; a digest overrides the tag), full id, or id prefix of at least 12 hex digits."""
        if not isinstance(ref, str) or not ref.strip():
            raise ValueError("reference: empty image reference")
        index = self._load()
        id_match = _ID.match(ref)
        if id_match and (id_match.group(1) or len(id_match.group(2)) == 64):
            return self._by_id_prefix(id_match.group(2), index)
        parsed = parse_reference(ref)
        if parsed.digest:
            wanted = f"{parsed.name}@{parsed.digest}"
            for m, repo_digests in sorted(index.digests.items()):
                if wanted in repo_digests and m in index.manifests:
                    return self._image(m, index)
            return self._image(parsed.digest, index) if parsed.digest in index.manifests else None
        name = normalize_reference(ref)
        if name in index.refs:
            return self._image(index.refs[name], index)
        if id_match:
            return self._by_id_prefix(id_match.group(2), index)
        return None

    def _by_id_prefix(self, prefix: str, index: _Index) -> Image | None:
        found: dict[str, str] = {}
        for m in sorted(index.manifests):
            config_digest = self.blobs.read_json(m)["config"]["digest"]
            if config_digest.split(":", 1)[1].startswith(prefix):
                found.setdefault(config_digest, m)
        if len(found) > 1:
            raise ValueError(f"reference: id prefix {prefix!r} matches {len(found)} images")
        return self._image(next(iter(found.values())), index) if found else None

    def layer_paths(self, image: Image) -> list[Path]:
        """Where the image's layers are (or will be) unpacked, lowest first; unpacks nothing."""
        return [self.layers_dir / d.split(":", 1)[1] for d in image.diff_ids]

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
            index = self._load()
            image = self.resolve(ref)
            if image is None:
                raise ImageNotFoundError(f"image: no such image {ref!r}")
            done: list[str] = []
            by_name = "@" not in ref and not _ID.match(ref) and normalize_reference(ref) in index.refs
            if by_name:
                name = normalize_reference(ref)
                del index.refs[name]
                done.append(f"Untagged: {name}")
                if any(d == image.manifest_digest for d in index.refs.values()):
                    self._save(index)
                    return done
            else:
                if len(image.references) > 1 and not force:
                    raise ValueError(f"image: {ref!r} is tagged as {', '.join(image.references)}; "
                                     f"remove a tag, or force")
                for name in image.references:
                    del index.refs[name]
                    done.append(f"Untagged: {name}")
            return done + self._delete_content(image, index)[0]

    def prune(self, in_use: Iterable[str] = (), all_images: bool = False) -> PruneResult:
        """Delete images no container uses: the untagged ones, or every one with all_images.
        `in_use` holds image ids (the store cannot see the runtime); an image whose layers are
        mounted is kept even if the caller missed it."""
        used = set(in_use)
        deleted: list[str] = []
        reclaimed = 0
        with self._locked():
            for image in self.list():
                if image.id in used or (image.references and not all_images):
                    continue
                index = self._load()
                if image.manifest_digest not in index.manifests:
                    continue
                done = [f"Untagged: {name}" for name in image.references]
                for name in image.references:
                    del index.refs[name]
                try:
                    lines, freed = self._delete_content(image, index)
                except ImageInUseError:
                    continue
                deleted += done + lines
                reclaimed += freed
        now = time.time()
        for partial in self.downloads_dir.iterdir():
            try:
                if now - partial.stat().st_mtime > STALE_DOWNLOAD:
                    reclaimed += partial.stat().st_size
                    partial.unlink()
            except FileNotFoundError:
                pass
        return PruneResult(deleted, reclaimed)

    def _delete_content(self, image: Image, index: _Index) -> tuple[list[str], int]:
        """Drop image's manifest from index and delete what no other image shares."""
        remaining = index.manifests - {image.manifest_digest}
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
        untagged = [f"Untagged: {d}" for d in index.repo_digests(image.manifest_digest)]
        index.manifests = remaining
        index.digests.pop(image.manifest_digest, None)
        self._save(index)
        freed = 0
        for digest in doomed_blobs:
            try:
                freed += self.blobs.size(digest)
            except FileNotFoundError:
                pass
            self.blobs.delete(digest)
        for d in doomed_dirs:
            if d.is_dir():
                trash = self.layers_dir / f".tmp-rm-{d.name}-{uuid.uuid4().hex[:8]}"
                os.rename(d, trash)  # never leave a half-deleted dir that looks unpacked
                shutil.rmtree(trash)
        return untagged + [f"Deleted: {image.id}"], freed
