"""exec into running containers (namespaces, cgroup, privileges, user, cwd, stdin, tty,
streaming, timeouts, errors) and resource stats from the cgroup."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from worker.runtime import ContainerStateError

from .conftest import IS_ROOT, cfg, facts

pytestmark = [pytest.mark.root, pytest.mark.skipif(not IS_ROOT, reason="needs root")]

MiB = 1024 * 1024


@pytest.fixture
def running(runtime, busybox):
    config = cfg(busybox, ["sleep", "60"], memory_limit=64 * MiB, hostname="box", pids_limit=20)
    config.env.append("FROM_IMAGE=yes")
    runtime.create(config)
    pid = runtime.start(config.id)
    return config, pid


def test_exec_runs_inside_the_container(runtime, running):
    config, pid = running
    script = ("echo pid=$$; echo one=$(tr '\\0' ' ' < /proc/1/cmdline); echo host=$(hostname); "
              "for ns in pid mnt uts ipc net cgroup; do echo ns_$ns=$(readlink /proc/self/ns/$ns); done; "
              "echo memcg=$(grep :memory: /proc/self/cgroup); echo env=$FROM_IMAGE/$EXTRA; "
              "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\\t' | tr : =; "
              "echo root=$(grep ' / ' /proc/mounts | cut -d' ' -f1); echo bad >&2; exit 7")
    res = asyncio.run(runtime.exec_run(config.id, ["sh", "-c", script], env=["EXTRA=added"], timeout=10))
    f = facts(res.stdout.decode())
    assert res.exit_code == 7 and res.stderr == b"bad\n" and res.error == ""
    assert f["pid"] != "1" and f["one"] == "sleep 60" and f["host"] == "box"
    for ns in ("pid", "mnt", "uts", "ipc", "net", "cgroup"):
        assert f[f"ns_{ns}"] == os.readlink(f"/proc/{pid}/ns/{ns}"), ns
    assert f["memcg"].endswith(":memory:/") and f["env"] == "yes/added"
    assert (f["CapEff"], f["Seccomp"], f["NoNewPrivs"]) == ("00000000a80425fb", "2", "1")
    assert f["root"] == "overlay"


def test_exec_joins_the_cgroup_and_streams(runtime, running):
    config, _ = running

    async def scenario():
        proc = runtime.exec(config.id, ["sh", "-c", "echo first; sleep 0.5; echo second"])
        chunks = []
        async for stream, data in proc.output():
            chunks.append((time.monotonic(), stream, data))
            if len(chunks) == 1:
                procs = (runtime.cgroup_dirs(config.id)[0] / "cgroup.procs").read_text().split()
                in_cgroup = str(proc.pid) in procs
        code = await proc.wait()
        proc.close()
        return chunks, code, in_cgroup
    chunks, code, in_cgroup = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert code == 0 and in_cgroup
    assert b"".join(c[2] for c in chunks) == b"first\nsecond\n"
    assert chunks[0][2] == b"first\n" and chunks[-1][0] - chunks[0][0] > 0.3  # it arrived before the end


def test_exec_user_cwd_and_stdin(runtime, running):
    config, _ = running
    res = asyncio.run(runtime.exec_run(config.id, ["sh", "-c", "id -u; pwd; cat"], user="nobody", cwd="/tmp",
                                       input=b"from stdin", timeout=10))
    assert res.stdout == b"65534\n/tmp\nfrom stdin" and res.exit_code == 0


def test_exec_with_a_terminal(runtime, running):
    config, _ = running

    async def scenario():
        proc = runtime.exec(config.id, ["sh"], tty=True)
        os.write(proc.pty, b"tty; echo answer=$((6*7)); exit 5\n")
        out = b""
        async for _, data in proc.output():
            out += data
        code = await proc.wait()
        proc.close()
        return out, code
    out, code = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert code == 5 and b"/dev/pts/0" in out and b"answer=42" in out


def test_exec_timeout_kills_the_process(runtime, running):
    config, _ = running
    t0 = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(runtime.exec_run(config.id, ["sleep", "30"], timeout=0.3))
    assert time.monotonic() - t0 < 3
    deadline = time.monotonic() + 5
    while runtime.stats(config.id)["pids"] != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert runtime.stats(config.id)["pids"] == 1  # only the container's own sleep is left


def test_exec_errors(runtime, running, busybox):
    config, _ = running
    res = asyncio.run(runtime.exec_run(config.id, ["no-such-tool"], timeout=10))
    assert res.exit_code == 127 and res.error == 'exec: "no-such-tool": executable file not found in $PATH'
    with pytest.raises(ValueError, match="args: must be a non-empty list"):
        runtime.exec(config.id, [])
    with pytest.raises(ValueError, match="cwd: must be an absolute path"):
        runtime.exec(config.id, ["true"], cwd="tmp")
    with pytest.raises(ValueError, match="user: no user 'ghost'"):
        runtime.exec(config.id, ["true"], user="ghost")
    stopped = cfg(busybox, ["true"])
    runtime.create(stopped)
    with pytest.raises(ContainerStateError, match="is not running"):
        runtime.exec(stopped.id, ["true"])


def test_stats(runtime, running):
    config, _ = running
    before = runtime.stats(config.id)
    assert before["memory_limit_bytes"] == 64 * MiB and before["pids"] == 1
    assert before["memory_usage_bytes"] > 0 and before["cpu_usage_ns"] >= 0
    res = asyncio.run(runtime.exec_run(
        config.id, ["sh", "-c", "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; "
                                "head -c 20000000 /dev/zero > /dev/shm/fill"], timeout=30))
    assert res.exit_code == 0
    after = runtime.stats(config.id)
    assert after["cpu_usage_ns"] > before["cpu_usage_ns"] + 10_000_000
    assert after["memory_usage_bytes"] > before["memory_usage_bytes"] + 15 * MiB  # shm pages count


def test_stats_of_an_unlimited_container(runtime, busybox):
    config = cfg(busybox, ["sleep", "60"])
    runtime.create(config)
    runtime.start(config.id)
    total = [int(ln.split()[1]) * 1024 for ln in Path("/proc/meminfo").read_text().splitlines()
             if ln.startswith("MemTotal:")][0]
    assert runtime.stats(config.id)["memory_limit_bytes"] == total
