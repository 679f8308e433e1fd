"""What `stack deploy` would change: the desired stack (compose files converted, cli.compose)
against what the cluster has now, as an ordered list of steps. Pure, so that `deploy` and
`deploy --dry-run` share it: the dry run prints exactly the steps the deploy then carries out.

Docker's rules: networks, secrets and configs are created when missing and kept when they exist
(networks cannot be changed in place; secrets and configs are immutable, so rotating one means a
new name); external ones must exist. Services are created, or updated when their spec differs
as the daemon stores it. With prune, the stack's services, networks, secrets and configs that the
files no longer name are removed (Docker prunes services only; Shoal removes what the stack
owns, as `stack rm` does).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from api import codec
from api.objects import ServiceSpec
from cli.compose import NAMESPACE_LABEL, StackPlan
from cli.specdiff import Change, diff

_CREATE_HINT = {
    "network": "shoal network create -d overlay {name}",
    "secret": "shoal secret create {name} FILE",
    "config": "shoal config create {name} FILE",
}


@dataclass
class Current:
    """The cluster as the API lists it: the stack's services (with ID, Version, Spec), and every
    network, secret and config (external ones carry no stack label)."""

    services: list[dict] = field(default_factory=list)
    networks: list[dict] = field(default_factory=list)
    secrets: list[dict] = field(default_factory=list)
    configs: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    op: str  # "create" | "update" | "remove"
    kind: str  # "secret" | "config" | "network" | "service"
    name: str
    spec: dict | None = None  # what to create or update to
    current: dict | None = None  # the object as listed (update, remove): its ID and Version
    changes: tuple[Change, ...] = ()  # update: field by field, as the daemon compares


@dataclass
class DeployPlan:
    """Steps in the order they run: what services use is created before them (secrets, configs,
    networks), services are created or updated, and removals come last (services before the
    networks they were on)."""

    stack: str
    steps: list[Step] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # services already as the files say
    errors: list[str] = field(default_factory=list)  # one line each; nothing may run if any

    def of(self, op: str, kind: str | None = None) -> list[Step]:
        return [s for s in self.steps if s.op == op and (kind is None or s.kind == kind)]


def plan_deploy(desired: StackPlan, current: Current, stack: str, prune: bool = False) -> DeployPlan:
    plan = DeployPlan(stack)
    objects = {"secret": (desired.secrets, current.secrets), "config": (desired.configs, current.configs),
               "network": (desired.networks, current.networks)}
    for kind in ("secret", "config", "network"):
        wanted, have = objects[kind]
        _plan_objects(plan, kind, wanted, have)
    _plan_services(plan, desired.services, current.services)
    if prune:
        wanted_services = {s["Name"] for s in desired.services}
        for svc in sorted(current.services, key=_name):
            if _name(svc) not in wanted_services:
                plan.steps.append(Step("remove", "service", _name(svc), current=svc))
        for kind in ("network", "secret", "config"):
            wanted, have = objects[kind]
            for obj in sorted(have, key=_name):
                if _name(obj) not in wanted and _owned(obj, stack):
                    plan.steps.append(Step("remove", kind, _name(obj), current=obj))
    return plan


def with_moved_tags(plan: DeployPlan, current: Current, desired: StackPlan,
                    registry_digest: Callable[[str], str | None]) -> DeployPlan:
    """`--resolve-image always`: a service the files leave unchanged is still updated when its
    tag now points at other bits in the registry (Docker's deploy re-resolves every service).
    Only services pinned to a registry digest are asked about: an image no registry gave (imported
    here) has nothing to move. `registry_digest(tag)` is the registry's answer, or None."""
    by_name = {_name(s): s for s in current.services}
    specs = {s["Name"]: s for s in desired.services}
    still: list[str] = []
    for name in plan.unchanged:
        svc, spec = by_name.get(name), specs.get(name)
        pinned = ((svc or {}).get("Spec", {}).get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image", ""))
        wanted = ((spec or {}).get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image", ""))
        if svc is None or spec is None or "@" not in pinned or "@" in wanted:
            still.append(name)
            continue
        digest = registry_digest(wanted)
        old_digest = pinned.split("@", 1)[1]
        if digest is None or digest == old_digest:
            still.append(name)
            continue
        moved = f"{pinned.split('@', 1)[0]}@{digest}"
        plan.steps.append(Step("update", "service", name, spec=spec, current=svc,
                               changes=(Change("TaskTemplate.ContainerSpec.Image", pinned, moved),)))
    plan.unchanged = still
    # updates before removals, as plan_deploy orders them
    plan.steps.sort(key=lambda st: st.op == "remove")
    return plan


def removal_plan(current: Current, stack: str) -> DeployPlan:
    """`stack rm`: every service, then every network, secret and config the stack owns."""
    return plan_deploy(StackPlan(), current, stack, prune=True)


def _plan_objects(plan: DeployPlan, kind: str, wanted: dict[str, dict], have: list[dict]) -> None:
    existing = {_name(o) for o in have}
    for name, spec in sorted(wanted.items()):
        if name in existing:
            continue  # kept as it is (see the module's docstring)
        if spec.get("External"):
            hint = _CREATE_HINT[kind].format(name=name)
            plan.errors.append(f'{kind}s.{name}: declared as external, but no {kind} named "{name}" exists: '
                               f"create it ({hint}) before deploying the stack")
            continue
        plan.steps.append(Step("create", kind, name, spec={k: v for k, v in spec.items() if k != "External"}))


def _plan_services(plan: DeployPlan, wanted: list[dict], have: list[dict]) -> None:
    by_name = {_name(s): s for s in have}
    for spec in sorted(wanted, key=lambda s: s["Name"]):
        name = spec["Name"]
        svc = by_name.get(name)
        if svc is None:
            plan.steps.append(Step("create", "service", name, spec=spec))
            continue
        changes = diff(*comparable(svc["Spec"], spec))
        if changes:
            plan.steps.append(Step("update", "service", name, spec=spec, current=svc, changes=tuple(changes)))
        else:
            plan.unchanged.append(name)


def comparable(stored: dict, desired: dict) -> tuple[dict, dict]:
    """The stored spec and the desired one in the same form: both as the daemon stores a spec
    (its codec fills defaults such as UpdateConfig.FailureAction and EndpointSpec.Mode, which a
    compose file leaves out), and the image as the user wrote it (the daemon pins a tag to the
    digest it resolved, and adds the implied :latest)."""
    a, b = _canonical(stored), _canonical(desired)
    for spec in (a, b):  # the daemon fills in the ids of the secrets and configs a file names
        cs = spec.get("TaskTemplate", {}).get("ContainerSpec", {})
        for key, id_key in (("Secrets", "SecretID"), ("Configs", "ConfigID")):
            for ref in cs.get(key, []) if isinstance(cs.get(key), list) else []:
                if isinstance(ref, dict):
                    ref.pop(id_key, None)
    image_a = a.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image")
    image_b = b.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image")
    if isinstance(image_a, str) and isinstance(image_b, str) and "@" not in image_b:
        a["TaskTemplate"]["ContainerSpec"]["Image"] = _unpinned(image_a)
        b["TaskTemplate"]["ContainerSpec"]["Image"] = _unpinned(image_b)
    return a, b


def _canonical(spec: dict) -> dict:
    try:
        return codec.encode(codec.decode(ServiceSpec, spec))
    except (codec.DecodeError, TypeError, ValueError):
        return json.loads(json.dumps(spec))  # the daemon refuses it anyway: compare it as written


def _unpinned(image: str) -> str:
    """`busybox` and `busybox:latest@sha256:…` both read `busybox:latest` (a registry port is no tag)."""
    name = image.split("@", 1)[0]
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


def _name(obj: dict) -> str:
    """Services, secrets and configs carry Spec.Name; networks carry Name."""
    return obj["Spec"]["Name"] if "Spec" in obj else obj.get("Name", "")


def _owned(obj: dict, stack: str) -> bool:
    labels = (obj.get("Spec") or obj).get("Labels") or {}
    return labels.get(NAMESPACE_LABEL) == stack


# ---------------------------------------------------------------- rendering

_SIGN = {"create": "+", "update": "~", "remove": "-"}


def render_steps(plan: DeployPlan) -> list[str]:
    """`+ network s_front`, `~ service s_web: Mode.Replicated.Replicas: 2 -> 3`, `- service s_old`."""
    lines = []
    for step in plan.steps:
        head = f"{_SIGN[step.op]} {step.kind} {step.name}"
        if step.changes:
            lines += [f"{head}: {c}" for c in step.changes]
        else:
            lines.append(head)
    return lines


def render_placement(preview: dict[str, Any]) -> str:
    """One service's preview (POST /services/placement) as `s_web: 3 tasks -> w1 (2), w2 (1)`,
    `s_db: 1 task cannot be placed: <scheduler's reason>`."""
    name, total = preview["Name"], preview.get("NewTasks", 0)
    if preview.get("Error"):
        return f"{name}: cannot be deployed: {preview['Error']}"
    if total == 0:
        return f"{name}: no new tasks"
    head = f"{name}: {total} task{'' if total == 1 else 's'}"
    parts = []
    if preview.get("Nodes"):
        parts.append("-> " + ", ".join(f"{n['Hostname']} ({n['Tasks']})" for n in preview["Nodes"]))
    for u in preview.get("Unplaced", []):
        count = "" if u["Tasks"] == total else f"{u['Tasks']} "
        parts.append(f"{count}cannot be placed: {u['Reason']}")
    return head + " " + "; ".join(parts)


def summary(plan: DeployPlan) -> str:
    counts = [f"{len(plan.of(op))} to {op}" for op in ("create", "update", "remove")]
    return ", ".join(counts) + f", {len(plan.unchanged)} service{'' if len(plan.unchanged) == 1 else 's'} unchanged"
