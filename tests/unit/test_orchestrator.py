import itertools

from api.ids import timestamp
from api.objects import (ReplicatedService, RestartPolicy, SECOND, Service, ServiceMode, ServiceSpec, Task,
                         TaskSpec, TaskStatus)
from manager.orchestrator.replicated import reconcile_removed, reconcile_replicated

NOW = 1_800_000_000.0


def ids():
    c = itertools.count(1)
    return lambda: f"t{next(c)}"


def service(replicas=3, policy=None):
    return Service(id="s", spec=ServiceSpec(name="web", mode=ServiceMode(replicated=ReplicatedService(replicas)),
                                            task_template=TaskSpec(restart_policy=policy)))


def task(tid, slot, state="running", desired="running", at=NOW - 100):
    return Task(id=tid, service_id="s", slot=slot, node_id="n", desired_state=desired, created_at=timestamp(at),
                status=TaskStatus(state=state, timestamp=timestamp(at)))


def creates(plan):
    return [a.obj for a in plan.actions if a.op == "create"]


def test_creates_missing_slots():
    plan = reconcile_replicated(service(3), [task("a", 1)], NOW, ids())
    assert sorted(t.slot for t in creates(plan)) == [2, 3]
    assert all(t.desired_state == "running" and t.status.state == "new" for t in creates(plan))


def test_scale_down_removes_highest_slots():
    tasks = [task(f"x{i}", i) for i in range(1, 6)]
    plan = reconcile_replicated(service(2), tasks, NOW, ids())
    stopped = sorted(a.id for a in plan.actions if a.op == "task_desired" and a.obj == "shutdown")
    assert stopped == ["x3", "x4", "x5"]


def test_failed_task_is_replaced_in_same_slot_after_delay():
    tasks = [task("a", 1), task("b", 2, state="failed")]
    plan = reconcile_replicated(service(2), tasks, NOW, ids())
    assert [a.id for a in plan.actions if a.op == "task_desired"] == ["b"]
    (new,) = creates(plan)
    assert new.slot == 2 and new.desired_state == "ready"
    assert plan.wake_at == NOW + 5
    # once the delay has passed the replacement is promoted to running
    new.created_at = timestamp(NOW - 6)
    tasks = [task("a", 1), task("b", 2, state="failed", desired="shutdown"), new]
    plan = reconcile_replicated(service(2), tasks, NOW, ids())
    assert [(a.op, a.id, a.obj) for a in plan.actions] == [("task_desired", new.id, "running")]


def test_restart_condition_none_leaves_slot_down():
    tasks = [task("a", 1, state="complete")]
    plan = reconcile_replicated(service(1, RestartPolicy(condition="none")), tasks, NOW, ids())
    assert plan.actions == []


def test_on_failure_does_not_restart_completed():
    pol = RestartPolicy(condition="on-failure", delay=0)
    assert creates(reconcile_replicated(service(1, pol), [task("a", 1, state="complete")], NOW, ids())) == []
    assert len(creates(reconcile_replicated(service(1, pol), [task("a", 1, state="failed")], NOW, ids()))) == 1


def test_max_attempts():
    pol = RestartPolicy(condition="any", delay=0, max_attempts=2)
    history = [task("a", 1, state="failed", desired="shutdown"), task("b", 1, state="failed", desired="shutdown"),
               task("c", 1, state="failed")]
    assert creates(reconcile_replicated(service(1, pol), history, NOW, ids())) == []


def test_history_is_capped():
    # Swarm's retention limit counts every task of the slot, the running one included
    history = [task(f"h{i}", 1, state="failed", desired="shutdown", at=NOW - 100 + i) for i in range(8)]
    history.append(task("live", 1))
    plan = reconcile_replicated(service(1), history, NOW, ids(), history_limit=5)
    deleted = sorted(a.id for a in plan.actions if a.op == "delete")
    assert deleted == ["h0", "h1", "h2", "h3"]


def test_converged_service_needs_nothing():
    tasks = [task("a", 1), task("b", 2), task("c", 3)]
    plan = reconcile_replicated(service(3), tasks, NOW, ids())
    assert plan.actions == [] and plan.wake_at is None


def test_removed_service_tasks_are_stopped_then_deleted():
    plan = reconcile_removed([task("a", 1), task("b", 2, state="shutdown", desired="remove")], NOW)
    assert [(a.op, a.id) for a in plan.actions] == [("task_desired", "a"), ("delete", "b")]


def gservice():
    from api.objects import GlobalService
    return Service(id="s", spec=ServiceSpec(name="g", mode=ServiceMode(global_=GlobalService())))


def gnode(nid, availability="active"):
    from api.objects import Node, NodeSpec
    return Node(id=nid, spec=NodeSpec(availability=availability))


def test_global_one_task_per_eligible_node():
    from manager.orchestrator.global_ import reconcile_global
    nodes = [gnode("n1"), gnode("n2"), gnode("n3", "drain"), gnode("n4", "pause")]
    existing = [Task(id="a", service_id="s", node_id="n1", status=TaskStatus(state="running")),
                Task(id="b", service_id="s", node_id="n3", status=TaskStatus(state="running")),
                Task(id="c", service_id="s", node_id="gone", status=TaskStatus(state="running"))]
    plan = reconcile_global(gservice(), existing, nodes, NOW, ids(), lambda n: n.spec.availability != "drain")
    assert sorted(t.node_id for t in creates(plan)) == ["n2"]
    assert sorted(a.id for a in plan.actions if a.op == "task_desired") == ["b", "c"]


