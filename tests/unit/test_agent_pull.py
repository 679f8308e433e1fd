"""The agent's side of image pulls (worker/agent.py): a task stays `preparing` (and says it is
pulling) until its image is here, a failed pull rejects it with the reason, and a task stopped
mid-pull shuts down without a container. Runtime and puller are fakes; the real thing runs in
tests/registry/test_registry_cluster.py."""
from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from api.objects import ContainerSpec, PullOptions, Task, TaskSpec, TaskStatus
from worker.agent import Agent
from worker.images.puller import PullFailed
from worker.runtime import ContainerState


class FakeRuntime:
    def __init__(self, root: Path):
        self.root = root / "containers"
        self.created: list[str] = []
        self.done = asyncio.Event()

    def create(self, cfg):
        self.created.append(cfg.id)

    def start(self, cid):
        return 4242

    async def wait(self, cid):
        await self.done.wait()
        return ContainerState(cid, "stopped", exit_code=0)

    async def stop(self, cid, grace, sig=None):
        self.done.set()
        return ContainerState(cid, "stopped", exit_code=0)

    def delete(self, cid, force=False):
        pass

    def list(self):
        return []


class FakeImages:
    def layer_dirs(self, image):
        return []


class GatedPuller:
    """Pulls nothing until `release` is set; then hands out an image, or fails with `error`."""

    def __init__(self, error: str = ""):
        self.release = asyncio.Event()
        self.error = error
        self.calls: list[tuple[str, str]] = []

    async def ensure(self, reference, registry_auth="", on_pull=None):
        self.calls.append((reference, registry_auth))
        if on_pull:
            on_pull()
        await self.release.wait()
        if self.error:
            raise PullFailed(self.error)
        return SimpleNamespace(config={"config": {"Cmd": ["sleep", "1"]}})

    def close(self):
        pass


def task(desired: str = "running") -> Task:
    return Task(id="t1", service_id="s1", node_id="n1", desired_state=desired,
                status=TaskStatus(state="assigned"),
                spec=TaskSpec(container_spec=ContainerSpec(image="reg.io/app:1@sha256:" + "a" * 64,
                                                           pull_options=PullOptions("AUTH"))))


async def until(predicate, timeout: float = 2.0):
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def agent_with(tmp_path, puller) -> tuple[Agent, list[tuple[str, str, str]]]:
    agent = Agent("n1", FakeRuntime(tmp_path), FakeImages(), None, puller)
    seen: list[tuple[str, str, str]] = []
    agent.queue_status = lambda tid, st: seen.append((st.state, st.message, st.err))
    return agent, seen


def test_preparing_while_the_image_is_pulled_then_running(tmp_path):
    async def scenario():
        puller = GatedPuller()
        agent, seen = agent_with(tmp_path, puller)
        agent.apply([task()])
        await until(lambda: puller.calls)
        await asyncio.sleep(0.05)
        assert [s for s, _, _ in seen] == ["accepted", "preparing", "preparing"]
        assert seen[-1][1] == "pulling reg.io/app:1@sha256:" + "a" * 64
        assert agent.runtime.created == []  # no container before the image is here
        puller.release.set()
        await until(lambda: seen[-1][0] == "running")
        assert puller.calls == [("reg.io/app:1@sha256:" + "a" * 64, "AUTH")]  # the service's credentials
        agent.apply([])
        await until(lambda: "t1" not in agent.controllers)
    asyncio.run(scenario())


def test_a_failed_pull_rejects_the_task_with_the_reason(tmp_path):
    async def scenario():
        puller = GatedPuller(error="unauthorized: manifest app:1 on reg.io: authentication required")
        puller.release.set()
        agent, seen = agent_with(tmp_path, puller)
        agent.apply([task()])
        await until(lambda: seen and seen[-1][0] == "rejected")
        assert seen[-1][2] == "unauthorized: manifest app:1 on reg.io: authentication required"
        agent.apply([])
        await until(lambda: "t1" not in agent.controllers)
    asyncio.run(scenario())


def test_a_task_stopped_while_pulling_shuts_down_without_a_container(tmp_path):
    async def scenario():
        puller = GatedPuller()
        agent, seen = agent_with(tmp_path, puller)
        agent.apply([task()])
        await until(lambda: puller.calls)
        agent.apply([task(desired="shutdown")])
        await until(lambda: seen[-1][0] == "shutdown")
        assert agent.runtime.created == []
        agent.apply([])
        await until(lambda: "t1" not in agent.controllers)
    asyncio.run(scenario())
