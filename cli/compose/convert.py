"""Compose (validated, merged) -> Docker Engine API objects, as `docker stack deploy` builds them.

Names and shapes follow the swarm API (ServiceSpec, TaskSpec, ContainerSpec, ...).
Fields the file does not set are left out, the way Go's omitempty leaves them out,
except the service mode, which is always explicit.
"""
from __future__ import annotations

import base64
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from .envfile import parse_env_file
from .errors import ComposeError, Pos, render_path
from .nodes import YList, YMap

NAMESPACE_LABEL = "com.docker.stack.namespace"
IMAGE_LABEL = "com.docker.stack.image"
DEFAULT_NETWORK = "default"
DEFAULT_NETWORK_DRIVER = "overlay"
DEFAULT_FILE_MODE = 0o444
_NON_ALIASABLE = ("host", "bridge", "none")


@dataclass
class StackPlan:
    """Everything `stack deploy` needs, keyed by the engine-side name of each object."""

    services: list[dict] = field(default_factory=list)  # ServiceSpec dicts, sorted by Name
    networks: dict[str, dict] = field(default_factory=dict)
    secrets: dict[str, dict] = field(default_factory=dict)
    configs: dict[str, dict] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Stack:
    name: str
    root: YMap
    workdir: str
    env: Mapping[str, str]

    def scope(self, name: str) -> str:
        return f"{self.name}_{name}"

    def section(self, key: str) -> YMap:
        value = self.root.get(key)
        return value if isinstance(value, YMap) else YMap(self.root.pos)


def _fail(node: YMap | YList, key: str | int, parts: tuple, reason: str) -> ComposeError:
    return ComposeError(reason, node.pos_of(key), render_path(parts + (key,)))


def _labels(stack: _Stack, labels: Any) -> dict[str, str]:
    out = dict(labels or {})
    out[NAMESPACE_LABEL] = stack.name
    return out


def _set(target: dict, key: str, value: Any) -> None:
    """Sets key only for values Go's omitempty would keep."""
    if value is None or value == [] or value == {} or value == "":
        return
    target[key] = value


def convert_stack(root: YMap, stack_name: str, workdir: str, env: Mapping[str, str]) -> StackPlan:
    stack = _Stack(stack_name, root, workdir, env)
    services = stack.section("services")
    if not services:
        raise ComposeError("a stack needs at least one service", root.pos_of("services"), "services")
    plan = StackPlan()
    used_networks: dict[str, Pos] = {}
    for name in sorted(services):
        plan.services.append(_service(stack, name, services[name], services.pos_of(name), used_networks))
    plan.networks = _networks(stack, used_networks)
    plan.secrets = _file_objects(stack, "secrets")
    plan.configs = _file_objects(stack, "configs")
    return plan


# ---------------------------------------------------------------- services

