"""Unit tests for the scheduler: every filter, the spread order, preferences and the reasons."""
from __future__ import annotations

import random

import pytest

from scheduler import (Decision, NodeInfo, PlacedTask, TaskRequest, node_matches, parse_constraint,
                       parse_preference, schedule)
from scheduler import bitset
from scheduler.spread import water_fill

GB = 1 << 30
CPU = 1_000_000_000


def node(id: str, **kw) -> NodeInfo:
    base = dict(hostname=f"host-{id}", role="worker", ready=True, availability="active",
                labels={}, engine_labels={}, nano_cpus=4 * CPU, memory_bytes=8 * GB)
    base.update(kw)
    return NodeInfo(id=id, **base)


def tasks(n: int, service: str = "svc", key: str | None = None, prefix: str | None = None, **kw) -> list[TaskRequest]:
    prefix = prefix or service
    return [TaskRequest(id=f"{prefix}.{i:03d}", service_id=service, spec_key=key or f"{service}:1", **kw)
            for i in range(n)]


def placed(id: str, node_id: str, service: str = "other", **kw) -> PlacedTask:
    return PlacedTask(id=id, service_id=service, node_id=node_id, **kw)


def per_node(decision: Decision) -> dict[str, int]:
    out: dict[str, int] = {}
    for node_id in decision.assignments.values():
        out[node_id] = out.get(node_id, 0) + 1
    return out


def only_reason(decision: Decision) -> str:
    reasons = set(decision.unplaced.values())
    assert len(reasons) == 1, reasons
    return reasons.pop()


# -- parsing -----------------------------------------------------------------------


class TestParseConstraint:
    @pytest.mark.parametrize("text, key, op, value", [
        ("node.id==abc", "node.id", "==", "abc"),
        (" node.hostname != web-1 ", "node.hostname", "!=", "web-1"),
        ("node.role==manager", "node.role", "==", "manager"),
        ("node.platform.os==linux", "node.platform.os", "==", "linux"),
        ("node.platform.arch!=arm64", "node.platform.arch", "!=", "arm64"),
        ("node.labels.zone == eu", "node.labels.zone", "==", "eu"),
        ("engine.labels.kernel==6.1", "engine.labels.kernel", "==", "6.1"),
        ("Node.Labels.Zone==EU", "node.labels.Zone", "==", "EU"),  # prefix folds, label name kept
        ("node.labels.name==node 1", "node.labels.name", "==", "node 1"),
        ("node.labels.x==[a-b]+c*(n|b)/", "node.labels.x", "==", "[a-b]+c*(n|b)/"),
    ])
    def test_valid(self, text, key, op, value):
        c = parse_constraint(text)
        assert (c.key, c.op, c.value) == (key, op, value)
        assert str(c) == f"{key}{op}{value}"

    @pytest.mark.parametrize("text, fragment", [
        ("", "no operator"),
        ("   ", "no operator"),
        ("node.labels.zone", "no operator"),
        ("node.labels.zone ~ eu", "no operator"),
        ("==eu", "empty key"),
        ("1node==a", "key '1node'"),
        ("no de==a", "key 'no de'"),
        ("no*de==a", "key 'no*de'"),
        ("node.role==", "empty value"),
        ("node.role==  ", "empty value"),
        ("node.role==a,b", "value 'a,b'"),
        ("node.role==a!=b", "value 'a!=b'"),
        ("node.name==x", "unknown key 'node.name'"),
        ("zone==eu", "unknown key 'zone'"),
        ("node.labels.==x", "unknown key 'node.labels.'"),
    ])
    def test_invalid(self, text, fragment):
        with pytest.raises(ValueError) as err:
            parse_constraint(text)
        assert str(err.value).startswith("constraint: ")
        assert fragment in str(err.value)
        assert "\n" not in str(err.value)


class TestParsePreference:
    def test_valid(self):
        p = parse_preference("spread=node.labels.zone")
        assert (p.strategy, p.field, p.label, str(p)) == ("spread", "node.labels", "zone", "spread=node.labels.zone")
        assert parse_preference(" spread = engine.labels.Rack ").label == "Rack"

    @pytest.mark.parametrize("text, fragment", [
        ("node.labels.zone", "is not of the form"),
        ("spread=", "is not of the form"),
        ("binpack=node.labels.zone", "unsupported strategy 'binpack'"),
        ("spread=node.id", "cannot spread over 'node.id'"),
        ("spread=node.labels.", "cannot spread over"),
    ])
    def test_invalid(self, text, fragment):
        with pytest.raises(ValueError) as err:
            parse_preference(text)
        assert str(err.value).startswith("placement preference: ")
        assert fragment in str(err.value)


