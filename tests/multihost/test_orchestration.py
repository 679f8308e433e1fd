"""Orchestration across hosts of the `shoal dev` harness: global services and jobs following the
nodes, and the replica count after a partition heals."""
from __future__ import annotations

import collections
import json
import time
import urllib.parse

import pytest

from cli.dev.cluster import DevCluster
from tests.multihost.helpers import wait_for

pytestmark = pytest.mark.usefixtures("join_available")

SERVE = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


def tasks(c: DevCluster, service: str) -> list[dict]:
    return c.api("m1", "/tasks?filters=" + urllib.parse.quote(json.dumps({"service": [service]})))


def per_node(c: DevCluster, service: str, state: str = "running", any_desired: bool = False) -> dict[str, int]:
    names = {n["ID"]: host for host, n in c.swarm_nodes("m1").items()}
    count = collections.Counter(names.get(t.get("NodeID", ""), "?") for t in tasks(c, service)
                                if t["Status"]["State"] == state and (any_desired or t["DesiredState"] in ("running", "complete")))
    return dict(count)


def import_busybox(c: DevCluster, nodes, busybox_tar):
    for node in nodes:
        c.shoal(node, "image", "import", str(busybox_tar), "busybox:latest")


def test_global_service_and_global_job_follow_joins_and_drains(cluster, busybox_tar):
    c = cluster(managers=1, workers=2, join=False)
    import_busybox(c, ("m1", "w1", "w2"), busybox_tar)
    c.join("w1")
    c.wait_ready(["m1", "w1"])
    c.shoal("m1", "service", "create", "--detach", "--name", "agent", "--mode", "global", "busybox", *SERVE)
    c.shoal("m1", "service", "create", "--detach", "--name", "once", "--mode", "global-job", "busybox", "true")
    wait_for(lambda: per_node(c, "agent") == {"m1": 1, "w1": 1}, 60, what="one agent per node")
    wait_for(lambda: per_node(c, "once", "complete") == {"m1": 1, "w1": 1}, 60, what="the job done on both")

    c.join("w2")  # a node that joins gets the service, and runs the job once too
    c.wait_ready()
    wait_for(lambda: per_node(c, "agent") == {"m1": 1, "w1": 1, "w2": 1}, 60, what="agent on w2")
    wait_for(lambda: per_node(c, "once", "complete") == {"m1": 1, "w1": 1, "w2": 1}, 60, what="the job on w2")

    c.shoal("m1", "node", "update", "--availability", "drain", "w1")
    wait_for(lambda: per_node(c, "agent") == {"m1": 1, "w2": 1}, 60, what="w1 drained")
    time.sleep(2)
    assert len(tasks(c, "once")) == 3, "a job runs once per node: nothing runs again"
    assert "(3/3 completed)" in c.shoal("m1", "service", "ls").stdout
    c.shoal("m1", "node", "update", "--availability", "active", "w1")
    wait_for(lambda: per_node(c, "agent") == {"m1": 1, "w1": 1, "w2": 1}, 60, what="w1 back")


def test_after_a_partition_heals_the_replicas_are_what_was_asked(cluster, busybox_tar):
    c = cluster(managers=1, workers=2)
    import_busybox(c, ("m1", "w1", "w2"), busybox_tar)
    c.shoal("m1", "service", "create", "--detach", "--name", "web", "--replicas", "6", "busybox", *SERVE)
    wait_for(lambda: per_node(c, "web") == {"m1": 2, "w1": 2, "w2": 2}, 60, what="2 per node")

    c.cut("w1")
    wait_for(lambda: c.swarm_nodes("m1")["w1"]["Status"]["State"] == "down", 30, what="w1 down")
    wait_for(lambda: sum(v for k, v in per_node(c, "web").items() if k != "w1") == 6, 60, what="moved off w1")
    c.heal("w1")
    c.wait_ready(timeout=60)

    def settled():
        all_running = per_node(c, "web", any_desired=True)
        return sum(all_running.values()) == 6 and "w1" not in all_running and all_running
    wait_for(settled, 60, what="the tasks that moved away stopped on w1")
    time.sleep(3)
    assert sum(per_node(c, "web", any_desired=True).values()) == 6, "never more replicas than asked for"
    # and a rolling update over the healed cluster keeps to its parallelism
    c.shoal("m1", "service", "update", "--env-add", "V=2", "--update-parallelism", "2", "--update-monitor", "1s",
            "web", timeout=120)
    new = [t for t in tasks(c, "web") if "V=2" in t["Spec"]["ContainerSpec"].get("Env", [])]
    assert len(new) == 6 and all(t["Status"]["State"] == "running" for t in new)
    assert c.api("m1", "/services/web")["UpdateStatus"]["State"] == "completed"
