"""What a service spec asks of its containers reaches them: mounts (bind, named volume, tmpfs),
read-only root, capabilities, ulimits, and health checks that gate running and replace a task."""
import shutil
import tempfile
from pathlib import Path

from tests.integration.harness import wait_for

LOOP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def running(d, service):
    return [t for t in d.api_tasks(service) if t["Status"]["State"] == "running" and t["DesiredState"] == "running"]


def test_mounts_caps_ulimits_and_health(daemon, busybox_tar):
    d = daemon
    d.cli("swarm", "init")
    d.cli("image", "import", str(busybox_tar), "busybox:latest")
    host_dir = tempfile.mkdtemp(prefix="shoal-bind-")
    Path(host_dir, "hello.txt").write_text("from the host\n")
    try:
        d.cli("service", "create", "--name", "spec", "--detach", "--read-only",
              "--mount", f"type=bind,source={host_dir},target=/data,readonly",
              "--mount", "type=volume,source=store,target=/store",
              "--mount", "type=tmpfs,target=/scratch,tmpfs-size=1m",
              "--cap-drop", "CHOWN", "--ulimit", "nofile=100:200", "busybox",
              "sh", "-c", "echo kept > /store/v; trap 'exit 0' TERM; while true; do sleep 1; done")
        (t,) = wait_for(lambda: running(d, "spec"), 60, what="running")
        pid = t["Status"]["ContainerStatus"]["PID"]
        assert Path(f"/proc/{pid}/root/data/hello.txt").read_text() == "from the host\n"
        mounts = {line.split()[1]: line.split() for line in Path(f"/proc/{pid}/mounts").read_text().splitlines()}
        assert "ro" in mounts["/data"][3].split(",") and mounts["/scratch"][2] == "tmpfs"
        assert "ro" in mounts["/"][3].split(","), "read-only root filesystem"
        volume_file = d.state_dir / "volumes" / "store" / "_data" / "v"
        wait_for(volume_file.exists, 10, what="volume written")
        cap_eff = int([l for l in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if l.startswith("CapEff:")][0].split()[1], 16)
        assert not cap_eff & 1, "CAP_CHOWN (bit 0) was dropped"
        nofile = [l for l in Path(f"/proc/{pid}/limits").read_text().splitlines() if l.startswith("Max open files")][0]
        assert nofile.split()[3:5] == ["100", "200"], nofile
        d.cli("service", "rm", "spec")
        wait_for(lambda: not [x for x in d.api_tasks() if x["ServiceID"] == t["ServiceID"]], 60, what="removed")
        assert volume_file.read_text() == "kept\n", "volumes outlive tasks"
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)

    # a health check gates "running"; an unhealthy task is replaced
    d.cli("service", "create", "--name", "healthy", "--detach", "--health-cmd", "test -e /tmp/ready",
          "--health-interval", "200ms", "--health-retries", "2", "--health-start-period", "10s", "busybox",
          "sh", "-c", "trap 'exit 0' TERM; sleep 1; touch /tmp/ready; while true; do sleep 1; done")
    wait_for(lambda: any(t["Status"]["State"] == "starting" for t in d.api_tasks("healthy")), 20,
             what="starting while not yet healthy")
    wait_for(lambda: running(d, "healthy"), 30, what="running once healthy")
    d.cli("service", "create", "--name", "sick", "--detach", "--health-cmd", "false", "--health-interval", "200ms",
          "--health-retries", "2", "--restart-delay", "0s", "busybox", *LOOP)
    wait_for(lambda: any("unhealthy" in (t["Status"].get("Err") or "") for t in d.api_tasks("sick")), 40,
             what="an unhealthy task failed")
    wait_for(lambda: len(d.api_tasks("sick")) >= 2, 30, what="and was replaced")
    r = d.cli("service", "create", "--name", "bad", "--mount", "type=bind,target=/x", "busybox", check=False)
    assert r.returncode != 0 and "--mount" in r.stderr
