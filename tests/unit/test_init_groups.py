"""ContainerSpec.Init and ContainerSpec.Groups end to end without a node: the wire format,
compose `init` / `group_add` -> spec -> the control API's decoder and back (a redeploy of the
same file changes nothing), the managers' validation, the `service create/update` flags (down
to typer's parsing and the exit status of a bad flag), and the ContainerConfig a node makes."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api import codec
from api.groups import check_group
from api.objects import ServiceSpec, Task
from cli.client import Client
from cli.commands import service
from cli.compose import load_stack
from cli.pretty import pretty_service
from cli.serviceopts import ServiceOptions, UpdateOptions, apply_update, build_spec
from cli.stackplan import Current, plan_deploy
from manager.validation import SpecError, validate_service_spec
from worker.executor import container_config
from worker.images.image import Image

REPO = Path(__file__).resolve().parents[2]
SPEC = {"Name": "web", "Mode": {"Replicated": {"Replicas": 1}},
        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Groups": ["audio", "44"], "Init": True}}}


def test_codec_round_trip():
    spec = codec.decode(ServiceSpec, SPEC)
    cs = spec.task_template.container_spec
    assert (cs.init, cs.groups) == (True, ["audio", "44"])
    assert codec.encode(spec) == SPEC
    off = codec.decode(ServiceSpec, {**SPEC, "TaskTemplate": {"ContainerSpec": {"Image": "b", "Init": False}}})
    assert off.task_template.container_spec.init is False  # false is kept: it is not "unset"
    assert codec.encode(off)["TaskTemplate"]["ContainerSpec"] == {"Image": "b", "Init": False}
    assert "Init" not in codec.encode(ServiceSpec(name="x"))["TaskTemplate"]["ContainerSpec"]
    with pytest.raises(codec.DecodeError, match=r"TaskTemplate.ContainerSpec.Init: must be a boolean"):
        codec.decode(ServiceSpec, {"TaskTemplate": {"ContainerSpec": {"Init": "yes"}}})
    with pytest.raises(codec.DecodeError, match=r"TaskTemplate.ContainerSpec.Groups\[0\]: must be a string"):
        codec.decode(ServiceSpec, {"TaskTemplate": {"ContainerSpec": {"Groups": [44]}}})


# --- compose ----------------------------------------------------------------------------------

def stack_plan(tmp_path, service_yaml: str):
    body = textwrap.indent(textwrap.dedent(service_yaml).strip("\n"), "    ")
    text = "services:\n  web:\n    image: busybox\n" + body
    (tmp_path / "stack.yml").write_text(text + "\n")
    return load_stack([str(tmp_path / "stack.yml")], "st", {})


def test_compose_round_trip(tmp_path):
    plan = stack_plan(tmp_path, "init: true\ngroup_add: [audio, 44]")
    (desired,) = plan.services
    spec = codec.decode(ServiceSpec, desired)  # the control API's decoder: refuses unknown fields
    validate_service_spec(spec)
    assert (spec.task_template.container_spec.init, spec.task_template.container_spec.groups) == (True, ["audio", "44"])
    stored = {"ID": "s1", "Version": {"Index": 5}, "Spec": codec.encode(spec)}
    again = plan_deploy(plan, Current(services=[stored]), "st")
    assert again.unchanged == ["st_web"] and not again.of("update"), "the same file again changes nothing"
    changed = plan_deploy(stack_plan(tmp_path, "init: false\ngroup_add: [audio]"), Current(services=[stored]), "st")
    (step,) = changed.of("update", "service")
    assert {c.path for c in step.changes} == {"TaskTemplate.ContainerSpec.Init", "TaskTemplate.ContainerSpec.Groups"}


def test_compose_bad_group_is_refused_by_the_managers(tmp_path):
    (desired,) = stack_plan(tmp_path, "group_add: [audio, 'a b']").services
    message = r"^TaskTemplate.ContainerSpec.Groups\[1\]: 'a b' is not a group name or a numeric gid$"
    with pytest.raises(SpecError, match=message):
        validate_service_spec(codec.decode(ServiceSpec, desired))


# --- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("value, reason", [
    ("", "must be a group name or a numeric gid, got an empty value"),
    ("a:b", "'a:b' is not a group name or a numeric gid"),
    ("a,b", "'a,b' is not a group name or a numeric gid"),
    ("-x", "'-x' is not a group name or a numeric gid"),
    ("２", "'２' is not a group name or a numeric gid"),  # a digit, but not an ASCII one
    ("2147483648", "gid 2147483648 is out of range (0-2147483647)"),
])
def test_bad_groups(value, reason):
    with pytest.raises(ValueError) as err:
        check_group(value)
    assert str(err.value) == reason
    spec = codec.decode(ServiceSpec, {**SPEC, "TaskTemplate": {"ContainerSpec": {"Image": "b",
                                                                                 "Groups": ["ok", value]}}})
    with pytest.raises(SpecError) as err:
        validate_service_spec(spec)
    assert str(err.value) == f"TaskTemplate.ContainerSpec.Groups[1]: {reason}"


@pytest.mark.parametrize("value", ["audio", "docker_users", "www-data", "a.b", "0", "2147483647"])
def test_good_groups(value):
    check_group(value)


# --- CLI --------------------------------------------------------------------------------------

def test_create_and_update_flags():
    spec = build_spec(ServiceOptions(image="busybox", init=True, groups=["audio", "44"]))
    assert spec["TaskTemplate"]["ContainerSpec"] == {"Image": "busybox", "Groups": ["audio", "44"], "Init": True}
    assert "Init" not in build_spec(ServiceOptions(image="busybox"))["TaskTemplate"]["ContainerSpec"]
    cs = apply_update(SPEC, UpdateOptions(group_rm=["audio"], group_add=["video", "44", "video"], init=False))
    assert cs["TaskTemplate"]["ContainerSpec"] == {"Image": "busybox", "Groups": ["44", "video"], "Init": False}
    cs = apply_update(SPEC, UpdateOptions(group_rm=["audio", "44"]))["TaskTemplate"]["ContainerSpec"]
    assert "Groups" not in cs and cs["Init"] is True, "no groups left: the key goes; init untouched"
    with pytest.raises(ValueError, match=r"^--group: 'a:b' is not a group name or a numeric gid$"):
        build_spec(ServiceOptions(image="busybox", groups=["a:b"]))
    with pytest.raises(ValueError, match=r"^--group-add: gid 99999999999 is out of range"):
        apply_update(SPEC, UpdateOptions(group_add=["99999999999"]))


class FakeClient(Client):
    """Records what the commands send; serves one service."""

    def __init__(self, spec: dict):
        self.spec, self.posted = spec, []

    def get(self, path, params=None, **kw):
        return {"ID": "s1", "Version": {"Index": 3}, "Spec": self.spec}

    def post(self, path, params=None, body=None, **kw):
        self.posted.append((path, body))
        return {"ID": "s1"}


def test_typer_parses_the_flags():
    runner = CliRunner()
    fake = FakeClient(SPEC)
    res = runner.invoke(service.app, ["create", "--detach", "--init", "--group", "audio", "--group", "44",
                                      "busybox", "sleep", "1"], obj=fake)
    assert res.exit_code == 0, res.output
    cs = fake.posted[-1][1]["TaskTemplate"]["ContainerSpec"]
    assert (cs["Init"], cs["Groups"], cs["Args"]) == (True, ["audio", "44"], ["sleep", "1"])
    res = runner.invoke(service.app, ["update", "--detach", "--no-init", "--group-add", "video", "--group-rm", "44",
                                      "web"], obj=fake)
    assert res.exit_code == 0, res.output
    assert fake.posted[-1] == ("/services/s1/update", {**SPEC, "TaskTemplate": {"ContainerSpec": {
        "Image": "busybox", "Groups": ["audio", "video"], "Init": False}}})
    res = runner.invoke(service.app, ["update", "--detach", "--init", "web"], obj=fake)
    assert fake.posted[-1][1]["TaskTemplate"]["ContainerSpec"]["Init"] is True


def test_a_bad_flag_is_one_line_and_a_non_zero_exit():
    env = {**os.environ, "PYTHONPATH": str(REPO), "SHOAL_HOST": "unix:///nonexistent/shoal.sock"}
    r = subprocess.run([sys.executable, "-m", "cli.main", "service", "create", "--group", "a:b", "busybox", "true"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert (r.returncode, r.stderr) == (2, "--group: 'a:b' is not a group name or a numeric gid\n"), r


def test_pretty_shows_them():
    text = pretty_service({"ID": "s1", "Spec": SPEC})
    assert " Init:\t\ttrue" in text.splitlines() and " Groups:\taudio 44" in text.splitlines()


# --- the node ---------------------------------------------------------------------------------

def test_the_node_gets_init_and_groups():
    image = Image(id="sha256:" + "0" * 64, references=[], manifest_digest="", created="", size=0,
                  config={"config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]}})
    task = Task(id="t1", spec=codec.decode(ServiceSpec, SPEC).task_template)
    cfg = container_config(task, image, [])
    assert (cfg.init, cfg.groups) == (True, ["audio", "44"])
    plain = container_config(Task(id="t2", spec=codec.decode(ServiceSpec, {"TaskTemplate": {"ContainerSpec": {
        "Image": "busybox"}}}).task_template), image, [])
    assert (plain.init, plain.groups) == (False, []), "Init unset: no init, as dockerd's default"