def _service(stack: _Stack, name: str, svc: YMap, pos: Pos, used_networks: dict[str, Pos]) -> dict:
    parts = ("services", name)
    image = svc.get("image")
    if not image:
        raise ComposeError("image is required (stack deploy runs images, it does not build them)", pos, render_path(parts))

    container: dict[str, Any] = {"Image": image, "Labels": _labels(stack, svc.get("labels"))}
    _set(container, "Command", list(svc.get("entrypoint") or []))
    _set(container, "Args", list(svc.get("command") or []))
    _set(container, "Hostname", svc.get("hostname"))
    _set(container, "Env", _environment(stack, svc, parts))
    _set(container, "Dir", svc.get("working_dir"))
    _set(container, "User", svc.get("user"))
    _set(container, "Groups", list(svc.get("group_add") or []))
    if svc.get("tty"):
        container["TTY"] = True
    if svc.get("stdin_open"):
        container["OpenStdin"] = True
    if svc.get("read_only"):
        container["ReadOnly"] = True
    _set(container, "Mounts", _mounts(stack, svc, parts))
    _set(container, "StopSignal", svc.get("stop_signal"))
    if "stop_grace_period" in svc:
        container["StopGracePeriod"] = svc["stop_grace_period"]
    if "healthcheck" in svc:
        container["HealthCheck"] = _healthcheck(svc["healthcheck"], parts + ("healthcheck",))
    _set(container, "Hosts", [f"{ip} {host}" for host, _, ip in (h.partition(":") for h in svc.get("extra_hosts") or [])])
    _set(container, "DNSConfig", _dns(svc, parts))
    _set(container, "Secrets", _file_refs(stack, svc, parts, "secrets"))
    _set(container, "Configs", _file_refs(stack, svc, parts, "configs"))
    _set(container, "Isolation", svc.get("isolation"))
    if "init" in svc:
        container["Init"] = svc["init"]
    _set(container, "Sysctls", dict(svc.get("sysctls") or {}))
    cap_add, cap_drop = _capabilities(svc.get("cap_add") or [], svc.get("cap_drop") or [])
    _set(container, "CapabilityAdd", cap_add)
    _set(container, "CapabilityDrop", cap_drop)
    _set(container, "Ulimits", [
        {"Name": n, "Soft": u["soft"], "Hard": u["hard"]} for n, u in sorted((svc.get("ulimits") or {}).items())
    ])

    deploy: YMap = svc.get("deploy") or YMap(svc.pos)
    dparts = parts + ("deploy",)
    task: dict[str, Any] = {"ContainerSpec": container}
    _set(task, "Resources", _resources(deploy.get("resources")))
    _set(task, "RestartPolicy", _restart_policy(svc, deploy, parts))
    _set(task, "Placement", _placement(deploy.get("placement")))
    task["Networks"] = _service_networks(stack, name, svc, parts, used_networks)
    if "logging" in svc:
        logging = svc["logging"]
        log_driver: dict[str, Any] = {}
        _set(log_driver, "Name", logging.get("driver"))
        _set(log_driver, "Options", {k: "" if v is None else v for k, v in (logging.get("options") or {}).items()})
        _set(task, "LogDriver", log_driver)

    spec: dict[str, Any] = {
        "Name": stack.scope(name),
        "Labels": {**_labels(stack, deploy.get("labels")), IMAGE_LABEL: image},
        "TaskTemplate": task,
        "Mode": _mode(deploy, dparts),
    }
    if "update_config" in deploy:
        spec["UpdateConfig"] = _update_config(deploy["update_config"])
    if "rollback_config" in deploy:
        spec["RollbackConfig"] = _update_config(deploy["rollback_config"])
    endpoint = _endpoint(svc, deploy, parts)
    _set(spec, "EndpointSpec", endpoint)
    return spec


def _environment(stack: _Stack, svc: YMap, parts: tuple) -> list[str]:
    """env_file entries first, then environment; a key without a value (or empty) takes
    its value from the deploying environment when that has it, as docker does."""
    values: dict[str, str | None] = {}

    def update(pairs) -> None:
        for key, value in pairs:
            if (value is None or value == "") and key in stack.env:
                values[key] = stack.env[key]
            else:
                values[key] = value

    env_files: YList = svc.get("env_file") or YList(svc.pos)
    for index, entry in enumerate(env_files):
        path = _host_path(stack, entry["path"])
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            if not entry.get("required", True):
                continue
            raise _fail(env_files, index, parts + ("env_file",), f'env file "{path}" does not exist') from None
        except (OSError, UnicodeDecodeError) as exc:
            raise _fail(env_files, index, parts + ("env_file",), f'cannot read env file "{path}": {exc}') from None
        try:
            update(parse_env_file(text, stack.env))
        except ValueError as exc:
            raise _fail(env_files, index, parts + ("env_file",), f'env file "{path}": {exc}') from None
    update((svc.get("environment") or {}).items())
    return sorted(key if value is None else f"{key}={value}" for key, value in values.items())


