"""Rolling updates, rollbacks, restart policies and jobs on real daemons, checked from the tasks'
own history (their timestamps), as a user would read `shoal service ps`."""
from __future__ import annotations

import threading
import time

import pytest

from api.ids import parse_timestamp
from tests.integration.harness import new_daemon, wait_for

SERVE = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]  # exits at once on SIGTERM


@pytest.fixture(scope="module")
def one_node(busybox_tar):
    d = new_daemon()
    try:
        d.start()
        d.cli("swarm", "init")
        d.cli("image", "import", str(busybox_tar), "busybox:latest")
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def swarm(one_node):
    """One daemon for the module; every test leaves it without services."""
    yield one_node
    for sid in one_node.cli("service", "ls", "-q").stdout.split():
        one_node.cli("service", "rm", sid, check=False)
    wait_for(lambda: not one_node.api_tasks(), 60, what="services removed")


def tasks_of(d, service):
    return d.api_tasks(service)


def running(d, service):
    return [t for t in d.api_tasks(service) if t["Status"]["State"] == "running" and t["DesiredState"] == "running"]


def env_of(t):
    return t["Spec"]["ContainerSpec"].get("Env", [])


def ts(text):
    return parse_timestamp(text)


def max_overlap(intervals):
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    depth = best = 0
    for _, step in events:
        depth += step
        best = max(best, depth)
    return best


def test_rolling_update_two_at_a_time_with_delay(swarm):
    d = swarm
    d.cli("service", "create", "--detach", "--name", "web", "--replicas", "10", "busybox", *SERVE)
    wait_for(lambda: len(running(d, "web")) == 10, 60, what="10 running")
    t0 = time.time()
    out = d.cli("service", "update", "--env-add", "V=2", "--update-parallelism", "2", "--update-delay", "500ms",
                "--update-monitor", "1s", "web", timeout=120).stdout
    assert "verify: Service converged" in out
    svc = d.api("/services/web")
    assert svc["UpdateStatus"]["State"] == "completed" and svc["UpdateStatus"]["Message"] == "update completed"
    new = [t for t in tasks_of(d, "web") if "V=2" in env_of(t)]
    assert len(new) == 10 and all(t["Status"]["State"] == "running" for t in new)
    # From the history: a slot is updating from its new task's creation until that task runs.
    intervals = [(ts(t["CreatedAt"]), ts(t["Status"]["Timestamp"])) for t in new]
    assert max_overlap(intervals) <= 2
    starts = sorted(a for a, _ in intervals)
    assert starts[-1] - starts[0] >= 4 * 0.5, "5 batches, 0.5 s apart at least"
    old = [t for t in tasks_of(d, "web") if "V=2" not in env_of(t)]
    assert len(old) == 10 and all(t["Status"]["State"] == "shutdown" for t in old)
    assert ts(svc["UpdateStatus"]["CompletedAt"]) >= max(b for _, b in intervals) + 0.5 + 1.0
    print(f"rolling update of 10 (2 at a time, 1 s delay): {time.time() - t0:.1f}s")

    ps = d.cli("service", "ps", "--no-trunc", "--filter", "desired-state=running", "web").stdout
    rows = ps.splitlines()[1:]
    assert len(rows) == 10 and all("Running" in r for r in rows)
    assert all(t["ID"] in ps for t in new), "--no-trunc shows whole ids"


def test_update_to_a_failing_command_pauses(swarm):
    d = swarm
    d.cli("service", "create", "--detach", "--name", "web", "--replicas", "3", "busybox", *SERVE)
    wait_for(lambda: len(running(d, "web")) == 3, 60, what="3 running")
    r = d.cli("service", "update", "--args", "sh -c 'exit 3'", "--update-delay", "3s", "web", check=False, timeout=60)
    assert r.returncode == 1 and "service update paused: update paused due to failure or early termination of task" in r.stderr
    svc = d.api("/services/web")
    assert svc["UpdateStatus"]["State"] == "paused"
    assert "paused" in d.cli("service", "inspect", "--pretty", "web").stdout
    time.sleep(4)
    old = [t for t in running(d, "web") if t["Spec"]["ContainerSpec"]["Args"] == SERVE]
    assert len(old) == 2, "the other slots stay on the old spec while paused"
    failed = [t for t in tasks_of(d, "web") if t["Status"]["State"] == "failed"]
    assert failed and all("non-zero exit (3)" in t["Status"]["Err"] for t in failed)


