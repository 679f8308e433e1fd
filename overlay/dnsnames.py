"""Which names a network's containers resolve, and to what: pure functions.

Swarm's rules: `<service>` answers the service's VIP (endpoint mode vip) or all its task IPs
(dnsrr); `tasks.<service>` answers all task IPs; a stack's service answers both as
`<stack>_<service>` and as `<service>`; network aliases answer like the service name, and
`tasks.<alias>` like `tasks.<service>`; a task's own name answers its address.
"""
from __future__ import annotations

from overlay.model import ServiceDNS

Records = dict[str, tuple[str, ...]]


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def service_records(services: list[ServiceDNS]) -> Records:
    acc: dict[str, list[str]] = {}

    def add(name: str, ips: tuple[str, ...]) -> None:
        bucket = acc.setdefault(_norm(name), [])
        bucket.extend(ip for ip in ips if ip not in bucket)

    for s in services:
        names = [s.name]
        if s.stack:
            short = s.name[len(s.stack) + 1:] if s.name.startswith(s.stack + "_") else s.name
            names += [f"{s.stack}_{short}", short]
        names += list(s.aliases)
        front = (s.vip,) if s.endpoint_mode == "vip" and s.vip else s.task_ips
        for n in dict.fromkeys(names):
            add(n, front)
            add(f"tasks.{n}", s.task_ips)
        for task_name, ip in s.task_names:
            add(task_name, (ip.split("/")[0],))
    return {k: tuple(v) for k, v in acc.items()}


def lookup(name: str, views: list[Records]) -> tuple[str, ...] | None:
    """The addresses of name in the first view that knows it; None when no view does (the
    query then goes upstream). An empty tuple is a known name with no address now."""
    key = _norm(name)
    for view in views:
        if key in view:
            return view[key]
    return None
