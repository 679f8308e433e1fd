"""Image reference parsing, following the grammar of the distribution project.

reference := name [ ":" tag ] [ "@" digest ]
name      := [domain "/"] component ("/" component)*

Names are kept in the short form users type ("busybox", not "docker.io/library/busybox");
a registry client resolves the domain when it pulls.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_TAG = "latest"
NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_COMPONENT = re.compile(rf"^{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"^{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_HEX64 = re.compile(r"^[a-f0-9]{64}$")


@dataclass(frozen=True)
class Reference:
    name: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text


def _is_domain(first: str) -> bool:
    # Same rule as Docker: the first component is a registry host only when it looks like one.
    return "." in first or ":" in first or first == "localhost"


def _check_name(name: str) -> None:
    if not name:
        raise ValueError("reference: repository name is empty")
    if len(name) > NAME_MAX:
        raise ValueError(f"reference: repository name is longer than {NAME_MAX} characters")
    parts = name.split("/")
    if len(parts) > 1 and _is_domain(parts[0]):
        if not _DOMAIN.match(parts[0]):
            raise ValueError(f"reference: invalid registry host {parts[0]!r}")
        parts = parts[1:]
    for part in parts:
        if part != part.lower() and _COMPONENT.match(part.lower()):
            raise ValueError(f"reference: repository name {name!r} must be lowercase")
        if not _COMPONENT.match(part):
            raise ValueError(f"reference: invalid repository name component {part!r} in {name!r}")


def parse_reference(ref: str) -> Reference:
    """Split and validate; no defaults are applied (see normalize_reference)."""
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError("reference: empty image reference")
    if ref != ref.strip():
        raise ValueError(f"reference: {ref!r} has leading or trailing whitespace")
    if _HEX64.match(ref):
        raise ValueError(f"reference: {ref!r} is an image id, not a repository name")
    rest, digest = ref, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise ValueError(f"reference: invalid digest {digest!r} (want sha256:<64 hex>)")
    name, tag = rest, None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.match(tag):
            raise ValueError(f"reference: invalid tag {tag!r}")
    _check_name(name)
    return Reference(name, tag, digest)


def normalize_reference(ref: str) -> str:
    """"busybox" -> "busybox:latest"; a reference with a digest keeps no implied tag."""
    parsed = parse_reference(ref)
    if parsed.tag is None and parsed.digest is None:
        parsed = Reference(parsed.name, DEFAULT_TAG, None)
    return str(parsed)


DEFAULT_REGISTRY = "docker.io"
_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")


def registry_location(name: str) -> tuple[str, str]:
    """(registry, repository path) of a repository name, with Docker Hub's defaults:
    "busybox" -> ("docker.io", "library/busybox"), "localhost:5000/a/b" -> ("localhost:5000", "a/b")."""
    _check_name(name)
    first, _, rest = name.partition("/")
    if rest and _is_domain(first):
        registry, path = first, rest
    else:
        registry, path = DEFAULT_REGISTRY, name
    if registry in _HUB_HOSTS:
        registry = DEFAULT_REGISTRY
        if "/" not in path:
            path = "library/" + path
    return registry, path


def familiar_name(full: str) -> str:
    """The short form of a fully qualified name: "docker.io/library/busybox:1" -> "busybox:1"."""
    for host in _HUB_HOSTS:
        if full.startswith(host + "/"):
            rest = full[len(host) + 1:]
            short = rest[len("library/"):]
            return short if rest.startswith("library/") and "/" not in short else rest
    return full


def qualified_name(name: str) -> str:
    """The fully qualified form: "busybox" -> "docker.io/library/busybox"."""
    registry, path = registry_location(name)
    return f"{registry}/{path}"
