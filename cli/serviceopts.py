"""Builds a ServiceSpec (Docker API JSON) from `service create` flags, and applies the flags of
`service update` to an existing one. Pure."""
from __future__ import annotations

import copy
import shlex
from dataclasses import dataclass, field

from api.groups import check_group
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
    groups: list[str] = field(default_factory=list)
    init: bool = False
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
    mounts: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    ulimits: list[str] = field(default_factory=list)
    health_cmd: str | None = None
    health_interval: str | None = None
    health_timeout: str | None = None
    health_retries: int | None = None
    health_start_period: str | None = None
    no_healthcheck: bool = False
    networks: list[str] = field(default_factory=list)
    publish: list[str] = field(default_factory=list)
    endpoint_mode: str | None = None
    max_concurrent: int | None = None
    update: "UpdateFlags" = field(default_factory=lambda: UpdateFlags())
    rollback: "UpdateFlags" = field(default_factory=lambda: UpdateFlags())


@dataclass
class UpdateFlags:
    """--update-* or --rollback-* flags (None: not given)."""
    parallelism: int | None = None
    delay: str | None = None
    failure_action: str | None = None
    monitor: str | None = None
    max_failure_ratio: str | None = None
    order: str | None = None

    def given(self) -> bool:
        return any(v is not None for v in vars(self).values())


MODES = ("replicated", "global", "replicated-job", "global-job")


