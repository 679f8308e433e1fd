"""Clusters formed with `shoal swarm join` over the harness's network (skipped while the CLI
has no `swarm join`)."""
from __future__ import annotations

import collections
import time

import pytest

from cli.dev.cluster import DevCluster
from tests.multihost.helpers import wait_for

pytestmark = pytest.mark.usefixtures("join_available")


def test_three_nodes_join_over_the_network_and_are_ready(cluster):
    c = cluster(managers=1, workers=2)
    seen = c.swarm_nodes("m1")
    assert {"m1", "w1", "w2"} <= set(seen)
    for name, role in (("m1", "manager"), ("w1", "worker"), ("w2", "worker")):
        node = seen[name]
        assert node["Spec"]["Role"] == role
        assert node["Status"]["State"] == "ready"
        assert node["Status"]["Addr"] == c.address(name), "each node is reached at its own address"
    rows = [line for line in c.shoal("m1", "node", "ls").stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 3 and all("Ready" in r for r in rows)

    for w in ("w1", "w2"):
        seconds = c.record(w).join_seconds
        assert seconds is not None
        print(f"{w}: shoal swarm join took {seconds:.2f}s")
        info = c.api(w, "/info")["Swarm"]
        assert info["NodeID"] == seen[w]["ID"] and info["LocalNodeState"] == "active"

    r = c.shoal("w1", "node", "ls", check=False)
    assert r.returncode != 0 and "manager" in r.stderr.lower(), "a worker does not serve the control API"


def running_by_node(c: DevCluster, service: str) -> dict[str, int]:
    names = {n["ID"]: host for host, n in c.swarm_nodes("m1").items()}
    tasks = c.api("m1", "/tasks?filters=" + '{"service":["%s"]}' % service)
    per = collections.Counter(names.get(t.get("NodeID", ""), "?") for t in tasks
                              if t["Status"]["State"] == "running" and t["DesiredState"] == "running")
    return dict(per)


def test_a_killed_workers_tasks_run_elsewhere(cluster, busybox_tar):
    c = cluster(managers=1, workers=2)
    for node in ("m1", "w1", "w2"):
        c.shoal(node, "image", "import", str(busybox_tar), "busybox:latest")
    c.shoal("m1", "service", "create", "--detach", "--name", "sleeper", "--replicas", "6",
            "busybox:latest", "sleep", "3600")
    def placed(excluded: str = "") -> dict[str, int] | None:
        per = running_by_node(c, "sleeper")
        return per if sum(per.values()) == 6 and excluded not in per else None

    spread = wait_for(placed, timeout=30, what="6 running replicas")
    assert spread == {"m1": 2, "w1": 2, "w2": 2}

    c.kill("w1")
    t0 = time.monotonic()
    after = wait_for(lambda: placed(excluded="w1"), timeout=40, interval=0.2,
                     what="w1's tasks running on the other nodes")
    elapsed = time.monotonic() - t0
    print(f"kill w1 -> its tasks running elsewhere: {elapsed:.1f}s")
    assert after == {"m1": 3, "w2": 3}
    assert c.swarm_nodes("m1")["w1"]["Status"]["State"] == "down"


def test_a_cut_worker_goes_down_and_is_ready_again_after_heal(cluster):
    c = cluster(managers=1, workers=1)

    def state(node: str) -> str:
        return c.swarm_nodes("m1")[node]["Status"]["State"]

    c.cut("w1")
    t0 = time.monotonic()
    wait_for(lambda: state("w1") == "down", timeout=30, what="w1 marked down while cut off")
    print(f"cut w1 -> Down: {time.monotonic() - t0:.1f}s")
    assert c.ls()[1].state == "running", "only the network was cut: the daemon runs on"

    c.heal("w1")
    t0 = time.monotonic()
    wait_for(lambda: state("w1") == "ready", timeout=30, what="w1 ready again after heal")
    print(f"heal w1 -> Ready: {time.monotonic() - t0:.1f}s")
