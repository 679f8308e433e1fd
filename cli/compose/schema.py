"""The compose file format as typed schema (the parts of compose-spec that swarm mode
reads, written out by hand), plus the normalizers for fields with several syntaxes.

Every key of the compose specification appears here: converted, ignored with a
warning (as `docker stack deploy` ignores it), or refused with advice. Anything
else is an unknown key and an error.
"""
from __future__ import annotations

import re
from typing import Any

from . import syntax, units
from .errors import describe
from .nodes import YList, YMap
from .validate import (
    DROP, Bool, Command, Cpus, Ctx, Custom, Duration, Enum, FileMode, Float, Forbidden, Ignored, Int,
    ListOf, ListOrDict, Map, Nullable, Size, Str, StrOrList, Type, scalar_text,
)

NAME_PATTERN = r"^[a-zA-Z0-9._-]+$"


def _str_map() -> Map:
    return Map(other=Custom(_scalar_str, "a string or number"), extensions=False)


def _scalar_str(value: Any, ctx: Ctx) -> str:
    if isinstance(value, (str, int, float, bool)):
        return scalar_text(value)
    raise ctx.expected("a string or number", value)


# ---------------------------------------------------------------- ports

_PORT_LONG = Map({
    "target": Int(1, 65535),
    "published": Int(0, 65535),
    "protocol": Enum(*syntax.PROTOCOLS),
    "mode": Enum("ingress", "host"),
    "name": Str(),
    "host_ip": Str(),
    "app_protocol": Ignored(),
}, required=("target",))


def _port_entry(port: Any, ctx: Ctx) -> YMap:
    entry = YMap(ctx.pos)
    for key in ("target", "published", "protocol", "mode", "name"):
        if port.get(key) is not None:
            entry.put(key, port[key], port.pos_of(key) if isinstance(port, YMap) else ctx.pos)
    entry.setdefault("protocol", "tcp")
    entry.setdefault("mode", "ingress")
    if entry.get("published") == 0:
        del entry["published"]
    return entry


def _ports(value: Any, ctx: Ctx) -> YList:
    if not isinstance(value, YList):
        raise ctx.expected("a list of ports", value)
    out = YList(value.pos)
    for index, item in enumerate(value):
        sub = ctx.at(index, value.pos_of(index))
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        if isinstance(item, str):
            try:
                mappings = syntax.parse_port(item)
            except ValueError as exc:
                raise sub.fail(str(exc)) from None
            if mappings[0].host_ip:
                sub.warn(f'host IP "{mappings[0].host_ip}" is ignored: swarm publishes on every address')
            for m in mappings:
                out.add(_port_entry({"target": m.target, "published": m.published, "protocol": m.protocol}, sub), sub.pos)
        elif isinstance(item, YMap):
            port = _PORT_LONG.check(item, sub)
            if "host_ip" in port:
                sub.warn(f'host_ip "{port["host_ip"]}" is ignored: swarm publishes on every address')
            out.add(_port_entry(port, sub), sub.pos)
        else:
            raise sub.expected("a port string, number or mapping", item)
    return out


# ---------------------------------------------------------------- volumes, tmpfs

_VOLUME_LONG = Map({
    "type": Enum("volume", "bind", "tmpfs", "npipe", "cluster", "image"),
    "source": Str(),
    "target": Str(nonempty=True),
    "read_only": Bool(),
    "consistency": Str(),
    "bind": Map({
        "propagation": Enum(*syntax.PROPAGATIONS),
        "create_host_path": Ignored(),
        "recursive": Ignored(),
        "selinux": Ignored(),
    }),
    "volume": Map({"nocopy": Bool(), "labels": Ignored(), "subpath": Ignored()}),
    "tmpfs": Map({"size": Size(), "mode": FileMode()}),
    "image": Ignored(),
}, required=("type", "target"))


