"""Images and registry credentials of services, decided at create/update: --resolve-image
(manager/imagepin.py), --with-registry-auth (manager/pullauth.py), and the control API that
applies them (redaction, carry-over, forwarding from a follower). No network: the registry is
a fake ImageSource."""
from __future__ import annotations

import asyncio
import base64
import copy
import json
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api import codec
from api.objects import ContainerSpec, PullOptions, Service, ServiceSpec, Task, TaskSpec, TaskStatus
from manager import imagepin, pullauth
from manager.controlapi import ControlAPI, error_middleware
from manager.orchestrator.update import is_dirty
from manager.store import Store
from worker.images.auth import Credentials, decode_auth_config, encode_auth_config

DIGEST = "sha256:" + "a" * 64
NEWER = "sha256:" + "b" * 64


@dataclass
class FakeSource:
    """A registry that knows `digests` (by normalized tag) and a local store that holds `local`."""
    digests: dict[str, str] = field(default_factory=dict)
    local: dict[str, str] = field(default_factory=dict)
    logins: dict[str, str] = field(default_factory=dict)  # registry host -> encoded auth
    asked: list[tuple[str, str]] = field(default_factory=list)
    refuse: str = "not found: manifest x"

    async def registry_digest(self, reference: str, registry_auth: str) -> str:
        self.asked.append((reference, registry_auth))
        name = reference if ":" in reference.rsplit("/", 1)[-1] else reference + ":latest"
        if name in self.digests:
            return self.digests[name]
        raise LookupError(self.refuse)

    def local_pin(self, reference: str) -> str | None:
        return self.local.get(reference)

    def stored_auth(self, reference: str) -> str:
        host = reference.split("/", 1)[0] if "/" in reference and "." in reference.split("/", 1)[0] else "docker.io"
        return self.logins.get(host, "")


def pin(image, mode, current=None, source=None, auth=""):
    return asyncio.run(imagepin.pin_image(image, mode, current, source, auth))


# --- resolve modes ----------------------------------------------------------------------------

def test_always_pins_the_registry_digest_even_without_a_local_image():
    src = FakeSource(digests={"reg.io/app:1": DIGEST, "busybox:latest": NEWER})
    assert pin("reg.io/app:1", "always", source=src).image == f"reg.io/app:1@{DIGEST}"
    assert pin("busybox", "always", source=src).image == f"busybox:latest@{NEWER}"  # the implied tag is recorded
    assert [a for a, _ in src.asked] == ["reg.io/app:1", "busybox"]


def test_a_reference_with_a_digest_is_pinned_already_and_never_asked_for():
    src = FakeSource(digests={"reg.io/app:1": NEWER})
    for mode in imagepin.RESOLVE_MODES:
        assert pin(f"reg.io/app:1@{DIGEST}", mode, source=src).image == f"reg.io/app:1@{DIGEST}"
        assert pin("a" * 64, mode, source=src).image == "a" * 64  # an image id
    assert src.asked == []


def test_always_on_update_follows_a_moved_tag():
    src = FakeSource(digests={"reg.io/app:1": NEWER})
    assert pin("reg.io/app:1", "always", current=f"reg.io/app:1@{DIGEST}", source=src).image == f"reg.io/app:1@{NEWER}"


def test_changed_asks_only_when_the_image_changed():
    src = FakeSource(digests={"reg.io/app:1": NEWER, "reg.io/app:2": NEWER})
    current = f"reg.io/app:1@{DIGEST}"
    kept = pin("reg.io/app:1", "changed", current=current, source=src)
    assert kept.image == current and kept.warnings == [] and src.asked == []
    assert pin("reg.io/app:2", "changed", current=current, source=src).image == f"reg.io/app:2@{NEWER}"
    assert pin("reg.io/app:1", "changed", current=None, source=src).image == f"reg.io/app:1@{NEWER}"  # create
    assert [a for a, _ in src.asked] == ["reg.io/app:2", "reg.io/app:1"]


