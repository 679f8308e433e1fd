"""Containers in a user namespace on id-mapped image layers (what `shoald --userns-remap` gives
every task): root inside is an unprivileged uid outside, yet owns the image's files, so it can
write to /etc; what it writes is owned by the remapped uid on the host; the shared layers stay
as they were, and only the container's overlay shows in the host's mount table."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from worker.images.store import _mounted_lowerdirs
from worker.runtime import Runtime, UserNamespace, idmap, linux

from .conftest import IS_ROOT, cfg, facts, log_lines

pytestmark = [pytest.mark.root, pytest.mark.skipif(not IS_ROOT, reason="needs root")]

START = 300000  # a range no other test uses, so a leak would show as this uid
SIZE = 65536


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path) + "/"
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(prefix)]


def _host_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def _wait(rt: Runtime, id: str, timeout: float = 20.0):
    return asyncio.run(asyncio.wait_for(rt.wait(id), timeout))


def test_root_writes_to_image_dirs_on_idmapped_layers(open_root, busybox, cgroup_parent):
    rt = Runtime(open_root, cgroup_parent=cgroup_parent)
    script = ("echo map=$(tr -s ' ' < /proc/self/uid_map); echo id=$(id -u); "
              "echo etc_owner=$(stat -c %u:%g /etc/passwd); "
              "touch /etc/x && echo touch=ok; mkdir /var/newdir && echo mkdir=ok; "
              "echo hi >> /etc/passwd && echo append=ok; "
              "touch /tmp/u1000 && chown 1000:1000 /tmp/u1000 && echo chown=ok; sleep 30")
    config = cfg(busybox, ["sh", "-c", script], user_namespace=UserNamespace(START, START, SIZE))
    rt.create(config)
    bundle = open_root / config.id
    layer_owners = {str(p): os.stat(p / "etc" / "passwd").st_uid for p in busybox.layers
                    if (p / "etc" / "passwd").exists()}
    # One mount on the host, the overlay, naming the shared layer dirs (the image store's
    # in-use check reads them); the id-mapped mounts under it are in no namespace.
    assert _mounts_under(open_root) == [str(bundle / "rootfs")]
    assert {str(p) for p in busybox.layers} <= _mounted_lowerdirs()
    # Seen from the host, the image's root-owned files belong to the remapped root.
    assert os.stat(bundle / "rootfs" / "etc" / "passwd").st_uid == START
    pid = rt.start(config.id)
    try:
        deadline = time.time() + 10
        while "chown=" not in log_lines(rt, config.id) and time.time() < deadline:
            time.sleep(0.05)
        f = facts(log_lines(rt, config.id))
        assert f.get("map") == f" 0 {START} {SIZE}", f
        assert f["id"] == "0" and f["etc_owner"] == "0:0", f
        assert (f.get("touch"), f.get("mkdir"), f.get("append"), f.get("chown")) == ("ok",) * 4, f
        assert _host_uid(pid) == START  # root inside is an ordinary uid outside

        upper = bundle / "upper"
        for path in (upper / "etc" / "x", upper / "var" / "newdir", upper / "etc" / "passwd"):
            st = os.stat(path)
            assert (st.st_uid, st.st_gid) == (START, START), path
        st = os.stat(upper / "tmp" / "u1000")
        assert (st.st_uid, st.st_gid) == (START + 1000, START + 1000)
        # The shared layers are untouched: nothing copied up into them, owners as unpacked.
        for path, owner in layer_owners.items():
            assert os.stat(Path(path) / "etc" / "passwd").st_uid == owner == 0
            assert not (Path(path) / "etc" / "x").exists()

        # exec joins the user namespace too: same map, root can write, a user is shifted.
        res = asyncio.run(rt.exec_run(config.id, ["sh", "-c", "tr -s ' ' < /proc/self/uid_map; "
                                                              "touch /etc/from-exec && echo ok"], timeout=10))
        assert res.exit_code == 0 and res.stdout.decode().splitlines() == [f" 0 {START} {SIZE}", "ok"], res
        assert os.stat(upper / "etc" / "from-exec").st_uid == START
        proc = rt.exec(config.id, ["sleep", "10"], user="nobody")
        try:
            time.sleep(0.3)
            assert _host_uid(proc.pid) == START + 65534
        finally:
            proc.kill()
            proc.close()
    finally:
        rt.delete(config.id, force=True)
    assert _mounts_under(open_root) == []
    assert not bundle.exists()


def test_rootfs_mounted_again_at_start(open_root, busybox, cgroup_parent):
    """After a reboot the overlay is gone; start mounts it again, id-mapped."""
    rt = Runtime(open_root, cgroup_parent=cgroup_parent)
    config = cfg(busybox, ["sh", "-c", "touch /etc/again && echo ok=$(stat -c %u /etc/group)"],
                 user_namespace=UserNamespace(START, START, SIZE))
    rt.create(config)
    linux.umount2(open_root / config.id / "rootfs")
    assert _mounts_under(open_root) == []
    rt.start(config.id)
    st = _wait(rt, config.id)
    assert st.exit_code == 0 and facts(log_lines(rt, config.id)) == {"ok": "0"}, log_lines(rt, config.id)
    rt.delete(config.id)
    assert _mounts_under(open_root) == []


def test_a_user_outside_the_namespace_is_refused(open_root, busybox, cgroup_parent):
    rt = Runtime(open_root, cgroup_parent=cgroup_parent)
    with pytest.raises(ValueError, match="user: uid 65534 is outside the user namespace, which maps ids 0-999"):
        rt.create(cfg(busybox, ["true"], user="nobody", user_namespace=UserNamespace(START, START, 1000)))
    assert rt.list() == [] and _mounts_under(open_root) == []


def test_a_failed_idmapped_mount_leaves_nothing(tmp_path):
    rootfs, upper, work = (tmp_path / n for n in ("rootfs", "upper", "work"))
    for d in (rootfs, upper, work):
        d.mkdir()
    missing = str(tmp_path / "no-such-layer")
    with pytest.raises(OSError):
        idmap.mount_overlay(rootfs, [missing], f"lowerdir={missing},upperdir={upper},workdir={work}",
                            UserNamespace(START, START, SIZE))
    assert _mounts_under(tmp_path) == []


def test_one_user_namespace_per_range():
    a = idmap.userns_fd(UserNamespace(START, START, SIZE))
    assert idmap.userns_fd(UserNamespace(START, START, SIZE)) == a
    assert idmap.userns_fd(UserNamespace(START + SIZE, START + SIZE, SIZE)) != a
    owner = Path(f"/proc/self/fd/{a}")
    assert os.readlink(owner).startswith("user:[")
