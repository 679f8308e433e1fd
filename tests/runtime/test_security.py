"""Privileges and isolation, checked from inside real containers: seccomp and no_new_privs,
capabilities, device access, the cgroup namespace, user namespaces, rlimits, a read-only root,
mounts and the user a process runs as."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from worker.runtime import Runtime, procfs
from worker.runtime.config import Mount, UserNamespace

from .conftest import IS_ROOT, cfg, facts, run

pytestmark = [pytest.mark.root, pytest.mark.skipif(not IS_ROOT, reason="needs root")]

MiB = 1024 * 1024
STATUS = "grep -E '^(Seccomp|Seccomp_filters|NoNewPrivs|CapEff):' /proc/self/status | tr -d '\\t' | tr : ="


def test_seccomp_filter_and_no_new_privs(runtime, busybox):
    st, log = run(runtime, cfg(busybox, ["sh", "-c", STATUS + "; unshare -U true; echo unshare=$?; "
                                         "linux32 true && echo personality=ok"]))
    f = facts(log)
    assert (f["Seccomp"], f["Seccomp_filters"], f["NoNewPrivs"]) == ("2", "1", "1"), log
    # creating a user namespace needs no capability: only the filter stops it, with EPERM
    assert "unshare: unshare(0x10000000): Operation not permitted" in log and f["unshare"] == "1"
    assert f["personality"] == "ok"  # personality(PER_LINUX32) is one the profile allows


def test_unconfined_runs_what_the_filter_blocks(runtime, busybox):
    st, log = run(runtime, cfg(busybox, ["sh", "-c", STATUS + "; unshare -U true; echo unshare=$?"],
                               seccomp="unconfined"))
    f = facts(log)
    assert (f["Seccomp"], f["NoNewPrivs"], f["unshare"]) == ("0", "1", "0"), log


def test_without_no_new_privs_the_filter_is_still_loaded(runtime, busybox):
    st, log = run(runtime, cfg(busybox, ["sh", "-c", STATUS], no_new_privileges=False))
    f = facts(log)
    assert (f["Seccomp"], f["NoNewPrivs"]) == ("2", "0"), log


def test_capabilities_added_and_dropped(runtime, busybox):
    # CAP_SYS_ADMIN also opens the profile's mount/unshare group, as in Docker
    config = cfg(busybox, ["sh", "-c", STATUS + "; touch /tmp/f; chown 1 /tmp/f; echo chown=$?; "
                                      "mount -t tmpfs none /tmp && echo mounted"],
                 cap_add=["SYS_ADMIN"], cap_drop=["chown", "CAP_NET_RAW"])
    st, log = run(runtime, config)
    caps = int(facts(log)["CapEff"], 16)
    assert caps & (1 << 21) and not caps & (1 << 0) and not caps & (1 << 13), log
    assert "chown=1" in log and "mounted" in log


def test_devices_outside_the_allowed_list_cannot_be_opened(runtime, busybox):
    script = ("mknod /tmp/sda b 8 0 && head -c1 /tmp/sda; mknod /tmp/mem c 1 1 && head -c1 /tmp/mem; "
              "mknod /tmp/null c 1 3 && echo x > /tmp/null && echo null=ok")
    st, log = run(runtime, cfg(busybox, ["sh", "-c", script]))
    assert "head: /tmp/sda: Operation not permitted" in log
    assert "head: /tmp/mem: Operation not permitted" in log
    assert "null=ok" in log


def test_cgroup_namespace_shows_only_the_container(runtime, busybox):
    script = ("grep memory /proc/self/cgroup; echo limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); "
              "mkdir /sys/fs/cgroup/memory/escape 2>/dev/null && echo mkdir=yes || echo mkdir=no")
    st, log = run(runtime, cfg(busybox, ["sh", "-c", script], memory_limit=32 * MiB))
    f = facts(log)
    assert ":memory:/\n" in log and f["limit"] == str(32 * MiB) and f["mkdir"] == "no", log


def test_rlimits(runtime, busybox):
    st, log = run(runtime, cfg(busybox, ["sh", "-c", "echo soft=$(ulimit -n) hard=$(ulimit -Hn) core=$(ulimit -c)"],
                               ulimits={"nofile": (123, 456), "core": (-1, -1)}))
    assert facts(log) == {"soft": "123 hard=456 core=unlimited"}, log


def test_read_only_root_with_mounts(runtime, busybox, tmp_path):
    ro_dir, rw_dir = tmp_path / "ro", tmp_path / "rw"
    ro_dir.mkdir()
    rw_dir.mkdir()
    (ro_dir / "config").write_text("from the host\n")
    script = ("touch /x 2>/dev/null && echo root=rw || echo root=ro; "
              "touch /scratch/a && echo scratch=rw; echo data=$(cat /data/config); "
              "touch /data/b 2>/dev/null && echo data=rw || echo data=ro; echo out > /out/file; "
              "grep ' /scratch ' /proc/mounts")
    config = cfg(busybox, ["sh", "-c", script], read_only=True,
                 mounts=[Mount("tmpfs", "/scratch", tmpfs_size=MiB, tmpfs_mode=0o755),
                         Mount("bind", "/data", source=str(ro_dir), read_only=True),
                         Mount("bind", "/out", source=str(rw_dir))])
    st, log = run(runtime, config)
    f = facts(log)
    assert (f["root"], f["scratch"], f["data"]) == ("ro", "rw", "ro"), log
    assert "data=from the host" in log
    assert (rw_dir / "file").read_text() == "out\n"
    assert "size=1024k" in log and "mode=755" in log and "noexec" in log


def test_user_and_home(runtime, busybox):
    st, log = run(runtime, cfg(busybox, ["sh", "-c", "echo id=$(id -u):$(id -g) home=$HOME"], user="nobody"))
    assert facts(log) == {"id": "65534:65534 home=/nonexistent"}, log
    st, log = run(runtime, cfg(busybox, ["sh", "-c", "echo id=$(id -u):$(id -g) home=$HOME"], user="4242:77"))
    assert facts(log) == {"id": "4242:77 home=/"}, log


def test_user_namespace(open_root, busybox, cgroup_parent):
    rt = Runtime(open_root, cgroup_parent=cgroup_parent)
    script = ("echo id=$(id -u); echo map=$(cat /proc/self/uid_map | tr -s ' '); touch /rootfile && echo write=ok; "
              "echo owner=$(stat -c %u /); " + STATUS + "; sleep 2")
    config = cfg(busybox, ["sh", "-c", script], user_namespace=UserNamespace(200000, 200000, 65536))
    rt.create(config)
    pid = rt.start(config.id)
    time.sleep(0.3)
    host_uid = [ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("Uid:")]
    res = asyncio.run(rt.exec_run(config.id, ["sh", "-c", "id -u; cat /proc/self/uid_map | tr -s ' '; "
                                                          "readlink /proc/self/ns/user"], timeout=10))
    assert res.exit_code == 0 and res.stdout.decode().splitlines() == [
        "0", " 0 200000 65536", os.readlink(f"/proc/{pid}/ns/user")], res
    st = asyncio.run(asyncio.wait_for(rt.wait(config.id), 20))
    from .conftest import log_lines
    f = facts(log_lines(rt, config.id))
    assert st.exit_code == 0, st
    assert f["id"] == "0" and f["map"] == " 0 200000 65536" and f["write"] == "ok" and f["owner"] == "0"
    assert host_uid and host_uid[0].split()[1] == "200000"  # root inside is an ordinary uid outside
    assert (f["Seccomp"], f["NoNewPrivs"]) == ("2", "1")
    assert procfs.is_alive(pid, None) is False


def test_user_namespace_needs_a_reachable_root(runtime, busybox):
    with pytest.raises(ValueError, match="user_namespace: .* is not searchable by uid 100000"):
        runtime.create(cfg(busybox, ["true"], user_namespace=UserNamespace()))
    assert runtime.list() == []
