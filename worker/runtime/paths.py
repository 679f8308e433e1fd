"""Resolving paths inside a container root without ever leaving it.

Importable on its own (the shim's container init imports it as `paths`).
"""
import errno
import os
import stat

_MAX_SYMLINKS = 255


def secure_join(root: str, unsafe: str) -> str:
    """Resolve `unsafe` as if `root` were "/": symlinks are followed, but absolute targets and
    ".." are taken relative to root, so the result is always inside root. Missing trailing
    components are kept literally (the caller may create them)."""
    parts = [p for p in unsafe.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, f"too many symlinks resolving {unsafe!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)
