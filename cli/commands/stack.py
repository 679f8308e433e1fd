"""`shoal stack ...`: compose files deployed as services, as `docker stack` does it client-side."""
from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, List

import typer

from cli.client import CLIError
from cli.commands.common import client
from cli.output import table
from cli.registryflags import RESOLVE_IMAGE_HELP, WITH_REGISTRY_AUTH_HELP, registry_params

if TYPE_CHECKING:
    from cli import stackplan

app = typer.Typer(help="Manage stacks of services described by compose files.", no_args_is_help=True)

NAMESPACE = "com.docker.stack.namespace"


@app.command("deploy")
def deploy(ctx: typer.Context,
           compose_file: List[str] = typer.Option(..., "--compose-file", "-c", help="Compose file ('-' for stdin); repeat to merge."),
           stack: str = typer.Argument(..., help="Stack name."),
           prune: bool = typer.Option(False, "--prune", help="Remove the stack's services, networks, secrets and configs that are no longer in the files."),
           dry_run: bool = typer.Option(False, "--dry-run", help="Print what would change and where new tasks would go; change nothing."),
           resolve_image: str = typer.Option("always", "--resolve-image", help=RESOLVE_IMAGE_HELP),
           with_registry_auth: bool = typer.Option(False, "--with-registry-auth", help=WITH_REGISTRY_AUTH_HELP)) -> None:
    """Deploy a new stack or update an existing one."""
    from cli import stackapply, stackplan  # here, not at the top: every other command starts faster
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
    # One plan for both: the dry run prints exactly the steps the deploy carries out.
    current = stackapply.current_state(c, stack)
    changes = stackplan.plan_deploy(plan, current, stack, prune)
    if resolve_image == "always":
        changes = stackplan.with_moved_tags(changes, current, plan, stackapply.registry_digest(c))
    objects = stackapply.object_bodies(changes)
    previews = stackapply.preview(c, changes)  # also the daemon's verdict on every spec
    errors = stackapply.refusals(changes, objects, previews)
    if dry_run:
        _print_dry_run(stack, changes, previews, errors)
        return
    if errors:  # refused before anything changed
        for line in errors[:-1]:
            typer.echo(line, err=True)
        raise CLIError(errors[-1])
    if not changes.steps:
        typer.echo(f"Stack {stack} is up to date: nothing changed.")
        return
    if not stackapply.apply(c, changes, objects, registry):
        raise typer.Exit(1)


def _print_dry_run(stack: str, changes: stackplan.DeployPlan, previews: list[dict], errors: list[str]) -> None:
    from cli import stackplan
    if not changes.steps and not errors:
        typer.echo(f"Stack {stack} is up to date: nothing would change.")
        return
    typer.echo(f"Stack {stack}, dry run (nothing is changed):")
    for line in stackplan.render_steps(changes):
        typer.echo(line)
    if previews:
        typer.echo("Placement of new tasks:")
        for p in previews:
            typer.echo("  " + stackplan.render_placement(p))
    typer.echo(stackplan.summary(changes))
    for line in errors:
        typer.echo(line, err=True)
    if errors:
        raise typer.Exit(1)


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
    from cli.stackapply import stack_services
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
    from cli.stackapply import stack_services
    c = client(ctx)
    svcs = {s["ID"]: s for s in stack_services(c, stack)}
    if not svcs:
        raise CLIError(f"Nothing found in stack: {stack}")
    tasks = c.get("/tasks", params={"filters": json.dumps({"service": list(svcs)})})
    table(["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR"], task_rows(c, tasks, svcs, no_trunc))


@app.command("rm")
def rm(ctx: typer.Context, stacks: List[str] = typer.Argument(..., help="Stack names.")) -> None:
    """Remove one or more stacks: their services, then their networks, secrets and configs."""
    from cli import stackapply, stackplan
    c = client(ctx)
    failed = False
    for stack in stacks:
        # External objects carry no stack label, so they are never the stack's to remove.
        steps = stackplan.removal_plan(stackapply.current_state(c, stack), stack).steps
        if not steps:
            typer.echo(f"Nothing found in stack: {stack}", err=True)
            failed = True
            continue
        for step in steps:
            failed = not stackapply.remove(c, step) or failed
    if failed:
        raise typer.Exit(1)
