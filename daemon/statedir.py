"""Permissions of the node's state directory, with and without a user-namespace remap.

Without a remap the state dir is 0700: only root goes in. With one, a container's remapped
root (an ordinary host uid) must walk from / to its bundle, because the container's init sets up
its mounts (bind mounts of the bundle's rootfs, hosts, resolv.conf, named volumes) from inside
the user namespace. Docker's layout is followed: the top dir (/var/lib/docker) is 0711, and the
dirs the remapped root needs are 0710 root:<remapped gid>, so no other host user can pass:

    <state>/             0711 root:root   (0700 without a remap)
      containers/        0710 root:GID    bundles; each bundle 0711, its upper layer owned by START
      volumes/           0710 root:GID    named volumes; a new volume's _data owned by START:GID
      taskfiles/         0710 root:GID    a tmpfs per starting container with its secrets and configs,
                                          owned by START (detached from the node once it has started)
      swarm/ raft/ ...   0700 root:root   node identity, certificates and key, the Raft log (which
                                          holds the CA key and the secrets), images, credentials

Everything else at the top is made private (go-rwx) at every start, and the secret dirs are
created 0700 where they are made, so opening the top dir with o+x exposes nothing.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from worker.runtime import UserNamespace
from worker.runtime.runtime import searchable

SHARED = ("containers", "volumes", "taskfiles")   # what the remapped root has to traverse
SECRET = ("swarm", "raft")           # created 0700 up front, before anything writes in them


class StateDirError(Exception):
    pass


def private_dir(path: Path) -> Path:
    """A directory only root can enter, even when it already existed with a wider mode."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def prepare(state_dir: Path, remap: UserNamespace | None) -> None:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in SECRET:
        private_dir(state_dir / name)
    for entry in state_dir.iterdir():
        if entry.name in SHARED or entry.is_symlink():
            continue
        mode = stat.S_IMODE(entry.lstat().st_mode)
        if mode & 0o077:
            os.chmod(entry, mode & 0o700)
    for name in SHARED:
        shared = state_dir / name
        shared.mkdir(mode=0o700, exist_ok=True)
        if remap is None:
            os.chown(shared, 0, 0)
            os.chmod(shared, 0o711 if name == "containers" else 0o700)
        else:
            os.chown(shared, 0, remap.host_gid)
            os.chmod(shared, 0o710)
    os.chmod(state_dir, 0o711 if remap is not None else 0o700)
    if remap is not None:
        check_reachable(state_dir / "containers", remap)


def check_reachable(path: Path, remap: UserNamespace) -> None:
    """Every directory from / to path must let the remapped root through, or containers fail
    to start; say so now, as dockerd does, rather than at the first task."""
    for d in [path, *path.parents]:
        if not searchable(d, remap):
            raise StateDirError(f"--userns-remap: {d} does not let the remapped root (uid {remap.host_uid}) "
                                f"through: allow o+x on it (chmod o+x {d})")
