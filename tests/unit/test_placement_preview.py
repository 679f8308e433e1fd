"""The placement preview (manager/placement.py): the real scheduler over the store's objects,
for services about to be created or updated. Pure."""
from __future__ import annotations

import copy

from api.ids import timestamp
from api.objects import (Endpoint, EndpointSpec, GlobalService, Node, NodeDescription, NodeSpec, NodeStatus,
                         Placement, PortConfig, ReplicatedService, Service, ServiceMode, ServiceSpec, Task,
                         TaskSpec, TaskStatus, ContainerSpec)
from manager.placement import PreviewRequest, preview_placement

NOW = 1_800_000_000.0


def node(nid: str, role: str = "worker", availability: str = "active", labels=None, ready: bool = True) -> Node:
    return Node(id=nid, spec=NodeSpec(role=role, availability=availability, labels=labels or {}),
                description=NodeDescription(hostname=nid), status=NodeStatus(state="ready" if ready else "down"))


NODES = [node("m1", "manager"), node("w1"), node("w2")]


def spec(name="web", replicas=3, image="busybox:latest", constraints=(), global_=False, ports=()) -> ServiceSpec:
    mode = ServiceMode(global_=GlobalService()) if global_ else ServiceMode(replicated=ReplicatedService(replicas))
    return ServiceSpec(name=name, mode=mode,
                       task_template=TaskSpec(container_spec=ContainerSpec(image=image),
                                              placement=Placement(constraints=list(constraints)) if constraints else None),
                       endpoint_spec=EndpointSpec(ports=[PortConfig(target_port=80, published_port=p)
                                                         for p in ports]) if ports else None)


def running(svc: Service, slot: int, node_id: str, tid: str | None = None) -> Task:
    return Task(id=tid or f"{svc.id}.{slot}.{node_id}", service_id=svc.id, slot=slot, node_id=node_id,
                spec=copy.deepcopy(svc.spec.task_template), desired_state="running", created_at=timestamp(NOW - 60),
                status=TaskStatus(state="running", timestamp=timestamp(NOW - 60)))


def new(s: ServiceSpec, k: int = 0) -> PreviewRequest:
    return PreviewRequest(Service(id=f"new{k}", spec=s))


def update(existing: Service, s: ServiceSpec) -> PreviewRequest:
    return PreviewRequest(Service(id=existing.id, spec=s), existing)


def test_a_new_service_spreads_over_the_nodes():
    (r,) = preview_placement([new(spec(replicas=4))], NODES, [], [], NOW)
    assert r.new_tasks == 4 and sum(r.nodes.values()) == 4 and not r.unplaced
    assert sorted(r.nodes.values()) == [1, 1, 2]


def test_existing_tasks_steer_the_spread_and_constraints_give_reasons():
    other = Service(id="o", spec=spec("other", 2))
    tasks = [running(other, 1, "w1"), running(other, 2, "w1")]
    (r,) = preview_placement([new(spec(replicas=2, constraints=["node.role==worker"]))], NODES, [other], tasks, NOW)
    assert dict(r.nodes) == {"w1": 1, "w2": 1}
    (r,) = preview_placement([new(spec(replicas=2, constraints=["node.labels.zone==eu"]))], NODES, [], [], NOW)
    assert not r.nodes and dict(r.unplaced) == {
        "no suitable node (3 nodes did not satisfy constraint node.labels.zone==eu)": 2}


def test_a_scale_up_places_only_the_new_slots_and_an_unchanged_spec_none():
    svc = Service(id="s1", spec=spec(replicas=2))
    tasks = [running(svc, 1, "m1"), running(svc, 2, "w1")]
    (r,) = preview_placement([update(svc, spec(replicas=3))], NODES, [svc], tasks, NOW)
    assert r.new_tasks == 1 and dict(r.nodes) == {"w2": 1}
    (r,) = preview_placement([update(svc, spec(replicas=2))], NODES, [svc], tasks, NOW)
    assert r.new_tasks == 0 and not r.nodes
    (r,) = preview_placement([update(svc, spec(replicas=1))], NODES, [svc], tasks, NOW)
    assert r.new_tasks == 0, "a scale-down places nothing"


