"""The rolling updater, driven against the real store by a small simulated cluster: the
orchestrator's plans are applied as log entries, a toy scheduler places tasks and toy workers
move them through their states with a clock that only the test advances."""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Callable

import pytest

from api.ids import parse_timestamp, timestamp
from api.objects import (SECOND, Cluster, GlobalService, Node, NodeSpec, NodeStatus, ReplicatedService,
                         RestartPolicy, Service, ServiceMode, ServiceSpec, Task, TaskSpec, TaskStatus, UpdateConfig,
                         ContainerSpec, is_terminal)
from manager.orchestrator.orchestrate import orchestrate_service
from manager.orchestrator.update import is_dirty, manual_rollback, plan_update
from manager.store import Action, Store

NOW = 1_800_000_000.0


def spec(name="web", replicas=3, command=("serve",), update=None, rollback=None, mode=None, restart=None):
    return ServiceSpec(
        name=name,
        mode=mode or ServiceMode(replicated=ReplicatedService(replicas)),
        task_template=TaskSpec(container_spec=ContainerSpec(image="busybox", command=list(command)),
                               restart_policy=restart),
        update_config=update, rollback_config=rollback)


@dataclass
class Sim:
    """A deterministic cluster. Workers: a task is prepared `prep` s after assignment, starts
    `start` s after it is told to run, stops `stop` s after it is told to stop; `behaviour(task)`
    says what a running task does: None (runs on), or (state, after_s) to end by itself."""
    nodes: tuple = ("n1", "n2", "n3")
    history_limit: int = 5
    prep: float = 0.2
    start: float = 0.1
    stop: float = 0.3
    dt: float = 0.1
    behaviour: Callable[[Task], tuple | None] = lambda t: ("failed", 1.0) if t.spec.container_spec.command == ["fail"] else None
    store: Store = field(default_factory=Store)
    now: float = NOW
    index: int = 0
    samples: list = field(default_factory=list)

    def __post_init__(self):
        self._ids = itertools.count(1)
        self.apply([Action("create", "cluster", Cluster(id="c"))])
        for n in self.nodes:
            self.apply([Action("create", "node", Node(id=n, spec=NodeSpec(name=n), status=NodeStatus(state="ready")))])
        cl = copy.deepcopy(self.store.get("cluster", "c"))
        cl.spec.orchestration.task_history_retention_limit = self.history_limit
        self.apply([Action("update", "cluster", cl)])

    def new_id(self) -> str:
        return f"t{next(self._ids):04d}"

    def apply(self, actions):
        if actions:
            self.index += 1
            self.store.apply(self.index, timestamp(self.now), actions)

    # --- the user ---------------------------------------------------------------------------
    def create(self, s: ServiceSpec, sid="s") -> str:
        self.apply([Action("create", "service", Service(id=sid, spec=s))])
        return sid

    def service(self, sid="s") -> Service:
        return self.store.get("service", sid)

    def update(self, mutate: Callable[[ServiceSpec], None], sid="s"):
        """What the control API's service update does."""
        svc = copy.deepcopy(self.service(sid))
        svc.previous_spec = copy.deepcopy(svc.spec)
        mutate(svc.spec)
        svc.update_status = None
        self.apply([Action("update", "service", svc)])

    def rollback(self, sid="s"):
        self.apply([Action("update", "service", manual_rollback(self.service(sid), self.now))])

    def tasks(self, sid="s") -> list[Task]:
        return self.store.tasks_of(sid)

    # --- the cluster ------------------------------------------------------------------------
    def step(self):
        nodes = self.store.list("node")
        down = frozenset(n.id for n in nodes if n.status.state != "ready")
        for svc in list(self.store.list("service")):
            plan = orchestrate_service(svc, self.store.tasks_of(svc.id), nodes, self.now, self.new_id,
                                       history_limit=self.history_limit, down_nodes=down)
            self.apply(plan.actions)
        self._schedule()
        self._work()
        self.samples.append((self.now, [copy.deepcopy(t) for t in self.store.list("task")]))
        self.now = round(self.now + self.dt, 6)

    def _schedule(self):
        ready = [n.id for n in self.store.list("node") if n.status.state == "ready" and n.spec.availability == "active"]
        load = {n: 0 for n in ready}
        for t in self.store.list("task"):
            if t.node_id in load and not is_terminal(t.status.state):
                load[t.node_id] += 1
        actions = []
        for t in sorted(self.store.list("task"), key=lambda t: t.id):
            if t.status.state in ("new", "pending") and t.desired_state in ("ready", "running"):
                node = t.node_id or min(load, key=lambda n: (load[n], n))
                if node in load:
                    load[node] += 1
                    actions.append(Action("task_assign", "task", {"NodeID": node}, t.id))
        self.apply(actions)

    def _report(self, t: Task, state: str, message: str = "", err: str = "") -> Action:
        return Action("task_status", "task", TaskStatus(timestamp=timestamp(self.now), state=state,
                                                        message=message or state, err=err), t.id)

    def _work(self):
        actions = []
        up = {n.id for n in self.store.list("node") if n.status.state == "ready"}
        for t in self.store.list("task"):
            state = t.status.state
            if is_terminal(state) or not t.node_id or t.node_id not in up or state in ("new", "pending"):
                continue
            since = self.now - parse_timestamp(t.status.timestamp)
            stopping = t.desired_state not in ("ready", "running")
            if stopping:
                if state != "running" or since >= self.stop or self._stop_asked_long_ago(t):
                    actions.append(self._report(t, "shutdown"))
            elif state == "assigned" and since >= self.prep:
                actions.append(self._report(t, "ready"))
            elif state == "ready" and t.desired_state == "running":
                actions.append(self._report(t, "starting"))
            elif state == "starting" and since >= self.start:
                actions.append(self._report(t, "running"))
            elif state == "running":
                outcome = self.behaviour(t)
                if outcome is not None and since >= outcome[1]:
                    err = "task: non-zero exit (1)" if outcome[0] == "failed" else ""
                    actions.append(self._report(t, outcome[0], err=err))
        self.apply(actions)

    def _stop_asked_long_ago(self, t: Task) -> bool:
        return self.now - parse_timestamp(t.updated_at) >= self.stop

    def run_until(self, predicate, timeout: float = 120.0, what: str = "condition"):
        deadline = self.now + timeout
        while self.now < deadline:
            self.step()
            if predicate():
                return
        raise AssertionError(f"simulated {timeout}s without reaching {what}: {self.describe()}")

    def run_for(self, seconds: float):
        end = self.now + seconds
        while self.now < end:
            self.step()

    # --- observations -----------------------------------------------------------------------
    def running(self, sid="s", tasks=None) -> list[Task]:
        return [t for t in (tasks if tasks is not None else self.tasks(sid))
                if t.service_id == sid and t.status.state == "running"]

    def on_spec(self, sid="s", tasks=None) -> list[Task]:
        svc = self.service(sid)
        return [t for t in self.running(sid, tasks) if t.desired_state == "running" and not is_dirty(svc, t)]

    def state(self, sid="s") -> str:
        us = self.service(sid).update_status
        return us.state if us else ""

    def converged_on_spec(self, n: int, sid="s") -> bool:
        return len(self.on_spec(sid)) == n and len(self.running(sid)) == n

    def describe(self) -> str:
        us = self.service().update_status if self.store.get("service", "s") else None
        rows = sorted((t.slot, t.id, t.spec.container_spec.command, t.desired_state, t.status.state) for t in self.tasks())
        return f"status={us} tasks={rows}"


