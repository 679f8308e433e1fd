"""Health checks: Docker's rules in the pure state machine, the monitor with a scripted runtime
and a fake clock, and a real container going starting -> healthy -> unhealthy."""
from __future__ import annotations

import asyncio
import time

import pytest

from worker.health import (SECOND, HealthConfig, HealthState, ProbeResult, go_duration, merge, monitor)
from worker.runtime import ContainerStateError
from worker.runtime.runtime import ExecResult

from .conftest import IS_ROOT, cfg

MS = 1_000_000


def result(at: float, code: int) -> ProbeResult:
    return ProbeResult(at, at + 0.01, code, "")


def test_from_docker_and_validation():
    hc = HealthConfig.from_docker({"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 5 * SECOND,
                                   "Timeout": 2 * SECOND, "StartPeriod": 10 * SECOND, "Retries": 4})
    assert hc.command() == ["/bin/sh", "-c", "curl -f localhost"]
    assert hc.effective() == (5 * SECOND, 2 * SECOND, 10 * SECOND, 4)
    assert HealthConfig(("CMD", "true")).effective() == (30 * SECOND, 30 * SECOND, 0, 3)
    assert HealthConfig.from_docker(None) is None
    for obj, message in [
        ({"Test": ["CURL", "x"]}, "Healthcheck.Test: must start with NONE, CMD or CMD-SHELL"),
        ({"Test": ["CMD"]}, "Healthcheck.Test: CMD needs a command"),
        ({"Test": ["CMD-SHELL", "a", "b"]}, "Healthcheck.Test: CMD-SHELL takes exactly one"),
        ({"Test": ["CMD", "true"], "Interval": 500}, "Healthcheck.Interval: cannot be less than 1ms"),
        ({"Test": ["CMD", "true"], "Retries": -1}, "Healthcheck.Retries: cannot be negative"),
        ({"Test": "true"}, "Healthcheck.Test: must be a list of strings"),
    ]:
        with pytest.raises(ValueError, match=message):
            HealthConfig.from_docker(obj)


def test_merge_follows_dockerd():
    image = HealthConfig(("CMD", "check"), interval=10 * SECOND, retries=5)
    assert merge(None, image) == image
    assert merge(HealthConfig(("NONE",)), image) is None          # disabled by the spec
    assert merge(None, None) is None
    got = merge(HealthConfig((), timeout=3 * SECOND), image)      # empty Test: the image's
    assert got == HealthConfig(("CMD", "check"), interval=10 * SECOND, timeout=3 * SECOND, retries=5)
    got = merge(HealthConfig(("CMD-SHELL", "x"), interval=1 * SECOND), image)
    assert got.test == ("CMD-SHELL", "x") and got.interval == SECOND and got.retries == 5


def test_state_machine_rules():
    cfg_ = HealthConfig(("CMD", "x"), start_period=10 * SECOND, retries=3)
    started = 1000.0
    h = HealthState()
    # failures inside the start period, while starting, do not count
    assert not h.record(result(1001, 1), started, cfg_) and (h.status, h.failing_streak) == ("starting", 0)
    assert not h.record(result(1009, 1), started, cfg_) and h.failing_streak == 0
    # after it they do, and the third in a row makes it unhealthy
    h.record(result(1011, 1), started, cfg_)
    h.record(result(1012, 2), started, cfg_)
    assert (h.status, h.failing_streak) == ("starting", 2)
    assert h.record(result(1013, -1), started, cfg_) and h.status == "unhealthy"
    # one success: healthy, streak reset
    assert h.record(result(1014, 0), started, cfg_) and (h.status, h.failing_streak) == ("healthy", 0)
    # once healthy, the start period no longer shields anything
    h2 = HealthState()
    h2.record(result(1001, 0), started, cfg_)
    for t in (1002, 1003):
        h2.record(result(t, 1), started, cfg_)
    assert h2.status == "healthy"
    assert h2.record(result(1004, 1), started, cfg_) and h2.status == "unhealthy"
    assert len(h2.log) == 4
    for t in range(10):
        h2.record(result(2000 + t, 0), started, cfg_)
    assert len(h2.log) == 5 and h2.log[-1].start == 2009  # the last five are kept


class ScriptedRuntime:
    """exec_run answers from a script: exit codes, or "timeout"; then the container stops."""

    def __init__(self, script, clock):
        self.script = list(script)
        self.clock = clock
        self.calls = []

    async def exec_run(self, id, args, timeout=None, max_output=None):
        self.calls.append((args, timeout))
        if not self.script:
            raise ContainerStateError("container is not running")
        step = self.script.pop(0)
        if step == "timeout":
            self.clock.now += timeout
            raise asyncio.TimeoutError()
        self.clock.now += 0.01
        return ExecResult(step, b"out" * 2000, b"", "")


class Clock:
    def __init__(self):
        self.now = 5000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    async def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_monitor_yields_transitions_with_a_fake_clock():
    clock = Clock()
    rt = ScriptedRuntime([1, 0, 0, 1, "timeout", 1, 0], clock)
    hc = HealthConfig(("CMD-SHELL", "check"), interval=2 * SECOND, timeout=SECOND // 2, retries=3,
                      start_period=3 * SECOND)

    async def collect():
        return [t async for t in monitor(rt, "c", hc, started_at=clock.now, sleep=clock.sleep, clock=clock)]
    changes = asyncio.run(collect())
    assert [(c.previous, c.status) for c in changes] == [
        ("", "starting"), ("starting", "healthy"), ("healthy", "unhealthy"), ("unhealthy", "healthy")]
    assert changes[2].failing_streak == 3 and changes[2].result.exit_code == 1
    assert clock.sleeps == [2.0] * 8                       # the interval before every probe
    assert rt.calls[0] == (["/bin/sh", "-c", "check"], 0.5)
    assert len(changes[1].result.output) == 4096            # output is capped like Docker's


def test_probe_timeout_message():
    clock = Clock()
    rt = ScriptedRuntime(["timeout"], clock)
    hc = HealthConfig(("CMD", "x"), interval=SECOND, timeout=1500 * MS, retries=1)
    state = HealthState()

    async def collect():
        return [t async for t in monitor(rt, "c", hc, started_at=0, sleep=clock.sleep, clock=clock, state=state)]
    changes = asyncio.run(collect())
    assert changes[-1].status == "unhealthy"
    assert state.log[0].exit_code == -1 and state.log[0].output == "Health check exceeded timeout (1.5s)"
    assert go_duration(30 * SECOND) == "30s" and go_duration(500 * MS) == "500ms"
    assert go_duration(90 * SECOND) == "1m30s"


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="needs root")
def test_real_container_health(runtime, busybox):
    config = cfg(busybox, ["sh", "-c", "sleep 0.4; touch /tmp/ok; sleep 1.2; rm /tmp/ok; sleep 30"])
    runtime.create(config)
    runtime.start(config.id)
    hc = HealthConfig(("CMD-SHELL", "test -f /tmp/ok"), interval=100 * MS, timeout=2 * SECOND, retries=2,
                      start_period=SECOND)

    async def watch():
        seen = []
        async for change in monitor(runtime, config.id, hc, started_at=time.time()):
            seen.append((round(time.monotonic() - t0, 1), change.status))
            if change.status == "unhealthy":
                return seen
    t0 = time.monotonic()
    seen = asyncio.run(asyncio.wait_for(watch(), 20))
    assert [s for _, s in seen] == ["starting", "healthy", "unhealthy"]
    assert 0.3 <= seen[1][0] <= 1.2 and 1.5 <= seen[2][0] <= 3.5
