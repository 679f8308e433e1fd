"""`shoal service ...`"""
from __future__ import annotations

import json
import time
from typing import List, Optional

import typer

from cli.client import CLIError, Client
from cli.commands.common import client, filters_param, remove_each
from cli.output import ago, print_json, table
from cli.runopts import RunFlags, RunUpdateFlags, apply_create, apply_update as apply_run_update
from cli.registryflags import RESOLVE_IMAGE_HELP, WITH_REGISTRY_AUTH_HELP, echo_warnings, registry_params
from cli.serviceopts import ServiceOptions, UpdateFlags, UpdateOptions, apply_update, build_spec

app = typer.Typer(help="Manage swarm services.", no_args_is_help=True)

TRAILING = {"allow_interspersed_args": False}  # flags after IMAGE belong to the command, as in Docker


def short_image(ref: str) -> str:
    return ref.split("@", 1)[0] if "@" in ref and not ref.startswith("sha256:") else ref


def replicas_of(spec: dict) -> int | None:
    rep = spec.get("Mode", {}).get("Replicated")
    return rep.get("Replicas", 0) if rep is not None else None


def running_counts(c: Client) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in c.get("/tasks", params={"filters": json.dumps({"desired-state": ["running"]})}):
        if t.get("Status", {}).get("State") == "running":
            counts[t["ServiceID"]] = counts.get(t["ServiceID"], 0) + 1
    return counts


def update_flag_options() -> dict:
    """The --update-* and --rollback-* flags, shared by `create` and `update` (Docker's names)."""
    def opts(prefix: str, noun: str, actions: str) -> dict:
        return {
            f"{prefix}_parallelism": typer.Option(None, f"--{prefix}-parallelism", help=f"Maximum number of tasks {noun} simultaneously (0 for all at once; default 1)."),
            f"{prefix}_delay": typer.Option(None, f"--{prefix}-delay", help=f"Delay between {prefix}s of batches (ns|us|ms|s|m|h; default 0s)."),
            f"{prefix}_failure_action": typer.Option(None, f"--{prefix}-failure-action", help=f"Action on failure: {actions} (default pause)."),
            f"{prefix}_monitor": typer.Option(None, f"--{prefix}-monitor", help="Duration after each task starts to monitor it for failure (default 5s)."),
            f"{prefix}_max_failure_ratio": typer.Option(None, f"--{prefix}-max-failure-ratio", help=f"Failure rate to tolerate during the {prefix} (0 to 1; default 0)."),
            f"{prefix}_order": typer.Option(None, f"--{prefix}-order", help="stop-first or start-first (default stop-first)."),
        }
    return {**opts("update", "updated", "pause, continue or rollback"), **opts("rollback", "rolled back", "pause or continue")}


def flags(kw: dict, prefix: str) -> UpdateFlags:
    return UpdateFlags(**{k[len(prefix) + 1:]: v for k, v in kw.items() if k.startswith(prefix + "_")})


def with_update_flags(fn):
    """Adds the --update-* / --rollback-* parameters to a typer command function."""
    import inspect
    extra = update_flag_options()
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.kind != p.VAR_KEYWORD]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Optional[str]
                                 if not name.endswith("parallelism") else Optional[int])
               for name, default in extra.items()]
    fn.__signature__ = sig.replace(parameters=params)
    return fn