def settled(sim: Sim, n: int):
    sim.run_until(lambda: sim.converged_on_spec(n), what=f"{n} running")


def test_rolling_update_respects_parallelism_and_delay():
    sim = Sim()
    sim.create(spec(replicas=10, update=UpdateConfig(parallelism=2, delay=1 * SECOND, monitor=2 * SECOND)))
    settled(sim, 10)
    sim.samples.clear()
    sim.update(lambda s: setattr(s.task_template.container_spec, "command", ["serve", "v2"]))
    sim.run_until(lambda: sim.state() == "completed", what="update completed")
    assert sim.converged_on_spec(10)
    assert sim.service().update_status.message == "update completed"
    # stop-first, 2 at a time: never more than 2 slots without a running task, and never more
    # than 2 new tasks coming up at once
    for _, tasks in sim.samples:
        mine = [t for t in tasks if t.service_id == "s"]
        slots_up = {t.slot for t in mine if t.status.state == "running"}
        assert len(set(range(1, 11)) - slots_up) <= 2
        coming = [t for t in mine if t.spec.container_spec.command == ["serve", "v2"]
                  and not is_terminal(t.status.state) and t.status.state != "running"]
        assert len(coming) <= 2
    # from the tasks' own timestamps: batches start at least `delay` after the previous came up
    new = sorted((t for t in sim.tasks() if t.spec.container_spec.command == ["serve", "v2"]),
                 key=lambda t: parse_timestamp(t.created_at))
    created = [parse_timestamp(t.created_at) for t in new]
    assert len(new) == 10 and len(set(created)) == 5
    for a, b in zip(created[::2], created[2::2]):
        assert b - a >= 1.0 + sim.start
    us = sim.service().update_status
    assert parse_timestamp(us.completed_at) >= max(parse_timestamp(t.status.timestamp) for t in new) + 1 + 2


