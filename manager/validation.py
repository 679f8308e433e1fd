"""Checks a service spec before it enters the log. Pure; each error names the field."""
from __future__ import annotations

import re

from api.objects import ServiceSpec
from manager.runchecks import check_run_fields
from scheduler import parse_constraint, parse_preference

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_SIGNALS = {
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGSTOP", "SIGCONT",
    "SIGWINCH", "SIGPWR",
}
MIN_MEMORY = 6 * 1024 * 1024  # Docker's minimum memory limit for a container


class SpecError(ValueError):
    pass


def validate_service_spec(spec: ServiceSpec) -> None:
    if not spec.name:
        raise SpecError("Name: must not be empty")
    if len(spec.name) > 63 or not _NAME.match(spec.name):
        raise SpecError(f"Name: {spec.name!r} is invalid (letters, digits, '_', '.', '-', at most 63, starting with a letter or digit)")
    mode = spec.mode
    if sum(m is not None for m in (mode.replicated, mode.global_, mode.replicated_job, mode.global_job)) != 1:
        raise SpecError("Mode: exactly one of Replicated, Global, ReplicatedJob or GlobalJob must be set")
    if mode.replicated is not None and mode.replicated.replicas < 0:
        raise SpecError(f"Mode.Replicated.Replicas: must be 0 or more, got {mode.replicated.replicas}")
    if mode.replicated_job is not None:
        rj = mode.replicated_job
        if rj.max_concurrent < 0:
            raise SpecError(f"Mode.ReplicatedJob.MaxConcurrent: must be 0 or more, got {rj.max_concurrent}")
        if rj.total_completions is not None and rj.total_completions < 0:
            raise SpecError(f"Mode.ReplicatedJob.TotalCompletions: must be 0 or more, got {rj.total_completions}")
    _validate_update_config(spec.update_config, "UpdateConfig", ("pause", "continue", "rollback"))
    _validate_update_config(spec.rollback_config, "RollbackConfig", ("pause", "continue"))
    tt = spec.task_template
    cs = tt.container_spec
    if not cs.image:
        raise SpecError("TaskTemplate.ContainerSpec.Image: must not be empty")
    for i, e in enumerate(cs.env):
        if not e or e.startswith("="):
            raise SpecError(f"TaskTemplate.ContainerSpec.Env[{i}]: {e!r} must be KEY=VALUE")
    if cs.stop_grace_period is not None and cs.stop_grace_period < 0:
        raise SpecError("TaskTemplate.ContainerSpec.StopGracePeriod: must not be negative")
    if cs.stop_signal:
        sig = cs.stop_signal.upper()
        sig = sig if sig.startswith("SIG") else "SIG" + sig
        if sig not in _SIGNALS and not cs.stop_signal.isdigit():
            raise SpecError(f"TaskTemplate.ContainerSpec.StopSignal: unknown signal {cs.stop_signal!r}")
    if tt.resources:
        lim, res = tt.resources.limits, tt.resources.reservations
        if lim:
            if lim.memory_bytes and lim.memory_bytes < MIN_MEMORY:
                raise SpecError(f"TaskTemplate.Resources.Limits.MemoryBytes: must be at least 6MiB, got {lim.memory_bytes}")
            for name, v in (("NanoCPUs", lim.nano_cpus), ("MemoryBytes", lim.memory_bytes), ("Pids", lim.pids)):
                if v < 0:
                    raise SpecError(f"TaskTemplate.Resources.Limits.{name}: must not be negative")
        if res:
            for name, v in (("NanoCPUs", res.nano_cpus), ("MemoryBytes", res.memory_bytes)):
                if v < 0:
                    raise SpecError(f"TaskTemplate.Resources.Reservations.{name}: must not be negative")
    if tt.restart_policy:
        rp = tt.restart_policy
        if rp.condition not in ("none", "on-failure", "any"):
            raise SpecError(f"TaskTemplate.RestartPolicy.Condition: must be none, on-failure or any, got {rp.condition!r}")
        for name, v in (("Delay", rp.delay or 0), ("MaxAttempts", rp.max_attempts), ("Window", rp.window)):
            if v < 0:
                raise SpecError(f"TaskTemplate.RestartPolicy.{name}: must not be negative")
    if tt.placement:
        for i, c in enumerate(tt.placement.constraints):
            try:
                parse_constraint(c)
            except ValueError as exc:
                raise SpecError(f"TaskTemplate.Placement.Constraints[{i}]: {exc}") from None
        for i, p in enumerate(tt.placement.preferences):
            spread = p.get("Spread", {}).get("SpreadDescriptor", "") if isinstance(p, dict) else ""
            try:
                parse_preference("spread=" + spread)
            except (ValueError, AttributeError) as exc:
                raise SpecError(f"TaskTemplate.Placement.Preferences[{i}]: {exc}") from None
        if tt.placement.max_replicas < 0:
            raise SpecError("TaskTemplate.Placement.MaxReplicas: must not be negative")
    try:
        check_run_fields(tt)
    except ValueError as exc:
        raise SpecError(str(exc)) from None


def _validate_update_config(cfg, name: str, actions: tuple[str, ...]) -> None:
    if cfg is None:
        return
    if cfg.parallelism < 0:
        raise SpecError(f"{name}.Parallelism: must be 0 (all at once) or more, got {cfg.parallelism}")
    for field, value in (("Delay", cfg.delay), ("Monitor", cfg.monitor)):
        if value < 0:
            raise SpecError(f"{name}.{field}: must not be negative")
    if cfg.failure_action not in actions:
        raise SpecError(f"{name}.FailureAction: must be {', '.join(actions[:-1])} or {actions[-1]}, "
                        f"got {cfg.failure_action!r}")
    if not 0.0 <= cfg.max_failure_ratio <= 1.0:
        raise SpecError(f"{name}.MaxFailureRatio: must be between 0 and 1, got {cfg.max_failure_ratio:g}")
    if cfg.order not in ("stop-first", "start-first"):
        raise SpecError(f"{name}.Order: must be stop-first or start-first, got {cfg.order!r}")
