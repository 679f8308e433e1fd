"""Replicated and global jobs in the simulated cluster of test_update."""
from __future__ import annotations

import copy

from api.objects import (GlobalJob, Node, NodeSpec, NodeStatus, ReplicatedJob, RestartPolicy, ServiceMode,
                         is_terminal)
from manager.orchestrator.jobs import total_completions
from manager.store import Action
from tests.unit.test_update import Sim, spec


def finishes(after=0.5, fail_first_of_slot=()):
    """A job payload: completes `after` s after starting; the first run of the listed slots fails."""
    first: dict[int, str] = {}

    def behaviour(t):
        first.setdefault(t.slot, t.id)
        failing = t.slot in fail_first_of_slot and first[t.slot] == t.id
        return ("failed" if failing else "complete", after)
    return behaviour


def concurrent_max(sim: Sim, sid="s") -> int:
    return max((len([t for t in tasks if t.service_id == sid and not is_terminal(t.status.state)
                     and t.status.state != "new" and t.desired_state in ("ready", "running")])
                for _, tasks in sim.samples), default=0)


def test_replicated_job_completes_exactly_n_times_m_at_a_time():
    sim = Sim(behaviour=lambda t: ("complete", 0.5))
    sim.create(spec(mode=ServiceMode(replicated_job=ReplicatedJob(max_concurrent=2, total_completions=5))))
    sim.run_until(lambda: len([t for t in sim.tasks() if t.status.state == "complete"]) == 5, what="5 completions")
    sim.run_for(10)
    done = [t for t in sim.tasks() if t.status.state == "complete"]
    assert len(done) == 5 and len(sim.tasks()) == 5, "exactly N, never restarted after success"
    assert sorted(t.slot for t in done) == [1, 2, 3, 4, 5]
    assert all(t.desired_state == "complete" and t.job_iteration.index == 0 for t in done)
    assert concurrent_max(sim) == 2
    assert sim.service().job_status.job_iteration.index == 0 and sim.service().job_status.last_execution


def test_a_failed_job_task_is_restarted_in_its_slot():
    sim = Sim(behaviour=finishes(fail_first_of_slot=(2,)))
    sim.create(spec(mode=ServiceMode(replicated_job=ReplicatedJob(max_concurrent=3, total_completions=3)),
                    restart=RestartPolicy(condition="on-failure", delay=0)))
    sim.run_until(lambda: len([t for t in sim.tasks() if t.status.state == "complete"]) == 3)
    slot2 = sorted((t.status.state for t in sim.tasks() if t.slot == 2))
    assert slot2 == ["complete", "failed"]


def test_job_restart_policy_any_does_not_rerun_completions():
    sim = Sim(behaviour=lambda t: ("complete", 0.3))
    sim.create(spec(mode=ServiceMode(replicated_job=ReplicatedJob(max_concurrent=1, total_completions=2)),
                    restart=RestartPolicy(condition="any", delay=0)))
    sim.run_for(15)
    assert len(sim.tasks()) == 2


def test_total_completions_defaults_to_max_concurrent():
    assert total_completions(type("S", (), {"spec": spec(mode=ServiceMode(replicated_job=ReplicatedJob(3)))})()) == 3


def test_updating_a_job_runs_it_again():
    sim = Sim(behaviour=lambda t: ("complete", 0.3))
    sim.create(spec(mode=ServiceMode(replicated_job=ReplicatedJob(max_concurrent=2, total_completions=2))))
    sim.run_until(lambda: len([t for t in sim.tasks() if t.status.state == "complete"]) == 2)

    def bump(s):  # what the control API does on any update of a job
        s.task_template.container_spec.command = ["again"]
    svc = copy.deepcopy(sim.service())
    svc.previous_spec = copy.deepcopy(svc.spec)
    bump(svc.spec)
    svc.job_status.job_iteration.index += 1
    sim.apply([Action("update", "service", svc)])
    sim.run_until(lambda: len([t for t in sim.tasks() if t.status.state == "complete"]) == 4)
    assert sorted(t.job_iteration.index for t in sim.tasks()) == [0, 0, 1, 1]


def test_global_job_runs_once_per_node_and_on_nodes_that_join():
    sim = Sim(behaviour=lambda t: ("complete", 0.3))
    sim.create(spec(mode=ServiceMode(global_job=GlobalJob())))
    sim.run_until(lambda: len([t for t in sim.tasks() if t.status.state == "complete"]) == 3)
    sim.run_for(5)
    assert sorted(t.node_id for t in sim.tasks()) == ["n1", "n2", "n3"]
    sim.apply([Action("create", "node", Node(id="n4", spec=NodeSpec(name="n4"), status=NodeStatus(state="ready")))])
    sim.run_until(lambda: len([t for t in sim.tasks() if t.status.state == "complete"]) == 4)
    sim.run_for(5)
    assert sorted(t.node_id for t in sim.tasks()) == ["n1", "n2", "n3", "n4"]


def test_history_reaping_never_deletes_a_completion():
    sim = Sim(behaviour=lambda t: ("complete", 0.2), history_limit=0)
    sim.create(spec(mode=ServiceMode(replicated_job=ReplicatedJob(max_concurrent=3, total_completions=3))))
    sim.run_for(10)
    assert len([t for t in sim.tasks() if t.status.state == "complete"]) == 3
    assert len(sim.tasks()) == 3