def _healthcheck(hc: YMap, parts: tuple) -> dict:
    if hc.get("disable"):
        if "test" in hc and list(hc["test"]) != ["NONE"]:
            raise _fail(hc, "disable", parts, "test and disable cannot be set at the same time")
        return {"Test": ["NONE"]}
    out: dict[str, Any] = {}
    _set(out, "Test", list(hc.get("test") or []))
    for key, api in (("interval", "Interval"), ("timeout", "Timeout"), ("retries", "Retries"),
                     ("start_period", "StartPeriod"), ("start_interval", "StartInterval")):
        if key in hc:
            out[api] = hc[key]
    return out


def _dns(svc: YMap, parts: tuple) -> dict:
    servers: YList = svc.get("dns") or YList(svc.pos)
    for index, server in enumerate(servers):
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise _fail(servers, index, parts + ("dns",), f'"{server}" is not an IP address') from None
    out: dict[str, Any] = {}
    _set(out, "Nameservers", list(servers))
    _set(out, "Search", list(svc.get("dns_search") or []))
    _set(out, "Options", list(svc.get("dns_opt") or []))
    return out


def _capabilities(add: list[str], drop: list[str]) -> tuple[list[str], list[str]]:
    """Canonical names (CAP_ prefix, upper case); ALL absorbs the rest; add wins over drop."""

    def normalize(caps: list[str]) -> set[str]:
        out = set()
        for cap in caps:
            cap = cap.strip().upper()
            out.add(cap if cap == "ALL" or cap.startswith("CAP_") else "CAP_" + cap)
        return {"ALL"} if "ALL" in out else out

    added, dropped = normalize(add), normalize(drop)
    dropped -= added
    return sorted(added), sorted(dropped)


def _resources(resources: YMap | None) -> dict:
    if not resources:
        return {}
    out: dict[str, Any] = {}
    limits = resources.get("limits")
    if limits is not None:
        limit: dict[str, Any] = {}
        for key, api in (("cpus", "NanoCPUs"), ("memory", "MemoryBytes"), ("pids", "Pids")):
            if key in limits:
                limit[api] = limits[key]
        out["Limits"] = limit
    reservations = resources.get("reservations")
    if reservations is not None:
        reserve: dict[str, Any] = {}
        for key, api in (("cpus", "NanoCPUs"), ("memory", "MemoryBytes")):
            if key in reservations:
                reserve[api] = reservations[key]
        _set(reserve, "GenericResources", [
            {"DiscreteResourceSpec": {"Kind": g["discrete_resource_spec"]["kind"], "Value": g["discrete_resource_spec"]["value"]}}
            for g in reservations.get("generic_resources") or []
        ])
        out["Reservations"] = reserve
    return out


_LEGACY_RESTART = {"always": "any", "unless-stopped": "any", "no": "none", "on-failure": "on-failure"}


def _restart_policy(svc: YMap, deploy: YMap, parts: tuple) -> dict:
    policy = deploy.get("restart_policy")
    if policy is not None:
        out: dict[str, Any] = {}
        _set(out, "Condition", policy.get("condition"))
        for key, api in (("delay", "Delay"), ("max_attempts", "MaxAttempts"), ("window", "Window")):
            if key in policy:
                out[api] = policy[key]
        return out
    legacy = svc.get("restart")
    if legacy is None:
        return {}
    # Docker falls back to the container-style `restart:` when deploy.restart_policy is absent.
    name, _, count = legacy.partition(":")
    if name not in _LEGACY_RESTART or (count and (name != "on-failure" or not count.isdigit())):
        raise _fail(svc, "restart", parts, f'invalid restart policy "{legacy}" (use no, always, on-failure[:N] or unless-stopped)')
    out = {"Condition": _LEGACY_RESTART[name]}
    if count and int(count) > 0:
        out["MaxAttempts"] = int(count)
    return out