def test_never_keeps_the_reference_as_given_and_asks_nobody():
    src = FakeSource(digests={"reg.io/app:1": NEWER}, local={"reg.io/app:1": f"reg.io/app:1@{DIGEST}"})
    assert pin("reg.io/app:1", "never", source=src).image == "reg.io/app:1"
    assert pin("busybox", "never", source=src).image == "busybox"
    # an unchanged image keeps its pin (a redeploy or a scale must not unpin it) ...
    assert pin("reg.io/app:1", "never", current=f"reg.io/app:1@{DIGEST}", source=src).image == f"reg.io/app:1@{DIGEST}"
    # ... a changed one is taken as given
    assert pin("reg.io/app:2", "never", current=f"reg.io/app:1@{DIGEST}", source=src).image == "reg.io/app:2"
    assert src.asked == []


def test_unreachable_registry_falls_back_like_docker():
    src = FakeSource(local={"local/img:1": "local/img:1"}, refuse="registry: cannot reach reg.io: refused")
    # an image in the manager's store: used as before, no warning
    assert pin("local/img:1", "always", source=src) == imagepin.Pinned("local/img:1", [])
    # nowhere: created unpinned, with Docker's warning and the reason
    out = pin("reg.io/app:1", "always", source=src)
    assert out.image == "reg.io/app:1"
    (warning,) = out.warnings
    assert warning.startswith("image reg.io/app:1 could not be accessed on a registry to record its digest. Each "
                              "node will access reg.io/app:1 independently, possibly leading to different nodes "
                              "running different versions of the image.")
    assert "cannot reach reg.io" in warning
    # an update of an unchanged, pinned image keeps its pin rather than unpinning it
    kept = pin("reg.io/app:1", "always", current=f"reg.io/app:1@{DIGEST}", source=src)
    assert kept.image == f"reg.io/app:1@{DIGEST}" and "keeping the digest recorded before" in kept.warnings[0]


def test_an_image_imported_here_asks_no_registry():
    # `busybox` imported from a rootfs: no registry gave these bits, so none is asked (Docker Hub
    # would be, by Docker); a pulled image (its local pin has a digest) is still checked.
    src = FakeSource(digests={"busybox:latest": NEWER, "reg.io/app:1": NEWER},
                     local={"busybox": "busybox:latest", "reg.io/app:1": f"reg.io/app:1@{DIGEST}"})
    assert pin("busybox", "always", source=src) == imagepin.Pinned("busybox:latest", [])
    assert pin("reg.io/app:1", "always", source=src).image == f"reg.io/app:1@{NEWER}"
    assert [a for a, _ in src.asked] == ["reg.io/app:1"]


def test_the_registry_is_asked_with_the_credentials_given():
    src = FakeSource(digests={"reg.io/app:1": DIGEST})
    pin("reg.io/app:1", "always", source=src, auth="ENCODED")
    assert src.asked == [("reg.io/app:1", "ENCODED")]


def test_mode_parsing():
    assert imagepin.parse_mode(None) == "never" and imagepin.parse_mode("") == "never"  # Docker's API default
    for mode in imagepin.RESOLVE_MODES:
        assert imagepin.parse_mode(mode) == mode
    with pytest.raises(ValueError, match=r"^resolveImage: must be always, changed or never, got 'sometimes'$"):
        imagepin.parse_mode("sometimes")


def test_unchanged_compares_tags_not_pins():
    assert imagepin.unchanged("app:1", f"app:1@{DIGEST}")
    assert imagepin.unchanged("busybox", "busybox:latest")
    assert imagepin.unchanged("busybox:latest", f"busybox@{DIGEST}") is False  # a bare digest has no tag to match
    assert not imagepin.unchanged("app:2", f"app:1@{DIGEST}")
    assert not imagepin.unchanged("app:1", None)


