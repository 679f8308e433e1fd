"""The registry client of one node, configured from its state directory.

Every part of a node that talks to registries (the image API's pulls and pushes, the agent's
pulls for tasks, a manager resolving a service's tag to a digest) reads the same files, so a
`shoal login`, an insecure-registries entry or a certs.d CA applies to all of them:

    <state>/registry-auth.json   the node's logins (Docker's config.json shape, mode 0600)
    <state>/registries.json      {"insecure-registries": ["host:port", ...]}
    <state>/certs.d/<host>/ca.crt  a registry's CA, as Docker's certs.d
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from .auth import CredentialStore, Credentials, decode_auth_config
from .reference import parse_reference, registry_location
from .registry import RegistryClient, RegistryConfig

CREDENTIALS_FILE = "registry-auth.json"
REGISTRIES_FILE = "registries.json"


def node_credentials(state_dir: Path) -> CredentialStore:
    return CredentialStore(Path(state_dir) / CREDENTIALS_FILE)


def node_registry_client(state_dir: Path, override: Mapping[str, Credentials] | None = None,
                         connect_timeout: float | None = None) -> RegistryClient:
    """A client with the node's logins, insecure registries and CAs; `override` credentials
    (a request's, a service's) win over the node's own for their hosts. ValueError when
    registries.json is malformed."""
    state_dir = Path(state_dir)
    config = RegistryConfig.load(state_dir / REGISTRIES_FILE)
    config.certs_dir = state_dir / "certs.d"
    if connect_timeout is not None:
        config.connect_timeout = connect_timeout
    return RegistryClient(node_credentials(state_dir), config, override)


def image_registry(reference: str) -> str:
    """The registry host[:port] an image reference is pulled from ("busybox" -> "docker.io")."""
    return registry_location(parse_reference(reference).name)[0]


def auth_override(registry_auth: str, reference: str) -> dict[str, Credentials]:
    """The credentials of an encoded auth config, filed under the registry they name, or under
    the image's registry when they name none (as Docker's workers use them). A config for
    another registry than the image's is kept under its own host, so it is never sent to the
    image's registry. ValueError when the config is not valid."""
    decoded = decode_auth_config(registry_auth)
    if decoded is None:
        return {}
    server, creds = decoded
    return {server or image_registry(reference): creds}
