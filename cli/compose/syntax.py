"""Short-syntax parsers for ports, volumes and tmpfs entries, into the long-syntax shape."""
from __future__ import annotations

import re
from dataclasses import dataclass

PROTOCOLS = ("tcp", "udp", "sctp")
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
CONSISTENCIES = ("consistent", "cached", "delegated", "default")


@dataclass(frozen=True)
class PortMapping:
    target: int
    published: int | None
    protocol: str
    host_ip: str | None


def _port_range(text: str, what: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if match is None:
        raise ValueError(f'invalid {what} port "{text}"')
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else start
    for port in (start, end):
        if not 1 <= port <= 65535:
            raise ValueError(f"{what} port {port} is out of range 1-65535")
    if end < start:
        raise ValueError(f'invalid {what} port range "{text}": the end is before the start')
    return start, end


def parse_port(spec: str) -> list[PortMapping]:
    """"[host_ip:][published:]target[/protocol]" with optional equal-length ranges."""
    text = spec.strip()
    protocol = "tcp"
    if "/" in text:
        text, protocol = text.rsplit("/", 1)
        protocol = protocol.lower()
        if protocol not in PROTOCOLS:
            raise ValueError(f'invalid protocol "{protocol}" (use tcp, udp or sctp)')
    host_ip = None
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1:close + 2] != ":":
            raise ValueError(f'invalid port "{spec}"')
        host_ip, text = text[1:close], text[close + 2:]
    elif text.count(":") == 2:
        host_ip, text = text.split(":", 1)
    parts = text.split(":")
    if len(parts) == 1:
        published_text, target_text = "", parts[0]
    elif len(parts) == 2:
        published_text, target_text = parts
    else:
        raise ValueError(f'invalid port "{spec}" (use [ip:][published:]target[/protocol])')
    target = _port_range(target_text, "target")
    if not published_text:
        return [PortMapping(p, None, protocol, host_ip or None) for p in range(target[0], target[1] + 1)]
    published = _port_range(published_text, "published")
    if published[1] - published[0] != target[1] - target[0]:
        raise ValueError(f'invalid port "{spec}": the published and target ranges differ in length')
    return [
        PortMapping(t, p, protocol, host_ip or None)
        for t, p in zip(range(target[0], target[1] + 1), range(published[0], published[1] + 1))
    ]


def is_path_source(source: str) -> bool:
    return source[:1] in (".", "/", "~")


@dataclass(frozen=True)
class VolumeSpec:
    type: str
    source: str | None
    target: str
    read_only: bool
    nocopy: bool
    propagation: str | None
    consistency: str | None
    selinux: str | None


def parse_volume(spec: str) -> VolumeSpec:
    """"[source:]target[:options]"; a source starting with . / or ~ is a bind mount,
    any other source names a volume, and a lone target is an anonymous volume."""
    if not spec:
        raise ValueError("empty volume")
    fields = spec.split(":")
    if any(f == "" for f in fields):
        raise ValueError(f'invalid volume "{spec}": empty section between colons')
    if len(fields) > 3:
        raise ValueError(f'invalid volume "{spec}": too many colons')
    source: str | None = None
    options = ""
    if len(fields) == 1:
        target = fields[0]
    else:
        source, target = fields[0], fields[1]
        if len(fields) == 3:
            options = fields[2]
    read_only = nocopy = False
    propagation = consistency = selinux = None
    for option in filter(None, options.split(",")):
        if option in ("ro", "rw"):
            read_only = option == "ro"
        elif option == "nocopy":
            nocopy = True
        elif option in PROPAGATIONS:
            propagation = option
        elif option in CONSISTENCIES:
            consistency = option
        elif option in ("z", "Z"):
            selinux = option
        else:
            raise ValueError(f'invalid volume "{spec}": unknown option "{option}"')
    kind = "bind" if source is not None and is_path_source(source) else "volume"
    if kind == "bind" and nocopy:
        raise ValueError(f'invalid volume "{spec}": nocopy applies to named volumes only')
    if kind == "volume" and propagation:
        raise ValueError(f'invalid volume "{spec}": propagation applies to bind mounts only')
    return VolumeSpec(kind, source, target, read_only, nocopy, propagation, consistency, selinux)


@dataclass(frozen=True)
class TmpfsSpec:
    target: str
    size: int | None
    mode: int | None
    read_only: bool
    dropped: tuple[str, ...]  # mount flags a swarm tmpfs cannot carry


def parse_tmpfs(spec: str, parse_size) -> TmpfsSpec:
    """"/path[:opt,opt]" as docker run --tmpfs takes it (size=64m, mode=1777, ro, rw)."""
    target, _, options = spec.partition(":")
    if not target.startswith("/"):
        raise ValueError(f'invalid tmpfs "{spec}": the path must be absolute')
    size = mode = None
    read_only = False
    dropped: list[str] = []
    for option in filter(None, options.split(",")):
        name, _, value = option.partition("=")
        if name == "size":
            size = parse_size(value)
        elif name == "mode":
            if not re.fullmatch(r"[0-7]{1,4}", value):
                raise ValueError(f'invalid tmpfs "{spec}": mode must be octal, got "{value}"')
            mode = int(value, 8)
        elif option in ("ro", "rw"):
            read_only = option == "ro"
        elif option in ("exec", "noexec", "suid", "nosuid", "dev", "nodev", "sync", "async",
                        "atime", "noatime", "diratime", "nodiratime", "relatime", "norelatime"):
            dropped.append(option)
        else:
            raise ValueError(f'invalid tmpfs "{spec}": unknown option "{option}"')
    return TmpfsSpec(target, size, mode, read_only, tuple(dropped))
