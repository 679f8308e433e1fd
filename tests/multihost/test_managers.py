"""Highly available managers through the harness: real shoald processes in their own network
namespaces, faults by killing processes and pulling cables. Throughout, a client keeps writing
(each write creates a service) through whichever managers it can reach; every write that was
acknowledged must be on every manager in the end, and writes must resume after each fault."""
from __future__ import annotations

import http.client
import threading
import time

import pytest

from cli.dev.cluster import DevCluster
from tests.multihost.helpers import wait_for

pytestmark = pytest.mark.usefixtures("join_available")

API_ERRORS = (OSError, ValueError, http.client.HTTPException)


def leader_seen_by(c: DevCluster, node: str) -> str | None:
    """The hostname of the manager that `node` takes for the leader, or None."""
    try:
        nodes = c.api(node, "/nodes", timeout=5)
    except API_ERRORS:
        return None
    leaders = [n["Description"]["Hostname"] for n in nodes if (n.get("ManagerStatus") or {}).get("Leader")]
    return leaders[0] if len(leaders) == 1 else None


def agreed_leader(c: DevCluster, nodes: list[str]) -> str | None:
    """The leader if every given manager names the same one, and it is one of them."""
    seen = {leader_seen_by(c, n) for n in nodes}
    if len(seen) == 1:
        (lead,) = seen
        return lead if lead in nodes else None
    return None


def services_on(c: DevCluster, node: str) -> set[str] | None:
    try:
        return {s["Spec"]["Name"] for s in c.api(node, "/services", timeout=10)}
    except API_ERRORS:
        return None


