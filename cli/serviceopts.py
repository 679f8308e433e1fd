"""Builds a ServiceSpec (Docker API JSON) from `service create` flags. Pure."""
from __future__ import annotations

from dataclasses import dataclass, field

from api.units import parse_bytes, parse_cpus, parse_duration


@dataclass
class ServiceOptions:
    image: str
    args: list[str] = field(default_factory=list)
    name: str = ""
    replicas: int | None = None
    mode: str = "replicated"
    env: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    container_labels: list[str] = field(default_factory=list)
    entrypoint: str | None = None
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    limit_memory: str | None = None
    limit_cpu: str | None = None
    limit_pids: int | None = None
    reserve_memory: str | None = None
    reserve_cpu: str | None = None
    constraints: list[str] = field(default_factory=list)
    placement_prefs: list[str] = field(default_factory=list)
    replicas_max_per_node: int | None = None
    restart_condition: str | None = None
    restart_delay: str | None = None
    restart_max_attempts: int | None = None
    restart_window: str | None = None
    stop_grace_period: str | None = None
    stop_signal: str = ""
    read_only: bool = False


def _kv(items: list[str], field_name: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise ValueError(f"{field_name}: {item!r} must be KEY=VALUE")
        out[key] = value
    return out


def build_spec(o: ServiceOptions) -> dict:
    if o.mode not in ("replicated", "global"):
        raise ValueError(f"--mode: must be replicated or global, got {o.mode!r}")
    if o.replicas is not None and o.replicas < 0:
        raise ValueError(f"--replicas: must be 0 or more, got {o.replicas}")
    if o.mode == "global" and o.replicas is not None:
        raise ValueError("--replicas: can only be used with replicated mode")
    for e in o.env:
        if not e or e.startswith("="):
            raise ValueError(f"--env: {e!r} must be KEY=VALUE")
    cs: dict = {"Image": o.image}
    if o.args:
        cs["Args"] = list(o.args)
    if o.entrypoint is not None:
        import shlex
        cs["Command"] = shlex.split(o.entrypoint)
    if o.env:
        cs["Env"] = list(o.env)
    if o.container_labels:
        cs["Labels"] = _kv(o.container_labels, "--container-label")
    if o.workdir:
        cs["Dir"] = o.workdir
    if o.user:
        cs["User"] = o.user
    if o.hostname:
        cs["Hostname"] = o.hostname
    if o.stop_signal:
        cs["StopSignal"] = o.stop_signal
    if o.stop_grace_period is not None:
        cs["StopGracePeriod"] = parse_duration(o.stop_grace_period, "--stop-grace-period")
    if o.read_only:
        cs["ReadOnly"] = True
    task: dict = {"ContainerSpec": cs}
    limits: dict = {}
    if o.limit_memory is not None:
        limits["MemoryBytes"] = parse_bytes(o.limit_memory, "--limit-memory")
    if o.limit_cpu is not None:
        limits["NanoCPUs"] = parse_cpus(o.limit_cpu, "--limit-cpu")
    if o.limit_pids is not None:
        if o.limit_pids < 0:
            raise ValueError("--limit-pids: must not be negative")
        limits["Pids"] = o.limit_pids
    reservations: dict = {}
    if o.reserve_memory is not None:
        reservations["MemoryBytes"] = parse_bytes(o.reserve_memory, "--reserve-memory")
    if o.reserve_cpu is not None:
        reservations["NanoCPUs"] = parse_cpus(o.reserve_cpu, "--reserve-cpu")
    if limits or reservations:
        task["Resources"] = {k: v for k, v in (("Limits", limits), ("Reservations", reservations)) if v}
    restart: dict = {}
    if o.restart_condition is not None:
        if o.restart_condition not in ("none", "on-failure", "any"):
            raise ValueError(f"--restart-condition: must be none, on-failure or any, got {o.restart_condition!r}")
        restart["Condition"] = o.restart_condition
    if o.restart_delay is not None:
        restart["Delay"] = parse_duration(o.restart_delay, "--restart-delay")
    if o.restart_max_attempts is not None:
        if o.restart_max_attempts < 0:
            raise ValueError("--restart-max-attempts: must not be negative")
        restart["MaxAttempts"] = o.restart_max_attempts
    if o.restart_window is not None:
        restart["Window"] = parse_duration(o.restart_window, "--restart-window")
    if restart:
        task["RestartPolicy"] = restart
    placement: dict = {}
    if o.constraints:
        placement["Constraints"] = list(o.constraints)
    if o.placement_prefs:
        prefs = []
        for p in o.placement_prefs:
            strategy, _, descriptor = p.partition("=")
            if strategy != "spread" or not descriptor:
                raise ValueError(f"--placement-pref: {p!r} must be spread=<label>, e.g. spread=node.labels.zone")
            prefs.append({"Spread": {"SpreadDescriptor": descriptor}})
        placement["Preferences"] = prefs
    if o.replicas_max_per_node is not None:
        if o.replicas_max_per_node < 0:
            raise ValueError("--replicas-max-per-node: must not be negative")
        placement["MaxReplicas"] = o.replicas_max_per_node
    if placement:
        task["Placement"] = placement
    spec: dict = {"TaskTemplate": task}
    if o.name:
        spec["Name"] = o.name
    if o.labels:
        spec["Labels"] = _kv(o.labels, "--label")
    if o.mode == "global":
        spec["Mode"] = {"Global": {}}
    else:
        spec["Mode"] = {"Replicated": {"Replicas": 1 if o.replicas is None else o.replicas}}
    return spec
