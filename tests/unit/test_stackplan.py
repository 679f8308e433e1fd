"""The stack deploy plan (cli/stackplan.py) and the field diff it shows (cli/specdiff.py): pure."""
from __future__ import annotations

import copy
from pathlib import Path

from api import codec
from api.objects import ServiceSpec
from cli.compose import NAMESPACE_LABEL, StackPlan, load_stack
from cli.specdiff import ABSENT, diff
from cli.stackplan import Current, comparable, plan_deploy, removal_plan, render_placement, render_steps, summary

REPO = Path(__file__).resolve().parents[2]


def stored(spec: dict, sid: str = "id1", image: str | None = None) -> dict:
    """A service as GET /services shows it: the spec as the daemon stores it, image pinned."""
    body = codec.encode(codec.decode(ServiceSpec, spec))
    if image is not None:
        body["TaskTemplate"]["ContainerSpec"]["Image"] = image
    return {"ID": sid, "Version": {"Index": 7}, "Spec": body}


def web(**changes) -> dict:
    spec = {"Name": "s_web", "Labels": {NAMESPACE_LABEL: "s"},
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Env": ["A=1"]},
                             "Networks": [{"Target": "s_default", "Aliases": ["web"]}]},
            "Mode": {"Replicated": {"Replicas": 2}},
            "UpdateConfig": {"Parallelism": 1, "Order": "start-first"},
            "EndpointSpec": {"Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080,
                                        "PublishMode": "ingress"}]}}
    for path, value in changes.items():
        node = spec
        *parents, last = path.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return spec


def desired(*services: dict, networks=None, secrets=None, configs=None) -> StackPlan:
    nets = {"s_default": {"Name": "s_default", "Labels": {NAMESPACE_LABEL: "s"}, "Driver": "overlay",
                          "External": False}} if networks is None else networks
    return StackPlan(services=list(services), networks=nets, secrets=secrets or {}, configs=configs or {})


# ---------------------------------------------------------------- specdiff

def test_diff_names_each_changed_field_by_its_path():
    old = {"TaskTemplate": {"ContainerSpec": {"Env": ["A=1"]}}, "Mode": {"Replicated": {"Replicas": 2}}}
    new = {"TaskTemplate": {"ContainerSpec": {"Env": ["A=2"]}}, "Mode": {"Replicated": {"Replicas": 3}}}
    assert [str(c) for c in diff(old, new)] == ['Mode.Replicated.Replicas: 2 -> 3',
                                                'TaskTemplate.ContainerSpec.Env: ["A=1"] -> ["A=2"]']