def test_parallelism_zero_updates_every_slot_at_once():
    sim = Sim()
    sim.create(spec(replicas=6, update=UpdateConfig(parallelism=0, monitor=0)))
    settled(sim, 6)
    sim.update(lambda s: setattr(s.task_template.container_spec, "command", ["v2"]))
    sim.step()
    new = [t for t in sim.tasks() if t.spec.container_spec.command == ["v2"]]
    assert len(new) == 6 and all(t.desired_state == "ready" for t in new)
    sim.run_until(lambda: sim.state() == "completed")
    assert sim.converged_on_spec(6)


def test_start_first_never_has_fewer_than_n_running():
    sim = Sim()
    sim.create(spec(replicas=4, update=UpdateConfig(parallelism=2, order="start-first", monitor=1 * SECOND)))
    settled(sim, 4)
    sim.samples.clear()
    sim.update(lambda s: setattr(s.task_template.container_spec, "command", ["v2"]))
    sim.run_until(lambda: sim.state() == "completed")
    assert sim.converged_on_spec(4)
    counts = [len([t for t in tasks if t.service_id == "s" and t.status.state == "running"]) for _, tasks in sim.samples]
    assert min(counts) >= 4
    assert max(counts) <= 4 + 2  # and never more than parallelism extra


def test_stop_first_starts_the_new_task_only_after_the_old_one_stopped():
    sim = Sim(stop=2.0)
    sim.create(spec(replicas=1, update=UpdateConfig(monitor=0)))
    settled(sim, 1)
    (old,) = sim.tasks()
    sim.update(lambda s: setattr(s.task_template.container_spec, "command", ["v2"]))
    sim.run_until(lambda: sim.state() == "completed")
    new = next(t for t in sim.tasks() if t.id != old.id)
    old = sim.store.get("task", old.id)
    assert old.status.state == "shutdown"
    started = [parse_timestamp(t.status.timestamp) for _, tasks in sim.samples
               for t in tasks if t.id == new.id and t.status.state == "starting"]
    assert min(started) >= parse_timestamp(old.status.timestamp)
    assert min(started) - parse_timestamp(old.status.timestamp) < 1.0, "no restart delay after a stop"


def test_failed_update_pauses_and_keeps_the_rest_on_the_old_spec():
    sim = Sim()
    sim.create(spec(replicas=5, update=UpdateConfig(parallelism=1, monitor=5 * SECOND)))
    settled(sim, 5)
    sim.update(lambda s: setattr(s.task_template.container_spec, "command", ["fail"]))
    sim.run_until(lambda: sim.state() == "paused", what="paused")
    us = sim.service().update_status
    failed = [t for t in sim.tasks() if t.spec.container_spec.command == ["fail"] and t.status.state == "failed"]
    assert us.message == f"update paused due to failure or early termination of task {failed[0].id}"
    # As in Swarm, the updater moves on once a new task runs; the failure (1 s later) stops it.
    taken = {t.slot for t in sim.tasks() if t.spec.container_spec.command == ["fail"]}
    assert 1 <= len(taken) < 5
    sim.run_for(15)
    assert sim.state() == "paused"
    assert {t.slot for t in sim.tasks() if t.spec.container_spec.command == ["fail"]} == taken, \
        "a paused update takes no other slot"
    old = [t for t in sim.running() if t.spec.container_spec.command == ["serve"]]
    assert {t.slot for t in old} == set(range(1, 6)) - taken


def test_failed_update_rolls_back_to_the_previous_spec():
    sim = Sim()
    sim.create(spec(replicas=5, update=UpdateConfig(parallelism=2, monitor=5 * SECOND, failure_action="rollback"),
                    rollback=UpdateConfig(parallelism=0, monitor=1 * SECOND)))
    settled(sim, 5)
    before = copy.deepcopy(sim.service().spec)
    sim.update(lambda s: setattr(s.task_template.container_spec, "command", ["fail"]))
    sim.run_until(lambda: sim.state() == "rollback_started", what="rollback")
    assert sim.service().update_status.message.startswith("update rolled back due to failure or early termination of task ")
    sim.run_until(lambda: sim.state() == "rollback_completed", what="rollback completed")
    svc = sim.service()
    assert svc.spec == before and svc.previous_spec is None
    assert svc.update_status.message == "rollback completed"
    assert sim.converged_on_spec(5)
    assert all(t.spec.container_spec.command == ["serve"] for t in sim.running())


