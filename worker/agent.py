"""The node agent: runs the tasks the managers assign to this node and reports their status.

Each task has one controller coroutine that walks it forward through the task states
(accepted → preparing → ready → starting → running → complete/failed/shutdown). Status reports
are batched: whatever accumulates while one batch is in flight goes in the next.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from api import codec
from api.ids import timestamp
from api.objects import ContainerStatus, Task, TaskStatus, is_terminal, state_rank
from worker.executor import (TaskRejected, container_config, container_id, health_config, resolve_image,
                             stop_policy)
from worker.images.puller import ImagePuller, PullFailed
from worker.images.store import ImageStore
from worker.networks import NodeNetworking
from worker.runtime import ContainerState, Runtime, UserNamespace
from worker.taskfiles import FilesUnavailable, TaskFiles

log = logging.getLogger("shoal.agent")


class SessionLike(Protocol):
    async def next_assignments(self) -> dict: ...
    async def report(self, message: Any) -> None: ...
    def heartbeat(self) -> None: ...


def parse_assignments(message: Any) -> list[Task]:
    if not isinstance(message, dict) or message.get("Type") != "assignments":
        raise codec.DecodeError("Type", "expected an assignments message")
    tasks = message.get("Tasks")
    if not isinstance(tasks, list):
        raise codec.DecodeError("Tasks", "must be a list")
    return [codec.decode(Task, t, f"Tasks[{i}]") for i, t in enumerate(tasks)]


@dataclass
class TaskController:
    agent: "Agent"
    task: Task
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    removed: bool = False
    health: Any = None  # worker.health.HealthConfig of this task, if it has a check
    unhealthy: bool = False
    runner: asyncio.Task | None = None
    reported: str = ""

    def update(self, task: Task) -> None:
        self.task = task
        self.changed.set()

    def report(self, state: str, message: str = "", err: str = "", exit_code: int | None = None,
               pid: int = 0) -> None:
        if self.reported and state_rank(state) < state_rank(self.reported):
            return
        self.reported = state
        cstatus = ContainerStatus(container_id=container_id(self.task.id), pid=pid, exit_code=exit_code)
        self.agent.queue_status(self.task.id, TaskStatus(timestamp=timestamp(), state=state, message=message,
                                                         err=err, container_status=cstatus))

    def wants_run(self) -> bool:
        return self.task.desired_state == "running" and not self.removed

    def wants_stop(self) -> bool:
        return self.removed or state_rank(self.task.desired_state) > state_rank("running")

    async def run(self) -> None:
        try:
            await self._lifecycle()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let one task take the agent down
            log.exception("task %s failed in the agent", self.task.id)
            self.report("failed", "agent error", err=str(exc))
        finally:
            if self.removed:
                self.agent.files.release(container_id(self.task.id))
                await asyncio.to_thread(self.agent.runtime.delete, container_id(self.task.id), True)

    async def _lifecycle(self) -> None:
        rt = self.agent.runtime
        cid = container_id(self.task.id)
        current = self.task.status.state
        existing = self.agent.existing.pop(cid, None)

        if is_terminal(current):
            # Nothing to run; the container (if any) stays until the task is deleted.
            await self._wait_removed()
            return

        if existing is not None and state_rank(current) >= state_rank("starting"):
            # Re-adopt a container that outlived a daemon restart.
            self.reported = current
            if existing.status == "running":
                if self.agent.networks is not None:
                    await self.agent.networks.readopt(self.task, existing.pid or 0)
                await self._supervise(existing.pid or 0)
            else:
                self._report_exit(existing)
            await self._wait_removed()
            return
        if state_rank(current) >= state_rank("starting"):
            self.report("failed", "container lost", err="the container of this task is gone")
            await self._wait_removed()
            return

        if self.wants_stop():
            self.report("shutdown", "shutdown before start")
            await self._wait_removed()
            return

        self.report("accepted", "accepted")
        self.report("preparing", "preparing")
        try:
            image = await self._image_unless_stopped()
            if image is None:
                self.report("shutdown", "shutdown before start")
                await self._wait_removed()
                return
            layers = await asyncio.to_thread(self.agent.images.layer_dirs, image)
            cfg = container_config(self.task, image, layers, self.agent.volumes_root, self.agent.userns)
            self.health = health_config(self.task, image)
            if existing is None:
                cfg.mounts += self.agent.files.prepare(self.task, cid, cfg.user_namespace)
                try:
                    await asyncio.to_thread(rt.create, cfg)
                except ValueError as exc:
                    # what the image or this node cannot give (a user or group the image lacks,
                    # an init under runc, ...): the task is rejected, naming it
                    self.agent.files.release(cid)
                    raise TaskRejected(str(exc)) from None
                except BaseException:
                    self.agent.files.release(cid)
                    raise
        except (TaskRejected, FilesUnavailable) as exc:
            self.report("rejected", "preparing failed", err=str(exc))
            await self._wait_removed()
            return
        self.report("ready", "ready")
        while not self.wants_run():
            if self.wants_stop():
                self.report("shutdown", "shutdown before start")
                await self._wait_removed()
                return
            await self._changed()
        self.report("starting", "starting")
        try:
            start = functools.partial(asyncio.to_thread, rt.start, cid)
            nets = self.agent.networks
            pid = await (nets.start_container(self.task, cid, start) if nets is not None else start())
        except Exception as exc:
            self.report("failed", "starting container failed", err=str(exc))
            await self._wait_removed()
            return
        finally:
            # Started (its mounts made) or failed: either way the node lets go of the files.
            self.agent.files.release(cid)
        if self.health is None:
            self.report("running", "started", pid=pid)
        await self._supervise(pid, image)
        await self._wait_removed()

    async def _image_unless_stopped(self):
        """The image, or None when the task is stopped or removed while its image is pulled
        (the pull goes on for the other tasks that wait for it)."""
        getting = asyncio.ensure_future(self._image())
        changed: asyncio.Future | None = None
        try:
            while not getting.done():
                if self.wants_stop():
                    return None
                changed = asyncio.ensure_future(self._changed())
                await asyncio.wait({getting, changed}, return_when=asyncio.FIRST_COMPLETED)
            return getting.result()
        finally:
            for fut in (getting, changed):
                if fut is not None and not fut.done():
                    fut.cancel()

    async def _image(self):
        """The task's image, pulled first when this node lacks it (the task stays preparing
        meanwhile, as in Swarm, and says so); a failed pull rejects the task with the reason."""
        cs = self.task.spec.container_spec
        if self.agent.puller is None:
            return await asyncio.to_thread(resolve_image, self.agent.images, self.task)
        auth = cs.pull_options.registry_auth if cs.pull_options is not None else ""
        try:
            return await self.agent.puller.ensure(
                cs.image, auth, on_pull=lambda: self.report("preparing", f"pulling {cs.image}"))
        except PullFailed as exc:
            raise TaskRejected(str(exc)) from None

    async def _release_networks(self) -> None:
        """The container has ended: its network interfaces go (and networks no task needs),
        before the managers hear of the end, so that a task gone means its network gone."""
        if self.agent.networks is not None:
            try:
                await self.agent.networks.release(self.task.id)
            except Exception as exc:
                log.warning("task %s: releasing its networks: %s", self.task.id, exc)

    async def _supervise(self, pid: int, image=None) -> None:
        """Wait for the container to exit or for the managers to ask it to stop."""
        rt = self.agent.runtime
        cid = container_id(self.task.id)
        if self.reported != "running" and self.health is None:
            self.report("running", "started", pid=pid)
        waiter = asyncio.ensure_future(rt.wait(cid))
        watcher = asyncio.ensure_future(self._watch_health(cid, pid, image)) if self.health else None
        try:
            while not waiter.done():
                if self.wants_stop():
                    policy = stop_policy(self.task, image)
                    state = await rt.stop(cid, policy.grace_s, policy.signal)
                    await self._release_networks()
                    self.report("shutdown", "shutdown", exit_code=state.exit_code)
                    return
                changed = asyncio.ensure_future(self._changed())
                await asyncio.wait({waiter, changed}, return_when=asyncio.FIRST_COMPLETED)
                if not changed.done():
                    changed.cancel()
            await self._release_networks()
            self._report_exit(waiter.result())
        finally:
            if not waiter.done():
                waiter.cancel()
            if watcher is not None and not watcher.done():
                watcher.cancel()

    async def _watch_health(self, cid: str, pid: int, image) -> None:
        """Healthy: the task is running. Unhealthy: stop it; it fails and is replaced."""
        from worker.health import monitor
        try:
            state = self.agent.runtime.state(cid)
            async for tr in monitor(self.agent.runtime, cid, self.health, state.started_at or 0):
                if tr.status == "healthy" and self.reported != "running":
                    self.report("running", "started (healthy)", pid=pid)
                elif tr.status == "unhealthy":
                    self.unhealthy = True
                    policy = stop_policy(self.task, image)
                    await self.agent.runtime.stop(cid, policy.grace_s, policy.signal)
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("health check of task %s", self.task.id)

    def _report_exit(self, state: ContainerState) -> None:
        code = state.exit_code
        if self.unhealthy:
            self.report("failed", "failed", err="task: container is unhealthy (health check failed)", exit_code=code)
        elif state.oom_killed:
            self.report("failed", "failed", err="task: killed by the OOM killer (memory limit reached)", exit_code=code)
        elif state.error:
            self.report("failed", "failed", err=state.error, exit_code=code)
        elif code == 0:
            self.report("complete", "finished", exit_code=0)
        else:
            self.report("failed", "failed", err=f"task: non-zero exit ({code})", exit_code=code)

    async def _changed(self) -> None:
        await self.changed.wait()
        self.changed.clear()

    async def _wait_removed(self) -> None:
        while not self.removed:
            await self._changed()


class Agent:
    def __init__(self, node_id: str, runtime: Runtime, images: ImageStore, networks: NodeNetworking | None = None,
                 puller: ImagePuller | None = None, userns: UserNamespace | None = None):
        self.node_id = node_id
        self.runtime = runtime
        self.images = images
        self.networks = networks  # overlay networks (worker/networks.py); None: containers get none
        self.userns = userns      # shoald --userns-remap: the range every new container is mapped to
        self.puller = puller  # pulls the images tasks need; None: only images already here run
        self.volumes_root = runtime.root.parent / "volumes"
        self.files = TaskFiles(runtime.root.parent / "taskfiles")  # secrets and configs
        self.controllers: dict[str, TaskController] = {}
        self.existing: dict[str, ContainerState] = {}
        self._updates: dict[str, TaskStatus] = {}
        self._updates_ready = asyncio.Event()
        self._session: SessionLike | None = None
        self._first_set = True

    def adopt_existing(self) -> None:
        """Containers left by an earlier daemon; claimed by their tasks, or removed."""
        self.existing = {c.id: c for c in self.runtime.list()}
        # A created container still needs its files at start; a started one holds its own.
        self.files.release_all_but({c.id for c in self.existing.values() if c.status == "created"})

    def queue_status(self, task_id: str, status: TaskStatus) -> None:
        self._updates[task_id] = status
        self._updates_ready.set()

    async def run(self, session: SessionLike) -> None:
        self._session = session
        reporter = asyncio.create_task(self._report_loop(session))
        try:
            while True:
                message = await session.next_assignments()
                session.heartbeat()
                if self.networks is not None:
                    self.networks.update(message)  # first: a task about to start needs its networks
                try:
                    self.files.update(message)
                except ValueError as exc:
                    log.warning("assignments: %s", exc)
                self.apply(parse_assignments(message))
        finally:
            reporter.cancel()

    def apply(self, tasks: list[Task]) -> None:
        seen = set()
        for task in tasks:
            seen.add(task.id)
            ctl = self.controllers.get(task.id)
            if ctl is None:
                ctl = TaskController(self, task)
                self.controllers[task.id] = ctl
                ctl.runner = asyncio.create_task(ctl.run(), name=f"task-{task.id}")
                ctl.runner.add_done_callback(lambda _t, tid=task.id: self._forget(tid))
            else:
                ctl.update(task)
        for task_id, ctl in list(self.controllers.items()):
            if task_id not in seen and not ctl.removed:
                ctl.removed = True
                ctl.changed.set()
        if self._first_set:
            # Containers no task claims are leftovers of tasks deleted while we were away.
            self._first_set = False
            claimed = {container_id(t) for t in seen}
            for cid in list(self.existing):
                if cid not in claimed:
                    self.existing.pop(cid)
                    asyncio.create_task(asyncio.to_thread(self.runtime.delete, cid, True))

    def _forget(self, task_id: str) -> None:
        ctl = self.controllers.get(task_id)
        if ctl is not None and ctl.removed:
            del self.controllers[task_id]

    async def _report_loop(self, session: SessionLike) -> None:
        while True:
            await self._updates_ready.wait()
            self._updates_ready.clear()
            batch, self._updates = self._updates, {}
            if not batch:
                continue
            message = {"Type": "status", "Updates": [
                {"TaskID": tid, "Status": codec.encode(st)} for tid, st in batch.items()]}
            try:
                await session.report(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("status report failed, will retry: %s", exc)
                for tid, st in batch.items():
                    self._updates.setdefault(tid, st)
                await asyncio.sleep(0.5)
                self._updates_ready.set()

    async def shutdown(self) -> None:
        """Daemon exit: stop supervising but leave containers running (they are re-adopted)."""
        for ctl in self.controllers.values():
            if ctl.runner:
                ctl.runner.cancel()
        if self.puller is not None:
            self.puller.close()