def _volume_entry(value: Any, ctx: Ctx) -> YMap:
    if isinstance(value, str):
        try:
            spec = syntax.parse_volume(value)
        except ValueError as exc:
            raise ctx.fail(str(exc)) from None
        entry = YMap(ctx.pos)
        entry.put("type", spec.type, ctx.pos)
        if spec.source is not None:
            entry.put("source", spec.source, ctx.pos)
        entry.put("target", spec.target, ctx.pos)
        if spec.read_only:
            entry.put("read_only", True, ctx.pos)
        if spec.consistency:
            entry.put("consistency", spec.consistency, ctx.pos)
        if spec.propagation:
            entry.put("bind", YMap(ctx.pos, [("propagation", spec.propagation, ctx.pos)]), ctx.pos)
        if spec.nocopy:
            entry.put("volume", YMap(ctx.pos, [("nocopy", True, ctx.pos)]), ctx.pos)
        if spec.selinux:
            ctx.warn(f'SELinux relabel option "{spec.selinux}" is ignored in swarm mode')
        return entry
    if not isinstance(value, YMap):
        raise ctx.expected("a volume string or mapping", value)
    entry = _VOLUME_LONG.check(value, ctx)
    kind = entry["type"]
    if kind in ("npipe", "cluster", "image"):
        raise ctx.at("type", entry.pos_of("type")).fail(f'volume type "{kind}" is not supported (use volume, bind or tmpfs)')
    for option in ("bind", "volume", "tmpfs"):
        if option in entry and option != kind:
            raise ctx.at(option, entry.pos_of(option)).fail(f'{option} options do not apply to a volume of type "{kind}"')
    if kind == "bind" and not entry.get("source"):
        raise ctx.fail("a bind mount needs a source")
    if kind == "tmpfs" and entry.get("source"):
        raise ctx.at("source", entry.pos_of("source")).fail("a tmpfs mount takes no source")
    return entry


def _tmpfs_entry(value: Any, ctx: Ctx) -> YMap:
    if not isinstance(value, str):
        raise ctx.expected("a path such as /run or /tmp:size=64m", value)
    try:
        spec = syntax.parse_tmpfs(value, units.parse_size)
    except ValueError as exc:
        raise ctx.fail(str(exc)) from None
    if spec.dropped:
        ctx.warn(f"tmpfs options not supported in swarm mode are ignored: {', '.join(spec.dropped)}")
    entry = YMap(ctx.pos, [("target", spec.target, ctx.pos)])
    if spec.size is not None:
        entry.put("size", spec.size, ctx.pos)
    if spec.mode is not None:
        entry.put("mode", spec.mode, ctx.pos)
    if spec.read_only:
        entry.put("read_only", True, ctx.pos)
    return entry


# ---------------------------------------------------------------- secrets, configs refs

_FILE_REF = Map({
    "source": Str(nonempty=True),
    "target": Str(nonempty=True),
    "uid": Str(numbers=True),
    "gid": Str(numbers=True),
    "mode": FileMode(),
}, required=("source",))


def _file_ref(value: Any, ctx: Ctx) -> YMap:
    if isinstance(value, str):
        if not value:
            raise ctx.fail("must not be empty")
        return YMap(ctx.pos, [("source", value, ctx.pos)])
    if isinstance(value, YMap):
        return _FILE_REF.check(value, ctx)
    raise ctx.expected("a name or a mapping with source", value)


# ---------------------------------------------------------------- service networks

_SERVICE_NETWORK = Map({
    "aliases": ListOf(Str()),
    "driver_opts": _str_map(),
    "ipv4_address": Ignored(),
    "ipv6_address": Ignored(),
    "link_local_ips": Ignored(),
    "mac_address": Ignored(),
    "interface_name": Ignored(),
    "priority": Ignored(),
    "gw_priority": Ignored(),
}, none_as_empty=True)


def _service_networks(value: Any, ctx: Ctx) -> YMap:
    out = YMap(getattr(value, "pos", ctx.pos))
    if isinstance(value, YList):
        for index, name in enumerate(value):
            sub = ctx.at(index, value.pos_of(index))
            if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
                raise sub.expected("a network name", name)
            if name in out:
                raise sub.fail(f'network "{name}" is listed twice')
            out.put(name, YMap(sub.pos), sub.pos)
        return out
    if isinstance(value, YMap):
        return Map(other=_SERVICE_NETWORK, key_pattern=NAME_PATTERN, key_what="network", extensions=False).check(value, ctx)
    raise ctx.expected("a list of network names or a mapping", value)


# ---------------------------------------------------------------- small fields

def _ulimit(value: Any, ctx: Ctx) -> YMap:
    if isinstance(value, YMap):
        limit = Map({"soft": Int(), "hard": Int()}, required=("soft", "hard")).check(value, ctx)
        if limit["soft"] > limit["hard"]:
            raise ctx.fail(f"soft limit {limit['soft']} is above the hard limit {limit['hard']}")
        return limit
    single = Int().check(value, ctx)
    return YMap(ctx.pos, [("soft", single, ctx.pos), ("hard", single, ctx.pos)])