def test_a_rollback_that_fails_pauses():
    sim = Sim(behaviour=lambda t: ("failed", 0.5) if t.spec.container_spec.command in (["fail"], ["bad"]) else None)
    sim.create(spec(replicas=2, command=("bad",), update=UpdateConfig(monitor=5 * SECOND, failure_action="rollback")))
    sim.run_for(3)
    sim.update(lambda s: setattr(s.task_template.container_spec, "command", ["fail"]))
    sim.run_until(lambda: sim.state() == "rollback_paused", what="rollback paused")
    assert sim.service().update_status.message.startswith("rollback paused due to failure or early termination")


def test_max_failure_ratio_lets_an_update_with_few_failures_finish():
    flaky = lambda t: ("failed", 0.5) if t.node_id == "n1" and t.spec.container_spec.command == ["v2"] else None
    cfg = UpdateConfig(parallelism=0, monitor=2 * SECOND, max_failure_ratio=0.5)
    sim = Sim(behaviour=flaky)
    sim.create(spec(replicas=6, update=cfg, restart=RestartPolicy(condition="none")))
    settled(sim, 6)
    sim.update(lambda s: setattr(s.task_template.container_spec, "command", ["v2"]))
    sim.run_until(lambda: sim.state() in ("completed", "paused"))
    assert sim.state() == "completed"
    # the same failures over a ratio of 0.2 pause it
    sim2 = Sim(behaviour=flaky)
    sim2.create(spec(replicas=6, update=UpdateConfig(parallelism=0, monitor=2 * SECOND, max_failure_ratio=0.2),
                     restart=RestartPolicy(condition="none")))
    settled(sim2, 6)
    sim2.update(lambda s: setattr(s.task_template.container_spec, "command", ["v2"]))
    sim2.run_until(lambda: sim2.state() in ("completed", "paused"))
    assert sim2.state() == "paused"


def test_failure_action_continue_completes():
    sim = Sim()
    sim.create(spec(replicas=3, update=UpdateConfig(parallelism=1, monitor=2 * SECOND, failure_action="continue")))
    settled(sim, 3)
    sim.update(lambda s: setattr(s.task_template.container_spec, "command", ["fail"]))
    sim.run_until(lambda: sim.state() == "completed", timeout=60)
    assert {t.slot for t in sim.tasks() if t.spec.container_spec.command == ["fail"]} == {1, 2, 3}


def test_a_failure_after_the_monitor_window_does_not_count():
    late = lambda t: ("failed", 4.0) if t.spec.container_spec.command == ["v2"] else None
    sim = Sim(behaviour=late)
    sim.create(spec(replicas=2, update=UpdateConfig(parallelism=1, monitor=1 * SECOND),
                    restart=RestartPolicy(condition="none")))
    settled(sim, 2)
    sim.update(lambda s: setattr(s.task_template.container_spec, "command", ["v2"]))
    sim.run_until(lambda: sim.state() in ("completed", "paused"))
    assert sim.state() == "completed"


def test_the_update_survives_a_leader_change():
    """Everything the updater needs is in the store: a new manager restored from a snapshot
    in the middle of the update carries it on with the same parallelism."""
    sim = Sim()
    sim.create(spec(replicas=6, update=UpdateConfig(parallelism=2, delay=1 * SECOND, monitor=1 * SECOND)))
    settled(sim, 6)
    sim.update(lambda s: setattr(s.task_template.container_spec, "command", ["v2"]))
    sim.run_until(lambda: len([t for t in sim.running() if t.spec.container_spec.command == ["v2"]]) == 2)
    restored = Store()
    restored.restore(sim.store.snapshot())
    sim.store = restored
    sim.samples.clear()
    sim.run_until(lambda: sim.state() == "completed")
    assert sim.converged_on_spec(6)
    for _, tasks in sim.samples:
        up = {t.slot for t in tasks if t.service_id == "s" and t.status.state == "running"}
        assert len(set(range(1, 7)) - up) <= 2