def test_diff_walks_lists_of_objects_and_quotes_dotted_keys():
    old = {"Ports": [{"PublishedPort": 8080}], "Labels": {"com.x": "1"}}
    new = {"Ports": [{"PublishedPort": 8081}], "Labels": {"com.x": "2", "b": "x"}}
    assert [str(c) for c in diff(old, new)] == ['Labels.b: (unset) -> "x"', 'Labels["com.x"]: "1" -> "2"',
                                                'Ports[0].PublishedPort: 8080 -> 8081']
    (c,) = diff({"Ports": [{"A": 1}]}, {"Ports": [{"A": 1}, {"A": 2}]})   # a longer list: whole
    assert c.path == "Ports" and c.old == [{"A": 1}]
    assert diff({"a": 1}, {})[0].new is ABSENT
    assert diff({"a": 1}, {"a": True}), "1 and true are different values"
    assert diff({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) == []


# ---------------------------------------------------------------- comparable

def test_the_daemons_defaults_and_pinned_digest_are_no_change():
    spec = web()
    current = stored(spec, image="busybox:latest@sha256:" + "a" * 64)
    assert "FailureAction" in current["Spec"]["UpdateConfig"], "the daemon fills defaults the file leaves out"
    a, b = comparable(current["Spec"], spec)
    assert diff(a, b) == []


def test_a_digest_written_in_the_file_is_compared_in_full():
    pinned = "busybox@sha256:" + "b" * 64
    current = stored(web(TaskTemplate__ContainerSpec__Image=pinned))
    other = web(TaskTemplate__ContainerSpec__Image="busybox@sha256:" + "c" * 64)
    assert [c.path for c in diff(*comparable(current["Spec"], other))] == ["TaskTemplate.ContainerSpec.Image"]


# ---------------------------------------------------------------- plan_deploy

def test_a_new_stack_creates_networks_then_services():
    plan = plan_deploy(desired(web()), Current(), "s")
    assert render_steps(plan) == ["+ network s_default", "+ service s_web"]
    assert plan.errors == [] and plan.unchanged == []


def test_redeploying_the_same_files_changes_nothing():
    current = Current(services=[stored(web(), image="busybox:latest")], networks=[{"Name": "s_default", "Id": "n"}])
    plan = plan_deploy(desired(web()), current, "s")
    assert plan.steps == [] and plan.unchanged == ["s_web"]
    assert summary(plan) == "0 to create, 0 to update, 0 to remove, 1 service unchanged"


def test_an_edit_is_an_update_with_its_field_diff():
    current = Current(services=[stored(web())], networks=[{"Name": "s_default", "Id": "n"}])
    new = web(Mode={"Replicated": {"Replicas": 3}})
    new["TaskTemplate"]["ContainerSpec"]["Env"] = ["A=2"]
    plan = plan_deploy(desired(new), current, "s")
    (step,) = plan.steps
    assert (step.op, step.name, step.current["ID"]) == ("update", "s_web", "id1")
    assert render_steps(plan) == ['~ service s_web: Mode.Replicated.Replicas: 2 -> 3',
                                  '~ service s_web: TaskTemplate.ContainerSpec.Env: ["A=1"] -> ["A=2"]']


def test_prune_removes_what_the_stack_owns_and_nothing_else():
    old = stored(web(Name="s_old"), sid="old")
    current = Current(
        services=[stored(web()), old],
        networks=[{"Name": "s_default", "Id": "n1", "Labels": {NAMESPACE_LABEL: "s"}},
                  {"Name": "s_gone", "Id": "n2", "Labels": {NAMESPACE_LABEL: "s"}},
                  {"Name": "theirs", "Id": "n3", "Labels": {NAMESPACE_LABEL: "other"}},
                  {"Name": "ingress", "Id": "n4", "Labels": {}}],
        secrets=[{"ID": "x1", "Spec": {"Name": "s_pw", "Labels": {NAMESPACE_LABEL: "s"}}}])
    assert render_steps(plan_deploy(desired(web()), current, "s")) == [], "without prune nothing goes"
    plan = plan_deploy(desired(web()), current, "s", prune=True)
    assert render_steps(plan) == ["- service s_old", "- network s_gone", "- secret s_pw"]
    rm = removal_plan(current, "s")
    assert render_steps(rm) == ["- service s_old", "- service s_web", "- network s_default", "- network s_gone",
                                "- secret s_pw"]


def test_secrets_and_configs_are_created_when_missing_and_kept_when_present():
    secrets = {"s_pw": {"Name": "s_pw", "Labels": {NAMESPACE_LABEL: "s"}, "Data": "eA==", "External": False},
               "s_key": {"Name": "s_key", "Labels": {NAMESPACE_LABEL: "s"}, "File": "/k", "External": False}}
    configs = {"s_conf": {"Name": "s_conf", "Labels": {NAMESPACE_LABEL: "s"}, "Data": "eA==", "External": False}}
    current = Current(secrets=[{"ID": "1", "Spec": {"Name": "s_key"}}])
    plan = plan_deploy(desired(web(), secrets=secrets, configs=configs), current, "s")
    assert render_steps(plan) == ["+ secret s_pw", "+ config s_conf", "+ network s_default", "+ service s_web"]
    assert "External" not in plan.steps[0].spec


def test_missing_external_objects_are_errors_naming_them():
    nets = {"outside": {"Name": "outside", "External": True}}
    secrets = {"token": {"Name": "token", "External": True}}
    plan = plan_deploy(desired(web(), networks=nets, secrets=secrets), Current(), "s")
    assert plan.errors == [
        'secrets.token: declared as external, but no secret named "token" exists: create it '
        "(shoal secret create token FILE) before deploying the stack",
        'networks.outside: declared as external, but no network named "outside" exists: create it '
        "(shoal network create -d overlay outside) before deploying the stack",
    ]
    ok = plan_deploy(desired(web(), networks=nets), Current(networks=[{"Name": "outside", "Id": "x"}]), "s")
    assert ok.errors == [] and ok.of("create", "network") == []


def test_the_example_stacks_load_and_plan():
    for name in ("hello", "web", "global", "voting"):
        stack = load_stack([str(REPO / "stacks" / f"{name}.yml")], "ex", {})
        assert stack.warnings == [], (name, stack.warnings)
        plan = plan_deploy(stack, Current(), "ex")
        assert plan.errors == [] and plan.of("create", "service"), name
        again = Current(services=[stored(s, sid=s["Name"]) for s in stack.services],
                        networks=[{"Name": n, "Id": n} for n in stack.networks])
        assert plan_deploy(copy.deepcopy(stack), again, "ex").steps == [], f"{name}: redeploy changes nothing"


# ---------------------------------------------------------------- rendering the placement preview

def test_placement_lines():
    assert render_placement({"Name": "s_web", "NewTasks": 3, "Nodes": [
        {"Hostname": "node-1", "Tasks": 2}, {"Hostname": "node-2", "Tasks": 1}], "Unplaced": []}) \
        == "s_web: 3 tasks -> node-1 (2), node-2 (1)"
    assert render_placement({"Name": "s_db", "NewTasks": 1, "Nodes": [], "Unplaced": [
        {"Tasks": 1, "Reason": "no suitable node (3 nodes did not satisfy constraint node.role==manager)"}]}) \
        == "s_db: 1 task cannot be placed: no suitable node (3 nodes did not satisfy constraint node.role==manager)"
    assert render_placement({"Name": "s_x", "NewTasks": 3, "Nodes": [{"Hostname": "w1", "Tasks": 2}],
                             "Unplaced": [{"Tasks": 1, "Reason": "r"}]}) == "s_x: 3 tasks -> w1 (2); 1 cannot be placed: r"
    assert render_placement({"Name": "s_y", "NewTasks": 0, "Nodes": [], "Unplaced": []}) == "s_y: no new tasks"
    assert render_placement({"Name": "s_z", "Error": "TaskTemplate.ContainerSpec.Image: no such image"}) \
        == "s_z: cannot be deployed: TaskTemplate.ContainerSpec.Image: no such image"


def test_resolve_image_always_updates_a_service_whose_tag_moved():
    from cli.stackplan import with_moved_tags
    old, new = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    app = web(Name="s_app", TaskTemplate__ContainerSpec__Image="reg.io/app:1")
    local = web(Name="s_web")  # busybox imported here: pinned to no digest, nothing to ask
    current = Current(services=[stored(app, "id2", f"reg.io/app:1@{old}"), stored(local, "id1", "busybox:latest")],
                      networks=[{"Name": "s_default", "Id": "n1", "Labels": {NAMESPACE_LABEL: "s"}}])
    asked = []

    def registry(image):
        asked.append(image)
        return new
    plan = plan_deploy(desired(app, local), current, "s")
    assert plan.steps == [] and sorted(plan.unchanged) == ["s_app", "s_web"]
    plan = with_moved_tags(plan, current, desired(app, local), registry)
    assert asked == ["reg.io/app:1"] and plan.unchanged == ["s_web"]
    (step,) = plan.steps
    assert (step.op, step.name, step.current["ID"]) == ("update", "s_app", "id2")
    assert render_steps(plan) == [f'~ service s_app: TaskTemplate.ContainerSpec.Image: "reg.io/app:1@{old}" -> '
                                  f'"reg.io/app:1@{new}"']
    # the registry unreachable, or the tag where it was: unchanged
    plan = with_moved_tags(plan_deploy(desired(app, local), current, "s"), current, desired(app, local), lambda i: None)
    assert plan.steps == []
    plan = with_moved_tags(plan_deploy(desired(app, local), current, "s"), current, desired(app, local), lambda i: old)
    assert plan.steps == []