# --- credentials ------------------------------------------------------------------------------

def test_auth_config_round_trip_and_errors():
    enc = encode_auth_config("Reg.IO:5000", Credentials("alice", "pw"))
    assert decode_auth_config(enc) == ("reg.io:5000", Credentials("alice", "pw"))
    assert decode_auth_config("") is None
    anonymous = base64.urlsafe_b64encode(json.dumps({"identitytoken": "x"}).encode()).decode()
    assert decode_auth_config(anonymous) is None
    assert pullauth.parse_registry_auth(anonymous) == ""
    with pytest.raises(ValueError, match="^X-Registry-Auth: not base64url-encoded JSON$"):
        pullauth.parse_registry_auth("%%%not-base64")
    # re-encoded: only username, password and server are kept
    extra = base64.urlsafe_b64encode(json.dumps({"username": "u", "password": "p", "email": "e",
                                                 "serveraddress": "reg.io"}).encode()).decode().rstrip("=")
    assert json.loads(base64.urlsafe_b64decode(pullauth.parse_registry_auth(extra))) == \
        {"username": "u", "password": "p", "serveraddress": "reg.io"}


def _service(auth: str = "", previous: str = "") -> Service:
    def spec(a: str) -> ServiceSpec:
        return ServiceSpec(name="s", task_template=TaskSpec(container_spec=ContainerSpec(
            image="reg.io/app:1", pull_options=PullOptions(a) if a else None)))
    return Service(id="s1", spec=spec(auth), previous_spec=spec(previous) if previous else None)


def test_attach_sets_or_carries_the_credentials():
    spec = ServiceSpec(task_template=TaskSpec(container_spec=ContainerSpec(image="reg.io/app:2")))
    pullauth.attach(spec, "NEW")
    assert spec.task_template.container_spec.pull_options == PullOptions("NEW")
    current = _service("OLD", previous="PREV")
    for auth_from, expect in (("spec", "OLD"), ("previous-spec", "PREV")):
        s = ServiceSpec(task_template=TaskSpec(container_spec=ContainerSpec(image="reg.io/app:2")))
        pullauth.attach(s, "", current, auth_from)
        assert s.task_template.container_spec.pull_options == PullOptions(expect)
    s = ServiceSpec(task_template=TaskSpec(container_spec=ContainerSpec(image="x")))
    pullauth.attach(s, "", _service(), "spec")
    assert s.task_template.container_spec.pull_options is None
    with pytest.raises(ValueError, match="^registryAuthFrom: must be spec or previous-spec, got 'x'$"):
        pullauth.parse_auth_from("x")


def test_redaction_removes_credentials_and_nothing_else():
    svc = codec.encode(_service("SECRET", previous="SECRET2"))
    out = pullauth.redact_service(copy.deepcopy(svc))
    assert "SECRET" not in json.dumps(out)
    assert out["Spec"]["TaskTemplate"]["ContainerSpec"] == {"Image": "reg.io/app:1"}
    assert out["PreviousSpec"]["Name"] == "s"
    task = codec.encode(Task(id="t", spec=TaskSpec(container_spec=ContainerSpec(image="i", pull_options=PullOptions("SECRET")))))
    assert "SECRET" not in json.dumps(pullauth.redact_task(task))
    # the wire name the workers decode
    assert codec.decode(Task, codec.encode(Task(spec=TaskSpec(container_spec=ContainerSpec(
        pull_options=PullOptions("x")))))).spec.container_spec.pull_options == PullOptions("x")


def test_new_credentials_alone_do_not_replace_a_task_that_has_its_image():
    svc = _service("NEW")
    svc.version.index = 2
    template = copy.deepcopy(svc.spec.task_template)
    template.container_spec.pull_options = PullOptions("OLD")
    running = Task(id="t", spec=template, status=TaskStatus(state="running"), desired_state="running")
    assert not is_dirty(svc, running)
    waiting = copy.deepcopy(running)
    waiting.status.state = "assigned"  # not pulled yet: it gets the new credentials
    assert is_dirty(svc, waiting)
    changed = copy.deepcopy(running)
    changed.spec.container_spec.image = "reg.io/app:0"
    assert is_dirty(svc, changed)


