"""Turns a task into a container configuration for the runtime."""
from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path
from dataclasses import dataclass

from api.logdriver import log_settings
from api.objects import SECOND, Task
from worker.images.store import Image, ImageStore
from worker.runtime import ContainerConfig, UserNamespace
from worker.runtime.config import Mount as RuntimeMount

DEFAULT_STOP_GRACE = 10 * SECOND


class TaskRejected(Exception):
    """The task cannot run on this node (bad image, bad spec): reported as `rejected`."""


def container_id(task_id: str) -> str:
    """Derived from the task, so a restarted daemon finds the container of each task again."""
    return hashlib.sha256(("shoal-task:" + task_id).encode()).hexdigest()


def merge_env(base: list[str], override: list[str]) -> list[str]:
    out: dict[str, str] = {}
    for item in list(base) + list(override):
        key = item.split("=", 1)[0]
        out[key] = item
    return list(out.values())


def parse_signal(name: str) -> int:
    if not name:
        return signal.SIGTERM
    if name.isdigit():
        return int(name)
    name = name.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(getattr(signal.Signals, name))
    except AttributeError:
        raise TaskRejected(f"stop_signal: unknown signal {name}") from None


@dataclass
class StopPolicy:
    signal: int
    grace_s: float


def stop_policy(task: Task, image: Image | None = None) -> StopPolicy:
    cs = task.spec.container_spec
    image_signal = (image.config.get("config") or {}).get("StopSignal", "") if image else ""
    grace = cs.stop_grace_period if cs.stop_grace_period is not None else DEFAULT_STOP_GRACE
    return StopPolicy(parse_signal(cs.stop_signal or image_signal), grace / SECOND)


def resolve_image(images: ImageStore, task: Task) -> Image:
    ref = task.spec.container_spec.image
    try:
        image = images.resolve(ref)
    except ValueError as exc:
        raise TaskRejected(str(exc)) from None
    if image is None:
        raise TaskRejected(f"No such image: {ref}")
    return image


def container_mounts(task: Task, volumes_root: Path | None,
                     userns: UserNamespace | None = None) -> list[RuntimeMount]:
    """Bind mounts as given, named volumes (local driver: a directory made on first use and
    kept after the task), tmpfs; a bad one rejects the task with the field named.

    With a user namespace, as Docker with --userns-remap: a bind is left as it is (the
    remapped root may not be allowed to write there), and a volume made now belongs to the
    remapped root, so the container's root can write to it."""
    out = []
    for i, m in enumerate(task.spec.container_spec.mounts):
        where = f"Mounts[{i}]"
        if not m.target.startswith("/"):
            raise TaskRejected(f"{where}.Target: must be an absolute path, got {m.target!r}")
        if m.type == "bind":
            if not m.source.startswith("/") or not os.path.exists(m.source):
                raise TaskRejected(f"{where}.Source: bind source path does not exist on this node: {m.source!r}")
            out.append(RuntimeMount("bind", m.target, m.source, m.read_only))
        elif m.type == "volume":
            if volumes_root is None:
                raise TaskRejected(f"{where}: named volumes are not available on this node")
            name = m.source or container_id(task.id)[:24]  # anonymous: one per task
            if "/" in name or name in (".", ".."):
                raise TaskRejected(f"{where}.Source: invalid volume name {name!r}")
            data = volumes_root / name / "_data"
            if not data.is_dir():
                data.mkdir(parents=True, exist_ok=True)
                if userns is not None:
                    os.chown(data, userns.host_uid, userns.host_gid)
            out.append(RuntimeMount("bind", m.target, str(data), m.read_only))
        elif m.type == "tmpfs":
            opts = m.tmpfs_options
            out.append(RuntimeMount("tmpfs", m.target, read_only=m.read_only,
                                    tmpfs_size=(opts.size_bytes or None) if opts else None,
                                    tmpfs_mode=(opts.mode or None) if opts else None))
        else:
            raise TaskRejected(f"{where}.Type: must be bind, volume or tmpfs, got {m.type!r}")
    return out


def health_config(task: Task, image: Image | None):
    """The check to run: the service's, completed by the image's (None when there is none)."""
    from api import codec
    from worker import health
    spec = task.spec.container_spec.health_check
    try:
        spec_hc = health.HealthConfig.from_docker(codec.encode(spec)) if spec is not None else None
        image_hc = health.HealthConfig.from_docker((image.config.get("config") or {}).get("Healthcheck")) if image else None
        return health.merge(spec_hc, image_hc)
    except ValueError as exc:
        raise TaskRejected(str(exc)) from None


def container_config(task: Task, image: Image, layers, volumes_root: Path | None = None,
                     userns: UserNamespace | None = None) -> ContainerConfig:
    cs = task.spec.container_spec
    img = image.config.get("config") or {}
    entrypoint = list(cs.command) if cs.command else list(img.get("Entrypoint") or [])
    if cs.args:
        cmd = list(cs.args)
    elif cs.command:
        cmd = []  # overriding the entrypoint drops the image's cmd, as Docker does
    else:
        cmd = list(img.get("Cmd") or [])
    args = entrypoint + cmd
    if not args:
        raise TaskRejected("no command specified: the image has no Cmd or Entrypoint and the service sets none")
    cid = container_id(task.id)
    limits = task.spec.resources.limits if task.spec.resources and task.spec.resources.limits else None
    reservation = task.spec.resources.reservations if task.spec.resources else None
    return ContainerConfig(
        id=cid,
        args=args,
        env=merge_env(list(img.get("Env") or []), cs.env),
        layers=list(layers),
        hostname=cs.hostname or cid[:12],
        cwd=cs.dir or img.get("WorkingDir") or "/",
        user=cs.user or img.get("User") or "",
        groups=list(cs.groups),
        init=bool(cs.init),  # None: the node's default, which is no init (as dockerd's)
        memory_limit=(limits.memory_bytes or None) if limits else None,
        pids_limit=(limits.pids or None) if limits else None,
        nano_cpus=(limits.nano_cpus or None) if limits else None,
        memory_reservation=(reservation.memory_bytes or None) if reservation else None,
        read_only=cs.read_only,
        cap_add=list(cs.capability_add),
        cap_drop=list(cs.capability_drop),
        ulimits={u.name: (u.soft, u.hard) for u in cs.ulimits},
        mounts=container_mounts(task, volumes_root, userns),
        user_namespace=userns,
        labels={
            "com.docker.swarm.task.id": task.id,
            "com.docker.swarm.service.id": task.service_id,
            "com.docker.swarm.node.id": task.node_id,
            **cs.labels,
        },
        **surroundings(task),
    )


def surroundings(task: Task) -> dict:
    """The ContainerConfig fields for sysctls, /etc/hosts, resolv.conf and logging. The managers
    validated them; a task from an older manager that did not is rejected naming the field."""
    cs = task.spec.container_spec
    try:
        logs = log_settings(task.spec.log_driver)
    except ValueError as exc:
        raise TaskRejected(f"LogDriver.{exc}") from None
    dns = cs.dns_config
    out: dict = {
        "sysctls": dict(cs.sysctls),
        "extra_hosts": list(cs.hosts),
        "dns_servers": list(dns.nameservers) if dns else [],
        "dns_search": list(dns.search) if dns else [],
        "dns_options": list(dns.options) if dns else [],
        "log_driver": "json-file" if logs.keep else "none",
    }
    if logs.max_size is not None:
        out["log_max_size"] = logs.max_size
    if logs.max_files is not None:
        out["log_max_files"] = logs.max_files
    return out
