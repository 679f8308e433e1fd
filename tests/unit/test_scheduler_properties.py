"""Property tests over random clusters and services, checked against a plain oracle written
here from the rules (not from the scheduler's code)."""
from __future__ import annotations

import random
import re
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler import NodeInfo, PlacedTask, TaskRequest, schedule
from scheduler.cluster import ClusterState
from scheduler.filters import compile_request

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ZONES = ["a", "b", "c", None]  # None: the node lacks the label
RACKS = ["1", "2", None]
CONSTRAINTS = ["node.labels.zone==a", "node.labels.zone!=a", "node.labels.zone==B", "node.role==worker",
               "node.role!=worker", "node.platform.arch==x86_64", "node.platform.os!=windows",
               "engine.labels.gpu==yes", "engine.labels.gpu!=yes", "node.hostname!=h1", "node.id!=n2"]
PLATFORMS = [(), (("linux", "amd64"),), (("linux", ""),), (("", "arm64"), ("windows", "x86_64"))]
PORTS = [(), (("tcp", 80),), (("udp", 53), ("tcp", 53))]


# -- the oracle ------------------------------------------------------------------------

def attribute(n: NodeInfo, key: str) -> str:
    key_l = key.lower()
    plain = {"node.id": n.id, "node.hostname": n.hostname, "node.role": n.role,
             "node.platform.os": n.os, "node.platform.arch": n.arch}
    if key_l in plain:
        return plain[key_l]
    if key_l.startswith("node.labels."):
        return n.labels.get(key[len("node.labels."):], "")
    return n.engine_labels.get(key[len("engine.labels."):], "")


def satisfies(n: NodeInfo, constraint: str) -> bool:
    op = "==" if "==" in constraint else "!="
    key, value = (s.strip() for s in constraint.split(op))
    equal = attribute(n, key).lower() == value.lower()
    return equal if op == "==" else not equal


def arch(a: str) -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(a.lower(), a.lower())


def platform_ok(n: NodeInfo, platforms) -> bool:
    return not platforms or any((not o or o.lower() == n.os.lower()) and (not a or arch(a) == arch(n.arch))
                                for o, a in platforms)


def statically_ok(n: NodeInfo, t: TaskRequest) -> bool:
    return (n.ready and n.availability == "active" and all(satisfies(n, c) for c in t.constraints)
            and platform_ok(n, t.platforms))


class Ledger:
    """Everything on every node once the decision is applied."""

    def __init__(self, nodes, placed, pending, decision):
        self.nodes = {n.id: n for n in nodes}
        self.on: dict[str, list] = {n.id: [] for n in nodes}
        for p in placed:
            if p.node_id in self.on:
                self.on[p.node_id].append((p, False))
        by_id = {t.id: t for t in pending}
        for task_id, node_id in decision.assignments.items():
            self.on[node_id].append((by_id[task_id], True))

    def could_take_another(self, n: NodeInfo, t: TaskRequest) -> bool:
        here = [x for x, _ in self.on[n.id]]
        if not statically_ok(n, t):
            return False
        if t.reserve_nano_cpus and n.nano_cpus - sum(x.reserve_nano_cpus for x in here) < t.reserve_nano_cpus:
            return False
        if t.reserve_memory and n.memory_bytes - sum(x.reserve_memory for x in here) < t.reserve_memory:
            return False
        used = {p for x in here for p in x.host_ports}
        if any(p in used for p in t.host_ports):
            return False
        mine = sum(1 for x in here if x.service_id == t.service_id)
        return not (t.max_replicas_per_node and mine >= t.max_replicas_per_node)


# -- generators ------------------------------------------------------------------------

@st.composite
def clusters(draw, min_nodes=0, max_nodes=10, healthy=False):
    count = draw(st.integers(min_nodes, max_nodes))
    nodes = []
    for i in range(count):
        labels = {}
        zone, rack = draw(st.sampled_from(ZONES)), draw(st.sampled_from(RACKS))
        if zone:
            labels["zone"] = zone
        if rack:
            labels["rack"] = rack
        nodes.append(NodeInfo(
            id=f"n{i}", hostname=f"h{i}", role=draw(st.sampled_from(["manager", "worker"])),
            ready=True if healthy else draw(st.booleans() | st.just(True)),
            availability="active" if healthy else draw(st.sampled_from(["active", "active", "pause", "drain"])),
            labels=labels, engine_labels={"gpu": "yes"} if draw(st.booleans()) else {},
            os=draw(st.sampled_from(["linux", "linux", "windows"])),
            arch=draw(st.sampled_from(["x86_64", "aarch64", "amd64"])),
            nano_cpus=draw(st.integers(0, 4)), memory_bytes=draw(st.integers(0, 4))))
    return nodes