def _placement(placement: YMap | None) -> dict:
    if not placement:
        return {}
    out: dict[str, Any] = {}
    _set(out, "Constraints", list(placement.get("constraints") or []))
    _set(out, "Preferences", [{"Spread": {"SpreadDescriptor": p["spread"]}} for p in placement.get("preferences") or []])
    if "max_replicas_per_node" in placement:
        out["MaxReplicas"] = placement["max_replicas_per_node"]
    return out


def _mode(deploy: YMap, parts: tuple) -> dict:
    mode = deploy.get("mode", "replicated")
    replicas = deploy.get("replicas")
    if mode in ("global", "global-job"):
        if replicas is not None:
            raise _fail(deploy, "replicas", parts, f"replicas can only be used with replicated modes, not {mode}")
        if (deploy.get("placement") or {}).get("max_replicas_per_node") is not None:
            raise _fail(deploy, "placement", parts, f"max_replicas_per_node can only be used with replicated modes, not {mode}")
        return {"Global": {}} if mode == "global" else {"GlobalJob": {}}
    count = 1 if replicas is None else replicas
    if mode == "replicated-job":
        return {"ReplicatedJob": {"MaxConcurrent": count, "TotalCompletions": count}}
    return {"Replicated": {"Replicas": count}}


def _update_config(config: YMap) -> dict:
    out: dict[str, Any] = {"Parallelism": config.get("parallelism", 1)}
    for key, api in (("delay", "Delay"), ("failure_action", "FailureAction"), ("monitor", "Monitor"),
                     ("max_failure_ratio", "MaxFailureRatio"), ("order", "Order")):
        if key in config:
            out[api] = config[key]
    return out


def _endpoint(svc: YMap, deploy: YMap, parts: tuple) -> dict:
    ports = []
    for port in svc.get("ports") or []:
        entry: dict[str, Any] = {"Protocol": port["protocol"], "TargetPort": port["target"]}
        if "published" in port:
            entry["PublishedPort"] = port["published"]
        entry["PublishMode"] = port["mode"]
        _set(entry, "Name", port.get("name"))
        ports.append(entry)
    ports.sort(key=lambda p: (p.get("PublishedPort", 0), p["TargetPort"], p["Protocol"], p["PublishMode"]))
    mode = deploy.get("endpoint_mode")
    if mode == "dnsrr" and any(p["PublishMode"] == "ingress" for p in ports):
        raise _fail(deploy, "endpoint_mode", parts + ("deploy",),
                    'dnsrr cannot be used with ports published in ingress mode (publish with mode: host)')
    out: dict[str, Any] = {}
    _set(out, "Mode", mode)
    _set(out, "Ports", ports)
    return out


# ---------------------------------------------------------------- references to top-level objects

def _object_name(stack: _Stack, key: str, decl: YMap) -> str:
    if decl.get("name"):
        return decl["name"]
    return key if decl.get("external") else stack.scope(key)


def _service_networks(stack: _Stack, service: str, svc: YMap, parts: tuple, used: dict[str, Pos]) -> list[dict]:
    networks: YMap = svc.get("networks") or YMap(svc.pos, [(DEFAULT_NETWORK, YMap(svc.pos), svc.pos)])
    declared = stack.section("networks")
    out = []
    for key, attach in networks.items():
        decl = declared.get(key)
        if decl is None:
            if key != DEFAULT_NETWORK:
                raise _fail(networks, key, parts + ("networks",), f'undefined network "{key}" (declare it under the top-level networks key)')
            decl = YMap(networks.pos_of(key))
        used.setdefault(key, networks.pos_of(key))
        target = _object_name(stack, key, decl)
        entry: dict[str, Any] = {"Target": target}
        aliases = list((attach or {}).get("aliases") or [])
        if target not in _NON_ALIASABLE and service not in aliases:
            aliases.append(service)
        _set(entry, "Aliases", aliases)
        _set(entry, "DriverOpts", dict((attach or {}).get("driver_opts") or {}))
        out.append(entry)
    return sorted(out, key=lambda e: e["Target"])