def _extra_hosts(value: Any, ctx: Ctx) -> YList:
    """To "host:ip" strings; accepts "host:ip", "host=ip" and a host -> ip(s) mapping."""
    out = YList(getattr(value, "pos", ctx.pos))
    if isinstance(value, YMap):
        for host, ips in value.items():
            sub = ctx.at(host, value.pos_of(host))
            for ip in StrOrList().check(ips, sub):
                out.add(f"{host}:{ip}", sub.pos)
        return out
    if isinstance(value, YList):
        for index, item in enumerate(value):
            sub = ctx.at(index, value.pos_of(index))
            if not isinstance(item, str):
                raise sub.expected('a "host:ip" string', item)
            host, sep, ip = item.partition("=")
            if not sep:
                host, sep, ip = item.partition(":")
            if not sep or not host or not ip:
                raise sub.expected('a "host:ip" string', item)
            out.add(f"{host}:{ip}", sub.pos)
        return out
    raise ctx.expected('a list of "host:ip" strings or a mapping', value)


_ENV_FILE_LONG = Map({"path": Str(nonempty=True), "required": Bool(), "format": Ignored()}, required=("path",))


def _env_file(value: Any, ctx: Ctx) -> YList:
    items = value if isinstance(value, YList) else YList(ctx.pos, [(value, ctx.pos)])
    out = YList(items.pos)
    for index, item in enumerate(items):
        sub = ctx.at(index, items.pos_of(index)) if isinstance(value, YList) else ctx
        if isinstance(item, str):
            entry = YMap(sub.pos, [("path", item, sub.pos), ("required", True, sub.pos)])
        elif isinstance(item, YMap):
            entry = _ENV_FILE_LONG.check(item, sub)
            entry.setdefault("required", True)
        else:
            raise sub.expected("a path or a mapping with path", item)
        out.add(entry, sub.pos)
    return out


def _health_test(value: Any, ctx: Ctx) -> YList:
    if isinstance(value, str):
        return YList(ctx.pos, [("CMD-SHELL", ctx.pos), (value, ctx.pos)])
    test = ListOf(Str()).check(value, ctx)
    if not test:
        raise ctx.fail('must not be empty (use ["NONE"] or disable: true to turn the check off)')
    if test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        raise ctx.at(0, test.pos_of(0)).fail(f'must start with "CMD", "CMD-SHELL" or "NONE", got {test[0]!r}')
    return test


