"""The walking skeleton end to end on one host: a real shoald driven by the real CLI."""
import os
import signal
import time
from pathlib import Path

from tests.integration.harness import mounts_under, pids_in_cgroups, wait_for


def running(d, service):
    return [t for t in d.api_tasks(service) if t["Status"]["State"] == "running" and t["DesiredState"] == "running"]


def ns_inode(pid, ns):
    return os.readlink(f"/proc/{pid}/ns/{ns}")


def cgroup_file(d, pid, controller, name):
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return Path("/sys/fs/cgroup") / controller / path.lstrip("/") / name
    raise AssertionError(f"no {controller} cgroup for {pid}")


def test_one_host_end_to_end(daemon, busybox_tar):
    d = daemon
    # 3. swarm init, node ls, node inspect
    out = d.cli("swarm", "init").stdout
    assert "is now a manager" in out
    nodes = d.cli("node", "ls").stdout.splitlines()
    assert nodes[0].split()[:2] == ["ID", "HOSTNAME"]
    assert "node1" in nodes[1] and "Ready" in nodes[1] and "Active" in nodes[1] and "Leader" in nodes[1]
    (node,) = d.json("node", "inspect", "self")
    assert node["Spec"]["Role"] == "manager" and node["Status"]["State"] == "ready"
    # the node's key and certificate on disk (0600); the root CA in the replicated state, its key never shown
    assert oct((d.state_dir / "swarm" / "certs" / "node.pem").stat().st_mode & 0o777) == "0o600"
    assert (d.state_dir / "raft" / "wal").is_dir()
    swarm = d.json("swarm", "inspect")
    assert "BEGIN CERTIFICATE" in swarm["RootCACert"] and "RootCAKey" not in swarm

    # 4. images
    image_id = d.cli("image", "import", str(busybox_tar), "busybox:latest").stdout.strip()
    assert image_id.startswith("sha256:")
    assert "busybox" in d.cli("image", "ls").stdout

    # 5. a replicated service runs as real containers
    d.cli("service", "create", "--name", "web", "--replicas", "3", "--env", "GREETING=hi", "--limit-memory", "64M",
          "--limit-pids", "50", "--detach", "busybox",
          "sh", "-c", 'echo "$GREETING from $(hostname)"; trap "exit 0" TERM; while true; do sleep 1; done')
    tasks = wait_for(lambda: len(running(d, "web")) == 3 and running(d, "web"), 60, what="3 running tasks")
    host_ns = {ns: ns_inode(os.getpid(), ns) for ns in ("pid", "mnt", "uts", "ipc", "net")}
    for t in tasks:
        pid = t["Status"]["ContainerStatus"]["PID"]
        cid = t["Status"]["ContainerStatus"]["ContainerID"]
        for ns, inode in host_ns.items():
            assert ns_inode(pid, ns) != inode, f"{ns} namespace is shared with the host"
        assert (Path(f"/proc/{pid}/root/bin/busybox")).exists()
        mounts = Path(f"/proc/{pid}/mounts").read_text().splitlines()
        assert mounts[0].split()[2] == "overlay" or any(m.split()[1] == "/" and m.split()[2] == "overlay" for m in mounts)
        assert int(cgroup_file(d, pid, "memory", "memory.limit_in_bytes").read_text()) == 64 << 20
        assert cgroup_file(d, pid, "pids", "pids.max").read_text().strip() == "50"
        assert Path(f"/proc/{pid}/environ").read_bytes().split(b"\0").count(b"GREETING=hi") == 1
        log = wait_for(lambda: _log_text(d, cid), 10, what="log output")
        assert f"hi from {cid[:12]}" in log

    # 6. ls, ps, inspect, scale
    ls = d.cli("service", "ls").stdout
    assert "web" in ls and "3/3" in ls and "replicated" in ls
    ps = d.cli("service", "ps", "web").stdout
    for n in (1, 2, 3):
        assert f"web.{n}" in ps
    assert "Running" in ps
    (svc,) = d.json("service", "inspect", "web")
    assert svc["Spec"]["Mode"]["Replicated"]["Replicas"] == 3
    # a locally imported image has no registry digest to pin: the tag is kept, normalised
    assert svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "busybox:latest"
    d.cli("service", "scale", "web=5", "--detach")
    wait_for(lambda: len(running(d, "web")) == 5, 60, what="5 running tasks")
    assert "5/5" in d.cli("service", "ls").stdout

    # 7. a task whose process exits is replaced in the same slot; the old one stays in history
    victim = running(d, "web")[0]
    os.kill(victim["Status"]["ContainerStatus"]["PID"], signal.SIGKILL)

    def replaced():
        ts = [t for t in d.api_tasks("web") if t["Slot"] == victim["Slot"]]
        new = [t for t in ts if t["ID"] != victim["ID"] and t["Status"]["State"] == "running"]
        old = [t for t in ts if t["ID"] == victim["ID"] and t["Status"]["State"] == "failed"]
        return new and old
    wait_for(replaced, 30, what="replacement task")
    assert r"\_ web." in d.cli("service", "ps", "web").stdout

    # 9. state survives a daemon restart; running containers are re-adopted, not restarted
    before = {t["ID"]: t["Status"]["ContainerStatus"]["PID"] for t in running(d, "web")}
    d.stop()
    time.sleep(0.5)
    for pid in before.values():
        assert Path(f"/proc/{pid}").exists(), "containers must keep running while shoald is down"
    d.start()
    wait_for(lambda: len(running(d, "web")) == 5, 30, what="tasks after restart")
    time.sleep(2)
    after = {t["ID"]: t["Status"]["ContainerStatus"]["PID"] for t in running(d, "web")}
    assert after == before

    # 6. rm: containers stop and nothing is left behind
    container_pids = set(before.values())
    d.cli("service", "rm", "web")
    wait_for(lambda: not d.api_tasks(), 60, what="tasks removed")
    wait_for(lambda: not pids_in_cgroups(d.cgroup_parent), 30, what="container processes gone")
    for pid in container_pids:
        assert not Path(f"/proc/{pid}").exists()
    wait_for(lambda: not [m for m in mounts_under(d.state_dir / "containers")], 30, what="mounts gone")
    containers_dir = d.state_dir / "containers"
    wait_for(lambda: not containers_dir.exists() or not any(containers_dir.iterdir()), 30, what="bundles gone")
    assert "web" not in d.cli("service", "ls").stdout