def _file_refs(stack: _Stack, svc: YMap, parts: tuple, kind: str) -> list[dict]:
    refs: YList = svc.get(kind) or YList(svc.pos)
    declared = stack.section(kind)
    singular = kind[:-1]
    out = []
    for index, ref in enumerate(refs):
        source = ref["source"]
        decl = declared.get(source)
        if decl is None:
            raise _fail(refs, index, parts + (kind,), f'undefined {singular} "{source}" (declare it under the top-level {kind} key)')
        entry = {
            "File": {
                "Name": ref.get("target", source),
                "UID": ref.get("uid", "0"),
                "GID": ref.get("gid", "0"),
                "Mode": ref.get("mode", DEFAULT_FILE_MODE),
            },
            f"{singular.capitalize()}Name": _object_name(stack, source, decl),
        }
        out.append(entry)
    name_key = f"{singular.capitalize()}Name"
    return sorted(out, key=lambda e: e[name_key])


def _mounts(stack: _Stack, svc: YMap, parts: tuple) -> list[dict]:
    volumes: YList = svc.get("volumes") or YList(svc.pos)
    declared = stack.section("volumes")
    mounts = []
    for index, vol in enumerate(volumes):
        kind = vol["type"]
        mount: dict[str, Any] = {"Type": kind}
        source = vol.get("source")
        if kind == "volume" and source:
            decl = declared.get(source)
            if decl is None:
                raise _fail(volumes, index, parts + ("volumes",), f'undefined volume "{source}" (declare it under the top-level volumes key, or use a path starting with ./ or / for a bind mount)')
            mount["Source"] = _object_name(stack, source, decl)
        elif kind == "bind":
            mount["Source"] = _host_path(stack, source)
        mount["Target"] = vol["target"]
        if vol.get("read_only"):
            mount["ReadOnly"] = True
        _set(mount, "Consistency", vol.get("consistency"))
        if kind == "bind" and "bind" in vol:
            _set(mount, "BindOptions", {k: v for k, v in (("Propagation", vol["bind"].get("propagation")),) if v})
        if kind == "volume" and source:
            options: dict[str, Any] = {}
            if (vol.get("volume") or {}).get("nocopy"):
                options["NoCopy"] = True
            decl = declared[source]
            if not decl.get("external"):
                options["Labels"] = _labels(stack, decl.get("labels"))
                if decl.get("driver") or decl.get("driver_opts"):
                    driver: dict[str, Any] = {}
                    _set(driver, "Name", decl.get("driver"))
                    _set(driver, "Options", dict(decl.get("driver_opts") or {}))
                    options["DriverConfig"] = driver
            _set(mount, "VolumeOptions", options)
        elif kind == "volume" and (vol.get("volume") or {}).get("nocopy"):
            mount["VolumeOptions"] = {"NoCopy": True}
        if kind == "tmpfs" and "tmpfs" in vol:
            tmpfs: dict[str, Any] = {}
            for key, api in (("size", "SizeBytes"), ("mode", "Mode")):
                if key in vol["tmpfs"]:
                    tmpfs[api] = vol["tmpfs"][key]
            _set(mount, "TmpfsOptions", tmpfs)
        mounts.append(mount)
    for entry in svc.get("tmpfs") or []:
        mount = {"Type": "tmpfs", "Target": entry["target"]}
        if entry.get("read_only"):
            mount["ReadOnly"] = True
        tmpfs = {api: entry[key] for key, api in (("size", "SizeBytes"), ("mode", "Mode")) if key in entry}
        _set(mount, "TmpfsOptions", tmpfs)
        mounts.append(mount)
    return mounts