# -- filters -----------------------------------------------------------------------


class TestReadyFilter:
    def test_only_ready_active_nodes_take_tasks(self):
        nodes = [node("a"), node("b", ready=False), node("c", availability="pause"),
                 node("d", availability="drain")]
        d = schedule(nodes, [], tasks(3))
        assert set(d.assignments.values()) == {"a"}

    def test_reason(self):
        nodes = [node("b", ready=False), node("c", availability="pause"), node("d", availability="drain")]
        d = schedule(nodes, [], tasks(2))
        assert d.assignments == {}
        assert d.unplaced == {"svc.000": "no suitable node (3 nodes not available for new tasks)",
                              "svc.001": "no suitable node (3 nodes not available for new tasks)"}

    def test_singular(self):
        d = schedule([node("b", availability="drain")], [], tasks(1))
        assert d.unplaced["svc.000"] == "no suitable node (1 node not available for new tasks)"

    def test_no_nodes(self):
        assert schedule([], [], tasks(1)).unplaced == {"svc.000": "no suitable node"}


class TestResourceFilter:
    def test_memory_left_after_placed_tasks(self):
        nodes = [node("a", memory_bytes=4 * GB), node("b", memory_bytes=4 * GB)]
        d = schedule(nodes, [placed("p", "a", reserve_memory=3 * GB)], tasks(1, reserve_memory=2 * GB))
        assert d.assignments == {"svc.000": "b"}

    def test_batch_uses_up_resources(self):
        d = schedule([node("a", memory_bytes=2 * GB)], [], tasks(3, reserve_memory=GB))
        assert len(d.assignments) == 2
        assert d.unplaced == {"svc.002": "no suitable node (1 node had insufficient memory)"}

    def test_cpu(self):
        nodes = [node("a", nano_cpus=CPU), node("b", nano_cpus=2 * CPU)]
        d = schedule(nodes, [], tasks(3, reserve_nano_cpus=CPU))
        assert per_node(d) == {"a": 1, "b": 2}
        d = schedule(nodes, [], tasks(4, reserve_nano_cpus=CPU))
        assert only_reason(d) == "no suitable node (2 nodes had insufficient CPU)"

    def test_cpu_and_memory_and_pluralisation(self):
        nodes = [node("a", nano_cpus=0, memory_bytes=0), node("b", nano_cpus=0), node("c", memory_bytes=0),
                 node("d", memory_bytes=0)]
        d = schedule(nodes, [], tasks(1, reserve_nano_cpus=1, reserve_memory=1))
        assert only_reason(d) == ("no suitable node (1 node had insufficient CPU; 2 nodes had insufficient "
                                  "memory; 1 node had insufficient CPU and memory)")

    def test_exact_fit_and_no_reservation_on_empty_node(self):
        d = schedule([node("a", nano_cpus=CPU, memory_bytes=GB)], [],
                     tasks(1, reserve_nano_cpus=CPU, reserve_memory=GB))
        assert d.assignments == {"svc.000": "a"}
        # A task that reserves nothing fits even a node that is overcommitted.
        d = schedule([node("a", memory_bytes=GB)], [placed("p", "a", reserve_memory=2 * GB)], tasks(1))
        assert d.assignments == {"svc.000": "a"}

    def test_placed_task_on_unknown_node_is_ignored(self):
        d = schedule([node("a", memory_bytes=GB)], [placed("p", "gone", reserve_memory=GB)],
                     tasks(1, reserve_memory=GB))
        assert d.assignments == {"svc.000": "a"}


