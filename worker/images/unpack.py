"""Unpack one layer tar into a directory usable as an overlayfs lower dir.

OCI whiteouts become overlayfs whiteouts: `.wh.NAME` turns into a 0/0 character device
named NAME, and `.wh..wh..opq` marks its directory opaque (trusted.overlay.opaque=y).
Members never escape the layer directory: `..` is refused and parent directories are
never followed through symlinks.
"""
from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import uuid
from pathlib import Path
from typing import BinaryIO

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"

_MAGIC = [
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
]


def sniff_compression(head: bytes) -> str | None:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def open_decompressed(path: Path) -> BinaryIO:
    """Open a possibly compressed tar as a stream of the plain tar bytes."""
    with open(path, "rb") as f:
        kind = sniff_compression(f.read(8))
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "bzip2":
        return bz2.open(path, "rb")
    if kind == "xz":
        return lzma.open(path, "rb")
    if kind == "zstd":
        raise ValueError(f"layer: {path.name} is zstd-compressed, which is not supported yet")
    return open(path, "rb")


class HashingReader:
    """Wraps a stream and hashes what is read, to check a layer's diff id while unpacking."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.hasher = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.hasher.update(data)
        return data

    def drain(self) -> str:
        # tarfile stops at the end-of-archive blocks; the digest covers the whole stream.
        while self.read(1 << 20):
            pass
        return "sha256:" + self.hasher.hexdigest()


def member_path(name: str) -> str:
    """Clean a member name to a relative path; '' is the layer root."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"layer: member {name!r} escapes the layer root")
    return "/".join(parts)


def _ensure_parent(root: Path, rel: str) -> Path:
    """Create missing parents; refuse to pass through anything but real directories."""
    cur = root
    for part in rel.split("/")[:-1]:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            os.mkdir(cur, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise ValueError(f"layer: member {rel!r} goes through symlink {part!r}")
        if not stat.S_ISDIR(st.st_mode):
            raise ValueError(f"layer: member {rel!r} goes through non-directory {part!r}")
    return root / rel


def _remove(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _ignore_unsupported(exc: OSError) -> None:
    if exc.errno not in (errno.ENOTSUP, errno.EPERM):
        raise exc


class _Extractor:
    def __init__(self, tar: tarfile.TarFile, root: Path):
        self.tar = tar
        self.root = root
        self.as_root = os.geteuid() == 0
        self.dir_times: list[tuple[Path, float]] = []

    def member(self, m: tarfile.TarInfo) -> None:
        rel = member_path(m.name)
        base = rel.rsplit("/", 1)[-1]
        if any(part.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX) for part in rel.split("/")[:-1]):
            return  # inside AUFS bookkeeping dirs (.wh..wh.plnk/...)
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(rel, base)
            return
        if not rel and not m.isdir():
            return  # only a directory can stand for the layer root
        target = _ensure_parent(self.root, rel) if rel else self.root
        if rel and not (m.isdir() and target.is_dir() and not target.is_symlink()):
            _remove(target)
        if m.isdir():
            if rel and not target.exists():
                os.mkdir(target, 0o755)
            self.dir_times.append((target, m.mtime))
        elif m.isreg():
            src = self.tar.extractfile(m)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        elif m.issym():
            os.symlink(m.linkname, target)
        elif m.islnk():
            src_rel = member_path(m.linkname)
            source = _ensure_parent(self.root, src_rel)
            if not src_rel or not os.path.lexists(source):
                raise ValueError(f"layer: hard link {rel!r} points to missing {m.linkname!r}")
            os.link(source, target, follow_symlinks=False)
            return  # a hard link shares the inode: owner, mode and times are the target's
        elif m.ischr() or m.isblk():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(target, kind | 0o600, os.makedev(m.devmajor, m.devminor))
        elif m.isfifo():
            os.mkfifo(target, 0o600)
        else:
            return  # other GNU extension types carry no file
        self.attributes(target, m)

    def attributes(self, target: Path, m: tarfile.TarInfo) -> None:
        if self.as_root:
            os.lchown(target, m.uid, m.gid)
        if not m.issym():
            os.chmod(target, m.mode & 0o7777)  # after chown, which clears setuid bits
        for key, value in m.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                try:
                    os.setxattr(target, key[len("SCHILY.xattr."):],
                                value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
                except OSError as exc:
                    _ignore_unsupported(exc)
        if not m.isdir():
            os.utime(target, (m.mtime, m.mtime), follow_symlinks=False)

    def whiteout(self, rel: str, base: str) -> None:
        parent = _ensure_parent(self.root, rel).parent
        if base == OPAQUE_MARKER:
            parent.mkdir(exist_ok=True)
            os.setxattr(parent, OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # AUFS bookkeeping (.wh..wh.plnk and friends), meaningless here
        victim = parent / base[len(WHITEOUT_PREFIX):]
        _remove(victim)
        os.mknod(victim, stat.S_IFCHR | 0o000, os.makedev(0, 0))

    def finish(self) -> None:
        # Directory mtimes last: creating their children changed them.
        for path, mtime in reversed(self.dir_times):
            os.utime(path, (mtime, mtime))


def unpack_layer(blob: Path, dest: Path, diff_id: str | None = None) -> Path:
    """Unpack blob into dest atomically (temp dir + rename). Returns dest.

    If another unpacker won the race, its directory is kept and ours discarded.
    """
    if dest.is_dir():
        return dest
    tmp = dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp, 0o755)
    try:
        with open_decompressed(blob) as raw:
            reader = HashingReader(raw)
            try:
                with tarfile.open(fileobj=reader, mode="r|") as tar:
                    extractor = _Extractor(tar, tmp)
                    for m in tar:
                        extractor.member(m)
                    extractor.finish()
            except tarfile.TarError as exc:
                raise ValueError(f"layer: {blob.name} is not a valid tar archive: {exc}") from None
            actual = reader.drain()
        if diff_id is not None and actual != diff_id:
            raise ValueError(f"layer: {blob.name} unpacks to {actual}, expected diff id {diff_id}")
        try:
            os.rename(tmp, dest)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
