"""The registry credentials a service keeps for its workers' pulls (`--with-registry-auth`).

They arrive as Docker's X-Registry-Auth header (or, with Shoal's `withRegistryAuth=true`, from
the logins of the manager that received the call), are stored in the service's
TaskTemplate.ContainerSpec.PullOptions.RegistryAuth, copied into each task, and reach a worker
only inside that worker's own assignments, over mutual TLS. The control API never returns
them: every service and task it serves goes through `redact_service` / `redact_task`.
"""
from __future__ import annotations

import copy

from api.objects import PullOptions, Service, ServiceSpec
from worker.images.auth import decode_auth_config, encode_auth_config

AUTH_FROM = ("spec", "previous-spec")


def parse_registry_auth(header: str) -> str:
    """The header in canonical form ("" when absent or anonymous); ValueError naming the header
    when it is not a valid auth config. Re-encoding keeps only username, password and server."""
    try:
        decoded = decode_auth_config(header)
    except ValueError as exc:
        raise ValueError(f"X-Registry-Auth: {exc}") from None
    if decoded is None:
        return ""
    return encode_auth_config(*decoded)


def parse_auth_from(text: str | None) -> str:
    """Docker's registryAuthFrom: where an update without X-Registry-Auth takes the credentials."""
    if not text:
        return "spec"
    if text not in AUTH_FROM:
        raise ValueError(f"registryAuthFrom: must be spec or previous-spec, got {text!r}")
    return text


def parse_flag(text: str | None, name: str) -> bool:
    if text is None or text.lower() in ("", "0", "false"):
        return False
    if text.lower() in ("1", "true"):
        return True
    raise ValueError(f"{name}: must be true or false, got {text!r}")


def attach(spec: ServiceSpec, registry_auth: str, current: Service | None = None, auth_from: str = "spec") -> None:
    """Set the spec's credentials: the given ones, or on an update without any, those of the
    current spec (or previous spec), as Docker keeps them when the header is not sent."""
    cs = spec.task_template.container_spec
    if registry_auth:
        cs.pull_options = PullOptions(registry_auth=registry_auth)
        return
    source = None
    if current is not None:
        source = current.previous_spec if auth_from == "previous-spec" else current.spec
    kept = source.task_template.container_spec.pull_options if source is not None else None
    cs.pull_options = copy.deepcopy(kept) if kept is not None and kept.registry_auth else None


def _drop(container_spec: dict | None) -> None:
    if isinstance(container_spec, dict):
        container_spec.pop("PullOptions", None)


def redact_service(body: dict) -> dict:
    """An encoded Service without credentials (in Spec and PreviousSpec)."""
    for key in ("Spec", "PreviousSpec"):
        spec = body.get(key)
        if isinstance(spec, dict):
            _drop(spec.get("TaskTemplate", {}).get("ContainerSpec"))
    return body


def redact_task(body: dict) -> dict:
    """An encoded Task without credentials."""
    spec = body.get("Spec")
    if isinstance(spec, dict):
        _drop(spec.get("ContainerSpec"))
    return body
