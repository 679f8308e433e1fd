"""`--resolve-image` and `--with-registry-auth`, shared by `service create|update` and
`stack deploy`, and the warnings the daemon answers them with.

The CLI holds no credentials: the daemon does (`shoal login`). So `--with-registry-auth` asks
the daemon to keep its login for the image's registry with the service (Shoal's
`withRegistryAuth=true` query parameter), and `--resolve-image` becomes `resolveImage=…`:
the daemon that receives the call asks the registry for the digest with its own login.
"""
from __future__ import annotations

from typing import Any

import typer

from cli.client import CLIError

RESOLVE_IMAGE_MODES = ("always", "changed", "never")
RESOLVE_IMAGE_HELP = ("Query the registry to pin the image's digest: always, changed (only when the image "
                      "changed) or never.")
WITH_REGISTRY_AUTH_HELP = "Send this node's registry login (shoal login) to the swarm agents with the service."


def registry_params(resolve_image: str, with_registry_auth: bool) -> dict[str, str]:
    """The query parameters of a create/update; a bad mode is a one-line usage error."""
    if resolve_image not in RESOLVE_IMAGE_MODES:
        raise CLIError(f"--resolve-image: must be always, changed or never, got {resolve_image!r}", 2)
    params = {"resolveImage": resolve_image}
    if with_registry_auth:
        params["withRegistryAuth"] = "true"
    return params


def echo_warnings(result: Any) -> None:
    """Print the daemon's warnings (an image it could not pin, a login it does not hold)."""
    if isinstance(result, dict):
        for warning in result.get("Warnings") or []:
            typer.echo(warning, err=True)