def service_spec(name: str) -> dict:
    return {"Name": name, "Labels": {"written-by": "test_managers"}, "Mode": {"Replicated": {"Replicas": 0}},
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox:latest"}}}


class Writer(threading.Thread):
    """Creates one service after another through a manager it may use (not killed, not cut
    off), round robin; remembers which writes were acknowledged and when."""

    def __init__(self, c: DevCluster, managers: list[str]):
        super().__init__(daemon=True)
        self.c = c
        self.managers = managers
        self.avoid: set[str] = set()
        self.acked: list[tuple[str, float, float]] = []  # name, started, acknowledged
        self.failed = 0
        self.last_error = ""
        self._done = threading.Event()

    def run(self) -> None:
        i = 0
        while not self._done.is_set():
            i += 1
            usable = [m for m in self.managers if m not in self.avoid] or self.managers
            via = usable[i % len(usable)]
            name = f"ack-{i}"
            started = time.monotonic()
            try:
                self.c.api(via, "/services/create", "POST", service_spec(name), timeout=5)
                self.acked.append((name, started, time.monotonic()))
            except API_ERRORS as exc:
                self.failed += 1
                self.last_error = f"{via}: {exc}"
                time.sleep(0.05)
            time.sleep(0.02)

    def names(self) -> list[str]:
        return [name for name, _, _ in list(self.acked)]

    def acked_since(self, t: float) -> list[float]:
        """When the writes started after t were acknowledged."""
        return [at for _, started, at in list(self.acked) if started > t]

    def wait_progress(self, since: float, what: str, timeout: float = 20.0) -> float:
        """Until a few writes started after `since` were acknowledged; returns the seconds to the first."""
        wait_for(lambda: len(self.acked_since(since)) >= 3, timeout, 0.05,
                 what=f"writes acknowledged again after {what} (failed so far {self.failed}, last: {self.last_error})")
        return min(self.acked_since(since)) - since

    def stop(self) -> list[str]:
        self._done.set()
        self.join(30)
        return self.names()


def assert_all_present(c: DevCluster, managers: list[str], acked: list[str], timeout: float = 30.0) -> None:
    want = set(acked)

    def missing() -> dict[str, int] | None:
        out = {}
        for m in managers:
            have = services_on(c, m)
            out[m] = len(want) if have is None else len(want - have)
        return None if not any(out.values()) else out
    try:
        wait_for(lambda: missing() is None, timeout, 0.2, what="every acknowledged write on every manager")
    except AssertionError:
        detail = {m: sorted(want - (services_on(c, m) or set()))[:10] for m in managers}
        raise AssertionError(f"acknowledged writes missing: {detail} (of {len(want)} acknowledged)") from None


def wait_voters(c: DevCluster, founder: str, joined: list[str], timeout: float = 20.0) -> None:
    """Until the founding leader has promoted every joined manager from learner to voter. The
    API does not tell learners from voters (and `swarm join` returns before the promotion), so
    this reads the leader's log, which the harness keeps."""
    ids = {name: c.swarm_nodes(founder)[name]["ID"] for name in joined}

    def promoted() -> bool:
        text = c.paths(founder).log.read_text(errors="replace")
        return all(f"manager {node_id} caught up and is now a voter" in text for node_id in ids.values())
    wait_for(promoted, timeout, 0.1, what=f"{', '.join(joined)} promoted to voters")


def running_tasks(c: DevCluster, via: str, service: str) -> dict[str, str]:
    """task id -> node hostname of the service's running tasks."""
    names = {n["ID"]: host for host, n in c.swarm_nodes(via).items()}
    tasks = c.api(via, "/tasks?filters=" + '{"service":["%s"]}' % service)
    return {t["ID"]: names.get(t.get("NodeID", ""), "?") for t in tasks
            if t["Status"]["State"] == "running" and t["DesiredState"] == "running"}


def test_three_managers_lose_no_acknowledged_write_through_kill_partition_and_full_restart(cluster, busybox_tar):
    managers = ["m1", "m2", "m3"]
    c = cluster(managers=3, workers=1)
    wait_voters(c, "m1", managers[1:])
    for node in managers + ["w1"]:
        c.shoal(node, "image", "import", str(busybox_tar), "busybox:latest")
    c.shoal("m1", "service", "create", "--detach", "--name", "web", "--replicas", "2",
            "--constraint", "node.role==worker", "busybox:latest", "sleep", "3600")

    def two_running() -> dict[str, str] | None:
        tasks = running_tasks(c, "m1", "web")
        return tasks if len(tasks) == 2 else None
    web_tasks = wait_for(two_running, 30, 0.2, what="web's 2 tasks running on w1")
    assert set(web_tasks.values()) == {"w1"}

    writer = Writer(c, managers)
    writer.start()
    try:
        writer.wait_progress(time.monotonic() - 60, "the start")

        # 1. Kill the leader: the two others elect one of them, writes resume.
        old = wait_for(lambda: agreed_leader(c, managers), 20, what="one leader for all three")
        writer.avoid = {old}
        t0 = time.monotonic()
        c.kill(old)
        rest = [m for m in managers if m != old]
        new = wait_for(lambda: agreed_leader(c, rest), 20, 0.05, what=f"a new leader after killing {old}")
        elected = time.monotonic() - t0
        resumed = writer.wait_progress(t0, f"killing the leader {old}")
        print(f"kill leader {old}: {new} leads after {elected:.2f}s, first acknowledged write after {resumed:.2f}s")
        c.start(old)
        writer.avoid = set()
        wait_for(lambda: agreed_leader(c, managers), 30, what=f"{old} back as a follower")
        assert_all_present(c, managers, writer.names())

        # 2. Pull the leader's cable: it steps down, the majority elects a leader and takes
        # writes; back on the network it follows without deposing anyone (pre-vote).
        cut = wait_for(lambda: agreed_leader(c, managers), 20, what="one leader before the cut")
        writer.avoid = {cut}
        t0 = time.monotonic()
        c.cut(cut)
        rest = [m for m in managers if m != cut]
        majority_leader = wait_for(lambda: agreed_leader(c, rest), 20, 0.05, what=f"a leader among {rest}")
        resumed = writer.wait_progress(t0, f"cutting the leader {cut} off")
        wait_for(lambda: leader_seen_by(c, cut) != cut, 10, 0.1, what=f"{cut} stepping down while cut off")
        print(f"cut leader {cut}: {majority_leader} leads, first acknowledged write after {resumed:.2f}s")
        c.heal(cut)
        writer.avoid = set()
        wait_for(lambda: agreed_leader(c, managers), 30, what=f"{cut} following again after heal")
        assert agreed_leader(c, managers) == majority_leader, "the healed node must not depose the leader"
        assert_all_present(c, managers, writer.names())

        # 3. Every manager dies at once (SIGKILL: nothing flushed on the way out), then all start
        # again from their disks.
        for m in managers:
            c.kill(m)
        t0 = time.monotonic()
        for m in managers:
            c.start(m)
        wait_for(lambda: agreed_leader(c, managers), 30, 0.1, what="a leader after restarting every manager")
        resumed = writer.wait_progress(t0, "restarting every manager", timeout=30)
        print(f"restart all managers: first acknowledged write {resumed:.2f}s after the kills")
    finally:
        acked = writer.stop()
    print(f"{len(acked)} writes acknowledged, {writer.failed} failed during faults")
    assert len(acked) >= 20
    assert_all_present(c, managers, acked)

    # The service made before the faults is intact, and its tasks on the worker never stopped.
    for m in managers:
        (svc,) = [s for s in c.api(m, "/services") if s["Spec"]["Name"] == "web"]
        assert svc["Spec"]["Mode"]["Replicated"]["Replicas"] == 2
    now = wait_for(two_running, 30, 0.2, what="web's 2 tasks running after the faults")
    assert set(now.values()) == {"w1"}
    assert now == web_tasks, "the worker's tasks must survive the manager faults untouched"


def test_five_managers_keep_working_with_two_down(cluster):
    managers = ["m1", "m2", "m3", "m4", "m5"]
    c = cluster(managers=5, workers=0)
    wait_voters(c, "m1", managers[1:])
    lead = wait_for(lambda: agreed_leader(c, managers), 20, what="one leader for all five")
    down = [lead, next(m for m in managers if m != lead)]  # the worst two: the leader among them
    t0 = time.monotonic()
    for m in down:
        c.kill(m)
    rest = [m for m in managers if m not in down]
    new = wait_for(lambda: agreed_leader(c, rest), 20, 0.05, what=f"a leader among {rest}")
    print(f"killed {down}: {new} leads after {time.monotonic() - t0:.2f}s")

    # Writes through every surviving manager (followers forward them); node label updates need
    # no image on the leader.
    for i, via in enumerate(rest):
        target = rest[(i + 1) % len(rest)]

        def label() -> bool:
            node = c.api(via, f"/nodes/{target}")
            spec = dict(node["Spec"], Labels=dict(node["Spec"].get("Labels") or {}, written=via))
            try:
                c.api(via, f"/nodes/{node['ID']}/update?version={node['Version']['Index']}", "POST", spec)
                return True
            except ValueError as exc:  # a stale version read from a follower: read again
                if "out of sequence" in str(exc) or "409" in str(exc):
                    return False
                raise
        wait_for(label, 20, 0.1, what=f"a write through {via} with {down} down")
    for m in rest:
        wait_for(lambda m=m: all((c.swarm_nodes(m)[t]["Spec"].get("Labels") or {}).get("written") ==
                                 rest[(rest.index(t) - 1) % len(rest)] for t in rest), 10, 0.1,
                 what=f"the writes replicated to {m}")

    def unreachable() -> set[str]:
        return {n for n, s in c.swarm_nodes(new).items() if (s.get("ManagerStatus") or {}).get("Reachability") == "unreachable"}
    wait_for(lambda: unreachable() == set(down), 10, 0.2, what=f"the leader showing {down} unreachable")

    # A third loss leaves no quorum: the API says so, and nothing changes.
    c.kill(rest[0])
    survivors = rest[1:]
    r = c.shoal(survivors[0], "node", "update", "--label-add", "after=quorum-loss", survivors[1], check=False, timeout=60)
    assert r.returncode != 0 and "does not have a leader" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    for m in survivors:
        assert "after" not in (c.swarm_nodes(m)[survivors[1]]["Spec"].get("Labels") or {})
