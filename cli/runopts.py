"""The `service create` / `service update` flags for what surrounds a task's container on its
node: sysctls, extra /etc/hosts lines, DNS, isolation and the log driver, with Docker's names.
Pure: turns flags into ServiceSpec JSON, and checks them here so that a mistake is reported
naming the flag (the managers check the same fields again, naming the field).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Optional

from api.logdriver import log_settings
from api.objects import Driver
from api.sysctls import check_sysctl
from cli.serviceopts import set_or_drop

_DOMAIN = re.compile(r"^\.?([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.?$")


@dataclass
class RunFlags:
    """`service create`: --sysctl, --host, --dns, --dns-search, --dns-option, --log-driver,
    --log-opt, --isolation (empty / None: not given)."""
    sysctl: list[str] = field(default_factory=list)
    host: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_option: list[str] = field(default_factory=list)
    log_driver: Optional[str] = None
    log_opt: list[str] = field(default_factory=list)
    isolation: Optional[str] = None


@dataclass
class RunUpdateFlags:
    """`service update`: the -add/-rm variants, and --log-driver, --log-opt, --isolation."""
    sysctl_add: list[str] = field(default_factory=list)
    sysctl_rm: list[str] = field(default_factory=list)
    host_add: list[str] = field(default_factory=list)
    host_rm: list[str] = field(default_factory=list)
    dns_add: list[str] = field(default_factory=list)
    dns_rm: list[str] = field(default_factory=list)
    dns_search_add: list[str] = field(default_factory=list)
    dns_search_rm: list[str] = field(default_factory=list)
    dns_option_add: list[str] = field(default_factory=list)
    dns_option_rm: list[str] = field(default_factory=list)
    log_driver: Optional[str] = None
    log_opt: list[str] = field(default_factory=list)
    isolation: Optional[str] = None


# --- one flag value -------------------------------------------------------------------------

def parse_sysctl(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{flag}: {text!r} must be KEY=VALUE, e.g. net.core.somaxconn=1024")
    try:
        check_sysctl(key.strip(), value)
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None
    return key.strip(), value


def parse_host(text: str, flag: str) -> tuple[str, str]:
    """HOST:IP (or HOST=IP) -> (host, ip); IPv6 after the first colon ("db:::1") or in brackets."""
    sep = "=" if "=" in text else ":"
    host, found, ip = text.partition(sep)
    ip = ip.strip()
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if not found or not host.strip() or any(c.isspace() for c in host.strip()):
        raise ValueError(f"{flag}: {text!r} must be HOST:IP, e.g. db:10.0.0.2")
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(f"{flag}: {ip!r} in {text!r} is not an IP address") from None
    return host.strip(), ip


def check_nameserver(text: str, flag: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"{flag}: {text!r} is not an IP address") from None


def check_search(text: str, flag: str) -> str:
    if text != "." and (len(text) > 255 or not _DOMAIN.match(text)):
        raise ValueError(f"{flag}: {text!r} is not a domain name")
    return text


def check_option(text: str, flag: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{flag}: {text!r} must be one resolver option without spaces, e.g. ndots:2")
    return text


def check_isolation(text: str) -> str:
    if text not in ("", "default"):
        raise ValueError(f"--isolation: only default is supported on Linux, got {text!r}")
    return text


def log_driver(name: str, opts: list[str], current: Optional[dict] = None) -> dict:
    """LogDriver JSON: name with the --log-opt KEY=VALUE options on top of current's."""
    options = dict((current or {}).get("Options") or {})
    for item in opts:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--log-opt: {item!r} must be KEY=VALUE, e.g. max-size=10m")
        options[key] = value
    try:
        log_settings(Driver(name=name, options=options))
    except ValueError as exc:
        what, _, reason = str(exc).partition(": ")
        flag = "--log-driver" if what == "Name" else f"--log-opt {what.removeprefix('Options.')}"
        raise ValueError(f"{flag}: {reason}") from None
    out: dict = {"Name": name}
    if options:
        out["Options"] = options
    return out


# --- create and update ------------------------------------------------------------------------

