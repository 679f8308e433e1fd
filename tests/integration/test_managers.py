"""Several managers on loopback: Raft over mutual TLS, forwarding, failover, quorum loss,
restart from disk and disaster recovery."""
import signal
import time

from tests.integration.harness import wait_for


def managers(d):
    out = {}
    for n in d.api("/nodes"):
        ms = n.get("ManagerStatus")
        if ms:
            out[n["Description"]["Hostname"]] = "Leader" if ms.get("Leader") else ms.get("Reachability")
    return out


def leader_of(ds):
    for d in ds:
        try:
            info = d.api("/nodes")
        except Exception:
            continue
        if not isinstance(info, list):
            continue
        for n in info:
            if (n.get("ManagerStatus") or {}).get("Leader"):
                return n["Description"]["Hostname"]
    return None


def test_three_managers_survive_a_leader_failure(daemons):
    m1 = daemons("m1")
    m1.cli("swarm", "init", "--advertise-addr", f"127.0.0.1:{m1.port}")
    token = m1.cli("swarm", "join-token", "-q", "manager").stdout.strip()
    m2, m3 = daemons("m2"), daemons("m3")
    for m in (m2, m3):
        out = m.cli("swarm", "join", "--token", token, f"127.0.0.1:{m1.port}").stdout
        assert "as a manager" in out
    wait_for(lambda: managers(m1) == {"m1": "Leader", "m2": "reachable", "m3": "reachable"}, 30,
             what="3 managers, 1 leader")
    assert "Reachable" in m1.cli("node", "ls").stdout

    # any manager answers reads and forwards writes to the leader
    m2.cli("service", "create", "--name", "web", "--replicas", "3", "--detach", "busybox",
           "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done")
    wait_for(lambda: "web" in m3.cli("service", "ls").stdout, 10, what="replicated to m3")
    wait_for(lambda: sum(1 for t in m1.api_tasks("web") if t["Status"]["State"] == "running") == 3, 60,
             what="3 running")

    # kill the leader: a new one is elected and writes succeed again
    t0 = time.monotonic()
    m1.stop(signal.SIGKILL)

    def write_ok():
        r = m2.cli("service", "scale", "web=4", "--detach", check=False)
        return r.returncode == 0
    wait_for(write_ok, 20, 0.05, what="a write after the leader died")
    failover = time.monotonic() - t0
    print(f"failover_s={failover:.2f}")
    new_leader = leader_of([m2, m3])
    assert new_leader in ("m2", "m3")
    wait_for(lambda: managers(m2).get("m1") == "unreachable", 10, what="m1 unreachable")

    # the old leader restarts from its disk and catches up as a follower
    m1.start()
    wait_for(lambda: "replicated" in m1.cli("service", "ls").stdout and
             m1.json("service", "inspect", "web")[0]["Spec"]["Mode"]["Replicated"]["Replicas"] == 4, 20,
             what="m1 caught up")
    wait_for(lambda: set(managers(m1).values()) == {"Leader", "reachable"}, 20, what="all reachable")

    # no quorum: a clear error, nothing changes, tasks keep running
    others = [m for m in (m1, m2, m3) if m.hostname != leader_of([m1, m2, m3])]
    survivor = others[0]
    for m in (m1, m2, m3):
        if m is not survivor:
            m.stop(signal.SIGKILL)
    r = survivor.cli("service", "scale", "web=1", "--detach", check=False, timeout=60)
    assert r.returncode != 0 and "does not have a leader" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr

    # disaster recovery: the survivor becomes a cluster of one, keeping services
    survivor.stop()
    survivor.start(extra=("--force-new-cluster",))
    wait_for(lambda: managers(survivor).get(survivor.hostname) == "Leader", 20, what="survivor leads")
    (svc,) = survivor.json("service", "inspect", "web")
    assert svc["Spec"]["Mode"]["Replicated"]["Replicas"] == 4
    survivor.cli("service", "scale", "web=2", "--detach")


def test_promote_and_demote(daemons):
    m1 = daemons("m1")
    m1.cli("swarm", "init", "--advertise-addr", f"127.0.0.1:{m1.port}")
    token = m1.cli("swarm", "join-token", "-q", "worker").stdout.strip()
    w1, w2 = daemons("w1"), daemons("w2")
    for w in (w1, w2):
        w.cli("swarm", "join", "--token", token, f"127.0.0.1:{m1.port}")
    wait_for(lambda: len(m1.api("/nodes")) == 3, 10, what="3 nodes")

    m1.cli("node", "promote", "w1", "w2")
    wait_for(lambda: managers(m1) == {"m1": "Leader", "w1": "reachable", "w2": "reachable"}, 30,
             what="two promoted managers")
    wait_for(lambda: w1.cli("node", "ls", check=False).returncode == 0, 20, what="w1 answers the control API")
    r = m1.cli("node", "rm", "--force", "w2", check=False)
    assert r.returncode != 0 and "demote it" in r.stderr

    m1.cli("node", "demote", "w2")
    wait_for(lambda: managers(m1) == {"m1": "Leader", "w1": "reachable"}, 30, what="w2 demoted")
    wait_for(lambda: w2.cli("node", "ls", check=False).returncode != 0, 20, what="w2 no longer a manager")
    wait_for(lambda: {n["Description"]["Hostname"]: n["Status"]["State"] for n in m1.api("/nodes")}.get("w2") == "ready",
             20, what="w2 still a ready worker")

    # demoting the leader hands leadership over
    m1.cli("node", "demote", "m1")
    wait_for(lambda: managers(w1) == {"w1": "Leader"}, 30, what="w1 leads alone")
    w1.cli("service", "create", "--name", "after", "--detach", "busybox", "true")
    assert "after" in w1.cli("service", "ls").stdout
    r = w1.cli("node", "demote", "w1", check=False)
    assert r.returncode != 0 and "last manager" in r.stderr