# --- the control API ----------------------------------------------------------------------------

class FakeManager:
    """A store applied in process; `leader` False makes writes go through `forward`."""

    def __init__(self, leader: bool = True):
        self.store = Store()
        self.index = 0
        self.is_leader = leader
        self.forwarded: list[tuple[str, str, bytes, dict]] = []

    async def propose(self, actions):
        self.index += 1
        return self.store.apply(self.index, "2024-01-01T00:00:00Z", actions)

    async def forward(self, method, path_qs, body, content_type, headers=None):
        self.forwarded.append((method, path_qs, body, dict(headers or {})))
        return 201, json.dumps({"ID": "fromleader", "Warnings": []}).encode(), "application/json"


def call(manager: FakeManager, source: FakeSource | None, scenario, forwards: bool = False):
    api = ControlAPI(lambda: manager, source, lambda: None, forwards=forwards)
    app = web.Application(middlewares=[error_middleware])
    app.add_routes(api.routes())

    async def run():
        async with TestClient(TestServer(app)) as client:
            return await scenario(client)
    return asyncio.run(run())


SPEC = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "reg.io/app:1"}}}
LOGIN = encode_auth_config("reg.io", Credentials("alice", "s3cret"))


def test_api_create_pins_keeps_credentials_and_never_returns_them():
    m = FakeManager()
    src = FakeSource(digests={"reg.io/app:1": DIGEST}, logins={"reg.io": LOGIN})

    async def scenario(c):
        r = await c.post("/services/create", json=SPEC, params={"resolveImage": "always", "withRegistryAuth": "true"})
        assert r.status == 201, await r.text()
        assert (await r.json())["Warnings"] == []
        listed = await (await c.get("/services")).text()
        inspected = await (await c.get("/services/web")).json()
        return listed, inspected

    listed, inspected = call(m, src, scenario)
    (svc,) = m.store.list("service")
    assert svc.spec.task_template.container_spec.image == f"reg.io/app:1@{DIGEST}"
    assert svc.spec.task_template.container_spec.pull_options == PullOptions(LOGIN)
    assert src.asked == [("reg.io/app:1", LOGIN)]  # the node's login asked the registry
    assert "PullOptions" not in listed and "s3cret" not in listed and LOGIN not in listed
    assert inspected["Spec"]["TaskTemplate"]["ContainerSpec"] == {"Image": f"reg.io/app:1@{DIGEST}"}


def test_api_without_parameters_asks_no_registry_and_keeps_no_login():
    m = FakeManager()
    src = FakeSource(digests={"reg.io/app:1": DIGEST}, logins={"reg.io": LOGIN})

    async def scenario(c):
        r = await c.post("/services/create", json=SPEC)
        assert r.status == 201
    call(m, src, scenario)
    (svc,) = m.store.list("service")
    assert svc.spec.task_template.container_spec.image == "reg.io/app:1"
    assert svc.spec.task_template.container_spec.pull_options is None
    assert src.asked == []


