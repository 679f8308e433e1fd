"""`shoal exec` and `shoal stats`: reach into running tasks, wherever they run."""
from __future__ import annotations

import base64
import json
import sys
from typing import List

import typer

from cli.client import CLIError, Client
from cli.commands.common import client
from cli.output import table


def resolve_task(c: Client, ref: str) -> dict:
    """A task id (or unique prefix), or SERVICE.SLOT for the running task of that slot."""
    name, dot, slot = ref.rpartition(".")
    if dot and slot.isdigit():
        svc = c.get(f"/services/{name}")
        for t in c.get("/tasks", params={"filters": json.dumps({"service": [svc["ID"]]})}):
            if t.get("Slot") == int(slot) and t["Status"].get("State") == "running" and t.get("DesiredState") == "running":
                return t
        raise CLIError(f"TASK: no running task in slot {slot} of service {name}")
    return c.get(f"/tasks/{ref}")


def exec_(ctx: typer.Context, task: str = typer.Argument(..., help="Task id, or SERVICE.SLOT (e.g. web.1)."),
          command: List[str] = typer.Argument(..., help="Command and arguments."),
          env: List[str] = typer.Option([], "--env", "-e", help="Extra environment variables (KEY=VALUE).")) -> None:
    """Run a command inside a running task's container (its namespaces and cgroup), on any node."""
    for e in env:
        if "=" not in e or e.startswith("="):
            raise CLIError(f"--env: {e!r} must be KEY=VALUE", 2)
    c = client(ctx)
    t = resolve_task(c, task)
    out = c.post(f"/tasks/{t['ID']}/exec", body={"Cmd": list(command), "Env": list(env)})
    sys.stdout.buffer.write(base64.b64decode(out.get("Stdout", "")))
    sys.stdout.flush()
    sys.stderr.buffer.write(base64.b64decode(out.get("Stderr", "")))
    if out.get("ExecError"):
        typer.echo(out["ExecError"], err=True)
    raise typer.Exit(out.get("ExitCode", 1) if out.get("ExitCode", 1) >= 0 else 1)


def stats(ctx: typer.Context, services: List[str] = typer.Argument(..., help="Service names or ids.")) -> None:
    """CPU time, memory and processes of every running task of the services."""
    c = client(ctx)
    nodes = {n["ID"]: n.get("Description", {}).get("Hostname", n["ID"]) for n in c.get("/nodes")}
    rows = []
    for ref in services:
        svc = c.get(f"/services/{ref}")
        tasks = c.get("/tasks", params={"filters": json.dumps({"service": [svc["ID"]], "desired-state": ["running"]})})
        for t in sorted(tasks, key=lambda t: t.get("Slot", 0)):
            if t["Status"].get("State") != "running":
                continue
            s = c.get(f"/tasks/{t['ID']}/stats")["Stats"]
            limit = s.get("memory_limit_bytes")
            mem = f"{s.get('memory_usage_bytes', 0) / 2**20:.1f}MiB / " + (f"{limit / 2**20:.0f}MiB" if limit else "-")
            rows.append([f"{svc['Spec']['Name']}.{t.get('Slot') or t.get('NodeID', '')[:8]}", t["ID"][:12],
                         nodes.get(t.get("NodeID", ""), ""), f"{s.get('cpu_usage_ns', 0) / 1e9:.2f}s", mem,
                         s.get("pids", "")])
    table(["TASK", "ID", "NODE", "CPU TIME", "MEM USAGE / LIMIT", "PIDS"], rows)
