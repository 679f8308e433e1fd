"""`POST /services/placement`, a Shoal extension of the control API: a placement preview.

Request (every key but Services optional):

    {"Services": [{"Spec": ServiceSpec, "ServiceID": "<id of the service it would update>"}],
     "Networks": ["<names of networks the change creates first>"],
     "Secrets": ["<names of secrets it creates first>"], "Configs": ["<names of configs>"],
     "Removed": ["<ids or names of services the change removes>"]}

Response, one entry per service in order:

    {"Services": [{"Name": "s_web", "NewTasks": 3,
                   "Nodes": [{"ID": "…", "Hostname": "node-1", "Tasks": 2}, …],
                   "Unplaced": [{"Tasks": 1, "Reason": "no suitable node (…)"}],
                   "Error": "<why create or update would refuse this spec, or why it could never run>"}]}

Each spec goes through the same checks as create and update (an invalid spec, a missing image,
a name taken by another service, a mode change: Error), then the pure scheduler places its new
tasks over the current nodes and tasks (manager/placement.py). Nothing is proposed: the answer is
read-only, so `stack deploy --dry-run` can show the whole plan and `stack deploy` can refuse a
bad stack before it changes anything. Malformed requests (not the shape above) are 400.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from api.objects import Service, ServiceSpec
from manager.controlapi import APIError, _mode_kind, find_one, service_names
from manager.manager import Manager
from manager.placement import PreviewRequest, PreviewResult, preview_placement


def _strings(body: dict, key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise APIError(400, f"{key}: must be a list of strings")
    return value


def placement_preview(m: Manager, body: Any, decode_spec: Callable[..., ServiceSpec]) -> dict:
    if not isinstance(body, dict):
        raise APIError(400, "body: must be an object")
    unknown = set(body) - {"Services", "Networks", "Secrets", "Configs", "Removed"}
    if unknown:
        raise APIError(400, f"{sorted(unknown)[0]}: unknown field")
    entries = body.get("Services")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise APIError(400, "Services: must be a list of {Spec, ServiceID} objects")
    new_networks = frozenset(_strings(body, "Networks"))
    new_files = {"secret": frozenset(_strings(body, "Secrets")), "config": frozenset(_strings(body, "Configs"))}
    services = m.store.list("service")
    removed = {find_one(services, ref, "service", service_names).id for ref in _strings(body, "Removed")}

    requests: list[PreviewRequest] = []
    errors: dict[int, str] = {}
    names: dict[int, str] = {}
    for k, entry in enumerate(entries):
        where = f"Services[{k}]"
        if set(entry) - {"Spec", "ServiceID"} or not isinstance(entry.get("ServiceID", ""), str):
            raise APIError(400, f"{where}: must be {{Spec, ServiceID}} with ServiceID a string")
        spec_body = entry.get("Spec")
        names[k] = spec_body.get("Name", "") if isinstance(spec_body, dict) else ""
        try:
            spec = decode_spec(spec_body, new_networks, new_files)
            existing = _existing(services, entry.get("ServiceID", ""), spec, removed)
        except APIError as exc:
            errors[k] = str(exc)
            continue
        if existing is None:
            requests.append(PreviewRequest(Service(id=f"preview-service-{k}", spec=spec)))
        else:
            requests.append(PreviewRequest(Service(id=existing.id, version=existing.version, spec=spec,
                                                   job_status=existing.job_status), existing))

    results = iter(preview_placement(requests, m.store.list("node"), services, m.store.list("task"),
                                     time.time(), removed))
    hosts = {n.id: n.description.hostname or n.id for n in m.store.list("node")}
    out = []
    for k in range(len(entries)):
        if k in errors:
            out.append({"Name": names[k], "NewTasks": 0, "Nodes": [], "Unplaced": [], "Error": errors[k]})
        else:
            out.append(_result_json(next(results), hosts))
    return {"Services": out}


def _existing(services: list[Service], ref: str, spec: ServiceSpec, removed: set[str]) -> Service | None:
    """The service an update replaces (checked as update checks it), or None for a create
    (whose name must be free, as create requires)."""
    if ref:
        svc = find_one(services, ref, "service", service_names)
        if _mode_kind(spec) != _mode_kind(svc.spec):
            raise APIError(400, f"Mode: service mode change is not allowed ({_mode_kind(svc.spec)} to "
                                f"{_mode_kind(spec)}): remove the service and create it again")
        return svc
    for s in services:
        if s.spec.name == spec.name and s.id not in removed:
            raise APIError(409, f"Name: a service named {spec.name!r} already exists")
    return None


def _result_json(res: PreviewResult, hosts: dict[str, str]) -> dict:
    nodes = sorted(({"ID": nid, "Hostname": hosts.get(nid, nid), "Tasks": n} for nid, n in res.nodes.items()),
                   key=lambda e: (e["Hostname"], e["ID"]))
    unplaced = [{"Tasks": n, "Reason": reason} for reason, n in sorted(res.unplaced.items())]
    body: dict[str, Any] = {"Name": res.name, "NewTasks": res.new_tasks, "Nodes": nodes, "Unplaced": unplaced}
    if res.error:
        body["Error"] = res.error
    return body
