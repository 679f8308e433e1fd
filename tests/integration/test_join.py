"""Several real daemons on loopback forming one swarm over mutual TLS."""
import signal
import ssl
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.harness import free_port, wait_for


def nodes(d):
    return {n["Description"]["Hostname"]: n for n in d.api("/nodes")}


def running_by_node(d, service):
    host = {n["ID"]: n["Description"]["Hostname"] for n in d.api("/nodes")}
    out = {}
    for t in d.api_tasks(service):
        if t["DesiredState"] == "running" and t["Status"]["State"] == "running":
            out[host[t["NodeID"]]] = out.get(host[t["NodeID"]], 0) + 1
    return out


def test_join_spread_failover_drain_and_removal(daemons):
    port = free_port()
    m1 = daemons("m1")
    m1.cli("swarm", "init", "--listen-addr", f"127.0.0.1:{port}", "--advertise-addr", f"127.0.0.1:{port}")
    token = m1.cli("swarm", "join-token", "-q", "worker").stdout.strip()
    assert token.startswith("SHLTKN-1-")
    assert f"shoal swarm join --token {token} 127.0.0.1:{port}" in m1.cli("swarm", "join-token", "worker").stdout

    # bad tokens: refused with a clear message, no trace in node ls
    w1 = daemons("w1")
    for bad, why in ((token[:-3] + "zzz", "join token"), ("SHLTKN-1-nope", "join token"),
                     ("SHLTKN-1-" + "0" * 64 + "-" + token.rsplit("-", 1)[1], "does not match")):
        r = w1.cli("swarm", "join", "--token", bad, f"127.0.0.1:{port}", check=False)
        assert r.returncode != 0 and why in r.stderr and "Traceback" not in r.stderr, r.stderr
    rotated = m1.cli("swarm", "join-token", "-q", "--rotate", "worker").stdout.strip()
    assert rotated != token
    r = w1.cli("swarm", "join", "--token", token, f"127.0.0.1:{port}", check=False)
    assert r.returncode != 0 and "join token" in r.stderr
    assert list(nodes(m1)) == ["m1"]

    t0 = time.monotonic()
    w1.cli("swarm", "join", "--token", rotated, f"127.0.0.1:{port}")
    join_s = time.monotonic() - t0
    w2 = daemons("w2")
    w2.cli("swarm", "join", "--token", rotated, f"127.0.0.1:{port}")
    wait_for(lambda: all(n["Status"]["State"] == "ready" for n in nodes(m1).values()) and len(nodes(m1)) == 3,
             20, what="3 ready nodes")
    ls = m1.cli("node", "ls").stdout
    assert ls.count("Ready") == 3 and "Leader" in ls
    print(f"join_s={join_s:.2f}")

    # a worker's certificate never reaches the control API
    certs = w1.state_dir / "swarm" / "certs"
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(certs / "node.pem"))
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"https://127.0.0.1:{port}/control/nodes", context=ctx, timeout=10)
    assert err.value.code == 403
    with pytest.raises(urllib.error.HTTPError) as err:  # and no certificate at all gets nothing either
        nocert = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        nocert.check_hostname = False
        urllib.request.urlopen(f"https://127.0.0.1:{port}/control/nodes", context=nocert, timeout=10)
    assert err.value.code == 403

    # spread: 6 replicas, 2 per node
    m1.cli("service", "create", "--name", "web", "--replicas", "6", "--detach", "busybox",
           "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done")
    wait_for(lambda: running_by_node(m1, "web") == {"m1": 2, "w1": 2, "w2": 2}, 60, what="2 tasks per node")

    # killing a worker's daemon moves its tasks to the others
    w2_pids = [t["Status"]["ContainerStatus"]["PID"] for t in m1.api_tasks("web")
               if t["Status"]["State"] == "running" and nodes(m1)["w2"]["ID"] == t["NodeID"]]
    t0 = time.monotonic()
    w2.stop(signal.SIGKILL)
    wait_for(lambda: sum(running_by_node(m1, "web").get(h, 0) for h in ("m1", "w1")) == 6, 30,
             0.1, what="tasks rescheduled")
    failover_s = time.monotonic() - t0
    print(f"failover_s={failover_s:.2f}")
    assert nodes(m1)["w2"]["Status"]["State"] == "down"
    # when it returns it stops the tasks that were moved away
    w2.start()
    wait_for(lambda: nodes(m1)["w2"]["Status"]["State"] == "ready", 20, what="w2 back")
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in w2_pids), 30, what="moved tasks stopped on w2")
    assert sum(running_by_node(m1, "web").values()) == 6

    # drain empties a node; pause takes no new tasks
    m1.cli("node", "update", "--availability", "drain", "w1")
    wait_for(lambda: "w1" not in running_by_node(m1, "web") and sum(running_by_node(m1, "web").values()) == 6,
             30, what="w1 drained")
    m1.cli("node", "update", "--availability", "pause", "w1")
    m1.cli("service", "scale", "web=8", "--detach")
    wait_for(lambda: sum(running_by_node(m1, "web").values()) == 8, 30, what="scaled to 8")
    assert "w1" not in running_by_node(m1, "web")

    # a removed node's certificate is refused from then on
    w1.stop(signal.SIGKILL)
    wait_for(lambda: nodes(m1)["w1"]["Status"]["State"] == "down", 20, what="w1 down")
    m1.cli("node", "rm", "w1")
    assert "w1" not in nodes(m1)
    w1.start()
    time.sleep(3)
    assert "w1" not in nodes(m1)
    assert "removed" in w1.log_path.read_text()


