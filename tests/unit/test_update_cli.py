"""`service create/update` flags to ServiceSpec JSON, and the progress display's view of tasks."""
from __future__ import annotations

import pytest

from api import codec
from api.objects import ServiceSpec
from cli.progress import Display, Tracker, bar, follow, up_to_date
from cli.serviceopts import ServiceOptions, UpdateFlags, UpdateOptions, apply_update, build_spec

BASE = {"Name": "web", "Mode": {"Replicated": {"Replicas": 2}},
        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": ["sleep", "1"], "Env": ["A=1", "B=2"]},
                         "Placement": {"Constraints": ["node.role==worker"]}}}


def test_update_flags_apply_like_docker():
    spec = apply_update(BASE, UpdateOptions(
        image="busybox:2", args="sh -c 'echo hi'", env_add=["B=3", "C=4"], env_rm=["A"], limit_memory="64M",
        reserve_cpu="0.5", constraint_add=["node.labels.zone==a"], constraint_rm=["node.role==worker"], replicas=5,
        update=UpdateFlags(parallelism=2, delay="10s", order="start-first", failure_action="rollback",
                           monitor="1s", max_failure_ratio="0.25"),
        rollback=UpdateFlags(parallelism=0), force=True))
    cs = spec["TaskTemplate"]["ContainerSpec"]
    assert cs["Image"] == "busybox:2" and cs["Args"] == ["sh", "-c", "echo hi"]
    assert cs["Env"] == ["B=3", "C=4"]
    assert spec["TaskTemplate"]["Resources"] == {"Limits": {"MemoryBytes": 64 << 20}, "Reservations": {"NanoCPUs": 500_000_000}}
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.labels.zone==a"]
    assert spec["Mode"]["Replicated"]["Replicas"] == 5
    assert spec["UpdateConfig"] == {"Parallelism": 2, "Delay": 10 * 10**9, "Order": "start-first",
                                    "FailureAction": "rollback", "Monitor": 10**9, "MaxFailureRatio": 0.25}
    assert spec["RollbackConfig"] == {"Parallelism": 0}
    assert spec["TaskTemplate"]["ForceUpdate"] == 1
    assert apply_update(spec, UpdateOptions(force=True))["TaskTemplate"]["ForceUpdate"] == 2
    assert BASE["TaskTemplate"]["ContainerSpec"]["Env"] == ["A=1", "B=2"], "the input is not changed"
    codec.decode(ServiceSpec, spec)  # the server's decoder takes it


@pytest.mark.parametrize("opts, field", [
    (UpdateOptions(update=UpdateFlags(parallelism=-1)), "--update-parallelism"),
    (UpdateOptions(update=UpdateFlags(failure_action="explode")), "--update-failure-action"),
    (UpdateOptions(rollback=UpdateFlags(failure_action="rollback")), "--rollback-failure-action"),
    (UpdateOptions(update=UpdateFlags(max_failure_ratio="2")), "--update-max-failure-ratio"),
    (UpdateOptions(update=UpdateFlags(max_failure_ratio="lots")), "--update-max-failure-ratio"),
    (UpdateOptions(update=UpdateFlags(order="sideways")), "--update-order"),
    (UpdateOptions(update=UpdateFlags(delay="soon")), "--update-delay"),
    (UpdateOptions(env_add=["=x"]), "--env-add"),
    (UpdateOptions(max_concurrent=2), "--max-concurrent"),
    (UpdateOptions(limit_memory="lots"), "--limit-memory"),
])
def test_bad_update_flags_name_the_flag(opts, field):
    with pytest.raises(ValueError, match=field):
        apply_update(BASE, opts)


def test_job_modes():
    spec = build_spec(ServiceOptions(image="busybox", mode="replicated-job", replicas=5, max_concurrent=2))
    assert spec["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 5}}
    assert spec["TaskTemplate"]["RestartPolicy"] == {"Condition": "on-failure"}
    assert build_spec(ServiceOptions(image="b", mode="replicated-job", replicas=3))["Mode"] == \
        {"ReplicatedJob": {"MaxConcurrent": 3, "TotalCompletions": 3}}
    assert build_spec(ServiceOptions(image="b", mode="global-job"))["Mode"] == {"GlobalJob": {}}
    with pytest.raises(ValueError, match="--restart-condition"):
        build_spec(ServiceOptions(image="b", mode="global-job", restart_condition="any"))
    with pytest.raises(ValueError, match="--replicas"):
        build_spec(ServiceOptions(image="b", mode="global-job", replicas=2))
    with pytest.raises(ValueError, match="--max-concurrent"):
        build_spec(ServiceOptions(image="b", max_concurrent=2))
    with pytest.raises(ValueError, match="--mode"):
        build_spec(ServiceOptions(image="b", mode="cron"))


def task(slot, state, desired="running", spec=None, err="", node="n1"):
    return {"ID": f"t{slot}{state}", "Slot": slot, "NodeID": node, "DesiredState": desired,
            "Spec": spec if spec is not None else BASE["TaskTemplate"],
            "Status": {"State": state, "Err": err}}


def test_tracker_draws_slots_and_counts_running():
    svc = {"ID": "s", "Spec": BASE}
    tr = Tracker(svc)
    old = dict(BASE["TaskTemplate"], ForceUpdate=9)
    frame = tr.update(svc, [task(1, "running"), task(2, "pending", err="no suitable node"),
                            task(2, "running", spec=old)], {"n1"})
    assert dict(frame.lines)["overall progress"] == "1 out of 2 tasks"
    assert dict(frame.lines)["1/2"] == "running   " + bar(9, 9)
    assert dict(frame.lines)["2/2"] == "no suitable node", "an error says why a slot does not converge"
    assert not frame.converged
    frame = tr.update(svc, [task(1, "running"), task(2, "running")], {"n1"}, rollback=True)
    assert frame.converged and dict(frame.lines)["overall progress"] == "rolling back update: 2 out of 2 tasks"
    assert len(up_to_date(svc, [task(1, "running", spec=old)])) == 0


def test_follow_reports_a_paused_update():
    svc = {"ID": "s", "Spec": BASE, "UpdateStatus": {"State": "paused", "Message": "update paused due to failure"}}

    class Out:
        text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

        def isatty(self):
            return False
    out = Out()
    outcome = follow(lambda: svc, lambda: [], lambda: {"n1"}, display=Display(out=out), sleep=lambda s: None)
    assert not outcome.ok and outcome.message == "service update paused: update paused due to failure"


def test_follow_waits_for_the_monitor_period_and_the_update_verdict():
    clock = [0.0]
    svc = {"ID": "s", "Spec": dict(BASE, UpdateConfig={"Monitor": 2 * 10**9}), "UpdateStatus": {"State": "updating"}}
    tasks = [task(1, "running"), task(2, "running")]
    calls = []

    def get_service():
        calls.append(clock[0])
        if clock[0] >= 3:
            svc["UpdateStatus"] = {"State": "completed"}
        return svc

    def sleep(s):
        clock[0] += s
    outcome = follow(get_service, lambda: tasks, lambda: {"n1"}, display=Display(quiet=True), clock=lambda: clock[0],
                     sleep=sleep, interval=0.5)
    assert outcome.ok and 3 <= clock[0] < 4