@st.composite
def services(draw, nodes, max_services=4, max_tasks=12):
    pending, placed = [], []
    for s in range(draw(st.integers(1, max_services))):
        sid = f"s{s}"
        spec = dict(
            service_id=sid, spec_key=f"{sid}:1",
            constraints=tuple(draw(st.lists(st.sampled_from(CONSTRAINTS), max_size=2))),
            preferences=tuple(draw(st.sampled_from(
                [(), ("spread=node.labels.zone",), ("spread=node.labels.zone", "spread=node.labels.rack")]))),
            reserve_nano_cpus=draw(st.integers(0, 2)), reserve_memory=draw(st.integers(0, 2)),
            max_replicas_per_node=draw(st.integers(0, 3)), host_ports=draw(st.sampled_from(PORTS)),
            platforms=draw(st.sampled_from(PLATFORMS)))
        for r in range(draw(st.integers(0, max_tasks))):
            pending.append(TaskRequest(id=f"{sid}.{r}", **spec))
        if nodes and draw(st.booleans()):  # a few tasks pinned to nodes, as a global service has
            for n in draw(st.lists(st.sampled_from(nodes), max_size=3, unique_by=lambda n: n.id)):
                pending.append(TaskRequest(id=f"{sid}.g.{n.id}", node_id=n.id, **spec))
        for p in range(draw(st.integers(0, 3)) if nodes else 0):
            n = draw(st.sampled_from(nodes))
            placed.append(PlacedTask(id=f"{sid}.p{p}", service_id=sid, node_id=n.id,
                                     reserve_nano_cpus=draw(st.integers(0, 2)), reserve_memory=draw(st.integers(0, 2)),
                                     host_ports=draw(st.sampled_from(PORTS))))
    return pending, placed


@st.composite
def scenarios(draw):
    nodes = draw(clusters())
    pending, placed = draw(services(nodes))
    return nodes, placed, pending


# -- properties ------------------------------------------------------------------------

@SETTINGS
@given(scenarios())
def test_no_assignment_violates_a_filter(scenario):
    nodes, placed, pending = scenario
    decision = schedule(nodes, placed, pending)
    assert set(decision.assignments) | set(decision.unplaced) == {t.id for t in pending}
    assert not set(decision.assignments) & set(decision.unplaced)
    ledger = Ledger(nodes, placed, pending, decision)
    by_id = {t.id: t for t in pending}
    for task_id, node_id in decision.assignments.items():
        t, n = by_id[task_id], ledger.nodes[node_id]
        assert statically_ok(n, t), (t, n)
        if t.node_id:
            assert node_id == t.node_id
    for node_id, entries in ledger.on.items():
        n = ledger.nodes[node_id]
        here = [x for x, _ in entries]
        new = [x for x, is_new in entries if is_new]
        if any(x.reserve_nano_cpus for x in new):
            assert sum(x.reserve_nano_cpus for x in here) <= n.nano_cpus
        if any(x.reserve_memory for x in new):
            assert sum(x.reserve_memory for x in here) <= n.memory_bytes
        ports = Counter(p for x in here for p in x.host_ports)
        assert all(ports[p] == 1 for x in new for p in x.host_ports), (node_id, here)
        for x in new:
            if x.max_replicas_per_node:
                assert sum(1 for y in here if y.service_id == x.service_id) <= x.max_replicas_per_node


@SETTINGS
@given(scenarios())
def test_a_task_is_left_pending_only_when_no_node_can_take_it(scenario):
    nodes, placed, pending = scenario
    decision = schedule(nodes, placed, pending)
    ledger = Ledger(nodes, placed, pending, decision)
    by_id = {t.id: t for t in pending}
    for task_id, reason in decision.unplaced.items():
        t = by_id[task_id]
        if t.node_id:
            n = ledger.nodes[t.node_id]
            assert not ledger.could_take_another(n, t)
            assert re.fullmatch(r"1 node [a-z -]+.*|.* on 1 node", reason), reason
            continue
        assert not any(ledger.could_take_another(n, t) for n in nodes), (t, reason)
        assert reason.startswith("no suitable node")
        # Every node is counted under exactly one reason.
        counted = sum(int(m) for m in re.findall(r"(\d+) nodes?", reason))
        assert counted == len(nodes), reason