def test_ca_rotation_keeps_nodes_and_tasks(daemons):
    port = free_port()
    m1 = daemons("m1")
    m1.cli("swarm", "init", "--listen-addr", f"127.0.0.1:{port}", "--advertise-addr", f"127.0.0.1:{port}")
    token = m1.cli("swarm", "join-token", "-q", "worker").stdout.strip()
    w1 = daemons("w1")
    w1.cli("swarm", "join", "--token", token, f"127.0.0.1:{port}")
    wait_for(lambda: len(nodes(m1)) == 2 and all(n["Status"]["State"] == "ready" for n in nodes(m1).values()),
             20, what="2 ready nodes")
    m1.cli("service", "create", "--name", "web", "--replicas", "2", "--detach", "busybox",
           "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done")
    wait_for(lambda: running_by_node(m1, "web") == {"m1": 1, "w1": 1}, 60, what="1 task per node")
    pids = {t["ID"]: t["Status"]["ContainerStatus"]["PID"] for t in m1.api_tasks("web")}
    old_root = m1.json("swarm", "inspect")["TLSInfo"]["TrustRoot"]

    out = m1.cli("swarm", "ca", "--rotate", timeout=90).stdout
    assert "rotated CA certificates: done" in out
    swarm = m1.json("swarm", "inspect")
    assert swarm["TLSInfo"]["TrustRoot"] != old_root and not swarm.get("RootRotationInProgress")
    new_token = m1.cli("swarm", "join-token", "-q", "worker").stdout.strip()
    assert new_token != token and new_token.rsplit("-", 1)[1] == token.rsplit("-", 1)[1]
    # every node holds a certificate from the new root, is Ready, and no task was restarted
    wait_for(lambda: all(n["Status"]["State"] == "ready" for n in nodes(m1).values()), 20, what="nodes ready")
    for n in nodes(m1).values():
        assert n["Description"]["TLSInfo"]["CertIssuerPublicKey"] == swarm["TLSInfo"]["CertIssuerPublicKey"]
    assert {t["ID"]: t["Status"]["ContainerStatus"]["PID"] for t in m1.api_tasks("web")} == pids
    w1_ca = (w1.state_dir / "swarm" / "certs" / "ca.crt").read_text()
    assert w1_ca.strip() == swarm["TLSInfo"]["TrustRoot"].strip()
    # the session still works after the rotation: a scale reaches the worker
    m1.cli("service", "scale", "web=4", "--detach")
    wait_for(lambda: running_by_node(m1, "web") == {"m1": 2, "w1": 2}, 60, what="scaled over both nodes")


def test_session_survives_manager_restart_and_worker_leaves(daemons):
    port = free_port()
    m1 = daemons("m1")
    m1.cli("swarm", "init", "--listen-addr", f"127.0.0.1:{port}", "--advertise-addr", f"127.0.0.1:{port}")
    w1 = daemons("w1")
    w1.cli("swarm", "join", "--token", m1.cli("swarm", "join-token", "-q", "worker").stdout.strip(),
           f"127.0.0.1:{port}")
    r = w1.cli("node", "ls", check=False)  # a worker is not a manager
    assert r.returncode != 0 and "not a swarm manager" in r.stderr
    m1.cli("node", "update", "--availability", "drain", "m1")
    m1.cli("service", "create", "--name", "web", "--replicas", "2", "--detach", "busybox",
           "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done")
    wait_for(lambda: running_by_node(m1, "web") == {"w1": 2}, 60, what="2 tasks on w1")
    pids = sorted(t["Status"]["ContainerStatus"]["PID"] for t in m1.api_tasks("web"))

    before = {t["ID"] for t in m1.api_tasks("web")}
    m1.stop()
    time.sleep(1)
    m1.start()
    wait_for(lambda: nodes(m1)["w1"]["Status"]["State"] == "ready", 20, what="w1 reconnected")
    time.sleep(3)
    assert {t["ID"] for t in m1.api_tasks("web")} == before, "a manager restart must not move tasks"
    assert nodes(m1)["w1"]["Status"]["State"] == "ready"
    m1.cli("service", "scale", "web=3", "--detach")
    wait_for(lambda: running_by_node(m1, "web") == {"w1": 3}, 30, what="scale reaches w1 after restart")
    now = [t for t in m1.api_tasks("web") if t["Status"]["State"] == "running"]
    assert set(pids) <= {t["Status"]["ContainerStatus"]["PID"] for t in now}, now

    w1.cli("swarm", "leave")
    assert not [c for c in (w1.state_dir / "containers").iterdir()], "leaving removes the node's containers"
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    wait_for(lambda: nodes(m1)["w1"]["Status"]["State"] == "down", 20, what="w1 down after leaving")
    m1.cli("node", "rm", "w1")
    assert list(nodes(m1)) == ["m1"]
