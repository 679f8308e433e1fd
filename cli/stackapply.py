"""The I/O around cli.stackplan: read what the cluster has, ask the manager where new tasks would
go (and whether it would accept each spec), read secret and config files, and carry the steps
out. `stack deploy`, `stack deploy --dry-run` and `stack rm` are built from these."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import typer

from cli.client import CLIError, Client
from cli.compose import NAMESPACE_LABEL
from cli.registryflags import echo_warnings
from cli.stackplan import Current, DeployPlan, Step


def stack_services(c: Client, stack: str) -> list[dict]:
    return c.get("/services", params={"filters": json.dumps({"label": [f"{NAMESPACE_LABEL}={stack}"]})})


def list_or_empty(c: Client, path: str) -> list[dict]:
    """GET a list that a daemon without that API (404: no such route) does not have: empty."""
    try:
        return c.get(path)
    except CLIError as exc:
        if exc.status == 404:
            return []
        raise


def current_state(c: Client, stack: str) -> Current:
    return Current(services=stack_services(c, stack), networks=c.get("/networks"),
                   secrets=list_or_empty(c, "/secrets"), configs=list_or_empty(c, "/configs"))


@dataclass
class ObjectData:
    """The create bodies of the plan's secrets and configs (file contents read, base64)."""

    bodies: dict[tuple[str, str], dict] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def object_bodies(plan: DeployPlan) -> ObjectData:
    """Read now, before anything changes, so that a missing file stops the whole deploy."""
    out = ObjectData()
    for step in plan.steps:
        if step.op != "create" or step.kind not in ("secret", "config"):
            continue
        spec = step.spec or {}
        body: dict[str, Any] = {"Name": spec["Name"], "Labels": spec.get("Labels", {})}
        if "File" in spec:
            try:
                with open(spec["File"], "rb") as fh:
                    body["Data"] = base64.b64encode(fh.read()).decode("ascii")
            except OSError as exc:
                out.errors.append(f'{step.kind}s.{step.name}.file: cannot read "{spec["File"]}": '
                                  f"{exc.strerror or exc}")
                continue
        elif "Data" in spec:
            body["Data"] = spec["Data"]
        for key in ("Driver", "Templating"):
            if key in spec:
                body[key] = spec[key]
        out.bodies[(step.kind, step.name)] = body
    return out


def registry_digest(c: Client):
    """Docker's GET /distribution/{name}/json through the daemon (with its login): the digest a
    tag points at now, or None when the registry cannot say."""
    def ask(image: str) -> str | None:
        try:
            return c.get(f"/distribution/{image}/json")["Descriptor"]["Digest"]
        except (CLIError, KeyError, TypeError):
            return None
    return ask


def preview(c: Client, plan: DeployPlan) -> list[dict]:
    """POST /services/placement for the services the plan creates or updates, in plan order:
    per service, the new tasks per node, the reasons for those that cannot be placed, and any
    reason the daemon would refuse the spec. Read-only on the manager."""
    steps = [s for s in plan.steps if s.kind == "service" and s.op in ("create", "update")]
    if not steps:
        return []
    body = {
        "Services": [{"Spec": s.spec, **({"ServiceID": s.current["ID"]} if s.current else {})} for s in steps],
        "Networks": [s.name for s in plan.of("create", "network")],
        "Secrets": [s.name for s in plan.of("create", "secret")],
        "Configs": [s.name for s in plan.of("create", "config")],
        "Removed": [s.current["ID"] for s in plan.of("remove", "service") if s.current],
    }
    return c.post("/services/placement", body=body)["Services"]


def refusals(plan: DeployPlan, objects: ObjectData, previews: list[dict]) -> list[str]:
    """Everything that stops the deploy, one line each, naming the object and field."""
    return plan.errors + objects.errors + [f"services.{p['Name']}: {p['Error']}" for p in previews if p.get("Error")]


def apply(c: Client, plan: DeployPlan, objects: ObjectData, registry: dict[str, str] | None = None) -> bool:
    """Carry the steps out in order, saying each as Docker does. A failed removal is reported and
    the rest goes on (a network another service still uses stays); returns whether all went.
    `registry`: the --resolve-image / --with-registry-auth parameters of service writes."""
    registry = registry or {}
    ok = True
    for step in plan.steps:
        if step.op == "create":
            typer.echo(f"Creating {step.kind} {step.name}")
            body = objects.bodies.get((step.kind, step.name), step.spec)
            result = c.post(f"/{step.kind}s/create", params=registry if step.kind == "service" else None, body=body)
            if step.kind == "service":
                echo_warnings(result)
        elif step.op == "update":
            current = step.current or {}
            typer.echo(f"Updating {step.kind} {step.name} (id: {current['ID']})")
            for change in step.changes:
                typer.echo(f"  {change}")
            echo_warnings(c.post(f"/services/{current['ID']}/update",
                                 params={"version": str(current["Version"]["Index"]), **registry}, body=step.spec))
        else:
            ok = remove(c, step) and ok
    return ok


def remove(c: Client, step: Step) -> bool:
    current = step.current or {}
    typer.echo(f"Removing {step.kind} {step.name}")
    try:
        c.delete(f"/{step.kind}s/{current.get('ID') or current.get('Id')}")
    except CLIError as exc:
        if step.kind == "service":
            raise
        typer.echo(f"Failed to remove {step.kind} {step.name}: {exc}", err=True)
        return False
    return True