def test_api_update_carries_credentials_and_tasks_are_redacted():
    m = FakeManager()
    src = FakeSource(digests={"reg.io/app:1": DIGEST, "reg.io/app:2": NEWER})

    async def scenario(c):
        r = await c.post("/services/create", json=SPEC, params={"resolveImage": "always"},
                         headers={"X-Registry-Auth": LOGIN})
        assert r.status == 201
        svc = await (await c.get("/services/web")).json()
        spec = svc["Spec"]
        spec["TaskTemplate"]["ContainerSpec"]["Image"] = "reg.io/app:2"
        r = await c.post(f"/services/{svc['ID']}/update", json=spec,
                         params={"version": str(svc["Version"]["Index"]), "resolveImage": "changed"})
        assert r.status == 200, await r.text()
        (stored,) = m.store.list("service")
        m.store.tables["task"]["t1"] = Task(id="t1", service_id=stored.id, spec=copy.deepcopy(stored.spec.task_template))
        return await (await c.get("/tasks")).text(), await (await c.get("/tasks/t1")).text()

    tasks, task = call(m, src, scenario)
    (svc,) = m.store.list("service")
    assert svc.spec.task_template.container_spec.image == f"reg.io/app:2@{NEWER}"
    assert svc.spec.task_template.container_spec.pull_options == PullOptions(LOGIN)  # kept without the header
    assert svc.previous_spec.task_template.container_spec.pull_options == PullOptions(LOGIN)
    for body in (tasks, task):
        assert "PullOptions" not in body and LOGIN not in body and "app:2@" in body


def test_api_refuses_bad_input_with_the_field_named():
    m = FakeManager()

    async def scenario(c):
        out = []
        for params, headers, body in (
                ({"resolveImage": "sometimes"}, {}, SPEC),
                ({"withRegistryAuth": "maybe"}, {}, SPEC),
                ({}, {"X-Registry-Auth": "%%%"}, SPEC),
                ({}, {}, {**SPEC, "TaskTemplate": {"ContainerSpec": {"Image": "Bad:Image:x"}}}),
                ({}, {}, {**SPEC, "TaskTemplate": {"ContainerSpec": {"Image": "a:1", "PullOptions": {"RegistryAuth": "x"}}}})):
            r = await c.post("/services/create", json=body, params=params, headers=headers)
            out.append((r.status, (await r.json())["message"]))
        return out

    results = call(m, FakeSource(), scenario)
    assert [s for s, _ in results] == [400] * 5
    assert results[0][1] == "resolveImage: must be always, changed or never, got 'sometimes'"
    assert results[1][1].startswith("withRegistryAuth: ")
    assert results[2][1].startswith("X-Registry-Auth: ")
    assert results[3][1].startswith("TaskTemplate.ContainerSpec.Image: reference: ")
    assert results[4][1].startswith("TaskTemplate.ContainerSpec.PullOptions: ")
    assert m.store.list("service") == []


def test_api_warns_when_nothing_can_be_pinned_or_no_login_is_held():
    m = FakeManager()

    async def scenario(c):
        r = await c.post("/services/create", json=SPEC, params={"resolveImage": "always", "withRegistryAuth": "1"})
        assert r.status == 201
        return (await r.json())["Warnings"]

    warnings = call(m, FakeSource(), scenario)
    assert len(warnings) == 2
    assert warnings[0].startswith("withRegistryAuth: this node holds no login for reg.io")
    assert warnings[1].startswith("image reg.io/app:1 could not be accessed on a registry to record its digest.")
    (svc,) = m.store.list("service")
    assert svc.spec.task_template.container_spec.image == "reg.io/app:1"  # created anyway, as Docker does


def test_a_follower_pins_with_its_own_login_then_forwards_the_result():
    m = FakeManager(leader=False)
    src = FakeSource(digests={"reg.io/app:1": DIGEST}, logins={"reg.io": LOGIN})

    async def scenario(c):
        r = await c.post("/services/create", json=SPEC, params={"resolveImage": "always", "withRegistryAuth": "true"})
        assert r.status == 201
        return await r.json()

    reply = call(m, src, scenario, forwards=True)
    assert reply["ID"] == "fromleader"
    ((method, path_qs, body, headers),) = m.forwarded
    assert method == "POST" and path_qs == "/services/create?resolveImage=never"
    assert json.loads(body)["TaskTemplate"]["ContainerSpec"]["Image"] == f"reg.io/app:1@{DIGEST}"
    assert headers == {"X-Registry-Auth": LOGIN}
    assert m.store.list("service") == []