def test_a_changed_template_replaces_every_task():
    svc = Service(id="s1", spec=spec(replicas=2))
    tasks = [running(svc, 1, "w1"), running(svc, 2, "w1")]
    (r,) = preview_placement([update(svc, spec(replicas=2, image="busybox:1.36"))], NODES, [svc], tasks, NOW)
    assert r.new_tasks == 2 and sum(r.nodes.values()) == 2 and r.nodes["w1"] <= 1, \
        "the replaced tasks no longer hold w1"


def test_a_global_service_gets_a_task_on_every_eligible_active_node():
    nodes = NODES + [node("w3", availability="drain"), node("w4", labels={"tier": "edge"})]
    (r,) = preview_placement([new(spec("agent", global_=True, constraints=["node.role==worker"]))], nodes, [], [], NOW)
    assert dict(r.nodes) == {"w1": 1, "w2": 1, "w4": 1}
    (r,) = preview_placement([new(spec("edge", global_=True, constraints=["node.labels.tier==edge"]))],
                             nodes, [], [], NOW)
    assert dict(r.nodes) == {"w4": 1}
    down = [node("m1", "manager"), node("w1", ready=False)]
    (r,) = preview_placement([new(spec("agent", global_=True))], down, [], [], NOW)
    assert dict(r.nodes) == {"m1": 1} and dict(r.unplaced) == {"1 node not available for new tasks": 1}
    svc = Service(id="g", spec=spec("agent", global_=True))
    (r,) = preview_placement([update(svc, spec("agent", global_=True))], NODES, [svc],
                             [running(svc, 0, n.id) for n in NODES], NOW)
    assert r.new_tasks == 0


def test_services_of_one_deploy_see_each_other_and_removed_ones_free_their_nodes():
    host = lambda name: spec(name, 1, constraints=["node.hostname==w1"])  # noqa: E731
    a, b = preview_placement([new(host("a"), 0), new(host("b"), 1)], NODES, [], [], NOW)
    assert dict(a.nodes) == dict(b.nodes) == {"w1": 1}
    # host-mode ports: the second service's task cannot share w1 with the first's
    s1 = spec("a", 1, constraints=["node.hostname==w1"])
    s1.endpoint_spec = EndpointSpec(ports=[PortConfig(target_port=80, published_port=9100, publish_mode="host")])
    s2 = copy.deepcopy(s1)
    s2.name = "b"
    a, b = preview_placement([new(s1, 0), new(s2, 1)], NODES, [], [], NOW)
    assert dict(a.nodes) == {"w1": 1} and "host-mode port already in use on 1 node" in next(iter(b.unplaced))
    old = Service(id="old", spec=s1)
    (r,) = preview_placement([new(s2)], NODES, [old], [running(old, 1, "w1")], NOW, removed=["old"])
    assert dict(r.nodes) == {"w1": 1}, "the removed service's task no longer holds the port"


def test_a_routing_mesh_port_held_by_another_service_is_an_error():
    holder = Service(id="h", spec=spec("holder", 1, ports=[8080]),
                     endpoint=Endpoint(ports=[PortConfig(target_port=80, published_port=8080)]))
    (r,) = preview_placement([new(spec("web", 1, ports=[8080]))], NODES, [holder], [], NOW)
    assert r.error == "EndpointSpec.Ports[0].PublishedPort: 8080/tcp is already in use by service holder"
    (r,) = preview_placement([update(holder, spec("holder", 2, ports=[8080]))], NODES, [holder], [], NOW)
    assert r.error == "", "its own port"
    a, b = preview_placement([new(spec("a", 1, ports=[9000]), 0), new(spec("b", 1, ports=[9000]), 1)], NODES, [], [], NOW)
    assert a.error == "" and "in use by service a" in b.error