def run_flag_options(update: bool) -> dict[str, tuple]:
    """The flags of cli.runopts (Docker's names): create's, or update's with -add/-rm variants."""
    def many(flag: str, help: str) -> tuple:
        return List[str], typer.Option([], flag, help=help)
    out = {}
    for name, what, example in (("sysctl", "a namespaced kernel parameter", "net.core.somaxconn=1024"),
                                ("host", "a custom host-to-IP mapping for /etc/hosts", "db:10.0.0.2"),
                                ("dns", "a DNS server", "10.0.0.53"),
                                ("dns_search", "a DNS search domain", "example.com"),
                                ("dns_option", "a DNS resolver option", "ndots:2")):
        flag = "--" + name.replace("_", "-")
        if update:
            out[name + "_add"] = many(flag + "-add", f"Add or update {what} (e.g. {example}).")
            out[name + "_rm"] = many(flag + "-rm", f"Remove {what}.")
        else:
            out[name] = many(flag, f"Set {what} (e.g. {example}; repeatable).")
    out["log_driver"] = (Optional[str], typer.Option(None, "--log-driver", help="Logging driver: json-file (default), local or none."))
    out["log_opt"] = many("--log-opt", "Logging driver option: max-size=10m, max-file=3.")
    out["isolation"] = (Optional[str], typer.Option(None, "--isolation", help="Isolation mode (only default on Linux)."))
    return out


def with_run_flags(fn, update: bool):
    """Adds the cli.runopts parameters to a typer command function (they arrive in **kw)."""
    import inspect
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.kind != p.VAR_KEYWORD]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
               for name, (annotation, default) in run_flag_options(update).items()]
    fn.__signature__ = sig.replace(parameters=params)
    return fn


def run_flags(kw: dict, cls):
    """RunFlags / RunUpdateFlags from the command's keyword arguments."""
    import dataclasses
    return cls(**{f.name: (list(kw[f.name]) if isinstance(kw[f.name], (list, tuple)) else kw[f.name])
                  for f in dataclasses.fields(cls)})


def wait_for(c: Client, service_id: str, quiet: bool = False, rollback: bool = False) -> None:
    """Draw the service converging (see cli.progress); a non-zero exit when it does not."""
    from cli.progress import Display, follow
    display = Display(quiet=quiet)
    try:
        outcome = follow(
            lambda: c.get(f"/services/{service_id}"),
            lambda: c.get("/tasks", params={"filters": json.dumps({"service": [service_id]})}),
            lambda: {n["ID"] for n in c.get("/nodes") if n.get("Status", {}).get("State") != "down"},
            display=display, rollback_requested=rollback)
    except KeyboardInterrupt:
        display.close()
        typer.echo("Operation continuing in background.")
        typer.echo(f"Use `shoal service ps {service_id}` to check progress.")
        return
    finally:
        display.close()
    if not outcome.ok:
        raise CLIError(outcome.message)


def post_update(c: Client, ref: str, change, params: dict | None = None) -> dict:
    """Read-modify-write of a service's spec; retried when the orchestrator wrote the service
    (its UpdateStatus) between the read and the write."""
    for attempt in range(5):
        svc = c.get(f"/services/{ref}")
        try:
            result = c.post(f"/services/{svc['ID']}/update",
                            params={"version": str(svc["Version"]["Index"]), **(params or {})}, body=change(svc["Spec"]))
            echo_warnings(result)
            return svc
        except CLIError as exc:
            if "out of sequence" not in str(exc) or attempt == 4:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")  # pragma: no cover