def test_update_to_a_failing_command_rolls_back(swarm):
    d = swarm
    d.cli("service", "create", "--detach", "--name", "web", "--replicas", "3", "--update-failure-action", "rollback",
          "--update-monitor", "2s", "--rollback-monitor", "1s", "busybox", *SERVE)
    wait_for(lambda: len(running(d, "web")) == 3, 60, what="3 running")
    before = d.api("/services/web")["Spec"]
    r = d.cli("service", "update", "--args", "sh -c 'exit 3'", "web", check=False, timeout=90)
    assert r.returncode == 1 and "service rolled back: update rolled back due to failure" in r.stderr, r
    assert "rollback: update rolled back due to failure" in r.stdout
    wait_for(lambda: d.api("/services/web")["UpdateStatus"]["State"] == "rollback_completed", 30, what="rolled back")
    svc = d.api("/services/web")
    assert svc["Spec"] == before and "PreviousSpec" not in svc
    wait_for(lambda: len(running(d, "web")) == 3, 30, what="3 running")
    assert all(t["Spec"]["ContainerSpec"]["Args"] == SERVE for t in running(d, "web"))


def test_start_first_keeps_n_running_and_manual_rollback(swarm):
    d = swarm
    d.cli("service", "create", "--detach", "--name", "web", "--replicas", "3", "--update-order", "start-first",
          "--update-monitor", "1s", "--rollback-monitor", "1s", "busybox", *SERVE)
    wait_for(lambda: len(running(d, "web")) == 3, 60, what="3 running")
    counts, dips, stop = [], [], threading.Event()

    def watch():
        while not stop.is_set():
            snap = d.api_tasks("web")
            counts.append(len([t for t in snap if t["Status"]["State"] == "running"]))
            if counts[-1] < 3:
                dips.append([(t["Slot"], t["ID"][:6], t["DesiredState"], t["Status"]["State"], env_of(t)) for t in snap])
            time.sleep(0.05)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        d.cli("service", "update", "--env-add", "V=2", "web", timeout=60)
    finally:
        stop.set()
        watcher.join()
    assert min(counts) >= 3, dips[:3]  # (the overlap itself is too short to be sure to see by polling)
    # from the history: every old task stopped only after its slot's new task ran
    by_slot = {}
    for t in tasks_of(d, "web"):
        by_slot.setdefault(t["Slot"], []).append(t)
    for slot, ts_ in by_slot.items():
        new = next(t for t in ts_ if "V=2" in env_of(t))
        old = next(t for t in ts_ if "V=2" not in env_of(t))
        assert ts(old["Status"]["Timestamp"]) >= ts(new["Status"]["Timestamp"])

    out = d.cli("service", "rollback", "web", timeout=60).stdout
    assert "rollback: manually requested rollback" in out and "verify: Service converged" in out
    svc = d.api("/services/web")
    assert svc["UpdateStatus"]["State"] == "rollback_completed"
    assert all("V=2" not in env_of(t) for t in running(d, "web")) and len(running(d, "web")) == 3
    r = d.cli("service", "update", "--force", "--detach", "web")
    assert r.returncode == 0
    wait_for(lambda: d.api("/services/web")["Spec"]["TaskTemplate"].get("ForceUpdate") == 1, 10, what="force")
    wait_for(lambda: d.api("/services/web").get("UpdateStatus", {}).get("State") == "completed", 60, what="forced")
    assert len([t for t in tasks_of(d, "web") if t["Spec"].get("ForceUpdate") == 1 and t["Status"]["State"] == "running"]) == 3