@SETTINGS
@given(clusters(min_nodes=1, healthy=True), st.lists(st.integers(0, 25), min_size=1, max_size=3),
       st.lists(st.sampled_from(CONSTRAINTS), max_size=2))
def test_spread_is_even_when_nothing_else_constrains(nodes, sizes, constraints):
    pending = [TaskRequest(id=f"s{s}.{r}", service_id=f"s{s}", spec_key=f"s{s}", constraints=tuple(constraints))
               for s, size in enumerate(sizes) for r in range(size)]
    decision = schedule(nodes, [], pending)
    passing = [n.id for n in nodes if all(satisfies(n, c) for c in constraints)]
    if not passing:
        assert not decision.assignments
        return
    assert not decision.unplaced
    for s in range(len(sizes)):
        counts = Counter(node_id for task_id, node_id in decision.assignments.items() if task_id.startswith(f"s{s}."))
        assert set(counts) <= set(passing)
        per_node = [counts.get(n, 0) for n in passing]
        assert max(per_node) - min(per_node) <= 1, per_node
    # Tasks overall are even too, since ties go to the node with fewest tasks.
    overall = Counter(decision.assignments.values())
    totals = [overall.get(n, 0) for n in passing]
    assert max(totals) - min(totals) <= 1


@SETTINGS
@given(clusters(min_nodes=1, healthy=True), st.integers(0, 40), st.booleans(),
       st.lists(st.sampled_from(CONSTRAINTS[:3]), max_size=1))
def test_preferences_hold_over_label_values(nodes, size, two_levels, constraints):
    prefs = ("spread=node.labels.zone",) + (("spread=node.labels.rack",) if two_levels else ())
    pending = [TaskRequest(id=f"t{r}", service_id="svc", spec_key="k", constraints=tuple(constraints),
                           preferences=prefs) for r in range(size)]
    decision = schedule(nodes, [], pending)
    passing = [n for n in nodes if all(satisfies(n, c) for c in constraints)]
    if not passing:
        return
    assert len(decision.assignments) == size
    per_node = Counter(decision.assignments.values())

    def even(groups: dict) -> None:
        totals = [sum(per_node.get(n.id, 0) for n in members) for members in groups.values()]
        assert max(totals) - min(totals) <= 1, totals

    zone = lambda n: n.labels.get("zone", "")  # noqa: E731
    rack = lambda n: n.labels.get("rack", "")  # noqa: E731
    by_zone: dict = {}
    for n in passing:
        by_zone.setdefault(zone(n), []).append(n)
    even(by_zone)
    leaves = by_zone.values()
    if two_levels:
        leaves = []
        for members in by_zone.values():
            by_rack: dict = {}
            for n in members:
                by_rack.setdefault(rack(n), []).append(n)
            even(by_rack)
            leaves.extend(by_rack.values())
    for members in leaves:
        even({n.id: [n] for n in members})


@SETTINGS
@given(scenarios(), st.randoms(use_true_random=False))
def test_same_input_gives_same_output(scenario, rnd: random.Random):
    nodes, placed, pending = scenario
    first = schedule(nodes, placed, pending)
    nodes, placed, pending = list(nodes), list(placed), list(pending)
    for seq in (nodes, placed, pending):
        rnd.shuffle(seq)
    again = schedule(nodes, placed, pending)
    assert (again.assignments, again.unplaced) == (first.assignments, first.unplaced)


@SETTINGS
@given(scenarios())
def test_bulk_prefilter_agrees_with_the_per_node_filter(scenario):
    nodes, placed, pending = scenario
    state = ClusterState(nodes, placed)
    members = list(range(len(nodes)))
    for t in pending:
        req = compile_request(t)
        counts = state.service_counts(req.service_id)
        assert state.fitting(members, req, counts) == [i for i in members if state.fits(i, req, counts)]