@app.command("create", context_settings=TRAILING)
def create(
    ctx: typer.Context,
    image: str = typer.Argument(..., help="Image to run."),
    command: Optional[List[str]] = typer.Argument(None, help="Command and arguments."),
    name: str = typer.Option("", "--name", help="Service name."),
    replicas: Optional[int] = typer.Option(None, "--replicas", help="Number of tasks."),
    mode: str = typer.Option("replicated", "--mode", help="replicated, global, replicated-job or global-job."),
    max_concurrent: Optional[int] = typer.Option(None, "--max-concurrent", help="Number of job tasks to run concurrently (default equal to --replicas)."),
    env: List[str] = typer.Option([], "--env", "-e", help="Set environment variables (KEY=VALUE)."),
    label: List[str] = typer.Option([], "--label", "-l", help="Service labels (KEY=VALUE)."),
    container_label: List[str] = typer.Option([], "--container-label", help="Container labels (KEY=VALUE)."),
    entrypoint: Optional[str] = typer.Option(None, "--entrypoint", help="Overwrite the image's entrypoint."),
    workdir: str = typer.Option("", "--workdir", "-w", help="Working directory inside the container."),
    user: str = typer.Option("", "--user", "-u", help="uid[:gid]."),
    group: List[str] = typer.Option([], "--group", help="Add a supplementary group: a name in the image's /etc/group, or a gid."),
    init: bool = typer.Option(False, "--init", help="Run an init as pid 1 that forwards signals and reaps processes."),
    hostname: str = typer.Option("", "--hostname", help="Container hostname (default: the container's short id)."),
    limit_memory: Optional[str] = typer.Option(None, "--limit-memory", help="Memory limit, e.g. 64M."),
    limit_cpu: Optional[str] = typer.Option(None, "--limit-cpu", help="CPU limit, e.g. 0.5."),
    limit_pids: Optional[int] = typer.Option(None, "--limit-pids", help="Maximum number of processes (0 = unlimited)."),
    reserve_memory: Optional[str] = typer.Option(None, "--reserve-memory", help="Memory reservation."),
    reserve_cpu: Optional[str] = typer.Option(None, "--reserve-cpu", help="CPU reservation."),
    constraint: List[str] = typer.Option([], "--constraint", help="Placement constraint, e.g. node.role==worker."),
    placement_pref: List[str] = typer.Option([], "--placement-pref", help="Placement preference, e.g. spread=node.labels.zone."),
    replicas_max_per_node: Optional[int] = typer.Option(None, "--replicas-max-per-node", help="Maximum tasks per node (0 = unlimited)."),
    restart_condition: Optional[str] = typer.Option(None, "--restart-condition", help="none, on-failure or any (default any)."),
    restart_delay: Optional[str] = typer.Option(None, "--restart-delay", help="Delay between restarts (default 5s)."),
    restart_max_attempts: Optional[int] = typer.Option(None, "--restart-max-attempts", help="Maximum restarts before giving up."),
    restart_window: Optional[str] = typer.Option(None, "--restart-window", help="Window used to evaluate the restart policy."),
    stop_grace_period: Optional[str] = typer.Option(None, "--stop-grace-period", help="Time to wait before force killing (default 10s)."),
    stop_signal: str = typer.Option("", "--stop-signal", help="Signal to stop the container (default SIGTERM)."),
    read_only: bool = typer.Option(False, "--read-only", help="Mount the container's root filesystem read-only."),
    mount: List[str] = typer.Option([], "--mount", help="type=bind|volume|tmpfs,source=…,target=…[,readonly]."),
    secret: List[str] = typer.Option([], "--secret", help="Give the tasks a secret: NAME or source=NAME,target=T,uid=U,gid=G,mode=0444."),
    config: List[str] = typer.Option([], "--config", help="Give the tasks a config: NAME or source=NAME,target=/PATH,uid=U,gid=G,mode=0444."),
    cap_add: List[str] = typer.Option([], "--cap-add", help="Add a Linux capability."),
    cap_drop: List[str] = typer.Option([], "--cap-drop", help="Drop a Linux capability."),
    ulimit: List[str] = typer.Option([], "--ulimit", help="Ulimit, e.g. nofile=1024:2048."),
    health_cmd: Optional[str] = typer.Option(None, "--health-cmd", help="Command to run to check health."),
    health_interval: Optional[str] = typer.Option(None, "--health-interval", help="Time between checks (e.g. 30s)."),
    health_timeout: Optional[str] = typer.Option(None, "--health-timeout", help="Maximum time one check may run."),
    health_retries: Optional[int] = typer.Option(None, "--health-retries", help="Consecutive failures to report unhealthy."),
    health_start_period: Optional[str] = typer.Option(None, "--health-start-period", help="Grace period before failures count."),
    no_healthcheck: bool = typer.Option(False, "--no-healthcheck", help="Disable any health check of the image."),
    network: List[str] = typer.Option([], "--network", help="Attach to an overlay network (NAME or name=N,alias=A)."),
    publish: List[str] = typer.Option([], "--publish", "-p", help="Publish a port: 8080:80 or published=8080,target=80[,mode=host]."),
    endpoint_mode: Optional[str] = typer.Option(None, "--endpoint-mode", help="vip (default) or dnsrr."),
    resolve_image: str = typer.Option("always", "--resolve-image", help=RESOLVE_IMAGE_HELP),
    with_registry_auth: bool = typer.Option(False, "--with-registry-auth", help=WITH_REGISTRY_AUTH_HELP),
    detach: bool = typer.Option(False, "--detach", "-d", help="Exit immediately instead of waiting for the service to converge."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Suppress progress output."),
    **kw,
) -> None:
    """Create a new service."""
    opts = ServiceOptions(
        image=image, args=list(command or []), name=name, replicas=replicas, mode=mode, env=env, labels=label,
        container_labels=container_label, entrypoint=entrypoint, workdir=workdir, user=user, groups=group,
        init=init, hostname=hostname,
        limit_memory=limit_memory, limit_cpu=limit_cpu, limit_pids=limit_pids, reserve_memory=reserve_memory,
        reserve_cpu=reserve_cpu, constraints=constraint, placement_prefs=placement_pref,
        replicas_max_per_node=replicas_max_per_node, restart_condition=restart_condition,
        restart_delay=restart_delay, restart_max_attempts=restart_max_attempts, restart_window=restart_window,
        stop_grace_period=stop_grace_period, stop_signal=stop_signal, read_only=read_only,
        mounts=mount, secrets=secret, configs=config, cap_add=cap_add, cap_drop=cap_drop, ulimits=ulimit, health_cmd=health_cmd,
        health_interval=health_interval, health_timeout=health_timeout, health_retries=health_retries,
        health_start_period=health_start_period, no_healthcheck=no_healthcheck,
        networks=network, publish=publish, endpoint_mode=endpoint_mode,
        max_concurrent=max_concurrent, update=flags(kw, "update"), rollback=flags(kw, "rollback"))
    try:
        spec = apply_create(build_spec(opts), run_flags(kw, RunFlags))
    except ValueError as exc:
        raise CLIError(str(exc), 2) from None
    params = registry_params(resolve_image, with_registry_auth)
    c = client(ctx)
    result = c.post("/services/create", params=params, body=spec)
    echo_warnings(result)
    typer.echo(result["ID"])
    if not detach:
        wait_for(c, result["ID"], quiet)


with_update_flags(create)
with_run_flags(create, update=False)


@app.command("update", context_settings=TRAILING)
def update(
    ctx: typer.Context,
    service: str = typer.Argument(..., help="Service name or id."),
    image: Optional[str] = typer.Option(None, "--image", help="Service image tag."),
    args: Optional[str] = typer.Option(None, "--args", help="Service command args (one string, split like a shell)."),
    entrypoint: Optional[str] = typer.Option(None, "--entrypoint", help="Overwrite the image's entrypoint."),
    env_add: List[str] = typer.Option([], "--env-add", help="Add or update an environment variable (KEY=VALUE)."),
    env_rm: List[str] = typer.Option([], "--env-rm", help="Remove an environment variable (KEY)."),
    label_add: List[str] = typer.Option([], "--label-add", help="Add or update a service label."),
    label_rm: List[str] = typer.Option([], "--label-rm", help="Remove a label by its key."),
    container_label_add: List[str] = typer.Option([], "--container-label-add", help="Add or update a container label."),
    container_label_rm: List[str] = typer.Option([], "--container-label-rm", help="Remove a container label by its key."),
    workdir: Optional[str] = typer.Option(None, "--workdir", "-w", help="Working directory inside the container."),
    user: Optional[str] = typer.Option(None, "--user", "-u", help="uid[:gid]."),
    group_add: List[str] = typer.Option([], "--group-add", help="Add a supplementary group (a name or a gid)."),
    group_rm: List[str] = typer.Option([], "--group-rm", help="Remove a supplementary group."),
    init: Optional[bool] = typer.Option(None, "--init/--no-init", help="Run (or stop running) an init as pid 1 that forwards signals and reaps processes."),
    limit_memory: Optional[str] = typer.Option(None, "--limit-memory", help="Memory limit, e.g. 64M."),
    limit_cpu: Optional[str] = typer.Option(None, "--limit-cpu", help="CPU limit, e.g. 0.5."),
    limit_pids: Optional[int] = typer.Option(None, "--limit-pids", help="Maximum number of processes (0 = unlimited)."),
    reserve_memory: Optional[str] = typer.Option(None, "--reserve-memory", help="Memory reservation."),
    reserve_cpu: Optional[str] = typer.Option(None, "--reserve-cpu", help="CPU reservation."),
    constraint_add: List[str] = typer.Option([], "--constraint-add", help="Add or update a placement constraint."),
    constraint_rm: List[str] = typer.Option([], "--constraint-rm", help="Remove a placement constraint."),
    secret_add: List[str] = typer.Option([], "--secret-add", help="Add or replace a secret (as --secret of create)."),
    secret_rm: List[str] = typer.Option([], "--secret-rm", help="Remove a secret by name or id."),
    config_add: List[str] = typer.Option([], "--config-add", help="Add or replace a config (as --config of create)."),
    config_rm: List[str] = typer.Option([], "--config-rm", help="Remove a config by name or id."),
    replicas: Optional[int] = typer.Option(None, "--replicas", help="Number of tasks (completions for a replicated job)."),
    max_concurrent: Optional[int] = typer.Option(None, "--max-concurrent", help="Number of job tasks to run concurrently."),
    restart_condition: Optional[str] = typer.Option(None, "--restart-condition", help="none, on-failure or any."),
    restart_delay: Optional[str] = typer.Option(None, "--restart-delay", help="Delay between restarts."),
    restart_max_attempts: Optional[int] = typer.Option(None, "--restart-max-attempts", help="Maximum restarts before giving up."),
    restart_window: Optional[str] = typer.Option(None, "--restart-window", help="Window used to evaluate the restart policy."),
    stop_grace_period: Optional[str] = typer.Option(None, "--stop-grace-period", help="Time to wait before force killing."),
    stop_signal: Optional[str] = typer.Option(None, "--stop-signal", help="Signal to stop the container."),
    force: bool = typer.Option(False, "--force", help="Force an update even if no changes require it."),
    rollback: bool = typer.Option(False, "--rollback", help="Roll back to the previous specification."),
    resolve_image: str = typer.Option("always", "--resolve-image", help=RESOLVE_IMAGE_HELP),
    with_registry_auth: bool = typer.Option(False, "--with-registry-auth", help=WITH_REGISTRY_AUTH_HELP),
    detach: bool = typer.Option(False, "--detach", "-d", help="Exit immediately instead of waiting for the service to converge."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Suppress progress output."),
    **kw,
) -> None:
    """Update a service: a rolling update replaces its tasks when their template changes."""
    params = registry_params(resolve_image, with_registry_auth)
    c = client(ctx)
    if rollback:
        do_rollback(c, service, detach, quiet)
        return
    opts = UpdateOptions(
        image=image, args=args, entrypoint=entrypoint, env_add=env_add, env_rm=env_rm, label_add=label_add,
        label_rm=label_rm, container_label_add=container_label_add, container_label_rm=container_label_rm,
        workdir=workdir, user=user, group_add=group_add, group_rm=group_rm, init=init,
        limit_memory=limit_memory, limit_cpu=limit_cpu, limit_pids=limit_pids,
        reserve_memory=reserve_memory, reserve_cpu=reserve_cpu, constraint_add=constraint_add,
        constraint_rm=constraint_rm, secret_add=secret_add, secret_rm=secret_rm, config_add=config_add,
        config_rm=config_rm, replicas=replicas, max_concurrent=max_concurrent,
        restart_condition=restart_condition, restart_delay=restart_delay, restart_max_attempts=restart_max_attempts,
        restart_window=restart_window, stop_grace_period=stop_grace_period, stop_signal=stop_signal, force=force,
        update=flags(kw, "update"), rollback=flags(kw, "rollback"))

    def change(spec: dict) -> dict:
        try:
            return apply_run_update(apply_update(spec, opts), run_flags(kw, RunUpdateFlags))
        except ValueError as exc:
            raise CLIError(str(exc), 2) from None
    svc = post_update(c, service, change, params)
    typer.echo(service)
    if not detach:
        wait_for(c, svc["ID"], quiet)


with_update_flags(update)
with_run_flags(update, update=True)


def do_rollback(c: Client, service: str, detach: bool, quiet: bool) -> None:
    svc = post_update(c, service, lambda spec: spec, params={"rollback": "previous"})
    typer.echo(service)
    if not detach:
        wait_for(c, svc["ID"], quiet, rollback=True)


@app.command("rollback")
def rollback_cmd(ctx: typer.Context, service: str = typer.Argument(..., help="Service name or id."),
                 detach: bool = typer.Option(False, "--detach", "-d", help="Exit immediately instead of waiting for the service to converge."),
                 quiet: bool = typer.Option(False, "--quiet", "-q", help="Suppress progress output.")) -> None:
    """Revert a service to its previous specification."""
    do_rollback(client(ctx), service, detach, quiet)


@app.command("ls")
def ls(ctx: typer.Context, quiet: bool = typer.Option(False, "--quiet", "-q", help="Only display IDs."),
       filter_: List[str] = typer.Option([], "--filter", "-f", help="Filter, e.g. name=web or label=k=v.")) -> None:
    """List services."""
    c = client(ctx)
    services = c.get("/services", params=filters_param(filter_))
    if quiet:
        for s in services:
            typer.echo(s["ID"])
        return
    tasks = c.get("/tasks")
    rows = []
    for s in services:
        mode, replicas = mode_and_replicas(s, [t for t in tasks if t["ServiceID"] == s["ID"]])
        rows.append([s["ID"][:12], s["Spec"]["Name"], mode, replicas,
                     short_image(s["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])])
    table(["ID", "NAME", "MODE", "REPLICAS", "IMAGE"], rows)


def mode_and_replicas(svc: dict, tasks: list[dict]) -> tuple[str, str]:
    """Docker's MODE and REPLICAS columns: `3/5`, and for jobs `1/2 (4/10 completed)`."""
    mode = svc["Spec"].get("Mode", {})
    running = sum(1 for t in tasks if t.get("DesiredState") == "running" and t["Status"].get("State") == "running")
    if "Replicated" in mode:
        return "replicated", f"{running}/{mode['Replicated'].get('Replicas', 0)}"
    if "Global" in mode:
        return "global", f"{running}/{len({t.get('NodeID') for t in tasks if t.get('DesiredState') == 'running'})}"
    iteration = ((svc.get("JobStatus") or {}).get("JobIteration") or {}).get("Index", 0)
    mine = [t for t in tasks if (t.get("JobIteration") or {}).get("Index", 0) == iteration]
    completed = len({t.get("Slot", 0) if "ReplicatedJob" in mode else t.get("NodeID")
                     for t in mine if t["Status"].get("State") == "complete"})
    if "ReplicatedJob" in mode:
        rj = mode["ReplicatedJob"]
        total = rj.get("TotalCompletions", rj.get("MaxConcurrent", 1))
        return "replicated job", f"{running}/{min(rj.get('MaxConcurrent', 1), max(0, total - completed))} ({completed}/{total} completed)"
    nodes = len({t.get("NodeID") for t in mine})
    return "global job", f"{running}/{max(0, nodes - completed)} ({completed}/{nodes} completed)"


def task_rows(c: Client, tasks: list[dict], services: dict[str, dict], no_trunc: bool) -> list[list[str]]:
    nodes = {n["ID"]: n.get("Description", {}).get("Hostname", n["ID"]) for n in c.get("/nodes")}
    by_slot: dict[tuple[str, int], list[dict]] = {}
    for t in tasks:
        by_slot.setdefault((t["ServiceID"], t.get("Slot", 0)), []).append(t)
    rows = []
    for key in sorted(by_slot, key=lambda k: (services.get(k[0], {}).get("Spec", {}).get("Name", ""), k[1])):
        group = sorted(by_slot[key], key=lambda t: t.get("CreatedAt", ""), reverse=True)
        for i, t in enumerate(group):
            svc_name = services.get(t["ServiceID"], {}).get("Spec", {}).get("Name", t["ServiceID"][:12])
            name = f"{svc_name}.{t.get('Slot', 0)}"
            status = t.get("Status", {})
            err = status.get("Err", "")
            if err and not no_trunc and len(err) > 60:
                err = err[:59] + "…"
            err = f'"{err}"' if err else ""
            rows.append([t["ID"] if no_trunc else t["ID"][:12], name if i == 0 else r" \_ " + name,
                         short_image(t["Spec"]["ContainerSpec"]["Image"]) if not no_trunc else t["Spec"]["ContainerSpec"]["Image"],
                         nodes.get(t.get("NodeID", ""), ""), t.get("DesiredState", "").capitalize(),
                         f"{status.get('State', '').capitalize()} {ago(status.get('Timestamp', ''))}".strip(), err])
    return rows


@app.command("ps")
def ps(ctx: typer.Context, services: List[str] = typer.Argument(..., help="Service names or ids."),
       no_trunc: bool = typer.Option(False, "--no-trunc", help="Do not truncate output."),
       quiet: bool = typer.Option(False, "--quiet", "-q", help="Only display task IDs."),
       filter_: List[str] = typer.Option([], "--filter", "-f", help="Filter, e.g. desired-state=running.")) -> None:
    """List the tasks of one or more services."""
    c = client(ctx)
    svc_objs = {}
    for ref in services:
        s = c.get(f"/services/{ref}")
        svc_objs[s["ID"]] = s
    f: dict[str, list[str]] = {"service": list(svc_objs)}
    node_ids = None
    for item in filter_:
        k, sep, v = item.partition("=")
        if not sep or k not in ("desired-state", "node"):
            raise CLIError(f"--filter: {item!r} must be desired-state=STATE or node=NODE", 2)
        if k == "node":  # a node's name or id, as Docker takes it
            if node_ids is None:
                node_ids = {n["ID"]: n for n in c.get("/nodes")}
            matches = [i for i, n in node_ids.items()
                       if v in (i, n.get("Spec", {}).get("Name"), n.get("Description", {}).get("Hostname"))]
            v = matches[0] if matches else v
        f.setdefault(k, []).append(v)
    tasks = c.get("/tasks", params={"filters": json.dumps(f)})
    if quiet:
        for t in tasks:
            typer.echo(t["ID"])
        return
    table(["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR"],
          task_rows(c, tasks, svc_objs, no_trunc))


@app.command("inspect")
def inspect(ctx: typer.Context, services: List[str] = typer.Argument(..., help="Service names or ids."),
            pretty: bool = typer.Option(False, "--pretty", help="Print in a human-friendly format.")) -> None:
    """Show services as JSON."""
    c = client(ctx)
    objs = [c.get(f"/services/{s}") for s in services]
    if not pretty:
        print_json(objs)
        return
    from cli.pretty import pretty_service
    for o in objs:
        typer.echo(pretty_service(o))


@app.command("scale")
def scale(ctx: typer.Context, pairs: List[str] = typer.Argument(..., help="SERVICE=REPLICAS ..."),
          detach: bool = typer.Option(False, "--detach", "-d", help="Exit immediately instead of waiting.")) -> None:
    """Scale one or more replicated services."""
    c = client(ctx)
    wanted = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CLIError(f"{pair}: invalid scale specifier, expected SERVICE=REPLICAS", 2)
        try:
            n = int(value)
        except ValueError:
            raise CLIError(f"{pair}: replicas must be an integer, got {value!r}", 2) from None
        if n < 0:
            raise CLIError(f"{pair}: replicas must be 0 or more, got {n}", 2)
        wanted.append((name, n))
    for name, n in wanted:
        svc = c.get(f"/services/{name}")
        mode = svc["Spec"].get("Mode", {})
        if "Replicated" not in mode and "ReplicatedJob" not in mode:
            raise CLIError(f"{name}: scale can only be used with replicated or replicated-job mode", 1)

        def change(spec: dict, n=n) -> dict:
            if "Replicated" in spec["Mode"]:
                spec["Mode"]["Replicated"]["Replicas"] = n
            else:
                spec["Mode"]["ReplicatedJob"]["TotalCompletions"] = n
            return spec
        post_update(c, svc["ID"], change)
        typer.echo(f"{name} scaled to {n}")
        if not detach:
            wait_for(c, svc["ID"])


@app.command("rm")
def rm(ctx: typer.Context, services: List[str] = typer.Argument(..., help="Service names or ids.")) -> None:
    """Remove one or more services."""
    remove_each(client(ctx), "services", services)


@app.command("logs")
def logs(ctx: typer.Context, service: str = typer.Argument(..., help="Service name or id."),
         follow: bool = typer.Option(False, "--follow", "-f", help="Follow log output."),
         tail: str = typer.Option("all", "--tail", "-n", help="Number of lines from the end of each task's log."),
         since: Optional[str] = typer.Option(None, "--since", help="Only lines since a UNIX time or a duration (e.g. 10m)."),
         timestamps: bool = typer.Option(False, "--timestamps", "-t", help="Show timestamps."),
         no_task_ids: bool = typer.Option(False, "--no-task-ids", help="Do not include task ids.")) -> None:
    """Show the logs of every task of a service, across nodes, each line prefixed with task and node."""
    import asyncio
    import json as _json

    from api.units import parse_duration
    from worker.logs import format_time
    if tail != "all" and not tail.isdigit():
        raise CLIError(f"--tail: must be a number or all, got {tail!r}", 2)
    params = {"tail": tail, "follow": "true" if follow else "false"}
    if since is not None:
        try:
            params["since"] = str(float(since))
        except ValueError:
            try:
                params["since"] = str(time.time() - parse_duration(since, "--since") / 1e9)
            except ValueError as exc:
                raise CLIError(str(exc), 2) from None
    c = client(ctx)
    svc = c.get(f"/services/{service}")
    failed = []

    def show(line: str) -> None:
        if not line:
            return
        row = _json.loads(line)
        if "Error" in row:
            failed.append(row["Error"])
            typer.echo(f"error from daemon: {row['Error']}", err=True)
            return
        task = row["Task"]
        if no_task_ids:
            task = task.rsplit(".", 1)[0]
        prefix = f"{task}@{row['Node']}"
        stamp = format_time(row["Time"]) + " " if timestamps else ""
        typer.echo(f"{prefix}    | {stamp}{row['Line'].rstrip(chr(10))}")

    try:
        asyncio.run(c.stream_lines(f"/services/{svc['ID']}/logs", params=params, on_line=show))
    except KeyboardInterrupt:
        return
    if failed:
        raise typer.Exit(1)
