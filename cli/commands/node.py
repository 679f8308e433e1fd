"""`shoal node ...`"""
from __future__ import annotations

from typing import List

import typer

from cli.commands.common import client
from cli.output import print_json, table

app = typer.Typer(help="Manage swarm nodes.", no_args_is_help=True)


def manager_status(node: dict) -> str:
    ms = node.get("ManagerStatus")
    if not ms:
        return ""
    if ms.get("Leader"):
        return "Leader"
    return (ms.get("Reachability") or "").capitalize()


@app.command("ls")
def ls(ctx: typer.Context, quiet: bool = typer.Option(False, "--quiet", "-q", help="Only display IDs.")) -> None:
    """List the nodes of the swarm."""
    c = client(ctx)
    nodes = c.get("/nodes")
    me = c.get("/info").get("Swarm", {}).get("NodeID", "")
    if quiet:
        for n in nodes:
            typer.echo(n["ID"])
        return
    rows = []
    for n in nodes:
        marker = " *" if n["ID"] == me else ""
        rows.append([n["ID"] + marker, n.get("Description", {}).get("Hostname", ""),
                     n.get("Status", {}).get("State", "").capitalize(),
                     n.get("Spec", {}).get("Availability", "").capitalize(), manager_status(n),
                     n.get("Description", {}).get("Engine", {}).get("EngineVersion", "")])
    table(["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION"], rows)


@app.command("inspect")
def inspect(ctx: typer.Context, nodes: List[str] = typer.Argument(..., help="Node id, name or 'self'.")) -> None:
    """Show nodes as JSON."""
    c = client(ctx)
    print_json([c.get(f"/nodes/{n}") for n in nodes])


@app.command("update")
def update(ctx: typer.Context, node: str = typer.Argument(..., help="Node id or name."),
           availability: str = typer.Option(None, "--availability", help="active, pause or drain."),
           label_add: List[str] = typer.Option([], "--label-add", help="Add or update a node label (KEY=VALUE)."),
           label_rm: List[str] = typer.Option([], "--label-rm", help="Remove a node label if it exists."),
           role: str = typer.Option(None, "--role", help="worker or manager.")) -> None:
    """Update a node's availability, labels or role."""
    from cli.client import CLIError
    if availability is not None and availability not in ("active", "pause", "drain"):
        raise CLIError(f"--availability: must be active, pause or drain, got {availability!r}", 2)
    if role is not None and role not in ("worker", "manager"):
        raise CLIError(f"--role: must be worker or manager, got {role!r}", 2)
    c = client(ctx)
    n = c.get(f"/nodes/{node}")
    spec = n["Spec"]
    if availability is not None:
        spec["Availability"] = availability
    if role is not None:
        spec["Role"] = role
    labels = spec.setdefault("Labels", {})
    for item in label_add:
        k, sep, v = item.partition("=")
        if not k:
            raise CLIError(f"--label-add: {item!r} must be KEY=VALUE", 2)
        labels[k] = v
    for k in label_rm:
        labels.pop(k, None)
    c.post(f"/nodes/{n['ID']}/update", params={"version": str(n["Version"]["Index"])}, body=spec)
    typer.echo(node)


@app.command("promote")
def promote(ctx: typer.Context, nodes: List[str] = typer.Argument(..., help="Nodes to make managers.")) -> None:
    """Promote nodes to managers."""
    for n in nodes:
        update(ctx, n, None, [], [], "manager")


@app.command("demote")
def demote(ctx: typer.Context, nodes: List[str] = typer.Argument(..., help="Managers to make workers.")) -> None:
    """Demote managers to workers."""
    for n in nodes:
        update(ctx, n, None, [], [], "worker")


@app.command("rm")
def rm(ctx: typer.Context, nodes: List[str] = typer.Argument(..., help="Node ids or names."),
       force: bool = typer.Option(False, "--force", "-f", help="Remove a node that is not down.")) -> None:
    """Remove nodes from the swarm; their certificates are refused from then on."""
    c = client(ctx)
    for n in nodes:
        c.delete(f"/nodes/{n}", params={"force": "true" if force else "false"})
        typer.echo(n)


@app.command("ps")
def ps(ctx: typer.Context, node: str = typer.Argument("self", help="Node id or name (default: this node)."),
       no_trunc: bool = typer.Option(False, "--no-trunc", help="Do not truncate output.")) -> None:
    """List the tasks on a node."""
    import json
    from cli.commands.service import task_rows
    c = client(ctx)
    n = c.get(f"/nodes/{node}")
    tasks = c.get("/tasks", params={"filters": json.dumps({"node": [n["ID"]]})})
    services = {s["ID"]: s for s in c.get("/services")}
    table(["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR"], task_rows(c, tasks, services, no_trunc))