def test_manual_rollback_and_force():
    sim = Sim()
    sim.create(spec(replicas=3, update=UpdateConfig(parallelism=0, monitor=0)))
    settled(sim, 3)
    sim.update(lambda s: setattr(s.task_template.container_spec, "command", ["v2"]))
    sim.run_until(lambda: sim.state() == "completed")
    sim.rollback()
    assert sim.service().update_status.message == "manually requested rollback"
    assert sim.service().previous_spec.task_template.container_spec.command == ["v2"]
    sim.run_until(lambda: sim.state() == "rollback_completed")
    assert sim.converged_on_spec(3) and all(t.spec.container_spec.command == ["serve"] for t in sim.running())

    ids_before = {t.id for t in sim.running()}
    sim.update(lambda s: setattr(s.task_template, "force_update", s.task_template.force_update + 1))
    sim.run_until(lambda: sim.state() == "completed")
    assert sim.converged_on_spec(3)
    assert not ids_before & {t.id for t in sim.running()}, "--force replaces every task"


def test_without_previous_spec_rollback_is_refused():
    with pytest.raises(ValueError, match="does not have a previous spec"):
        manual_rollback(Service(id="x", spec=spec()), NOW)


def test_a_paused_update_resumes_on_the_next_update():
    sim = Sim()
    sim.create(spec(replicas=3, update=UpdateConfig(parallelism=1, monitor=3 * SECOND)))
    settled(sim, 3)
    sim.update(lambda s: setattr(s.task_template.container_spec, "command", ["fail"]))
    sim.run_until(lambda: sim.state() == "paused")
    sim.update(lambda s: setattr(s.task_template.container_spec, "command", ["v3"]))
    sim.run_until(lambda: sim.state() == "completed")
    assert sim.converged_on_spec(3)


def test_only_task_template_changes_start_an_update():
    sim = Sim()
    sim.create(spec(replicas=2))
    settled(sim, 2)
    ids_before = {t.id for t in sim.running()}
    sim.update(lambda s: setattr(s.mode.replicated, "replicas", 3))
    sim.run_until(lambda: len(sim.running()) == 3)
    sim.run_for(2)
    assert sim.service().update_status is None
    assert ids_before <= {t.id for t in sim.running()}


def test_global_service_rolls_node_by_node():
    sim = Sim()
    sim.create(spec(mode=ServiceMode(global_=GlobalService()), update=UpdateConfig(parallelism=1, monitor=0)))
    sim.run_until(lambda: sim.converged_on_spec(3))
    sim.samples.clear()
    sim.update(lambda s: setattr(s.task_template.container_spec, "command", ["v2"]))
    sim.run_until(lambda: sim.state() == "completed")
    assert sim.converged_on_spec(3)
    assert sorted(t.node_id for t in sim.running()) == ["n1", "n2", "n3"]
    for _, tasks in sim.samples:
        up = {t.node_id for t in tasks if t.service_id == "s" and t.status.state == "running"}
        assert len({"n1", "n2", "n3"} - up) <= 1


def test_constraint_change_keeps_tasks_whose_node_still_matches():
    svc = Service(id="s", spec=spec())
    task = Task(id="a", service_id="s", node_id="n1", spec=copy.deepcopy(svc.spec.task_template))
    svc2 = copy.deepcopy(svc)
    from api.objects import Placement
    svc2.spec.task_template.placement = Placement(constraints=["node.hostname==h1"])
    ok = Node(id="n1", spec=NodeSpec(name="h1"))
    ok.description.hostname = "h1"
    other = Node(id="n1", spec=NodeSpec(name="h2"))
    other.description.hostname = "h2"
    assert not is_dirty(svc2, task, ok)
    assert is_dirty(svc2, task, other)
    assert is_dirty(svc2, task)  # without the node there is nothing to check against


def test_plan_update_is_pure():
    svc = Service(id="s", spec=spec(replicas=2))
    t = Task(id="a", service_id="s", slot=1, node_id="n1", spec=TaskSpec(), desired_state="running",
             created_at=timestamp(NOW - 10), status=TaskStatus(state="running", timestamp=timestamp(NOW - 9)))
    before = copy.deepcopy((svc, t))
    plan = plan_update(svc, {1: [t]}, NOW, lambda: "new")
    assert (svc, t) == before
    assert plan.service.update_status.state == "updating"
    assert plan.service.update_status.message == "update in progress"
    assert [(a.op, a.id or a.obj.id) for a in plan.actions] == [("task_desired", "a"), ("create", "new")]
