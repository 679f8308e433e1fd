"""Checks of the TaskSpec fields that shape a container's surroundings on its node: sysctls,
extra /etc/hosts lines, DNS, supplementary groups, isolation and the log driver. Pure; each
error names the field.

They are checked here, before the spec enters the log, so that a bad value is refused at
`service create` / `stack deploy` rather than rejecting every task on every node.
"""
from __future__ import annotations

import ipaddress
import re

from api.groups import check_group
from api.logdriver import log_settings
from api.objects import TaskSpec
from api.sysctls import check_sysctl

_HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$")
_RESOLV_WORD = re.compile(r"^[\x21-\x7e]{1,253}$")  # one printable word: a resolv.conf line is split on blanks
CS = "TaskTemplate.ContainerSpec"


def check_run_fields(tt: TaskSpec) -> None:
    """ValueError naming the first bad field (manager.validation turns it into a SpecError)."""
    cs = tt.container_spec
    for key in sorted(cs.sysctls):
        try:
            check_sysctl(key, cs.sysctls[key])
        except ValueError as exc:
            raise ValueError(f"{CS}.Sysctls: {exc}") from None
    for i, line in enumerate(cs.hosts):
        check_hosts_line(line, f"{CS}.Hosts[{i}]")
    if cs.dns_config is not None:
        for i, server in enumerate(cs.dns_config.nameservers):
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise ValueError(f"{CS}.DNSConfig.Nameservers[{i}]: {server!r} is not an IP address") from None
        for field, values in (("Search", cs.dns_config.search), ("Options", cs.dns_config.options)):
            for i, value in enumerate(values):
                if not _RESOLV_WORD.match(value):
                    raise ValueError(f"{CS}.DNSConfig.{field}[{i}]: {value!r} must be one word without spaces")
    for i, group in enumerate(cs.groups):
        try:
            check_group(group)
        except ValueError as exc:
            raise ValueError(f"{CS}.Groups[{i}]: {exc}") from None
    if cs.isolation not in ("", "default"):
        raise ValueError(f"{CS}.Isolation: only default is supported on Linux, got {cs.isolation!r}")
    try:
        log_settings(tt.log_driver)
    except ValueError as exc:
        raise ValueError(f"TaskTemplate.LogDriver.{exc}") from None


def check_hosts_line(line: str, where: str) -> None:
    """Docker's wire format: "IP HOST [ALIAS...]", as in hosts(5)."""
    words = line.split()
    if len(words) < 2:
        raise ValueError(f'{where}: {line!r} must be "IP HOSTNAME [ALIAS...]"')
    try:
        ipaddress.ip_address(words[0])
    except ValueError:
        raise ValueError(f"{where}: {words[0]!r} is not an IP address (the format is \"IP HOSTNAME\")") from None
    for name in words[1:]:
        if not _HOST_NAME.match(name):
            raise ValueError(f"{where}: {name!r} is not a host name")