def _kv(items: list[str], field_name: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise ValueError(f"{field_name}: {item!r} must be KEY=VALUE")
        out[key] = value
    return out


def parse_mount(text: str) -> dict:
    """Docker's --mount: type=bind|volume|tmpfs,source=…,target=…[,readonly][,tmpfs-size=…][,tmpfs-mode=…]."""
    out: dict = {"Type": "volume"}
    tmpfs: dict = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if key in ("readonly", "ro"):
            if sep and value.lower() not in ("1", "true", "0", "false"):
                raise ValueError(f"--mount: readonly must be true or false, got {value!r}")
            out["ReadOnly"] = not sep or value.lower() in ("1", "true")
        elif key == "type":
            if value not in ("bind", "volume", "tmpfs"):
                raise ValueError(f"--mount: type must be bind, volume or tmpfs, got {value!r}")
            out["Type"] = value
        elif key in ("source", "src"):
            out["Source"] = value
        elif key in ("target", "destination", "dst"):
            out["Target"] = value
        elif key == "tmpfs-size":
            tmpfs["SizeBytes"] = parse_bytes(value, "--mount tmpfs-size")
        elif key == "tmpfs-mode":
            try:
                tmpfs["Mode"] = int(value, 8)
            except ValueError:
                raise ValueError(f"--mount: tmpfs-mode must be octal, got {value!r}") from None
        else:
            raise ValueError(f"--mount: unknown key {key!r} in {text!r}")
    if not out.get("Target", "").startswith("/"):
        raise ValueError(f"--mount: target must be an absolute path in {text!r}")
    if out["Type"] == "bind" and not out.get("Source", "").startswith("/"):
        raise ValueError(f"--mount: a bind mount needs an absolute source path in {text!r}")
    if tmpfs:
        if out["Type"] != "tmpfs":
            raise ValueError("--mount: tmpfs-size and tmpfs-mode are only for type=tmpfs")
        out["TmpfsOptions"] = tmpfs
    return out


def parse_file_ref(text: str, kind: str, flag: str = "") -> dict:
    """Docker's --secret / --config: NAME, or source=NAME[,target=T][,uid=U][,gid=G][,mode=0444]."""
    flag = flag or f"--{kind}"
    if "=" not in text:
        fields = {"source": text}
    else:
        fields = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep:
                raise ValueError(f"{flag}: {part!r} must be KEY=VALUE in {text!r}")
            if key == "src":
                key = "source"
            if key not in ("source", "target", "uid", "gid", "mode"):
                raise ValueError(f"{flag}: unknown key {key!r} in {text!r} (source, target, uid, gid, mode)")
            fields[key] = value
    source = fields.get("source", "")
    if not source:
        raise ValueError(f"{flag}: no source {kind} named in {text!r}")
    target = {"Name": fields.get("target") or source, "UID": fields.get("uid", "0"), "GID": fields.get("gid", "0")}
    for key in ("UID", "GID"):
        if not target[key].isdigit():
            raise ValueError(f"{flag}: {key.lower()} must be a numeric id, got {target[key]!r}")
    try:
        target["Mode"] = int(fields.get("mode", "0444"), 8)
    except ValueError:
        raise ValueError(f"{flag}: mode must be octal (e.g. 0400), got {fields['mode']!r}") from None
    return {"File": target, f"{kind.capitalize()}Name": source}


def parse_network(text: str) -> dict:
    """NAME, or name=NAME[,alias=A...] as Docker's --network."""
    if "=" not in text:
        return {"Target": text}
    out: dict = {"Aliases": []}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key in ("name", "target"):
            out["Target"] = value
        elif key == "alias":
            out["Aliases"].append(value)
        else:
            raise ValueError(f"--network: unknown key {key!r} in {text!r}")
    if not out.get("Target"):
        raise ValueError(f"--network: no network name in {text!r}")
    if not out["Aliases"]:
        del out["Aliases"]
    return out


def parse_publish(text: str) -> dict:
    """8080:80[/udp], or published=8080,target=80[,protocol=tcp][,mode=ingress|host]."""
    out: dict = {"Protocol": "tcp", "PublishMode": "ingress"}
    try:
        if "=" in text:
            for part in text.split(","):
                key, _, value = part.partition("=")
                if key in ("published", "target"):
                    out["PublishedPort" if key == "published" else "TargetPort"] = int(value)
                elif key == "protocol":
                    out["Protocol"] = value
                elif key == "mode":
                    out["PublishMode"] = value
                else:
                    raise ValueError(f"--publish: unknown key {key!r} in {text!r}")
        else:
            ports, _, proto = text.partition("/")
            published, sep, target = ports.partition(":")
            if sep:
                out["PublishedPort"], out["TargetPort"] = int(published), int(target)
            else:
                out["TargetPort"] = int(published)
            if proto:
                out["Protocol"] = proto
    except ValueError as exc:
        if str(exc).startswith("--publish"):
            raise
        raise ValueError(f"--publish: ports must be numbers in {text!r}") from None
    if out["Protocol"] not in ("tcp", "udp", "sctp"):
        raise ValueError(f"--publish: protocol must be tcp, udp or sctp, got {out['Protocol']!r}")
    if out["PublishMode"] not in ("ingress", "host"):
        raise ValueError(f"--publish: mode must be ingress or host, got {out['PublishMode']!r}")
    for key in ("TargetPort", "PublishedPort"):
        if key in out and not 0 < out[key] < 65536:
            raise ValueError(f"--publish: {key} out of range in {text!r}")
    if "TargetPort" not in out:
        raise ValueError(f"--publish: no target port in {text!r}")
    return out


def parse_group(text: str, flag: str) -> str:
    """A supplementary group: a name from the image's /etc/group, or a numeric gid."""
    try:
        check_group(text)
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None
    return text


def parse_ulimit(text: str) -> dict:
    """nofile=1024[:2048]"""
    name, sep, limits = text.partition("=")
    soft, _, hard = limits.partition(":")
    try:
        s = int(soft)
        h = int(hard) if hard else s
    except ValueError:
        raise ValueError(f"--ulimit: {text!r} must be NAME=SOFT[:HARD]") from None
    if not sep or not name:
        raise ValueError(f"--ulimit: {text!r} must be NAME=SOFT[:HARD]")
    return {"Name": name, "Soft": s, "Hard": h}


def health_check(o: "ServiceOptions") -> dict | None:
    if o.no_healthcheck:
        if o.health_cmd:
            raise ValueError("--no-healthcheck: conflicts with --health-cmd")
        return {"Test": ["NONE"]}
    hc: dict = {}
    if o.health_cmd:
        hc["Test"] = ["CMD-SHELL", o.health_cmd]
    for key, value, flag in (("Interval", o.health_interval, "--health-interval"),
                             ("Timeout", o.health_timeout, "--health-timeout"),
                             ("StartPeriod", o.health_start_period, "--health-start-period")):
        if value is not None:
            hc[key] = parse_duration(value, flag)
    if o.health_retries is not None:
        if o.health_retries < 0:
            raise ValueError("--health-retries: must not be negative")
        hc["Retries"] = o.health_retries
    return hc or None


def build_spec(o: ServiceOptions) -> dict:
    if o.mode not in MODES:
        raise ValueError(f"--mode: must be replicated, global, replicated-job or global-job, got {o.mode!r}")
    if o.replicas is not None and o.replicas < 0:
        raise ValueError(f"--replicas: must be 0 or more, got {o.replicas}")
    if o.mode in ("global", "global-job") and o.replicas is not None:
        raise ValueError("--replicas: can only be used with replicated or replicated-job mode")
    if o.max_concurrent is not None and o.mode != "replicated-job":
        raise ValueError("--max-concurrent: can only be used with replicated-job mode")
    if o.max_concurrent is not None and o.max_concurrent < 0:
        raise ValueError(f"--max-concurrent: must be 0 or more, got {o.max_concurrent}")
    job = o.mode.endswith("-job")
    if job and o.restart_condition == "any":
        raise ValueError("--restart-condition: a job cannot restart on any exit (it would run completed "
                         "tasks again): use on-failure or none")
    if job and o.restart_condition is None:
        o = copy.copy(o)
        o.restart_condition = "on-failure"  # what a job means
    for e in o.env:
        if not e or e.startswith("="):
            raise ValueError(f"--env: {e!r} must be KEY=VALUE")
    cs: dict = {"Image": o.image}
    if o.args:
        cs["Args"] = list(o.args)
    if o.entrypoint is not None:
        cs["Command"] = shlex.split(o.entrypoint)
    if o.env:
        cs["Env"] = list(o.env)
    if o.container_labels:
        cs["Labels"] = _kv(o.container_labels, "--container-label")
    if o.workdir:
        cs["Dir"] = o.workdir
    if o.user:
        cs["User"] = o.user
    if o.groups:
        cs["Groups"] = [parse_group(g, "--group") for g in o.groups]
    if o.init:
        cs["Init"] = True
    if o.hostname:
        cs["Hostname"] = o.hostname
    if o.stop_signal:
        cs["StopSignal"] = o.stop_signal
    if o.stop_grace_period is not None:
        cs["StopGracePeriod"] = parse_duration(o.stop_grace_period, "--stop-grace-period")
    if o.read_only:
        cs["ReadOnly"] = True
    if o.mounts:
        cs["Mounts"] = [parse_mount(m) for m in o.mounts]
    if o.secrets:
        cs["Secrets"] = [parse_file_ref(x, "secret") for x in o.secrets]
    if o.configs:
        cs["Configs"] = [parse_file_ref(x, "config") for x in o.configs]
    if o.cap_add:
        cs["CapabilityAdd"] = list(o.cap_add)
    if o.cap_drop:
        cs["CapabilityDrop"] = list(o.cap_drop)
    if o.ulimits:
        cs["Ulimits"] = [parse_ulimit(u) for u in o.ulimits]
    health = health_check(o)
    if health is not None:
        cs["HealthCheck"] = health
    task: dict = {"ContainerSpec": cs}
    if o.networks:
        task["Networks"] = [parse_network(n) for n in o.networks]
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
    if o.publish or o.endpoint_mode:
        endpoint: dict = {}
        if o.endpoint_mode:
            if o.endpoint_mode not in ("vip", "dnsrr"):
                raise ValueError(f"--endpoint-mode: must be vip or dnsrr, got {o.endpoint_mode!r}")
            endpoint["Mode"] = o.endpoint_mode
        if o.publish:
            endpoint["Ports"] = [parse_publish(p) for p in o.publish]
        spec["EndpointSpec"] = endpoint
    if o.name:
        spec["Name"] = o.name
    if o.labels:
        spec["Labels"] = _kv(o.labels, "--label")
    if o.mode == "global":
        spec["Mode"] = {"Global": {}}
    elif o.mode == "global-job":
        spec["Mode"] = {"GlobalJob": {}}
    elif o.mode == "replicated-job":
        total = 1 if o.replicas is None else o.replicas
        # as Docker's CLI: MaxConcurrent defaults to --replicas
        spec["Mode"] = {"ReplicatedJob": {"MaxConcurrent": total if o.max_concurrent is None else o.max_concurrent,
                                          "TotalCompletions": total}}
    else:
        spec["Mode"] = {"Replicated": {"Replicas": 1 if o.replicas is None else o.replicas}}
    if o.update.given():
        spec["UpdateConfig"] = update_config({}, o.update, "update")
    if o.rollback.given():
        spec["RollbackConfig"] = update_config({}, o.rollback, "rollback")
    return spec


def update_config(current: dict, f: UpdateFlags, prefix: str) -> dict:
    """UpdateConfig / RollbackConfig JSON: `current` with the given flags applied."""
    out = dict(current)
    if f.parallelism is not None:
        if f.parallelism < 0:
            raise ValueError(f"--{prefix}-parallelism: must be 0 (all at once) or more, got {f.parallelism}")
        out["Parallelism"] = f.parallelism
    out.setdefault("Parallelism", 1)
    if f.delay is not None:
        out["Delay"] = parse_duration(f.delay, f"--{prefix}-delay")
    if f.monitor is not None:
        out["Monitor"] = parse_duration(f.monitor, f"--{prefix}-monitor")
    actions = ("pause", "continue", "rollback") if prefix == "update" else ("pause", "continue")
    if f.failure_action is not None:
        if f.failure_action not in actions:
            raise ValueError(f"--{prefix}-failure-action: must be {', '.join(actions[:-1])} or {actions[-1]}, "
                             f"got {f.failure_action!r}")
        out["FailureAction"] = f.failure_action
    if f.max_failure_ratio is not None:
        try:
            ratio = float(f.max_failure_ratio)
        except ValueError:
            raise ValueError(f"--{prefix}-max-failure-ratio: must be a number, got {f.max_failure_ratio!r}") from None
        if not 0 <= ratio <= 1:
            raise ValueError(f"--{prefix}-max-failure-ratio: must be between 0 and 1, got {f.max_failure_ratio}")
        out["MaxFailureRatio"] = ratio
    if f.order is not None:
        if f.order not in ("stop-first", "start-first"):
            raise ValueError(f"--{prefix}-order: must be stop-first or start-first, got {f.order!r}")
        out["Order"] = f.order
    return out


@dataclass
class UpdateOptions:
    """The flags of `service update` (None or empty: leave as it is)."""
    image: str | None = None
    args: str | None = None
    entrypoint: str | None = None
    env_add: list[str] = field(default_factory=list)
    env_rm: list[str] = field(default_factory=list)
    label_add: list[str] = field(default_factory=list)
    label_rm: list[str] = field(default_factory=list)
    container_label_add: list[str] = field(default_factory=list)
    container_label_rm: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    group_add: list[str] = field(default_factory=list)
    group_rm: list[str] = field(default_factory=list)
    init: bool | None = None
    limit_memory: str | None = None
    limit_cpu: str | None = None
    limit_pids: int | None = None
    reserve_memory: str | None = None
    reserve_cpu: str | None = None
    constraint_add: list[str] = field(default_factory=list)
    constraint_rm: list[str] = field(default_factory=list)
    secret_add: list[str] = field(default_factory=list)
    secret_rm: list[str] = field(default_factory=list)
    config_add: list[str] = field(default_factory=list)
    config_rm: list[str] = field(default_factory=list)
    replicas: int | None = None
    max_concurrent: int | None = None
    restart_condition: str | None = None
    restart_delay: str | None = None
    restart_max_attempts: int | None = None
    restart_window: str | None = None
    stop_grace_period: str | None = None
    stop_signal: str | None = None
    force: bool = False
    update: UpdateFlags = field(default_factory=UpdateFlags)
    rollback: UpdateFlags = field(default_factory=UpdateFlags)


def apply_update(spec: dict, o: UpdateOptions) -> dict:
    """The ServiceSpec JSON that `service update` sends: `spec` with the flags applied, as
    Docker's CLI applies them (lists gain and lose items, scalars are replaced)."""
    spec = copy.deepcopy(spec)
    task = spec.setdefault("TaskTemplate", {})
    cs = task.setdefault("ContainerSpec", {})
    if o.image is not None:
        if not o.image:
            raise ValueError("--image: must not be empty")
        cs["Image"] = o.image
    if o.args is not None:
        set_or_drop(cs, "Args", shlex.split(o.args))
    if o.entrypoint is not None:
        set_or_drop(cs, "Command", shlex.split(o.entrypoint))
    if o.env_add or o.env_rm:
        for e in o.env_add:
            if not e or e.startswith("=") or "=" not in e:
                raise ValueError(f"--env-add: {e!r} must be KEY=VALUE")
        env = [e for e in cs.get("Env", []) if e.split("=", 1)[0] not in set(o.env_rm)]
        for e in o.env_add:
            key = e.split("=", 1)[0]
            env = [x for x in env if x.split("=", 1)[0] != key] + [e]
        set_or_drop(cs, "Env", env)
    if o.label_add or o.label_rm:
        set_or_drop(spec, "Labels", _kv_update(spec.get("Labels", {}), o.label_add, o.label_rm, "--label-add"))
    if o.container_label_add or o.container_label_rm:
        set_or_drop(cs, "Labels", _kv_update(cs.get("Labels", {}), o.container_label_add, o.container_label_rm,
                                              "--container-label-add"))
    if o.workdir is not None:
        set_or_drop(cs, "Dir", o.workdir)
    if o.user is not None:
        set_or_drop(cs, "User", o.user)
    if o.group_add or o.group_rm:
        groups = [g for g in cs.get("Groups", []) if g not in set(o.group_rm)]
        for group in o.group_add:
            if parse_group(group, "--group-add") not in groups:
                groups.append(group)
        set_or_drop(cs, "Groups", groups)
    if o.init is not None:
        cs["Init"] = o.init  # --no-init stores false, as Docker's --init=false
    if o.stop_grace_period is not None:
        cs["StopGracePeriod"] = parse_duration(o.stop_grace_period, "--stop-grace-period")
    if o.stop_signal is not None:
        set_or_drop(cs, "StopSignal", o.stop_signal)
    for kind, add, rm in (("secret", o.secret_add, o.secret_rm), ("config", o.config_add, o.config_rm)):
        if add or rm:
            key, name_key, id_key = f"{kind.capitalize()}s", f"{kind.capitalize()}Name", f"{kind.capitalize()}ID"
            refs = [r for r in cs.get(key, []) if r.get(name_key) not in rm and r.get(id_key) not in rm]
            for text in add:
                new = parse_file_ref(text, kind, f"--{kind}-add")
                refs = [r for r in refs if r.get(name_key) != new[name_key]] + [new]
            set_or_drop(cs, key, refs)
    resources = task.get("Resources") or {}
    limits, reservations = dict(resources.get("Limits") or {}), dict(resources.get("Reservations") or {})
    if o.limit_memory is not None:
        limits["MemoryBytes"] = parse_bytes(o.limit_memory, "--limit-memory")
    if o.limit_cpu is not None:
        limits["NanoCPUs"] = parse_cpus(o.limit_cpu, "--limit-cpu")
    if o.limit_pids is not None:
        if o.limit_pids < 0:
            raise ValueError("--limit-pids: must not be negative")
        limits["Pids"] = o.limit_pids
    if o.reserve_memory is not None:
        reservations["MemoryBytes"] = parse_bytes(o.reserve_memory, "--reserve-memory")
    if o.reserve_cpu is not None:
        reservations["NanoCPUs"] = parse_cpus(o.reserve_cpu, "--reserve-cpu")
    new_resources = {k: v for k, v in (("Limits", limits), ("Reservations", reservations)) if v}
    set_or_drop(task, "Resources", new_resources)
    if o.constraint_add or o.constraint_rm:
        placement = dict(task.get("Placement") or {})
        constraints = [c for c in placement.get("Constraints", []) if c not in set(o.constraint_rm)]
        constraints += [c for c in o.constraint_add if c not in constraints]
        set_or_drop(placement, "Constraints", constraints)
        set_or_drop(task, "Placement", placement)
    restart = dict(task.get("RestartPolicy") or {})
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
    set_or_drop(task, "RestartPolicy", restart)
    mode = spec.setdefault("Mode", {})
    if o.replicas is not None:
        if o.replicas < 0:
            raise ValueError(f"--replicas: must be 0 or more, got {o.replicas}")
        if "Replicated" in mode:
            mode["Replicated"]["Replicas"] = o.replicas
        elif "ReplicatedJob" in mode:
            mode["ReplicatedJob"]["TotalCompletions"] = o.replicas
        else:
            raise ValueError("--replicas: can only be used with replicated or replicated-job mode")
    if o.max_concurrent is not None:
        if "ReplicatedJob" not in mode:
            raise ValueError("--max-concurrent: can only be used with replicated-job mode")
        if o.max_concurrent < 0:
            raise ValueError(f"--max-concurrent: must be 0 or more, got {o.max_concurrent}")
        mode["ReplicatedJob"]["MaxConcurrent"] = o.max_concurrent
    if o.update.given():
        spec["UpdateConfig"] = update_config(spec.get("UpdateConfig") or {}, o.update, "update")
    if o.rollback.given():
        spec["RollbackConfig"] = update_config(spec.get("RollbackConfig") or {}, o.rollback, "rollback")
    if o.force:
        task["ForceUpdate"] = int(task.get("ForceUpdate", 0)) + 1
    return spec


def set_or_drop(obj: dict, key: str, value) -> None:
    """Set, or drop the key for an empty value (as the API's omitempty would)."""
    if value in (None, "", [], {}):
        obj.pop(key, None)
    else:
        obj[key] = value


def _kv_update(current: dict, add: list[str], rm: list[str], flag: str) -> dict:
    out = {k: v for k, v in current.items() if k not in set(rm)}
    out.update(_kv(add, flag))
    return out
