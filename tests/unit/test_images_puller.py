"""The worker's image puller (worker/images/puller.py): one pull however many tasks wait, the
service's credentials used for its registry only, and the registry's reason on failure. The
registry pull itself is faked here; tests/registry/test_registry_cluster.py pulls for real."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from worker.images import puller as puller_mod
from worker.images.auth import Credentials, encode_auth_config
from worker.images.puller import ImagePuller, PullFailed
from worker.images.registry import RegistryAuthError, RegistryNotFound


class FakeClient:
    def __init__(self, override):
        self.override = dict(override)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None


class FakeStore:
    def __init__(self):
        self.images: dict[str, str] = {}

    def resolve(self, ref: str):
        return self.images.get(ref)


def make(monkeypatch, outcome=None, delay: float = 0.05):
    store = FakeStore()
    calls: list[tuple[str, dict]] = []

    async def fake_pull(st, reference, client, **kwargs):
        calls.append((reference, client.override))
        await asyncio.sleep(delay)
        if outcome is not None:
            raise outcome
        st.images[reference] = SimpleNamespace(id=f"image-of-{reference}")
        return st.images[reference]

    monkeypatch.setattr(puller_mod, "pull", fake_pull)
    return ImagePuller(store, FakeClient), store, calls


def test_concurrent_tasks_share_one_pull_and_a_present_image_is_not_pulled(monkeypatch):
    p, store, calls = make(monkeypatch)
    notes: list[str] = []

    async def scenario():
        got = await asyncio.gather(*[p.ensure("reg.io/app:1@sha256:" + "a" * 64, on_pull=lambda: notes.append("x"))
                                     for _ in range(5)])
        again = await p.ensure("reg.io/app:1@sha256:" + "a" * 64, on_pull=lambda: notes.append("y"))
        return got, again

    got, again = asyncio.run(scenario())
    assert len(calls) == 1 and len({g.id for g in got}) == 1 and again is got[0]
    assert notes == ["x"] * 5  # each waiting task says it waits for a pull; none once the image is here


def test_a_waiter_that_goes_away_does_not_cancel_the_pull_for_the_others(monkeypatch):
    p, store, calls = make(monkeypatch, delay=0.2)

    async def scenario():
        first = asyncio.ensure_future(p.ensure("app:1"))
        second = asyncio.ensure_future(p.ensure("app:1"))
        await asyncio.sleep(0.05)
        first.cancel()
        return await second

    assert asyncio.run(scenario()).id == "image-of-app:1" and len(calls) == 1


def test_credentials_go_to_their_registry_only(monkeypatch):
    p, store, calls = make(monkeypatch)
    auth = encode_auth_config("reg.io", Credentials("alice", "pw"))
    asyncio.run(p.ensure("reg.io/app:1", auth))
    asyncio.run(p.ensure("other.io/app:1", auth))  # carried over to another registry: kept off it
    serverless = encode_auth_config("", Credentials("bob", "pw"))
    asyncio.run(p.ensure("third.io/app:1", serverless))  # naming no server: for the image's registry
    assert [c[1] for c in calls] == [{"reg.io": Credentials("alice", "pw")}, {"reg.io": Credentials("alice", "pw")},
                                     {"third.io": Credentials("bob", "pw")}]


@pytest.mark.parametrize("error, expect", [
    (RegistryNotFound("not found: manifest app:1 on reg.io: manifest unknown"),
     "No such image: reg.io/app:1 (not found: manifest app:1 on reg.io: manifest unknown)"),
    (RegistryAuthError("unauthorized: manifest app:1 on reg.io: authentication required"),
     "unauthorized: manifest app:1 on reg.io: authentication required"),
])
def test_a_failed_pull_says_why(monkeypatch, error, expect):
    p, store, calls = make(monkeypatch, outcome=error)
    with pytest.raises(PullFailed) as exc:
        asyncio.run(p.ensure("reg.io/app:1"))
    assert str(exc.value) == expect
    with pytest.raises(PullFailed, match="^PullOptions.RegistryAuth: "):
        asyncio.run(p.ensure("reg.io/app:1", "%%%"))