class TestConstraintFilter:
    NODES = [
        node("id-1", hostname="web-1", role="manager", labels={"zone": "eu", "Disk": "ssd"},
             engine_labels={"kernel": "6"}, os="linux", arch="x86_64"),
        node("id-2", hostname="web-2", role="worker", labels={"zone": "us"},
             engine_labels={"kernel": "5"}, os="linux", arch="aarch64"),
        node("id-3", hostname="db-1", role="worker", labels={}, engine_labels={}, os="windows", arch="x86_64"),
    ]

    @pytest.mark.parametrize("constraint, expected", [
        ("node.id==id-2", {"id-2"}),
        ("node.id!=id-2", {"id-1", "id-3"}),
        ("node.hostname==WEB-1", {"id-1"}),  # values compare case-insensitively
        ("node.hostname!=web-1", {"id-2", "id-3"}),
        ("node.role==manager", {"id-1"}),
        ("node.role!=manager", {"id-2", "id-3"}),
        ("node.role==Worker", {"id-2", "id-3"}),
        ("node.platform.os==windows", {"id-3"}),
        ("node.platform.os!=windows", {"id-1", "id-2"}),
        ("node.platform.arch==aarch64", {"id-2"}),
        ("node.platform.arch!=x86_64", {"id-2"}),
        ("node.labels.zone==EU", {"id-1"}),
        ("node.labels.zone!=eu", {"id-2", "id-3"}),  # a node lacking the label passes !=
        ("node.labels.Disk==ssd", {"id-1"}),
        ("node.labels.disk==ssd", set()),  # label names are case-sensitive
        ("node.labels.disk!=ssd", {"id-1", "id-2", "id-3"}),
        ("engine.labels.kernel==6", {"id-1"}),
        ("engine.labels.kernel!=6", {"id-2", "id-3"}),
    ])
    def test_each_key_and_operator(self, constraint, expected):
        d = schedule(self.NODES, [], tasks(6, constraints=(constraint,)))
        assert set(d.assignments.values()) == expected
        if not expected:
            assert only_reason(d) == f"no suitable node (3 nodes did not satisfy constraint {constraint})"
        for n in self.NODES:
            assert node_matches(n, [constraint]) == (n.id in expected)

    def test_all_constraints_must_hold_and_reason_names_first_failing(self):
        d = schedule(self.NODES, [], tasks(1, constraints=("node.role==worker", "node.labels.zone==eu")))
        assert only_reason(d) == ("no suitable node (1 node did not satisfy constraint node.role==worker; "
                                  "2 nodes did not satisfy constraint node.labels.zone==eu)")


class TestPlatformFilter:
    NODES = [node("amd", arch="x86_64"), node("arm", arch="aarch64"), node("win", os="windows", arch="amd64")]

    @pytest.mark.parametrize("platforms, expected", [
        ((), {"amd", "arm", "win"}),
        ((("linux", "amd64"),), {"amd"}),  # x86_64 is amd64
        ((("linux", "arm64"),), {"arm"}),  # aarch64 is arm64
        ((("Linux", ""),), {"amd", "arm"}),  # empty arch = any arch
        ((("", "x86_64"),), {"amd", "win"}),
        ((("linux", "arm64"), ("windows", "amd64")), {"arm", "win"}),
    ])
    def test_platforms(self, platforms, expected):
        d = schedule(self.NODES, [], tasks(6, platforms=platforms))
        assert set(d.assignments.values()) == expected

    def test_reason(self):
        d = schedule(self.NODES, [], tasks(1, platforms=(("linux", "s390x"),)))
        assert only_reason(d) == "no suitable node (unsupported platform on 3 nodes)"


class TestHostPortFilter:
    def test_port_taken_by_placed_task(self):
        nodes = [node("a"), node("b")]
        d = schedule(nodes, [placed("p", "a", host_ports=(("tcp", 80),))], tasks(1, host_ports=(("tcp", 80),)))
        assert d.assignments == {"svc.000": "b"}

    def test_other_protocol_does_not_conflict(self):
        d = schedule([node("a")], [placed("p", "a", host_ports=(("udp", 80),))], tasks(1, host_ports=(("tcp", 80),)))
        assert d.assignments == {"svc.000": "a"}

    def test_batch_takes_one_node_each(self):
        nodes = [node("a"), node("b")]
        d = schedule(nodes, [], tasks(3, host_ports=(("tcp", 8080),)))
        assert per_node(d) == {"a": 1, "b": 1}
        assert only_reason(d) == "no suitable node (host-mode port already in use on 2 nodes)"

    def test_port_zero_is_not_a_host_port(self):
        d = schedule([node("a")], [], tasks(2, host_ports=(("tcp", 0),)))
        assert per_node(d) == {"a": 2}


class TestMaxReplicasFilter:
    def test_counts_placed_and_new_tasks(self):
        nodes = [node("a"), node("b")]
        d = schedule(nodes, [placed("p", "a", service="svc")], tasks(5, max_replicas_per_node=2))
        assert per_node(d) == {"a": 1, "b": 2}
        assert only_reason(d) == "no suitable node (max replicas per node limit reached on 2 nodes)"

    def test_other_services_do_not_count(self):
        d = schedule([node("a")], [placed("p", "a", service="other")], tasks(1, max_replicas_per_node=1))
        assert d.assignments == {"svc.000": "a"}


