"""`shoal stack ...`: compose files deployed as services, as `docker stack` does it client-side."""
from __future__ import annotations

import json
import os
import sys
from typing import List

import typer

from cli.client import CLIError, Client
from cli.commands.common import client
from cli.output import table
from cli.registryflags import RESOLVE_IMAGE_HELP, WITH_REGISTRY_AUTH_HELP, echo_warnings, registry_params

app = typer.Typer(help="Manage stacks of services described by compose files.", no_args_is_help=True)

NAMESPACE = "com.docker.stack.namespace"


def stack_services(c: Client, stack: str) -> list[dict]:
    return c.get("/services", params={"filters": json.dumps({"label": [f"{NAMESPACE}={stack}"]})})


def stack_networks(c: Client, stack: str) -> list[dict]:
    return c.get("/networks", params={"filters": json.dumps({"label": [f"{NAMESPACE}={stack}"]})})


def ensure_networks(c: Client, networks: dict[str, dict]) -> None:
    """The stack's networks exist before its services: created (labelled with the stack) when
    missing; an external one must exist already."""
    existing = {n["Name"] for n in c.get("/networks")}
    for name, net in sorted(networks.items()):
        if net.get("External"):
            if name not in existing:
                raise CLIError(f"network {name!r} is declared as external, but could not be found: create it "
                               f"(shoal network create -d overlay {name}) before deploying the stack")
            continue
        if name in existing:
            continue
        typer.echo(f"Creating network {name}")
        c.post("/networks/create", body={k: v for k, v in net.items() if k != "External"})


def _comparable(spec: dict) -> dict:
    """The spec as the user wrote it: the daemon pins image digests, so compare the tag only."""
    s = json.loads(json.dumps(spec))
    cs = s.get("TaskTemplate", {}).get("ContainerSpec", {})
    if "@" in cs.get("Image", ""):
        cs["Image"] = cs["Image"].split("@", 1)[0]
    return s


@app.command("deploy")
def deploy(ctx: typer.Context,
           compose_file: List[str] = typer.Option(..., "--compose-file", "-c", help="Compose file ('-' for stdin); repeat to merge."),
           stack: str = typer.Argument(..., help="Stack name."),
           prune: bool = typer.Option(False, "--prune", help="Remove services that are no longer in the file."),
           resolve_image: str = typer.Option("always", "--resolve-image", help=RESOLVE_IMAGE_HELP),
           with_registry_auth: bool = typer.Option(False, "--with-registry-auth", help=WITH_REGISTRY_AUTH_HELP)) -> None:
    """Deploy a new stack or update an existing one."""
    from cli.compose import ComposeError, load_stack
    registry = registry_params(resolve_image, with_registry_auth)
    if not stack or not all(ch.isalnum() or ch in "_-." for ch in stack):
        raise CLIError(f"STACK: invalid name {stack!r} (letters, digits, '_', '-', '.')", 2)
    stdin_text = sys.stdin.read() if "-" in compose_file else None
    try:
        plan = load_stack(list(compose_file), stack, dict(os.environ), stdin_text=stdin_text)
    except ComposeError as exc:
        raise CLIError(str(exc), 1) from None
    except OSError as exc:
        raise CLIError(f"{exc.filename}: {exc.strerror}", 1) from None
    for w in plan.warnings:
        typer.echo(w, err=True)
    c = client(ctx)
    ensure_networks(c, plan.networks)
    existing = {s["Spec"]["Name"]: s for s in stack_services(c, stack)}
    changed = False
    for spec in plan.services:
        name = spec["Name"]
        current = existing.get(name)
        if current is None:
            typer.echo(f"Creating service {name}")
            echo_warnings(c.post("/services/create", params=registry, body=spec))
            changed = True
        elif _comparable(current["Spec"]) != _comparable(spec):
            typer.echo(f"Updating service {name} (id: {current['ID']})")
            echo_warnings(c.post(f"/services/{current['ID']}/update",
                                 params={"version": str(current["Version"]["Index"]), **registry}, body=spec))
            changed = True
    wanted = {s["Name"] for s in plan.services}
    for name, svc in existing.items():
        if name not in wanted and prune:
            typer.echo(f"Removing service {name}")
            c.delete(f"/services/{svc['ID']}")
            changed = True
    if not changed:
        typer.echo(f"Stack {stack} is up to date: nothing changed.")


@app.command("ls")
def ls(ctx: typer.Context) -> None:
    """List stacks."""
    services = client(ctx).get("/services")
    counts: dict[str, int] = {}
    for s in services:
        ns = s["Spec"].get("Labels", {}).get(NAMESPACE)
        if ns:
            counts[ns] = counts.get(ns, 0) + 1
    table(["NAME", "SERVICES"], [[k, v] for k, v in sorted(counts.items())])


@app.command("services")
def services(ctx: typer.Context, stack: str = typer.Argument(..., help="Stack name.")) -> None:
    """List the services in a stack."""
    from cli.commands.service import replicas_of, running_counts, short_image
    c = client(ctx)
    svcs = sorted(stack_services(c, stack), key=lambda s: s["Spec"]["Name"])
    if not svcs:
        raise CLIError(f"Nothing found in stack: {stack}")
    counts = running_counts(c)
    rows = []
    for s in svcs:
        want = replicas_of(s["Spec"])
        rows.append([s["ID"][:12], s["Spec"]["Name"], "replicated" if want is not None else "global",
                     f"{counts.get(s['ID'], 0)}/{want if want is not None else '?'}",
                     short_image(s["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])])
    table(["ID", "NAME", "MODE", "REPLICAS", "IMAGE"], rows)


@app.command("ps")
def ps(ctx: typer.Context, stack: str = typer.Argument(..., help="Stack name."),
       no_trunc: bool = typer.Option(False, "--no-trunc", help="Do not truncate output.")) -> None:
    """List the tasks in a stack."""
    from cli.commands.service import task_rows
    c = client(ctx)
    svcs = {s["ID"]: s for s in stack_services(c, stack)}
    if not svcs:
        raise CLIError(f"Nothing found in stack: {stack}")
    tasks = c.get("/tasks", params={"filters": json.dumps({"service": list(svcs)})})
    table(["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR"], task_rows(c, tasks, svcs, no_trunc))


@app.command("rm")
def rm(ctx: typer.Context, stacks: List[str] = typer.Argument(..., help="Stack names.")) -> None:
    """Remove one or more stacks."""
    c = client(ctx)
    failed = False
    for stack in stacks:
        svcs = stack_services(c, stack)
        nets = stack_networks(c, stack)
        if not svcs and not nets:
            typer.echo(f"Nothing found in stack: {stack}", err=True)
            failed = True
            continue
        for s in sorted(svcs, key=lambda s: s["Spec"]["Name"]):
            typer.echo(f"Removing service {s['Spec']['Name']}")
            c.delete(f"/services/{s['ID']}")
        for n in sorted(nets, key=lambda n: n["Name"]):  # the stack's own: external ones carry no label
            typer.echo(f"Removing network {n['Name']}")
            try:
                c.delete(f"/networks/{n['Id']}")
            except CLIError as exc:
                typer.echo(f"Failed to remove network {n['Name']}: {exc}", err=True)
                failed = True
    if failed:
        raise typer.Exit(1)
