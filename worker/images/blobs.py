"""Content-addressed blobs: blobs/sha256/<hex>, written atomically.

A blob only ever appears under its digest name once it is complete and fsynced, so a crash
leaves at most a stray temp file (swept on open), never a wrong blob.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Any

_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_CHUNK = 1 << 20
TMP_PREFIX = ".tmp-"


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ValueError(f"digest: invalid digest {digest!r} (want sha256:<64 hex>)")
    return digest


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write data to path via a temp file in the same directory and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class BlobStore:
    def __init__(self, root: Path):
        self.dir = Path(root) / "blobs" / "sha256"
        self.dir.mkdir(parents=True, exist_ok=True)
        for stray in self.dir.glob(TMP_PREFIX + "*"):
            _unlink_quietly(stray)

    def path(self, digest: str) -> Path:
        return self.dir / check_digest(digest).split(":", 1)[1]

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        digest = sha256_digest(data)
        if not self.exists(digest):
            atomic_write(self.path(digest), data)
        return digest, len(data)

    def put_json(self, obj: Any) -> tuple[str, int]:
        return self.put_bytes(canonical_json(obj))

    def put_stream(self, src: BinaryIO, expected: str | None = None) -> tuple[str, int]:
        """Copy a stream into the store, hashing as it goes; refuse it if `expected` differs."""
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=self.dir)
        try:
            hasher, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(_CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = "sha256:" + hasher.hexdigest()
            if expected is not None and digest != expected:
                raise ValueError(f"digest: content has {digest}, expected {expected}")
            os.chmod(tmp, 0o644)
            os.rename(tmp, self.path(digest))
        except BaseException:
            _unlink_quietly(tmp)
            raise
        _fsync_dir(self.dir)
        return digest, size

    def adopt(self, src: Path, digest: str) -> None:
        """Move a file the caller has already checked against `digest` into the store. It must
        be on the same filesystem; it is fsynced before it appears under its digest name."""
        fd = os.open(src, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(src, 0o644)
        os.rename(src, self.path(digest))
        _fsync_dir(self.dir)

    def read_bytes(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def read_json(self, digest: str) -> Any:
        return json.loads(self.read_bytes(digest))

    def delete(self, digest: str) -> None:
        _unlink_quietly(self.path(digest))

    def digests(self) -> list[str]:
        return sorted("sha256:" + p.name for p in self.dir.iterdir() if not p.name.startswith(TMP_PREFIX))