class TestReasons:
    def test_example_from_the_issue(self):
        nodes = [node("n1", ready=False), node("n2", availability="drain"),
                 node("n3", labels={"zone": "eu"}, memory_bytes=GB // 2),
                 node("n4", labels={"zone": "us"}), node("n5", labels={"zone": "us"}), node("n6")]
        d = schedule(nodes, [], tasks(1, constraints=("node.labels.zone==eu",), reserve_memory=GB))
        assert d.unplaced == {"svc.000": "no suitable node (2 nodes not available for new tasks; 1 node had "
                                         "insufficient memory; 3 nodes did not satisfy constraint "
                                         "node.labels.zone==eu)"}

    def test_pipeline_order_each_node_counted_once(self):
        nodes = [
            node("down", ready=False, memory_bytes=0, arch="arm64"),
            node("small", memory_bytes=0, labels={"zone": "us"}),
            node("us", labels={"zone": "us"}),
            node("arm", labels={"zone": "eu"}, arch="arm64"),
            node("busy", labels={"zone": "eu"}),
            node("full", labels={"zone": "eu"}),
        ]
        placed_tasks = [placed("p1", "busy", host_ports=(("tcp", 443),)), placed("p2", "full", service="svc")]
        d = schedule(nodes, placed_tasks, tasks(1, constraints=("node.labels.zone==eu",), reserve_memory=1,
                                                platforms=(("linux", "amd64"),), host_ports=(("tcp", 443),),
                                                max_replicas_per_node=1))
        assert only_reason(d) == (
            "no suitable node (1 node not available for new tasks; 1 node had insufficient memory; "
            "1 node did not satisfy constraint node.labels.zone==eu; unsupported platform on 1 node; "
            "host-mode port already in use on 1 node; max replicas per node limit reached on 1 node)")

    def test_partially_placed_batch_explains_the_end_state(self):
        nodes = [node("a", memory_bytes=GB), node("b", memory_bytes=GB), node("c", availability="pause")]
        d = schedule(nodes, [], tasks(4, reserve_memory=GB))
        assert len(d.assignments) == 2
        assert d.unplaced == {
            "svc.002": "no suitable node (1 node not available for new tasks; 2 nodes had insufficient memory)",
            "svc.003": "no suitable node (1 node not available for new tasks; 2 nodes had insufficient memory)",
        }


# -- strategy ----------------------------------------------------------------------


class TestSpread:
    def test_even_over_nodes(self):
        nodes = [node(f"n{i}") for i in range(4)]
        d = schedule(nodes, [], tasks(10))
        assert sorted(per_node(d).values()) == [2, 2, 3, 3]
        # The two extra tasks go to the lowest node ids.
        assert per_node(d) == {"n0": 3, "n1": 3, "n2": 2, "n3": 2}

    def test_fewest_tasks_of_the_service_first(self):
        nodes = [node("a"), node("b"), node("c")]
        already = [placed("p1", "a", service="svc"), placed("p2", "a", service="svc"), placed("p3", "b", service="svc")]
        d = schedule(nodes, already, tasks(3))
        assert per_node(d) == {"c": 2, "b": 1}

    def test_then_fewest_tasks_overall_then_node_id(self):
        nodes = [node("a"), node("b"), node("c")]
        already = [placed("p1", "a"), placed("p2", "a"), placed("p3", "b")]
        d = schedule(nodes, already, tasks(1))
        assert d.assignments == {"svc.000": "c"}
        d = schedule(nodes, already, tasks(2))
        assert per_node(d) == {"c": 1, "b": 1}
        d = schedule([node("b"), node("a")], [], tasks(1))
        assert d.assignments == {"svc.000": "a"}

    def test_batches_of_one_service_spread_together(self):
        nodes = [node("a"), node("b")]
        pending = tasks(1, key="svc:1", prefix="old") + tasks(1, key="svc:2", prefix="new")
        assert per_node(schedule(nodes, [], pending)) == {"a": 1, "b": 1}

    def test_later_batches_see_earlier_ones(self):
        nodes = [node("a", memory_bytes=GB), node("b", memory_bytes=GB)]
        pending = tasks(2, service="s1", reserve_memory=GB) + tasks(1, service="s2", reserve_memory=GB)
        d = schedule(nodes, [], pending)
        assert len(d.assignments) == 2
        assert d.unplaced == {"s2.000": "no suitable node (2 nodes had insufficient memory)"}


class TestPreferences:
    def test_spread_over_label_values_not_nodes(self):
        nodes = [node("a1", labels={"zone": "a"}), node("a2", labels={"zone": "a"}), node("a3", labels={"zone": "a"}),
                 node("b1", labels={"zone": "b"})]
        d = schedule(nodes, [], tasks(4, preferences=("spread=node.labels.zone",)))
        counts = per_node(d)
        assert counts["b1"] == 2
        assert sum(counts.get(n, 0) for n in ("a1", "a2", "a3")) == 2

    def test_nodes_missing_the_label_form_their_own_group(self):
        nodes = [node("a1", labels={"zone": "a"}), node("a2", labels={"zone": "a"}), node("x1"), node("x2")]
        d = schedule(nodes, [], tasks(2, preferences=("spread=node.labels.zone",)))
        counts = per_node(d)
        assert counts.get("a1", 0) + counts.get("a2", 0) == 1
        assert counts.get("x1", 0) + counts.get("x2", 0) == 1

    def test_hierarchical(self):
        nodes = [node(f"{z}{r}{i}", labels={"zone": z, "rack": r}) for z in "ab" for r in "xy" for i in range(2)]
        nodes.append(node("b-z", labels={"zone": "b", "rack": "z"}))
        d = schedule(nodes, [], tasks(12, preferences=("spread=node.labels.zone", "spread=node.labels.rack")))
        counts = per_node(d)
        zone = lambda z: sum(c for n, c in counts.items() if n.startswith(z))  # noqa: E731
        assert zone("a") == zone("b") == 6
        # Zone b has three racks: two tasks each; zone a two racks: three each.
        assert sum(c for n, c in counts.items() if n.startswith("ax")) == 3
        assert counts["b-z"] == 2

    def test_existing_tasks_fill_the_emptiest_branch_first(self):
        nodes = [node("a", labels={"zone": "a"}), node("b", labels={"zone": "b"}), node("c", labels={"zone": "c"})]
        already = [placed(f"p{i}", "a", service="svc") for i in range(4)] + [placed("q", "b", service="svc")]
        d = schedule(nodes, already, tasks(4, preferences=("spread=node.labels.zone",)))
        assert per_node(d) == {"c": 3, "b": 1}

    def test_tasks_on_nodes_that_cannot_take_more_still_count(self):
        nodes = [node("a1", labels={"zone": "a"}, availability="drain"), node("a2", labels={"zone": "a"}),
                 node("b1", labels={"zone": "b"})]
        d = schedule(nodes, [placed("p", "a1", service="svc")], tasks(1, preferences=("spread=node.labels.zone",)))
        assert d.assignments == {"svc.000": "b1"}

    def test_full_branch_hands_its_share_to_the_others(self):
        nodes = [node("a", labels={"zone": "a"}, memory_bytes=GB), node("b", labels={"zone": "b"}, memory_bytes=8 * GB)]
        d = schedule(nodes, [], tasks(6, preferences=("spread=node.labels.zone",), reserve_memory=GB))
        assert per_node(d) == {"a": 1, "b": 5}

    def test_engine_labels(self):
        nodes = [node("a1", engine_labels={"k": "1"}), node("a2", engine_labels={"k": "1"}),
                 node("b1", engine_labels={"k": "2"})]
        d = schedule(nodes, [], tasks(2, preferences=("spread=engine.labels.k",)))
        assert per_node(d)["b1"] == 1

    def test_water_fill(self):
        assert water_fill([0, 0, 0], 4) == [2, 1, 1]
        assert water_fill([4, 1, 0], 4) == [0, 1, 3]  # the extra one goes to the emptiest
        assert water_fill([4, 1, 0], 1) == [0, 0, 1]
        assert water_fill([5, 5], 3) == [2, 1]
        assert water_fill([9, 0, 9], 2) == [0, 2, 0]
        for _ in range(200):
            levels = [random.randrange(6) for _ in range(random.randrange(1, 6))]
            r = random.randrange(12)
            wants = water_fill(levels, r)
            assert sum(wants) == r and min(wants) >= 0
            after = [lv + w for lv, w in zip(levels, wants)]
            raised = [a for a, w in zip(after, wants) if w]
            if raised:  # raised branches end within one of each other, and no lower branch was skipped
                assert max(raised) - min(after) <= 1


# -- pinned tasks (global services) -------------------------------------------------


class TestPinned:
    def test_assigned_when_the_node_fits(self):
        d = schedule([node("a"), node("b")], [], tasks(1, node_id="b"))
        assert d.assignments == {"svc.000": "b"}

    def test_explanation_alone_when_it_does_not(self):
        nodes = [node("a", memory_bytes=GB), node("b", availability="drain")]
        d = schedule(nodes, [], tasks(1, node_id="a", reserve_memory=2 * GB) +
                     tasks(1, node_id="b", prefix="other", key="x"))
        assert d.unplaced == {"svc.000": "1 node had insufficient memory",
                              "other.000": "1 node not available for new tasks"}

    def test_constraint_and_unknown_node(self):
        d = schedule([node("a")], [], tasks(1, node_id="a", constraints=("node.role==manager",)) +
                     tasks(1, node_id="zz", prefix="lost", key="y"))
        assert d.unplaced == {"svc.000": "1 node did not satisfy constraint node.role==manager",
                              "lost.000": "node zz is not in the cluster"}

    def test_pinned_tasks_go_first_and_hold_resources(self):
        nodes = [node("a", memory_bytes=GB)]
        pending = tasks(1, service="rep", reserve_memory=GB) + tasks(1, service="glob", node_id="a", reserve_memory=GB)
        d = schedule(nodes, [], pending)
        assert d.assignments == {"glob.000": "a"}
        assert d.unplaced == {"rep.000": "no suitable node (1 node had insufficient memory)"}


# -- input handling ---------------------------------------------------------------


class TestInput:
    def test_invalid_task_fields_leave_the_batch_unplaced_with_the_error(self):
        d = schedule([node("a")], [], tasks(2, constraints=("zone==eu",)) +
                     tasks(1, service="s2", reserve_memory=-1) + tasks(1, service="s3", preferences=("pack=x",)) +
                     tasks(1, service="s4", host_ports=(("icmp", 1),)) + tasks(1, service="ok"))
        assert d.assignments == {"ok.000": "a"}
        assert d.unplaced["svc.000"] == d.unplaced["svc.001"]
        assert d.unplaced["svc.000"].startswith("constraint: unknown key 'zone'")
        assert d.unplaced["s2.000"].startswith("reserve_memory: ")
        assert d.unplaced["s3.000"].startswith("placement preference: ")
        assert d.unplaced["s4.000"].startswith("host_ports: ")

    def test_spec_key_shared_by_different_specs(self):
        pending = tasks(1) + [TaskRequest(id="svc.009", service_id="svc", spec_key="svc:1", reserve_memory=1)]
        with pytest.raises(ValueError, match="share spec_key 'svc:1' but differ in reserve_memory"):
            schedule([node("a")], [], pending)

    @pytest.mark.parametrize("nodes, pending, message", [
        ([node("a"), node("a")], [], "nodes: duplicate node id 'a'"),
        ([node("a", role="boss")], [], "nodes: node 'a' has role 'boss'"),
        ([node("a", availability="gone")], [], "nodes: node 'a' has availability 'gone'"),
        ([node("a")], tasks(1) + tasks(1), "pending: duplicate task id 'svc.000'"),
    ])
    def test_malformed_input_raises(self, nodes, pending, message):
        with pytest.raises(ValueError, match=message):
            schedule(nodes, [], pending)

    def test_same_input_in_any_order_gives_the_same_decision(self):
        nodes = [node(f"n{i}", labels={"zone": "abc"[i % 3]}, memory_bytes=(i % 4) * GB) for i in range(12)]
        pending = (tasks(9, service="s1", preferences=("spread=node.labels.zone",))
                   + tasks(7, service="s2", reserve_memory=GB, constraints=("node.labels.zone!=c",))
                   + tasks(5, service="s3", host_ports=(("tcp", 80),)))
        already = [placed(f"p{i}", f"n{i}", service="s1") for i in range(0, 12, 5)]
        first = schedule(nodes, already, pending)
        rng = random.Random(7)
        for _ in range(5):
            for seq in (nodes, pending, already):
                rng.shuffle(seq)
            again = schedule(nodes, already, pending)
            assert again.assignments == first.assignments and again.unplaced == first.unplaced

    def test_node_matches_checks_platform(self):
        assert node_matches(node("a", arch="aarch64"), [], [("linux", "arm64")])
        assert not node_matches(node("a"), ["node.role==worker"], [("windows", "")])


def test_bitset_round_trip():
    rng = random.Random(1)
    for size in (0, 1, 7, 8, 9, 64, 65, 1000):
        members = sorted(rng.sample(range(size), size // 3)) if size else []
        mask = bitset.from_indices(members, size)
        assert bitset.to_indices(mask) == members
        assert bitset.count(mask) == len(members)