def _log_text(d, cid):
    for p in (d.state_dir / "containers" / cid).glob("*.log"):
        text = p.read_text(errors="replace")
        if text:
            return text
    return ""


def test_stack_deploy_and_bad_input(daemon, busybox_tar):
    d = daemon
    d.cli("swarm", "init")
    d.cli("image", "import", str(busybox_tar), "busybox:latest")
    repo = Path(__file__).resolve().parents[2]

    # 8. stacks
    out = d.cli("stack", "deploy", "-c", str(repo / "stacks" / "hello.yml"), "hello").stdout
    assert "Creating service hello_web" in out
    assert "hello" in d.cli("stack", "ls").stdout
    services = d.cli("stack", "services", "hello").stdout
    assert "hello_web" in services
    again = d.cli("stack", "deploy", "-c", str(repo / "stacks" / "hello.yml"), "hello").stdout
    assert "nothing changed" in again
    wait_for(lambda: len(running(d, "hello_web")) >= 1, 60, what="stack tasks")

    # 10. bad input: one line naming the field, non-zero exit, nothing changed
    before = d.cli("service", "ls", "-q").stdout

    def refused(*args, expect: str, input=None):
        r = d.cli(*args, check=False, input=input)
        assert r.returncode != 0, r
        assert expect in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        return r

    refused("service", "create", "--bogus", "busybox", expect="No such option")
    refused("service", "create", "--name", "x", "--replicas", "-1", "busybox", expect="--replicas")
    refused("service", "create", "--name", "x", "Nosuchimage:1", expect="TaskTemplate.ContainerSpec.Image: reference:")
    refused("service", "create", "--name", "x", "--resolve-image", "sometimes", "busybox", expect="--resolve-image")
    refused("service", "create", "--name", "hello_web", "busybox", "true", expect="already exists")
    refused("service", "create", "--name", "x", "--limit-memory", "lots", "busybox", expect="--limit-memory")
    refused("service", "scale", "hello_web=-1", expect="replicas must be 0 or more")
    refused("stack", "deploy", "-c", "-", "bad", expect="stdin", input="services: [unclosed\n")
    refused("stack", "deploy", "-c", "-", "bad", expect="replicas",
            input="services:\n  a:\n    image: busybox\n    deploy:\n      replicas: three\n")
    assert d.cli("service", "ls", "-q").stdout == before

    d.cli("stack", "rm", "hello")
    wait_for(lambda: not d.api_tasks(), 60, what="stack removed")


def test_cli_without_daemon(tmp_path):
    import subprocess, sys
    from tests.integration.harness import REPO
    env = dict(os.environ, SHOAL_HOST=f"unix://{tmp_path}/none.sock", PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "cli.main", "node", "ls"], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 1
    assert "Cannot connect to the Shoal daemon" in r.stderr and "Traceback" not in r.stderr
