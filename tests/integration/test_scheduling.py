"""Placement through the real daemon: constraints, reservations, max replicas per node, and the
reasons users see in `service ps` while a task waits."""
from tests.integration.harness import wait_for


def states(d, service):
    return sorted(t["Status"]["State"] for t in d.api_tasks(service) if t["DesiredState"] == "running")


def test_pending_reasons_and_placement_when_a_node_fits(daemon, busybox_tar):
    d = daemon
    d.cli("swarm", "init")
    d.cli("image", "import", str(busybox_tar), "busybox:latest")
    loop = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]

    d.cli("service", "create", "--name", "eu", "--constraint", "node.labels.zone==eu", "--detach", "busybox", *loop)
    wait_for(lambda: states(d, "eu") == ["pending"], 20, what="pending task")
    ps = d.cli("service", "ps", "--no-trunc", "eu").stdout
    assert "no suitable node (1 node did not satisfy constraint node.labels.zone==eu)" in ps, ps
    pretty = d.cli("service", "inspect", "--pretty", "eu").stdout
    assert "node.labels.zone==eu" in pretty

    d.cli("node", "update", "--label-add", "zone=eu", "node1")  # placed as soon as a node fits
    wait_for(lambda: states(d, "eu") == ["running"], 30, what="placed after the label was added")

    d.cli("service", "create", "--name", "big", "--reserve-memory", "100000G", "--detach", "busybox", *loop)
    wait_for(lambda: states(d, "big") == ["pending"], 20, what="pending for memory")
    assert "1 node had insufficient memory" in d.cli("service", "ps", "--no-trunc", "big").stdout

    d.cli("service", "create", "--name", "one", "--replicas", "2", "--replicas-max-per-node", "1", "--detach",
          "busybox", *loop)
    wait_for(lambda: states(d, "one") == ["pending", "running"], 30, what="one running, one pending")
    assert "max replicas per node" in d.cli("service", "ps", "--no-trunc", "one").stdout

    r = d.cli("service", "create", "--name", "bad", "--constraint", "node.labels.zone=eu", "busybox", check=False)
    assert r.returncode != 0 and "Constraints[0]" in r.stderr and "Traceback" not in r.stderr

    d.cli("service", "create", "--name", "everywhere", "--mode", "global", "--detach", "busybox", *loop)
    wait_for(lambda: states(d, "everywhere") == ["running"], 30, what="global task on the node")
    d.cli("node", "update", "--availability", "drain", "node1")
    wait_for(lambda: states(d, "everywhere") == [] and states(d, "eu") == ["pending"], 30,
             what="drain removes the global task and moves the replicated one")
