"""One OCI bundle, three engines: Shoal's own init, runc and crun must give the container the
same view (pid 1, hostname, mounts, capabilities, seccomp, cgroups), and Shoal's lifecycle
around them (logs, exit codes, OOM, exec, stop) must work the same whatever the engine."""
from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from pathlib import Path

import pytest

from worker.runtime import ContainerConfig, Runtime
from worker.runtime.spec import build_spec, hosts_file

from .conftest import IS_ROOT, cfg, facts, log_lines

pytestmark = [pytest.mark.root, pytest.mark.skipif(not IS_ROOT, reason="needs root")]

ENGINES = ["shoal"] + [e for e in ("runc", "crun") if shutil.which(e)]
MiB = 1024 * 1024

PROBE = r"""
echo pid=$$
echo hostname=$(hostname)
grep -E '^(CapEff|CapBnd|CapPrm|Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\t' | tr : =
echo uid=$(id -u):$(id -g)
echo memcg=$(grep :memory: /proc/self/cgroup)
echo limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)
echo dev=$(ls /dev | grep -v '^core$' | tr '\n' ' ')
echo mounts=$(cut -d' ' -f2 /proc/mounts | sort | tr '\n' ' ')
echo ro=$(for m in / /sys /proc/sys /proc/bus /sys/fs/cgroup/memory; do grep " $m " /proc/mounts | cut -d' ' -f4 | cut -d, -f1; done | tr '\n' ' ')
unshare -U true 2>/dev/null; echo unshare=$?
touch /probe 2>/dev/null; echo rootwrite=$?
"""


def make_bundle(directory: Path, rootfs: Path, args: list[str], **kw) -> Path:
    """A standard OCI bundle from Shoal's spec builder; the root is shared read-only."""
    directory.mkdir()
    for name, text in (("hostname", "samebox\n"), ("hosts", hosts_file("samebox")), ("resolv.conf", "")):
        (directory / name).write_text(text)
    config = ContainerConfig(id="0" * 64, args=args, env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], layers=[],
                             hostname="samebox", read_only=True, **kw)
    spec = build_spec(config, 0, 0, [], "", {f"/etc/{n}": str(directory / n) for n in ("hostname", "hosts",
                                                                                          "resolv.conf")})
    spec["root"]["path"] = str(rootfs)
    del spec["linux"]["cgroupsPath"]  # each container: /<cgroup parent>/<id>
    (directory / "config.json").write_text(json.dumps(spec))
    return directory


def run_bundle(rt: Runtime, bundle: Path):
    cid = secrets.token_hex(32)
    rt.create_bundle(cid, bundle)
    rt.start(cid)
    st = asyncio.run(asyncio.wait_for(rt.wait(cid), 20))
    return cid, st, log_lines(rt, cid)


@pytest.mark.skipif(len(ENGINES) < 2, reason="neither runc nor crun is installed")
def test_same_bundle_same_container(engine_runtime, busybox, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", busybox.layers[0], ["sh", "-c", PROBE], memory_limit=48 * MiB)
    seen = {}
    for engine in ENGINES:
        rt = engine_runtime(engine)
        cid, st, log = run_bundle(rt, bundle)
        assert (st.status, st.exit_code, st.error) == ("stopped", 0, ""), (engine, log)
        seen[engine] = facts(log)
        rt.delete(cid)
        assert not (rt.root / cid).exists() and not any(d.exists() for d in rt.cgroup_dirs(cid))
    ours = seen["shoal"]
    assert ours["pid"] == "1" and ours["hostname"] == "samebox" and ours["uid"] == "0:0"
    assert ours["CapEff"] == "00000000a80425fb" and ours["Seccomp"] == "2" and ours["NoNewPrivs"] == "1"
    assert ours["memcg"].endswith(":memory:/") and ours["limit"] == str(48 * MiB)
    assert ours["unshare"] == "1" and ours["rootwrite"] == "1"
    assert ours["ro"].split() == ["ro"] * 5
    for engine in ENGINES[1:]:
        assert seen[engine] == ours, engine


SYSCTLS = {"kernel.shmmax": "123456789", "net.ipv4.ip_forward": "1", "fs.mqueue.msg_max": "20"}


def _host_sysctls() -> dict[str, str]:
    return {k: Path("/proc/sys", *k.split(".")).read_text().strip() for k in SYSCTLS}


@pytest.mark.parametrize("engine", ENGINES)
def test_sysctls_under_every_engine(engine_runtime, busybox, tmp_path, engine):
    """linux.sysctl of one bundle is applied inside the container by Shoal's init as by runc and
    crun, and the host's values stay as they were (the container's IPC and network namespaces)."""
    probe = "; ".join(f"echo {k}=$(cat /proc/sys/{k.replace('.', '/')})" for k in SYSCTLS)
    bundle = make_bundle(tmp_path / "bundle", busybox.layers[0], ["sh", "-c", probe], sysctls=SYSCTLS)
    assert json.loads((bundle / "config.json").read_text())["linux"]["sysctl"] == SYSCTLS
    before = _host_sysctls()
    rt = engine_runtime(engine)
    cid, st, log = run_bundle(rt, bundle)
    assert (st.status, st.exit_code, st.error) == ("stopped", 0, ""), log
    assert {k: v for k, v in facts(log).items() if k in SYSCTLS} == SYSCTLS
    assert _host_sysctls() == before
    rt.delete(cid)


@pytest.mark.parametrize("engine", ENGINES[1:])
def test_lifecycle_under_other_engines(engine_runtime, busybox, engine):
    rt = engine_runtime(engine)
    # OOM kill and exit code, reported by the shim, through runc/crun as through Shoal's init
    oom = cfg(busybox, ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"], memory_limit=16 * MiB)
    rt.create(oom)
    rt.start(oom.id)
    st = asyncio.run(asyncio.wait_for(rt.wait(oom.id), 20))
    assert (st.exit_code, st.oom_killed) == (137, True)
    rt.delete(oom.id)
    assert not (rt._engine_root(engine) / oom.id).exists()  # the engine's own state is gone too

    config = cfg(busybox, ["sh", "-c", "trap 'echo bye; exit 3' TERM; echo up; while :; do sleep 0.05; done"])
    rt.create(config)
    rt.start(config.id)

    async def scenario():
        res = await rt.exec_run(config.id, ["sh", "-c", "echo pid=$$ host=$(hostname); grep Seccomp: /proc/self/status"])
        await asyncio.sleep(0.2)
        st = await rt.stop(config.id, timeout=5)
        return res, st
    res, st = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert res.exit_code == 0 and f"host={config.id[:12]}" in res.stdout.decode() and b"Seccomp:\t2" in res.stdout
    assert st.exit_code == 3
    assert log_lines(rt, config.id) == "up\nbye\n"


@pytest.mark.parametrize("engine", ENGINES[1:])
def test_engine_failure_is_reported(engine_runtime, busybox, tmp_path, engine):
    rt = engine_runtime(engine)
    bundle = make_bundle(tmp_path / "bad", busybox.layers[0], ["/no/such/binary"])
    cid = secrets.token_hex(32)
    rt.create_bundle(cid, bundle)
    try:
        rt.start(cid)
        st = asyncio.run(asyncio.wait_for(rt.wait(cid), 20))
        assert st.exit_code != 0
    except Exception as exc:  # runc refuses at create: start itself fails, with runc's reason
        assert "no such file" in str(exc).lower() or "not found" in str(exc).lower(), exc
        st = rt.state(cid)
        assert st.status == "stopped" and st.exit_code == 128 and st.error
    rt.delete(cid)
