"""Secrets and configs on a node: held in memory, mounted into containers from a tmpfs.

The managers send, with each assignment set, the data of every secret and config the node's
live tasks use; this module keeps exactly that set (so a secret is gone from the node's memory
once its last task has ended) and never writes it to disk.

For a container, a small tmpfs is mounted under the node's state dir, the files are written
there with the uid, gid and mode the service asks for, and the runtime bind-mounts each file
read-only at its target. Once the container has started, its mount namespace holds its own
reference to the tmpfs, so the node detaches the tmpfs from its own tree: from then on the
bytes exist only in memory, reachable only from inside that container.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from api.filetarget import target_path
from api.objects import Task
from worker.runtime import linux
from worker.runtime.config import Mount as RuntimeMount
from worker.runtime.config import UserNamespace

log = logging.getLogger("shoal.taskfiles")


class FilesUnavailable(Exception):
    """A task names a secret or config this node was not given."""


def _parse(message: dict, key: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    items = message.get(key) or []
    if not isinstance(items, list):
        raise ValueError(f"{key}: must be a list")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("ID"), str) or not isinstance(item.get("Data"), bytes):
            raise ValueError(f"{key}[{i}]: must be {{ID: string, Data: bytes}}")
        out[item["ID"]] = item["Data"]
    return out


def _host_ids(uid: int, gid: int, userns: UserNamespace | None) -> tuple[int, int]:
    if userns is None:
        return uid, gid
    if uid >= userns.size or gid >= userns.size:
        raise FilesUnavailable(f"file owner {uid}:{gid} is outside the node's user namespace range "
                               f"(0 to {userns.size - 1})")
    return userns.host_uid + uid, userns.host_gid + gid


class TaskFiles:
    def __init__(self, root: Path):
        self.root = root
        self.secrets: dict[str, bytes] = {}
        self.configs: dict[str, bytes] = {}

    def update(self, message: dict) -> None:
        """The set the managers sent replaces the one held (a malformed message changes nothing)."""
        secrets, configs = _parse(message, "Secrets"), _parse(message, "Configs")
        self.secrets, self.configs = secrets, configs

    def prepare(self, task: Task, cid: str, userns: UserNamespace | None = None) -> list[RuntimeMount]:
        """The tmpfs of container cid with its files; the bind mounts for the runtime. In a
        user namespace the container's init makes the bind mounts as the remapped root, so the
        tmpfs is that root's, and the files' owners are shifted into the range."""
        cs = task.spec.container_spec
        wanted: list[tuple[str, Any, bytes]] = []
        for kind, refs, held in (("secret", cs.secrets, self.secrets), ("config", cs.configs, self.configs)):
            for ref in refs:
                ref_id = getattr(ref, f"{kind}_id")
                data = held.get(ref_id)
                if data is None:
                    name = getattr(ref, f"{kind}_name") or ref_id
                    raise FilesUnavailable(f"{kind} {name!r} is not available on this node")
                wanted.append((kind, ref, data))
        if not wanted:
            return []
        where = self.root / cid
        self.release(cid)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        where.mkdir(mode=0o700)
        size = sum(len(d) for _, _, d in wanted) + 64 * 1024 * len(wanted)
        owner = f",uid={userns.host_uid},gid={userns.host_gid}" if userns is not None else ""
        linux.mount("tmpfs", str(where), "tmpfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
                    f"mode=0700,size={size},nr_inodes={len(wanted) + 16}{owner}")
        mounts = []
        try:
            for i, (kind, ref, data) in enumerate(wanted):
                path = where / f"{kind}-{i}"
                f = ref.file
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                try:
                    os.write(fd, data)
                    os.fchown(fd, *_host_ids(int(f.uid or 0), int(f.gid or 0), userns))
                    os.fchmod(fd, f.mode)
                finally:
                    os.close(fd)
                mounts.append(RuntimeMount("bind", target_path(kind, f.name), str(path), read_only=True))
        except BaseException:
            self.release(cid)
            raise
        return mounts

    def release(self, cid: str) -> None:
        """Detach the container's tmpfs from the node (the container keeps its own copy)."""
        where = self.root / cid
        if not where.exists():
            return
        while True:  # a tmpfs mounted twice (a crash between two prepares) needs two detaches
            try:
                linux.umount2(str(where), linux.MNT_DETACH)
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOENT):
                    break
                raise
        shutil.rmtree(where, ignore_errors=True)

    def release_all_but(self, keep: set[str]) -> None:
        """At start: tmpfs left by an earlier daemon for containers that have started or gone."""
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            if entry.name not in keep:
                try:
                    self.release(entry.name)
                except OSError as exc:
                    log.warning("secrets of %s: %s", entry.name, exc)