def apply_create(spec: dict, f: RunFlags) -> dict:
    """spec (from serviceopts.build_spec) with the flags set."""
    task = spec.setdefault("TaskTemplate", {})
    cs = task.setdefault("ContainerSpec", {})
    set_or_drop(cs, "Sysctls", dict(parse_sysctl(s, "--sysctl") for s in f.sysctl))
    set_or_drop(cs, "Hosts", [f"{ip} {host}" for host, ip in (parse_host(h, "--host") for h in f.host)])
    set_or_drop(cs, "DNSConfig", _dns({}, f.dns, [], f.dns_search, [], f.dns_option, [], ""))
    if f.isolation is not None:
        set_or_drop(cs, "Isolation", check_isolation(f.isolation))
    if f.log_driver is not None or f.log_opt:
        task["LogDriver"] = log_driver(f.log_driver or "json-file", f.log_opt)
    return spec


def apply_update(spec: dict, f: RunUpdateFlags) -> dict:
    """spec with the update flags applied, as Docker's CLI does: -rm first, then -add."""
    task = spec.setdefault("TaskTemplate", {})
    cs = task.setdefault("ContainerSpec", {})
    if f.sysctl_add or f.sysctl_rm:
        sysctls = {k: v for k, v in (cs.get("Sysctls") or {}).items() if k not in set(f.sysctl_rm)}
        sysctls.update(parse_sysctl(s, "--sysctl-add") for s in f.sysctl_add)
        set_or_drop(cs, "Sysctls", sysctls)
    if f.host_add or f.host_rm:
        set_or_drop(cs, "Hosts", update_hosts(list(cs.get("Hosts") or []), f.host_add, f.host_rm))
    if any((f.dns_add, f.dns_rm, f.dns_search_add, f.dns_search_rm, f.dns_option_add, f.dns_option_rm)):
        set_or_drop(cs, "DNSConfig", _dns(cs.get("DNSConfig") or {}, f.dns_add, f.dns_rm, f.dns_search_add,
                                   f.dns_search_rm, f.dns_option_add, f.dns_option_rm, "-add"))
    if f.isolation is not None:
        set_or_drop(cs, "Isolation", check_isolation(f.isolation))
    if f.log_driver is not None:
        # a new driver starts from its own options, as in Docker
        task["LogDriver"] = log_driver(f.log_driver or "json-file", f.log_opt)
    elif f.log_opt:
        # Docker ignores --log-opt without --log-driver; here it changes the current driver's options
        current = task.get("LogDriver") or {}
        task["LogDriver"] = log_driver(current.get("Name") or "json-file", f.log_opt, current)
    return spec


def update_hosts(hosts: list[str], add: list[str], rm: list[str]) -> list[str]:
    """--host-rm HOST drops the name from every line, HOST:IP only from that address's lines;
    a line left without names goes. --host-add appends "IP HOST" unless it is there already."""
    drops = []
    for item in rm:
        if ":" in item or "=" in item:
            drops.append(parse_host(item, "--host-rm"))
        elif item.strip():
            drops.append((item.strip(), None))
        else:
            raise ValueError("--host-rm: must be HOST or HOST:IP")
    out = []
    for line in hosts:
        ip, *names = line.split()
        names = [n for n in names if not any(n == h and (want in (None, ip)) for h, want in drops)]
        if names:
            out.append(" ".join([ip, *names]))
    for host, ip in (parse_host(h, "--host-add") for h in add):
        if f"{ip} {host}" not in out:
            out.append(f"{ip} {host}")
    return out


def _dns(current: dict, servers: list[str], servers_rm: list[str], search: list[str], search_rm: list[str],
         options: list[str], options_rm: list[str], suffix: str) -> dict:
    """DNSConfig JSON: current's lists less the removed values, plus the new ones (in order:
    the resolver asks name servers in the order given)."""
    out: dict = {}
    for key, add, rm, check, flag in (("Nameservers", servers, servers_rm, check_nameserver, "--dns"),
                                      ("Search", search, search_rm, check_search, "--dns-search"),
                                      ("Options", options, options_rm, check_option, "--dns-option")):
        values = [v for v in current.get(key) or [] if v not in set(rm)]
        for v in add:
            v = check(v, flag + suffix)
            if v not in values:
                values.append(v)
        set_or_drop(out, key, values)
    return out
