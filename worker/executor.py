"""Turns a task into a container configuration for the runtime."""
from __future__ import annotations

import hashlib
import signal
from dataclasses import dataclass

from api.objects import SECOND, Task
from worker.images.store import Image, ImageStore
from worker.runtime import ContainerConfig

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


def container_config(task: Task, image: Image, layers) -> ContainerConfig:
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
    return ContainerConfig(
        id=cid,
        args=args,
        env=merge_env(list(img.get("Env") or []), cs.env),
        layers=list(layers),
        hostname=cs.hostname or cid[:12],
        cwd=cs.dir or img.get("WorkingDir") or "/",
        user=cs.user or img.get("User") or "",
        memory_limit=(limits.memory_bytes or None) if limits else None,
        pids_limit=(limits.pids or None) if limits else None,
        nano_cpus=(limits.nano_cpus or None) if limits else None,
        labels={
            "com.docker.swarm.task.id": task.id,
            "com.docker.swarm.service.id": task.service_id,
            "com.docker.swarm.node.id": task.node_id,
            **cs.labels,
        },
    )
