"""Container health checks, with Docker's rules.

The check comes from the service spec or the image (Docker's Healthcheck: Test, Interval,
Timeout, StartPeriod in nanoseconds, Retries); `merge` combines them as dockerd does. A running
container starts "starting"; every Interval (counted from the end of the previous probe) the Test
runs inside the container (Runtime.exec_run), killed after Timeout. Exit code 0 makes the
container "healthy" and resets the failing streak; anything else (a timeout too) is a failure:
during StartPeriod, while still "starting", failures do not count; otherwise Retries failures in
a row make it "unhealthy". The last 5 results are kept, each with at most 4 KiB of output.

`HealthState.record` is the pure state machine; `monitor` runs it and yields each transition.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

NANOSECOND = 1
MILLISECOND = 1_000_000
SECOND = 1_000_000_000
DEFAULT_INTERVAL = 30 * SECOND
DEFAULT_TIMEOUT = 30 * SECOND
DEFAULT_START_PERIOD = 0
DEFAULT_RETRIES = 3
MIN_DURATION = MILLISECOND
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"


@dataclass(frozen=True)
class HealthConfig:
    test: tuple[str, ...] = ()   # ("CMD", arg...) | ("CMD-SHELL", "cmd") | ("NONE",) | () = inherit
    interval: int = 0            # nanoseconds; 0 = inherit / default
    timeout: int = 0
    start_period: int = 0
    retries: int = 0

    @classmethod
    def from_docker(cls, obj: dict[str, Any] | None) -> "HealthConfig | None":
        """From a Docker Healthcheck object (image config or API spec); None if absent."""
        if not obj:
            return None
        test = obj.get("Test") or []
        if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
            raise ValueError("Healthcheck.Test: must be a list of strings")
        values = {}
        for key, name in (("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start_period"),
                          ("Retries", "retries")):
            v = obj.get(key) or 0
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"Healthcheck.{key}: must be an integer, got {v!r}")
            values[name] = v
        hc = cls(tuple(test), **values)
        hc.validate()
        return hc

    def validate(self) -> None:
        if self.test and self.test[0] not in ("NONE", "CMD", "CMD-SHELL"):
            raise ValueError(f"Healthcheck.Test: must start with NONE, CMD or CMD-SHELL, got {self.test[0]!r}")
        if self.test and self.test[0] == "CMD" and len(self.test) < 2:
            raise ValueError("Healthcheck.Test: CMD needs a command")
        if self.test and self.test[0] == "CMD-SHELL" and len(self.test) != 2:
            raise ValueError("Healthcheck.Test: CMD-SHELL takes exactly one command string")
        for name, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start_period", "StartPeriod")):
            v = getattr(self, name)
            if v < 0 or 0 < v < MIN_DURATION:
                raise ValueError(f"Healthcheck.{key}: cannot be less than 1ms, got {v}ns")
        if self.retries < 0:
            raise ValueError(f"Healthcheck.Retries: cannot be negative, got {self.retries}")

    @property
    def disabled(self) -> bool:
        return not self.test or self.test[0] == "NONE"

    def command(self) -> list[str]:
        if self.test[0] == "CMD-SHELL":
            return ["/bin/sh", "-c", self.test[1]]
        return list(self.test[1:])

    def effective(self) -> tuple[int, int, int, int]:
        """(interval, timeout, start period, retries) with Docker's defaults for zeros."""
        return (self.interval or DEFAULT_INTERVAL, self.timeout or DEFAULT_TIMEOUT,
                self.start_period or DEFAULT_START_PERIOD, self.retries or DEFAULT_RETRIES)


def merge(spec: HealthConfig | None, image: HealthConfig | None) -> HealthConfig | None:
    """What dockerd runs: the spec's check, its empty Test and zero values taken from the image's.
    None when there is no check or it is ("NONE",)."""
    if spec is None:
        result = image
    elif image is None:
        result = spec
    else:
        result = HealthConfig(test=spec.test or image.test, interval=spec.interval or image.interval,
                              timeout=spec.timeout or image.timeout,
                              start_period=spec.start_period or image.start_period,
                              retries=spec.retries or image.retries)
    if result is None or result.disabled:
        return None
    return result


@dataclass(frozen=True)
class ProbeResult:
    start: float        # UNIX seconds
    end: float
    exit_code: int      # -1: timed out or could not run
    output: str


@dataclass(frozen=True)
class HealthTransition:
    status: str
    previous: str
    failing_streak: int
    result: ProbeResult | None


@dataclass
class HealthState:
    status: str = STARTING
    failing_streak: int = 0
    log: list[ProbeResult] = field(default_factory=list)

    def record(self, result: ProbeResult, started_at: float, config: HealthConfig) -> bool:
        """Apply one probe result; True if the status changed."""
        _, _, start_period, retries = config.effective()
        before = self.status
        self.log = (self.log + [result])[-MAX_LOG_ENTRIES:]
        if result.exit_code == 0:
            self.failing_streak = 0
            self.status = HEALTHY
        else:
            in_start_period = self.status == STARTING and (result.start - started_at) * SECOND < start_period
            if not in_start_period:
                self.failing_streak += 1
                if self.failing_streak >= retries:
                    self.status = UNHEALTHY
        return self.status != before


def go_duration(ns: int) -> str:
    """A duration as Go prints it in Docker's messages ("30s", "500ms", "1m30s")."""
    if ns % SECOND == 0:
        s = ns // SECOND
        if s >= 60:
            m, s = divmod(s, 60)
            if m >= 60:
                h, m = divmod(m, 60)
                return f"{h}h{m}m{s}s"
            return f"{m}m{s}s"
        return f"{s}s"
    if ns % MILLISECOND == 0 and ns < SECOND:
        return f"{ns // MILLISECOND}ms"
    return f"{ns / SECOND:g}s"


async def probe(runtime: Any, id: str, config: HealthConfig, clock: Callable[[], float] = time.time) -> ProbeResult:
    """Run the check once in the container."""
    _, timeout, _, _ = config.effective()
    start = clock()
    try:
        res = await runtime.exec_run(id, config.command(), timeout=timeout / SECOND, max_output=MAX_OUTPUT)
    except asyncio.TimeoutError:
        return ProbeResult(start, clock(), -1, f"Health check exceeded timeout ({go_duration(timeout)})")
    output = (res.stdout + res.stderr)[:MAX_OUTPUT].decode(errors="replace")
    if res.error:
        output = (output + res.error)[:MAX_OUTPUT]
    return ProbeResult(start, clock(), res.exit_code, output)


async def monitor(runtime: Any, id: str, config: HealthConfig, started_at: float,
                  sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                  clock: Callable[[], float] = time.time,
                  state: HealthState | None = None) -> AsyncIterator[HealthTransition]:
    """Yield ("starting" first, then) every change of the container's health, until it stops
    running. Pass `state` to keep the probe log and streak where the caller can read them."""
    from worker.runtime import ContainerNotFoundError, ContainerStateError
    config.validate()
    interval, _, _, _ = config.effective()
    state = state if state is not None else HealthState()
    yield HealthTransition(state.status, "", state.failing_streak, None)
    while True:
        await sleep(interval / SECOND)
        try:
            result = await probe(runtime, id, config, clock)
        except (ContainerStateError, ContainerNotFoundError):
            return  # the container is no longer running: nothing left to check
        before = state.status
        if state.record(result, started_at, config):
            yield HealthTransition(state.status, before, state.failing_streak, result)
