"""The node supervisor that forks every shim: containers outlive it, a newer one replaces a
stale one, it leaves with its runtime root, and it does not grow with the work it does."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from worker.runtime import Runtime, procfs
from worker.runtime.client import SupervisorClient

from .conftest import IS_ROOT, cfg, log_lines

pytestmark = [pytest.mark.root, pytest.mark.skipif(not IS_ROOT, reason="needs root")]


def supervisor_pid(rt: Runtime) -> int:
    conn, reply, _ = rt._supervisor.request({"op": "ping"})
    conn.close()
    return int(reply["pid"])


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while procfs.is_alive(pid, None) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not procfs.is_alive(pid, None)


def test_containers_outlive_the_supervisor(runtime, busybox):
    config = cfg(busybox, ["sh", "-c", "trap 'exit 5' TERM; i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.05; done"])
    runtime.create(config)
    runtime.start(config.id)
    sup = supervisor_pid(runtime)
    assert Path(f"/proc/{sup}/comm").read_text().strip() == "shoal-supervise"
    os.kill(sup, signal.SIGKILL)
    assert wait_gone(sup)
    time.sleep(0.3)
    assert runtime.state(config.id).status == "running"
    before = log_lines(runtime, config.id).count("tick")
    time.sleep(0.3)
    assert log_lines(runtime, config.id).count("tick") > before  # the shim still relays output
    other = cfg(busybox, ["true"])  # the next request starts a new supervisor
    runtime.create(other)
    runtime.start(other.id)
    assert supervisor_pid(runtime) != sup
    st = asyncio.run(asyncio.wait_for(runtime.stop(config.id, timeout=5), 10))
    assert st.exit_code == 5


def test_a_supervisor_running_other_code_is_replaced(runtime, busybox):
    old = supervisor_pid(runtime)
    newer = SupervisorClient(runtime.root, runtime.python)
    newer.version = "0123abcd"  # as if the runtime's files had changed on disk
    conn, reply, _ = newer.request({"op": "ping"})
    conn.close()
    assert reply["version"] == "0123abcd" and reply["pid"] != old
    assert wait_gone(old)
    newer.quit()


def test_supervisor_leaves_with_its_root(tmp_path, cgroup_parent, busybox):
    rt = Runtime(tmp_path / "containers", cgroup_parent=cgroup_parent)
    sup = supervisor_pid(rt)
    run_dir = rt._supervisor.run_dir
    assert (run_dir / "supervisor.sock").exists()
    shutil.rmtree(rt.root)
    assert wait_gone(sup, 10)
    assert not run_dir.exists()


def test_supervisor_does_not_grow(runtime, busybox):
    sup = supervisor_pid(runtime)

    def rss() -> int:
        return procfs.rss_kib(sup)

    async def round_trip():
        config = cfg(busybox, ["true"])
        runtime.create(config)
        runtime.start(config.id)
        await runtime.wait(config.id)
        runtime.delete(config.id)
    for _ in range(5):
        asyncio.run(round_trip())
    start = rss()
    for _ in range(30):
        asyncio.run(round_trip())
    assert rss() - start < 512, (start, rss())
    assert json.loads(json.dumps(supervisor_pid(runtime))) == sup  # the same process all along
