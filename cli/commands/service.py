"""`shoal service ...`"""
from __future__ import annotations

import json
import sys
import time
from typing import List, Optional

import typer

from cli.client import CLIError, Client
from cli.commands.common import client
from cli.output import ago, print_json, table
from cli.serviceopts import ServiceOptions, build_spec

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


@app.command("create", context_settings=TRAILING)
def create(
    ctx: typer.Context,
    image: str = typer.Argument(..., help="Image to run."),
    command: Optional[List[str]] = typer.Argument(None, help="Command and arguments."),
    name: str = typer.Option("", "--name", help="Service name."),
    replicas: Optional[int] = typer.Option(None, "--replicas", help="Number of tasks."),
    mode: str = typer.Option("replicated", "--mode", help="replicated or global."),
    env: List[str] = typer.Option([], "--env", "-e", help="Set environment variables (KEY=VALUE)."),
    label: List[str] = typer.Option([], "--label", "-l", help="Service labels (KEY=VALUE)."),
    container_label: List[str] = typer.Option([], "--container-label", help="Container labels (KEY=VALUE)."),
    entrypoint: Optional[str] = typer.Option(None, "--entrypoint", help="Overwrite the image's entrypoint."),
    workdir: str = typer.Option("", "--workdir", "-w", help="Working directory inside the container."),
    user: str = typer.Option("", "--user", "-u", help="uid[:gid]."),
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
    detach: bool = typer.Option(False, "--detach", "-d", help="Exit immediately instead of waiting for the service to converge."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Suppress progress output."),
) -> None:
    """Create a new service."""
    opts = ServiceOptions(
        image=image, args=list(command or []), name=name, replicas=replicas, mode=mode, env=env, labels=label,
        container_labels=container_label, entrypoint=entrypoint, workdir=workdir, user=user, hostname=hostname,
        limit_memory=limit_memory, limit_cpu=limit_cpu, limit_pids=limit_pids, reserve_memory=reserve_memory,
        reserve_cpu=reserve_cpu, constraints=constraint, placement_prefs=placement_pref,
        replicas_max_per_node=replicas_max_per_node, restart_condition=restart_condition,
        restart_delay=restart_delay, restart_max_attempts=restart_max_attempts, restart_window=restart_window,
        stop_grace_period=stop_grace_period, stop_signal=stop_signal, read_only=read_only)
    try:
        spec = build_spec(opts)
    except ValueError as exc:
        raise CLIError(str(exc), 2) from None
    c = client(ctx)
    result = c.post("/services/create", body=spec)
    typer.echo(result["ID"])
    if not detach:
        wait_converged(c, result["ID"], quiet)


def wait_converged(c: Client, service_id: str, quiet: bool = False) -> None:
    """Wait until the service runs as many tasks as it asks for, showing progress."""
    tty = sys.stdout.isatty() and not quiet
    last = None
    while True:
        svc = c.get(f"/services/{service_id}")
        want = replicas_of(svc["Spec"])
        tasks = c.get("/tasks", params={"filters": json.dumps({"service": [service_id]})})
        active = [t for t in tasks if t.get("DesiredState") == "running"]
        running = sum(1 for t in active if t.get("Status", {}).get("State") == "running")
        errors = {t["Status"].get("Err") for t in tasks if t.get("Status", {}).get("Err")}
        total = want if want is not None else len(active)
        line = f"overall progress: {running} out of {total} tasks"
        if errors:
            line += " (" + "; ".join(sorted(errors))[:120] + ")"
        if not quiet and line != last:
            typer.echo(("\r" + line.ljust(80)) if tty else line, nl=not tty)
            last = line
        stopping = [t for t in tasks if t.get("DesiredState") != "running" and t.get("Status", {}).get("State") in ("running", "starting")]
        if running == total and len(active) == total and not stopping:
            if tty:
                typer.echo("")
            if not quiet:
                typer.echo("verify: Service converged")
            return
        time.sleep(0.25)


@app.command("ls")
def ls(ctx: typer.Context, quiet: bool = typer.Option(False, "--quiet", "-q", help="Only display IDs."),
       filter_: List[str] = typer.Option([], "--filter", "-f", help="Filter, e.g. name=web or label=k=v.")) -> None:
    """List services."""
    c = client(ctx)
    params = {}
    if filter_:
        f: dict[str, list[str]] = {}
        for item in filter_:
            k, sep, v = item.partition("=")
            if not sep:
                raise CLIError(f"--filter: {item!r} must be KEY=VALUE", 2)
            f.setdefault(k, []).append(v)
        params["filters"] = json.dumps(f)
    services = c.get("/services", params=params)
    if quiet:
        for s in services:
            typer.echo(s["ID"])
        return
    counts = running_counts(c)
    rows = []
    for s in services:
        want = replicas_of(s["Spec"])
        mode = "replicated" if want is not None else "global"
        rows.append([s["ID"][:12], s["Spec"]["Name"], mode, f"{counts.get(s['ID'], 0)}/{want if want is not None else '?'}",
                     short_image(s["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])])
    table(["ID", "NAME", "MODE", "REPLICAS", "IMAGE"], rows)


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
    for item in filter_:
        k, sep, v = item.partition("=")
        if not sep or k not in ("desired-state", "node"):
            raise CLIError(f"--filter: {item!r} must be desired-state=STATE or node=ID", 2)
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
        if replicas_of(svc["Spec"]) is None:
            raise CLIError(f"{name}: scale can only be used with replicated mode", 1)
        spec = svc["Spec"]
        spec["Mode"]["Replicated"]["Replicas"] = n
        c.post(f"/services/{svc['ID']}/update", params={"version": str(svc["Version"]["Index"])}, body=spec)
        typer.echo(f"{name} scaled to {n}")
        if not detach:
            wait_converged(c, svc["ID"])


@app.command("rm")
def rm(ctx: typer.Context, services: List[str] = typer.Argument(..., help="Service names or ids.")) -> None:
    """Remove one or more services."""
    c = client(ctx)
    failed = False
    for ref in services:
        try:
            c.delete(f"/services/{ref}")
            typer.echo(ref)
        except CLIError as exc:
            typer.echo(str(exc), err=True)
            failed = True
    if failed:
        raise typer.Exit(1)