def _version(value: Any, ctx: Ctx) -> Any:
    text = scalar_text(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
    if text is None or not re.fullmatch(r"3(\.\d+)?", text.strip()):
        raise ctx.fail(f"unsupported version {describe(value)}: stack deploy takes version 3.x files or files without a version")
    return DROP


# ---------------------------------------------------------------- service

_UPDATE_FIELDS = {
    "parallelism": Int(0),
    "delay": Duration(),
    "monitor": Duration(),
    "max_failure_ratio": Float(0, 1),
    "order": Enum("stop-first", "start-first"),
}

DEPLOY = Map({
    "mode": Enum("replicated", "global", "replicated-job", "global-job"),
    "replicas": Int(0),
    "labels": ListOrDict(),
    "endpoint_mode": Enum("vip", "dnsrr"),
    "update_config": Map({**_UPDATE_FIELDS, "failure_action": Enum("continue", "pause", "rollback")}),
    "rollback_config": Map({**_UPDATE_FIELDS, "failure_action": Enum("continue", "pause")}),
    "resources": Map({
        "limits": Map({"cpus": Cpus(), "memory": Size(), "pids": Int(0)}),
        "reservations": Map({
            "cpus": Cpus(),
            "memory": Size(),
            "generic_resources": ListOf(Map({
                "discrete_resource_spec": Map({"kind": Str(nonempty=True), "value": Int(0)}, required=("kind", "value")),
            }, required=("discrete_resource_spec",))),
            "devices": Ignored(),
        }),
    }),
    "restart_policy": Map({
        "condition": Enum("none", "on-failure", "any"),
        "delay": Duration(),
        "max_attempts": Int(0),
        "window": Duration(),
    }),
    "placement": Map({
        "constraints": ListOf(Str(nonempty=True), unique=True),
        "preferences": ListOf(Map({"spread": Str(nonempty=True)}, required=("spread",))),
        "max_replicas_per_node": Int(0),
    }),
}, none_as_empty=True)

HEALTHCHECK = Map({
    "test": Custom(_health_test, "a command string or list"),
    "interval": Duration(),
    "timeout": Duration(),
    "start_period": Duration(),
    "start_interval": Duration(),
    "retries": Int(0),
    "disable": Bool(),
})

_RESOURCE_ADVICE = "set resource limits under deploy.resources"

SERVICE_FIELDS: dict[str, Type] = {
    # Converted into the service spec.
    "image": Str(nonempty=True),
    "command": Command(),
    "entrypoint": Command(),
    "environment": ListOrDict(allow_nil=True),
    "env_file": Custom(_env_file, "a path or a list of paths"),
    "labels": ListOrDict(),
    "deploy": DEPLOY,
    "healthcheck": HEALTHCHECK,
    "ports": Custom(_ports, "a list of ports"),
    "networks": Custom(_service_networks, "a list or mapping of networks"),
    "volumes": ListOf(Custom(_volume_entry, "a volume")),
    "secrets": ListOf(Custom(_file_ref, "a secret")),
    "configs": ListOf(Custom(_file_ref, "a config")),
    "user": Str(numbers=True),
    "working_dir": Str(),
    "hostname": Str(),
    "stop_grace_period": Duration(),
    "stop_signal": Str(nonempty=True),
    "init": Bool(),
    "read_only": Bool(),
    "tty": Bool(),
    "stdin_open": Bool(),
    "tmpfs": StrOrList(Custom(_tmpfs_entry, "a tmpfs path")),
    "ulimits": Map(other=Custom(_ulimit, "a number or soft/hard"), key_pattern=r"^[a-z]+$", key_what="ulimit", extensions=False),
    "sysctls": ListOrDict(),
    "extra_hosts": Custom(_extra_hosts, 'a list of "host:ip"'),
    "dns": StrOrList(),
    "dns_search": StrOrList(),
    "dns_opt": ListOf(Str()),
    "cap_add": ListOf(Str(nonempty=True)),
    "cap_drop": ListOf(Str(nonempty=True)),
    "group_add": ListOf(Str(numbers=True)),
    "logging": Map({"driver": Str(nonempty=True), "options": Map(other=Nullable(Custom(_scalar_str)), extensions=False)}),
    "isolation": Enum("default", "process", "hyperv"),
    # Refused by docker stack deploy, with its advice.
    "extends": Forbidden("support for extends is not implemented; merge files with several -c options instead"),
    "volumes_from": Forbidden("share a volume by defining it under the top-level volumes key and listing it in each service"),
    "cpu_quota": Forbidden(_RESOURCE_ADVICE),
    "cpu_shares": Forbidden(_RESOURCE_ADVICE),
    "cpuset": Forbidden(_RESOURCE_ADVICE),
    "mem_limit": Forbidden(_RESOURCE_ADVICE),
    "memswap_limit": Forbidden(_RESOURCE_ADVICE),
    "volume_driver": Forbidden("define the volume under the top-level volumes key with its driver"),
}

# Compose keys that swarm mode has no use for; docker stack deploy prints them as
# "Ignoring unsupported options" and goes on.
IGNORED_SERVICE_KEYS = (
    "annotations", "attach", "blkio_config", "build", "cgroup", "cgroupns_mode", "cgroup_parent",
    "container_name", "cpu_count", "cpu_percent", "cpu_period", "cpu_rt_period", "cpu_rt_runtime",
    "cpus", "credential_spec", "depends_on", "develop", "device_cgroup_rules", "devices", "domainname",
    "expose", "external_links", "gpus", "ipc", "label_file", "links", "mac_address", "mem_reservation",
    "mem_swappiness", "models", "network_mode", "oom_kill_disable", "oom_score_adj", "pid", "pids_limit",
    "platform", "post_start", "pre_stop", "privileged", "profiles", "provider", "pull_policy",
    "pull_refresh_after", "restart", "runtime", "scale", "security_opt", "shm_size", "storage_opt",
    "use_api_socket", "userns_mode", "uts",
)
for _key in IGNORED_SERVICE_KEYS:
    SERVICE_FIELDS[_key] = Ignored()

# `restart` is reported as ignored like docker does, yet, again like docker, it is the
# fallback restart policy when deploy.restart_policy is absent; keep its value.
def _restart(value: Any, ctx: Ctx) -> str:
    ctx.report.ignored.append(ctx.parts)
    return Str().check(value, ctx)


SERVICE_FIELDS["restart"] = Custom(_restart, "a restart policy")

SERVICE = Map(SERVICE_FIELDS, none_as_empty=True)


# ---------------------------------------------------------------- top-level objects

def _external(value: Any, ctx: Ctx) -> YMap:
    if isinstance(value, YMap):
        spec = Map({"name": Str(nonempty=True)}).check(value, ctx)
        return YMap(ctx.pos, [("external", True, ctx.pos)] + ([("name", spec["name"], spec.pos_of("name"))] if "name" in spec else []))
    return YMap(ctx.pos, [("external", Bool().check(value, ctx), ctx.pos)])


def _with_external(base: Map, kind: str, allowed_with_external: tuple[str, ...] = ("name",)):
    """Wraps an object schema so `external` becomes a bool plus the object's name."""

    def check(value: Any, ctx: Ctx) -> YMap:
        obj = base.check(value, ctx)
        ext = obj.pop("external", None)
        if ext is None or not ext["external"]:
            obj.put("external", False, ctx.pos)
            return obj
        for key in obj:
            if key not in allowed_with_external:
                raise ctx.at(key, obj.pos_of(key)).fail(f'an external {kind} cannot set "{key}"')
        if "name" in ext:
            if "name" in obj:
                raise ctx.at("external", ext.pos).fail(f"{kind}.external.name and {kind}.name conflict; use {kind}.name only")
            obj.put("name", ext["name"], ext.pos_of("name"))
        obj.put("external", True, ext.pos)
        return obj

    return Custom(check, f"a {kind} definition", accepts_none=base.accepts_none)


_IPAM_CONFIG = Map({
    "subnet": Str(nonempty=True),
    "ip_range": Str(),
    "gateway": Str(),
    "aux_addresses": Map(other=Str(), extensions=False),
})

NETWORK = _with_external(Map({
    "name": Str(nonempty=True),
    "driver": Str(nonempty=True),
    "driver_opts": _str_map(),
    "ipam": Map({"driver": Str(), "config": ListOf(_IPAM_CONFIG), "options": Map(other=Str(), extensions=False)}),
    "external": Custom(_external, "true, false or a mapping", accepts_none=False),
    "internal": Bool(),
    "attachable": Bool(),
    "enable_ipv6": Bool(),
    "enable_ipv4": Ignored(),
    "labels": ListOrDict(),
}, none_as_empty=True), "network")

VOLUME = _with_external(Map({
    "name": Str(nonempty=True),
    "driver": Str(nonempty=True),
    "driver_opts": _str_map(),
    "external": Custom(_external, "true, false or a mapping"),
    "labels": ListOrDict(),
}, none_as_empty=True), "volume")

SECRET = _with_external(Map({
    "name": Str(nonempty=True),
    "file": Str(nonempty=True),
    "environment": Str(nonempty=True),
    "external": Custom(_external, "true, false or a mapping"),
    "labels": ListOrDict(),
    "driver": Str(nonempty=True),
    "driver_opts": _str_map(),
    "template_driver": Str(nonempty=True),
}), "secret")

CONFIG = _with_external(Map({
    "name": Str(nonempty=True),
    "file": Str(nonempty=True),
    "content": Str(),
    "environment": Str(nonempty=True),
    "external": Custom(_external, "true, false or a mapping"),
    "labels": ListOrDict(),
    "template_driver": Str(nonempty=True),
}), "config")

ROOT = Map({
    "version": Custom(_version, "a version"),
    "name": Ignored(),
    "services": Map(other=SERVICE, key_pattern=NAME_PATTERN, key_what="service", extensions=False, none_as_empty=True),
    "networks": Map(other=NETWORK, key_pattern=NAME_PATTERN, key_what="network", extensions=False, none_as_empty=True),
    "volumes": Map(other=VOLUME, key_pattern=NAME_PATTERN, key_what="volume", extensions=False, none_as_empty=True),
    "secrets": Map(other=SECRET, key_pattern=NAME_PATTERN, key_what="secret", extensions=False, none_as_empty=True),
    "configs": Map(other=CONFIG, key_pattern=NAME_PATTERN, key_what="config", extensions=False, none_as_empty=True),
    "include": Forbidden("include is not supported; pass each file with its own -c option"),
    "models": Ignored(),
})
