"""`service create --init --group` reach the task on a real shoald: pid 1 is Shoal's init, the
entrypoint (pid 2) has the groups, and a shell without a trap stops on SIGTERM at once (its exit
status 143 reported); `service update --no-init --group-rm` takes them away again; a group the
image does not have rejects the task, naming it."""
import time
from pathlib import Path

from tests.integration.harness import wait_for

# No trap: SIGTERM stops it only under an init (busybox sh execs the last command, sleep, itself).
PROBE = "echo comm1=$(cat /proc/1/comm) pid=$$ ids=$(id -G | tr ' ' ,); sleep 1000"


def running(d, service):
    return [t for t in d.api_tasks(service) if t["Status"]["State"] == "running" and t["DesiredState"] == "running"]


def test_init_and_groups(daemon, busybox_tar):
    d = daemon
    d.cli("swarm", "init")
    d.cli("image", "import", str(busybox_tar), "busybox:latest")
    d.cli("service", "create", "--name", "app", "--detach", "--init", "--group", "nogroup", "--group", "44",
          "busybox", "sh", "-c", PROBE)
    (t,) = wait_for(lambda: running(d, "app"), 60, what="running")
    pid = t["Status"]["ContainerStatus"]["PID"]
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "shoal-init"
    lines = wait_for(lambda: [l for l in d.cli("service", "logs", "app", check=False).stdout.splitlines()
                              if "comm1=" in l], 20, what="the probe's line")
    assert lines[0].endswith("comm1=shoal-init pid=2 ids=0,44,65534"), lines
    (svc,) = d.json("service", "inspect", "app")
    cs = svc["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert (cs["Init"], cs["Groups"]) == (True, ["nogroup", "44"])

    # the update stops the old task with SIGTERM: under the init the shell goes at once, with 143
    t0 = time.monotonic()
    d.cli("service", "update", "--detach", "--no-init", "--group-rm", "44", "app")
    (new,) = wait_for(lambda: [x for x in running(d, "app") if x["ID"] != t["ID"]], 30, what="the updated task")
    old = [x for x in d.api_tasks("app") if x["ID"] == t["ID"]][0]
    assert old["Status"]["State"] == "shutdown" and old["Status"]["ContainerStatus"]["ExitCode"] == 143, old["Status"]
    assert time.monotonic() - t0 < 8, "no wait for the 10 s grace period"
    assert Path(f"/proc/{new['Status']['ContainerStatus']['PID']}/comm").read_text().strip() in ("sh", "sleep")
    (svc,) = d.json("service", "inspect", "app")
    assert svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Init"] is False

    # a group the image does not have: the task is rejected, naming it
    d.cli("service", "create", "--name", "nogroup", "--detach", "--group", "video", "busybox", "true")
    rejected = wait_for(lambda: [x for x in d.api_tasks("nogroup") if x["Status"]["State"] == "rejected"], 30,
                        what="a rejected task")
    assert rejected[0]["Status"]["Err"] == "groups: no group 'video' in the image's /etc/group", rejected[0]["Status"]
    r = d.cli("service", "create", "--name", "bad", "--group", "a:b", "busybox", "true", check=False)
    assert r.returncode == 2 and r.stderr == "--group: 'a:b' is not a group name or a numeric gid\n", r.stderr
