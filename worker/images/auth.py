"""Registry credentials and authentication challenges.

Credentials live in one file of the node's state directory, shaped like Docker's
config.json ({"auths": {"registry": {"auth": base64("user:password")}}}), mode 0600.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .blobs import atomic_write
from .reference import DEFAULT_REGISTRY

_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]+)?$|^\[[0-9A-Fa-f:.]+\](:[0-9]+)?$")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


@dataclass(frozen=True)
class Challenge:
    scheme: str                 # "basic" or "bearer", lowercased
    params: dict[str, str]


def registry_key(server: str) -> str:
    """The host[:port] a credential is filed under; Docker Hub's many names become docker.io."""
    if not isinstance(server, str) or not server.strip():
        raise ValueError("serveraddress: required")
    text = server.strip()
    host = urlsplit(text).netloc if "://" in text else text.split("/", 1)[0]
    host = host.lower()
    if host in _HUB_KEYS:
        return DEFAULT_REGISTRY
    if not _HOST.match(host):
        raise ValueError(f"serveraddress: {server!r} is not a registry host[:port]")
    return host


def parse_challenge(header: str) -> Challenge | None:
    """Parse one WWW-Authenticate value, e.g. Bearer realm="...",service="...",scope="a:b:pull,push"."""
    header = (header or "").strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            i += 1
            value = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(rest[i])
                i += 1
            i += 1  # closing quote
            params[key] = "".join(value)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            params[key] = rest[i:end].strip()
            i = end
    return Challenge(scheme.lower(), params)


def encode_auth_config(server: str, creds: Credentials) -> str:
    """Docker's auth config as X-Registry-Auth and PullOptions.RegistryAuth carry it: base64url
    of {"username", "password", "serveraddress"} (server "" when the config names none)."""
    body = {"username": creds.username, "password": creds.password,
            "serveraddress": registry_key(server) if server else ""}
    return base64.urlsafe_b64encode(json.dumps(body, sort_keys=True).encode()).decode()


def decode_auth_config(text: str) -> tuple[str, Credentials] | None:
    """(server, credentials) of an encoded auth config; server is "" when it names none. None
    when it carries no username (an empty or identity-token config: an anonymous pull).
    ValueError when it is not base64url JSON."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("not base64url-encoded JSON") from None
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    if not body.get("username"):
        return None
    server = body.get("serveraddress") or ""
    if not isinstance(server, str):
        raise ValueError("serveraddress: must be a string")
    return (registry_key(server) if server else ""), Credentials(str(body["username"]), str(body.get("password", "")))


class CredentialStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ValueError(f"credentials: {self.path} is not valid JSON ({exc})") from None
        auths = data.get("auths") if isinstance(data, dict) else None
        return auths if isinstance(auths, dict) else {}

    def get(self, server: str) -> Credentials | None:
        entry = self._read().get(registry_key(server))
        if not isinstance(entry, dict) or not entry.get("auth"):
            return None
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"credentials: entry for {server} in {self.path} is not base64 user:password") from None
        return Credentials(user, password)

    def put(self, server: str, creds: Credentials) -> None:
        if not creds.username or ":" in creds.username:
            raise ValueError("username: required, and must not contain ':'")
        auths = self._read()
        token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        auths[registry_key(server)] = {"auth": token}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps({"auths": auths}, indent=2, sort_keys=True).encode(), mode=0o600)

    def remove(self, server: str) -> bool:
        auths = self._read()
        if auths.pop(registry_key(server), None) is None:
            return False
        atomic_write(self.path, json.dumps({"auths": auths}, indent=2, sort_keys=True).encode(), mode=0o600)
        return True