def test_tasks_on_down_node_are_moved_at_once():
    tasks = [task("a", 1), Task(id="b", service_id="s", slot=2, node_id="dead", desired_state="running",
                                 created_at=timestamp(NOW - 100), status=TaskStatus(state="running", timestamp=timestamp(NOW - 100)))]
    plan = reconcile_replicated(service(2), tasks, NOW, ids(), down_nodes=frozenset({"dead"}))
    assert [(a.op, a.id) for a in plan.actions if a.op == "task_desired"] == [("task_desired", "b")]
    (new,) = creates(plan)
    assert new.slot == 2 and new.desired_state == "running" and new.node_id == ""


# --- restart policy, case by case (Swarm's meanings) ------------------------------------------

def restarted(pol, state, history=()):
    tasks = list(history) + [task("x", 1, state=state, at=NOW - 1)]
    return [t for t in creates(reconcile_replicated(service(1, pol), tasks, NOW, ids())) if t.slot == 1]


def test_restart_conditions():
    for cond, state, expect in [("any", "complete", True), ("any", "failed", True), ("any", "rejected", True),
                                ("on-failure", "complete", False), ("on-failure", "failed", True),
                                ("on-failure", "rejected", True), ("none", "failed", False),
                                ("none", "complete", False), ("none", "rejected", False)]:
        got = bool(restarted(RestartPolicy(condition=cond, delay=0), state))
        assert got == expect, (cond, state)


def test_a_slot_that_is_not_restarted_keeps_its_ended_task():
    plan = reconcile_replicated(service(1, RestartPolicy(condition="none")), [task("a", 1, state="failed")], NOW, ids())
    assert plan.actions == []  # the failed task stays the slot's task: no new one in another slot either


def test_restart_delay_defaults_to_five_seconds_and_is_per_policy():
    (new,) = restarted(None, "failed")
    assert new.desired_state == "ready"
    new.created_at = timestamp(NOW - 4.9)
    history = [task("x", 1, state="failed", desired="shutdown"), new]
    plan = reconcile_replicated(service(1), history, NOW, ids())
    assert plan.actions == [] and abs(plan.wake_at - (NOW + 0.1)) < 1e-3
    plan = reconcile_replicated(service(1, RestartPolicy(delay=2 * SECOND)), history, NOW, ids())
    assert [(a.op, a.obj) for a in plan.actions] == [("task_desired", "running")]


def test_max_attempts_counts_only_restarts_within_the_window():
    pol = RestartPolicy(condition="any", delay=0, max_attempts=2, window=10 * SECOND)
    old = [task("a", 1, state="failed", desired="shutdown", at=NOW - 60),
           task("b", 1, state="failed", desired="shutdown", at=NOW - 50)]
    assert restarted(pol, "failed", old), "failures before the window are forgotten"
    recent = [task("a", 1, state="failed", desired="shutdown", at=NOW - 6),
              task("b", 1, state="failed", desired="shutdown", at=NOW - 3)]
    assert not restarted(pol, "failed", recent)
    # tasks stopped by the orchestrator (an update, a scale) are not restarts
    stopped = [task("a", 1, state="shutdown", desired="shutdown", at=NOW - 6),
               task("b", 1, state="shutdown", desired="shutdown", at=NOW - 3)]
    assert restarted(pol, "failed", stopped)


def test_a_replacement_waits_for_the_task_it_replaces_to_stop():
    old = task("old", 1, state="running", desired="shutdown")
    new = task("new", 1, state="ready", desired="ready", at=NOW - 1)
    plan = reconcile_replicated(service(1), [old, new], NOW, ids())
    assert plan.actions == [] and plan.wake_at == NOW - 1 + 60
    old.status = TaskStatus(state="shutdown", timestamp=timestamp(NOW - 0.5))
    plan = reconcile_replicated(service(1), [old, new], NOW, ids())
    assert [(a.op, a.id, a.obj) for a in plan.actions] == [("task_desired", "new", "running")], \
        "a task stopped on purpose imposes no restart delay"
    old.status = TaskStatus(state="running", timestamp=timestamp(NOW - 100))
    plan = reconcile_replicated(service(1), [old, new], NOW + 59.5, ids())
    assert [(a.op, a.id) for a in plan.actions] == [("task_desired", "new")], "nor waits forever"


def test_max_attempts_holds_although_history_is_reaped():
    from tests.unit.test_update import Sim, spec
    sim = Sim(history_limit=2, behaviour=lambda t: ("failed", 0.2))
    sim.create(spec(replicas=1, restart=RestartPolicy(condition="on-failure", delay=int(0.5 * SECOND), max_attempts=3)))
    sim.run_for(30)
    ran = [t for t in sim.tasks() if t.status.state == "failed"]
    assert len(ran) == 4, "the first run and 3 restarts"
    sim.run_for(10)
    assert len(sim.tasks()) == 4 and not sim.running()


def test_restart_delay_in_a_running_cluster():
    from api.ids import parse_timestamp
    from tests.unit.test_update import Sim, spec
    sim = Sim(behaviour=lambda t: ("failed", 1.0), history_limit=10)
    sim.create(spec(replicas=1, restart=RestartPolicy(condition="any", delay=3 * SECOND)))
    sim.run_for(14)
    runs = sorted(sim.tasks(), key=lambda t: t.created_at)
    assert len(runs) >= 3
    starts = [min(parse_timestamp(t.status.timestamp) for _, ts in sim.samples for t in ts
                  if t.id == run.id and t.status.state == "starting") for run in runs[1:3]]
    ends = [parse_timestamp(sim.store.get("task", run.id).status.timestamp) for run in runs[:2]]
    for end, start in zip(ends, starts):
        assert 3.0 <= start - end < 3.5
