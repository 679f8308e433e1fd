"""Id-mapped image layers: the root filesystem of a container that runs in a user namespace.

Image layers are unpacked once, owned by host root, and shared by every container. In a user
namespace that maps container root to host uid START, those files would show as `nobody` and
root inside could not write to /etc. Docker's answer (--userns-remap) is a chowned copy of
every layer per remap range. Here the kernel does it instead: each lower layer is an
*id-mapped mount* (open_tree(OPEN_TREE_CLONE) + mount_setattr(MOUNT_ATTR_IDMAP) with a user
namespace of the same range), on which a file owned by uid k on disk shows as uid START+k.
Overlayfs takes id-mapped lower layers (Linux 5.19+), so nothing is copied, the first container
starts as fast as without a remap, and removing the image removes everything. The upper
layer is a plain directory owned by START: what the container writes is owned by START+k on
disk, as with Docker.

The id-mapped mounts must not be seen on the host (they would shadow the shared layer dirs),
so they are made in a private mount namespace, on top of the layer paths themselves: the
overlay is mounted there with the usual lowerdir=<layer paths> (so the image store, which reads
/proc/self/mountinfo to see which layers are in use, still sees them), then a detached clone of
the overlay is attached at the container's rootfs in the host's mount namespace. The overlay
keeps its own private references to the id-mapped layers, so the private namespace can go:
what remains on the host is the single overlay mount, unmounted by delete as before.

unshare(CLONE_NEWNS) is per thread (it also unshares the thread's cwd/root), so all of this runs
in a short-lived thread of its own: the daemon's other threads keep the host's view.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from . import linux
from .config import UserNamespace

_CLONE_FS = 0x00000200

# A process that creates a user namespace and waits: the parent writes its id maps and keeps
# a file descriptor of the namespace (which outlives the process) for mount_setattr.
_HOLDER = ("import ctypes, sys\n"
           "libc = ctypes.CDLL(None, use_errno=True)\n"
           "ok = libc.unshare(0x10000000) == 0\n"
           "sys.stdout.write('ok\\n' if ok else f'error {ctypes.get_errno()}\\n')\n"
           "sys.stdout.flush()\n"
           "sys.stdin.read()\n")

_userns_fds: dict[tuple[int, int, int], int] = {}
_userns_lock = threading.Lock()


def userns_fd(u: UserNamespace) -> int:
    """A user namespace with u's id maps (one per range, kept for the life of the process)."""
    key = (u.host_uid, u.host_gid, u.size)
    with _userns_lock:
        fd = _userns_fds.get(key)
        if fd is None:
            fd = _userns_fds[key] = _new_userns(u)
        return fd


def _new_userns(u: UserNamespace) -> int:
    holder = subprocess.Popen([sys.executable, "-I", "-S", "-c", _HOLDER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, close_fds=True)
    try:
        line = holder.stdout.readline().strip() if holder.stdout else ""
        if line != "ok":
            err = int(line.split()[1]) if line.startswith("error ") else 0
            raise OSError(err, f"user namespace for the id-mapped layers: {os.strerror(err) if err else 'no answer'}")
        for kind, host in (("uid", u.host_uid), ("gid", u.host_gid)):
            with open(f"/proc/{holder.pid}/{kind}_map", "w") as f:
                f.write(f"0 {host} {u.size}\n")
        return os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        if holder.stdin:
            holder.stdin.close()
        holder.wait()
        if holder.stdout:
            holder.stdout.close()


def mount_overlay(rootfs: Path, layers: list[str], options: str, u: UserNamespace) -> None:
    """Mount the overlay described by `options` (lowerdir=`layers`...) at rootfs, with every
    lower layer id-mapped to u's range."""
    ns = userns_fd(u)
    failure: list[BaseException] = []
    worker = threading.Thread(target=_mount_in_private_ns, args=(rootfs, layers, options, ns, failure),
                              name="shoal-idmap")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]


def _mount_in_private_ns(rootfs: Path, layers: list[str], options: str, ns: int,
                         failure: list[BaseException]) -> None:
    """Runs in its own thread, which ends with it (and so does the private mount namespace)."""
    try:
        host_ns = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        failure.append(exc)
        return
    try:
        linux.unshare(linux.CLONE_NEWNS | _CLONE_FS)
        # Nothing done here may propagate to the host's mounts.
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        for layer in dict.fromkeys(layers):
            tree = linux.open_tree(layer, linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC)
            try:
                try:
                    linux.mount_setattr_idmap(tree, ns)
                except OSError as exc:
                    raise OSError(exc.errno, f"user_namespace: cannot id-map the image layer {layer}: "
                                             f"{os.strerror(exc.errno or 0)} (its filesystem must support "
                                             "id-mapped mounts: ext4, xfs, btrfs, tmpfs...)") from None
                linux.move_mount(tree, layer)  # over the layer path, in this namespace only
            finally:
                os.close(tree)
        linux.mount("overlay", rootfs, "overlay", 0, options)
        overlay = linux.open_tree(rootfs, linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC)
        try:
            linux.setns(host_ns, linux.CLONE_NEWNS)
            linux.move_mount(overlay, rootfs)
        finally:
            os.close(overlay)
    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
        failure.append(exc)
    finally:
        os.close(host_ns)
