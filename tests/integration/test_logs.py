"""`shoal service logs` merges the logs of a service's tasks from every node."""
import subprocess
import sys
import time

from tests.integration.harness import REPO, new_daemon, wait_for


def test_service_logs_across_nodes(busybox_tar):
    m1, w1 = new_daemon("m1"), new_daemon("w1")
    try:
        for d in (m1, w1):
            d.start()
            d.cli("image", "import", str(busybox_tar), "busybox:latest")
        m1.cli("swarm", "init", "--advertise-addr", f"127.0.0.1:{m1.port}")
        w1.cli("swarm", "join", "--token", m1.cli("swarm", "join-token", "-q", "worker").stdout.strip(),
               f"127.0.0.1:{m1.port}")
        wait_for(lambda: len(m1.api("/nodes")) == 2, 10, what="2 nodes")
        m1.cli("service", "create", "--name", "talk", "--replicas", "2", "--replicas-max-per-node", "1", "--detach",
               "busybox", "sh", "-c", 'i=0; trap "exit 0" TERM; while true; do i=$((i+1)); echo "line $i from $(hostname)"; sleep 0.3; done')
        wait_for(lambda: sum(t["Status"]["State"] == "running" for t in m1.api_tasks("talk")) == 2, 60,
                 what="2 running tasks")
        time.sleep(1.5)
        out = wait_for(lambda: (lambda o: o if "@m1" in o and "@w1" in o else None)(
            m1.cli("service", "logs", "talk").stdout), 20, what="lines from both nodes")
        lines = out.splitlines()
        assert all(l.startswith("talk.") and "    | line " in l for l in lines), lines[:5]
        tail = m1.cli("service", "logs", "--tail", "1", "talk").stdout.splitlines()
        assert len(tail) == 2 and {l.split("@")[1].split()[0] for l in tail} == {"m1", "w1"}

        # follow: new lines keep coming until interrupted
        p = subprocess.Popen([sys.executable, "-m", "cli.main", "service", "logs", "-f", "--tail", "0", "talk"],
                             stdout=subprocess.PIPE, text=True, env=m1.env, cwd=REPO)
        try:
            seen = [p.stdout.readline() for _ in range(4)]
            assert all("    | line " in s for s in seen), seen
        finally:
            p.kill()
            p.wait()
        r = m1.cli("service", "logs", "--tail", "x", "talk", check=False)
        assert r.returncode != 0 and "--tail" in r.stderr
    finally:
        m1.cleanup()
        w1.cleanup()


def test_exec_and_stats_across_nodes(daemons):
    m1, w1 = daemons("m1"), daemons("w1")
    m1.cli("swarm", "init", "--advertise-addr", f"127.0.0.1:{m1.port}")
    w1.cli("swarm", "join", "--token", m1.cli("swarm", "join-token", "-q", "worker").stdout.strip(),
           f"127.0.0.1:{m1.port}")
    wait_for(lambda: len(m1.api("/nodes")) == 2, 10, what="2 nodes")
    m1.cli("node", "update", "--availability", "drain", "m1")  # the task runs on the worker
    m1.cli("service", "create", "--name", "box", "--limit-memory", "32M", "--detach", "busybox",
           "sh", "-c", "echo secret > /tmp/f; trap 'exit 0' TERM; while true; do sleep 1; done")
    (t,) = wait_for(lambda: [t for t in m1.api_tasks("box") if t["Status"]["State"] == "running"], 60,
                    what="running on w1")
    r = m1.cli("exec", "box.1", "sh", "-c", "cat /tmp/f; echo $$; hostname; echo err >&2; exit 3", check=False)
    assert r.returncode == 3, r
    lines = r.stdout.split()
    assert lines[0] == "secret" and lines[2] == t["Status"]["ContainerStatus"]["ContainerID"][:12]
    assert r.stderr.strip() == "err"
    assert m1.cli("exec", t["ID"][:10], "true").returncode == 0
    out = m1.cli("stats", "box").stdout
    assert "w1" in out and "32MiB" in out, out
    r = m1.cli("exec", "box.9", "true", check=False)
    assert r.returncode != 0 and "no running task in slot 9" in r.stderr