def test_restart_policy_cases(swarm):
    d = swarm
    quick = ["--restart-delay", "200ms"]
    d.cli("service", "create", "--detach", "--name", "ok-once", "--restart-condition", "on-failure", *quick,
          "busybox", "true")
    d.cli("service", "create", "--detach", "--name", "never", "--restart-condition", "none", *quick,
          "busybox", "sh", "-c", "exit 1")
    d.cli("service", "create", "--detach", "--name", "capped", "--restart-condition", "any",
          "--restart-max-attempts", "2", *quick, "busybox", "sh", "-c", "exit 1")
    d.cli("service", "create", "--detach", "--name", "again", "--restart-condition", "any", "--restart-delay", "2s",
          "busybox", "true")
    wait_for(lambda: len(tasks_of(d, "capped")) == 3 and all(t["Status"]["State"] == "failed" for t in tasks_of(d, "capped")),
             60, what="max attempts")
    wait_for(lambda: len(tasks_of(d, "again")) >= 3, 60, what="any restarts completed tasks")
    time.sleep(2)
    assert [t["Status"]["State"] for t in tasks_of(d, "ok-once")] == ["complete"]
    assert [t["Status"]["State"] for t in tasks_of(d, "never")] == ["failed"]
    assert len(tasks_of(d, "capped")) == 3, "the first run and 2 restarts, then no more"
    done = sorted((t for t in tasks_of(d, "again") if t["Status"]["State"] == "complete"),
                  key=lambda t: t["CreatedAt"])
    assert len(done) >= 2
    for prev, nxt in zip(done, done[1:]):  # the restart delay separates the runs
        assert ts(nxt["Status"]["Timestamp"]) - ts(prev["Status"]["Timestamp"]) >= 2.0
    ls = d.cli("service", "ls").stdout
    assert "0/1" in [line.split()[3] for line in ls.splitlines() if " never " in line]


def test_replicated_job_completes_exactly_n_times(swarm):
    d = swarm
    out = d.cli("service", "create", "--name", "batch", "--mode", "replicated-job", "--replicas", "5",
                "--max-concurrent", "2", "busybox", "sh", "-c", "sleep 0.3", timeout=90).stdout
    assert "job complete" in out and "job progress: 5 out of 5 complete" in out
    time.sleep(2)
    tasks = tasks_of(d, "batch")
    assert len(tasks) == 5 and all(t["Status"]["State"] == "complete" for t in tasks)
    assert sorted(t["Slot"] for t in tasks) == [1, 2, 3, 4, 5]
    assert all(t["DesiredState"] == "complete" for t in tasks)
    # never more than 2 at once: a task is only created once fewer than 2 are unfinished
    assert max_overlap([(ts(t["CreatedAt"]), ts(t["Status"]["Timestamp"])) for t in tasks]) <= 2
    svc = d.api("/services/batch")
    assert svc["JobStatus"]["LastExecution"] and svc["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"] == "on-failure"
    assert "(5/5 completed)" in d.cli("service", "ls").stdout
    # an update runs the job again, as a new iteration
    d.cli("service", "update", "--env-add", "RUN=2", "batch", timeout=90)
    tasks = tasks_of(d, "batch")
    assert sorted((t.get("JobIteration") or {}).get("Index", 0) for t in tasks if t["Status"]["State"] == "complete") == [0] * 5 + [1] * 5


def test_bad_update_input_changes_nothing(swarm):
    d = swarm
    d.cli("service", "create", "--detach", "--name", "web", "busybox", *SERVE)
    before = d.api("/services/web")
    for args, expect in ((["--update-failure-action", "explode"], "--update-failure-action"),
                         (["--rollback-failure-action", "rollback"], "--rollback-failure-action"),
                         (["--max-concurrent", "2"], "--max-concurrent")):
        r = d.cli("service", "update", *args, "web", check=False)
        assert r.returncode != 0 and expect in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    r = d.cli("service", "rollback", "web", check=False)
    assert r.returncode != 0 and "does not have a previous spec" in r.stderr
    assert d.api("/services/web")["Version"] == before["Version"]