def _host_path(stack: _Stack, source: str) -> str:
    """A path on the deploying host: ~ from the given HOME, relative to the first file's directory."""
    if source == "~" or source.startswith("~/"):
        home = stack.env.get("HOME")
        if home:
            source = home + source[1:]
    return os.path.normpath(os.path.join(stack.workdir, source))


# ---------------------------------------------------------------- top-level objects

def _networks(stack: _Stack, used: dict[str, Pos]) -> dict[str, dict]:
    declared = stack.section("networks")
    out: dict[str, dict] = {}
    for key in sorted(used):
        decl = declared.get(key) or YMap(used[key])
        name = _object_name(stack, key, decl)
        if decl.get("external"):
            out[name] = {"Name": name, "External": True}
            continue
        net: dict[str, Any] = {
            "Name": name,
            "Labels": _labels(stack, decl.get("labels")),
            "Driver": decl.get("driver", DEFAULT_NETWORK_DRIVER),
        }
        _set(net, "Options", dict(decl.get("driver_opts") or {}))
        for flag, api in (("internal", "Internal"), ("attachable", "Attachable"), ("enable_ipv6", "EnableIPv6")):
            if decl.get(flag):
                net[api] = True
        ipam = decl.get("ipam")
        if ipam:
            ipam_out: dict[str, Any] = {}
            _set(ipam_out, "Driver", ipam.get("driver"))
            configs = []
            for cfg in ipam.get("config") or []:
                entry: dict[str, Any] = {}
                for key2, api in (("subnet", "Subnet"), ("ip_range", "IPRange"), ("gateway", "Gateway")):
                    _set(entry, api, cfg.get(key2))
                _set(entry, "AuxiliaryAddresses", dict(cfg.get("aux_addresses") or {}))
                configs.append(entry)
            _set(ipam_out, "Config", configs)
            _set(ipam_out, "Options", dict(ipam.get("options") or {}))
            _set(net, "IPAM", ipam_out)
        net["External"] = False
        out[name] = net
    return out


def _file_objects(stack: _Stack, kind: str) -> dict[str, dict]:
    """Secrets or configs to create. Data from `file` is not read here: "File" carries the
    absolute path; data from `environment` or `content` is given base64 in "Data"."""
    declared = stack.section(kind)
    singular = kind[:-1]
    out: dict[str, dict] = {}
    for key in sorted(declared):
        decl = declared[key]
        parts = (kind, key)
        name = _object_name(stack, key, decl)
        if decl.get("external"):
            out[name] = {"Name": name, "External": True}
            continue
        obj: dict[str, Any] = {"Name": name, "Labels": _labels(stack, decl.get("labels"))}
        sources = [s for s in ("file", "environment", "content") if s in decl]
        if len(sources) > 1:
            raise _fail(decl, sources[1], parts, f"{sources[0]} and {sources[1]} cannot both be set; choose one source")
        if "file" in decl:
            if decl.get("driver"):
                raise _fail(decl, "file", parts, "file and driver cannot both be set; choose one source")
            obj["File"] = _host_path(stack, decl["file"])
        elif "environment" in decl:
            var = decl["environment"]
            if var not in stack.env:
                raise _fail(decl, "environment", parts, f'environment variable "{var}" is not set')
            obj["Data"] = base64.b64encode(stack.env[var].encode()).decode("ascii")
        elif "content" in decl:
            obj["Data"] = base64.b64encode(decl["content"].encode()).decode("ascii")
        elif not decl.get("driver"):
            raise ComposeError(f"a {singular} needs file, environment{', content' if kind == 'configs' else ''} or external",
                               declared.pos_of(key), render_path(parts))
        if decl.get("driver"):
            driver: dict[str, Any] = {"Name": decl["driver"]}
            _set(driver, "Options", dict(decl.get("driver_opts") or {}))
            obj["Driver"] = driver
        if decl.get("template_driver"):
            obj["Templating"] = {"Name": decl["template_driver"]}
        obj["External"] = False
        out[name] = obj
    return out
