"""The harness itself, on clusters that need no `swarm join`: one manager (plus a probe
namespace where a second vantage point is needed)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.dev import layout, netns, procs
from cli.dev.cluster import REPO, DevCluster, HarnessError, iter_owned, teardown
from tests.multihost.helpers import dev_cli, host_links, reachable, unique_name, wait_for


def node_ls(c: DevCluster, node: str = "m1") -> str:
    return c.shoal(node, "node", "ls").stdout


def test_single_manager_is_ready_and_exec_runs_inside_its_namespace(cluster):
    before = host_links()
    c = cluster(managers=1, workers=0)
    assert host_links() == before, "the harness must not add links to the host namespace"

    out = node_ls(c)
    row = next(line for line in out.splitlines() if " m1 " in line)
    assert "Ready" in row and "Leader" in row, out

    addr = c.exec("m1", "ip", "-o", "-4", "addr", "show", "dev", layout.NODE_IFNAME, check=True).stdout
    assert f"{layout.node_address('m1')}/24" in addr
    host_addr = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    assert layout.node_address("m1") not in host_addr

    # The CLI path a user takes: `shoal dev exec m1 -- shoal node ls` with SHOAL_HOST set for them.
    r = dev_cli("exec", "--name", c.name, "m1", "--", "shoal", "node", "ls")
    assert "m1" in r.stdout and "Ready" in r.stdout
    r = dev_cli("exec", "--name", c.name, "m1", "--", "sh", "-c", "echo $SHOAL_HOST; exit 7", check=False)
    assert r.returncode == 7 and r.stdout.strip() == f"unix://{c.paths('m1').socket}"

    listing = dev_cli("ls", "--name", c.name).stdout
    assert listing.split("\n")[1].split()[:5] == ["m1", "manager", "10.77.0.11", str(c.record("m1").pid), "running"]

    cg = Path("/sys/fs/cgroup/memory") / layout.cgroup_parent(c.name, "m1")
    assert f"--cgroup-parent\0{cg.name}" in Path(f"/proc/{c.record('m1').pid}/cmdline").read_text()


def test_kill_stop_start_restart_keep_the_node(cluster):
    c = cluster(managers=1, workers=0)
    node_id = c.api("m1", "/info")["Swarm"]["NodeID"]
    old_pid = c.record("m1").pid

    t0 = time.monotonic()
    c.kill("m1")
    assert not procs.is_alive(old_pid, None)
    assert [s.state for s in c.ls()] == ["stopped"]
    with pytest.raises(OSError):
        c.api("m1", "/_ping", timeout=1)
    c.start("m1")
    with pytest.raises(HarnessError, match="already running"):
        c.start("m1")
    print(f"kill + start + API answering: {time.monotonic() - t0:.2f}s")

    assert c.api("m1", "/info")["Swarm"]["NodeID"] == node_id, "started on the same state: same node"
    c.wait_ready(["m1"], timeout=20)

    c.stop("m1")
    assert [s.state for s in c.ls()] == ["stopped"]
    assert "shutting down" in c.log_tail("m1", 20), "SIGTERM: the daemon shut down in order"
    c.restart("m1")
    assert [s.state for s in c.ls()] == ["running"]
    assert c.record("m1").pid != old_pid
    c.wait_ready(["m1"], timeout=20)


def test_cut_takes_a_node_off_the_network_and_heal_puts_it_back(cluster):
    c = cluster(managers=1, workers=0)
    probe = c.add_probe()
    m1 = c.address("m1")
    assert reachable(c, probe, m1)
    assert reachable(c, "m1", c.address(probe))

    c.cut("m1")
    assert [s.display_state for s in c.ls() if s.name == "m1"] == ["running, cut"]
    assert not reachable(c, probe, m1)
    assert not reachable(c, "m1", c.address(probe))
    assert "Ready" in node_ls(c), "a cut node still answers its own CLI"

    c.heal("m1")
    wait_for(lambda: reachable(c, probe, m1), timeout=10, what="m1 reachable after heal")
    assert reachable(c, "m1", c.address(probe))
    assert [s.display_state for s in c.ls() if s.name == "m1"] == ["running"]


def test_netem_applies_or_says_why_not(cluster):
    c = cluster(managers=1, workers=0, init=False)
    with pytest.raises(ValueError, match="--delay"):
        c.netem("m1", delay="fast")
    with pytest.raises(ValueError, match="--loss"):
        c.netem("m1", loss="101%")
    try:
        c.netem("m1", delay="50ms", loss="1%")
    except netns.NetError as exc:  # a kernel without sch_netem: the error must say so
        assert "netem" in str(exc) and "sch_netem" in str(exc)
        assert c.record("m1").netem == ""
        return
    qdisc = c.exec("m1", "tc", "qdisc", "show", "dev", layout.NODE_IFNAME, check=True).stdout
    assert "netem" in qdisc and "delay 50" in qdisc and "loss 1%" in qdisc
    assert c.record("m1").netem == "delay 50ms loss 1%"
    c.clear_netem("m1")
    assert "netem" not in c.exec("m1", "tc", "qdisc", "show", "dev", layout.NODE_IFNAME).stdout


def test_bad_input_is_refused_before_anything_is_made():
    name = unique_name()
    c = DevCluster(name)
    with pytest.raises(ValueError, match="--managers"):
        c.up(managers=0, workers=0)
    with pytest.raises(ValueError, match="--name"):
        DevCluster("Bad_Name")
    with pytest.raises(ValueError, match="NODE"):
        layout.parse_node("x1")
    assert list(iter_owned(name)) == []


def test_down_removes_processes_containers_mounts_cgroups_and_namespaces(busybox_tar):
    before = host_links()
    c = DevCluster(unique_name())
    try:
        c.up(1, 0)
        c.add_probe()
        c.shoal("m1", "image", "import", str(busybox_tar), "busybox:latest")
        c.shoal("m1", "service", "create", "--name", "sleeper", "--replicas", "2", "busybox:latest", "sleep", "3600")
        cdir = c.dir
        assert procs.mounts_under(cdir), "running containers have their rootfs mounted"
        assert procs.cgroup_dirs(layout.owned_cgroup_re(c.name))
        supervisors = procs.pids_with_cmdline(str(c.paths("m1").state_dir))
        assert len(supervisors) >= 3, "the daemon and a supervisor per container"
        # A process started with `dev exec` is the cluster's too.
        stray = subprocess.Popen(["sleep", "300"], preexec_fn=lambda: netns.enter(c.record("m1").netns))

        report = c.down()
        stray.wait(5)
        assert report.leftovers == []
        assert report.namespaces == 3 and report.mounts >= 2 and report.cgroups >= 1 and report.processes >= 4
        assert list(iter_owned(c.name)) == []
        assert not [p for p in supervisors if procs.is_alive(p, None)]
        assert host_links() == before
        assert not cdir.exists()

        again = c.down()
        assert (again.processes, again.mounts, again.cgroups, again.namespaces, again.leftovers) == (0, 0, 0, 0, [])
    finally:
        c.down()


@pytest.mark.parametrize("lose_state_file", [False, True], ids=["from-state-file", "without-state-file"])
def test_down_after_the_harness_itself_crashed(lose_state_file):
    """`shoal dev up` killed half-way (here: once m1's daemon is running, before the swarm
    exists); `shoal dev down`, a fresh process, still finds and removes everything."""
    name = unique_name()
    cdir = layout.cluster_dir(name)
    up = subprocess.Popen([sys.executable, "-m", "cli.main", "dev", "up", "--name", name, "--workers", "0"],
                          cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def daemon_started():
            try:
                pid = json.loads((cdir / "cluster.json").read_text())["nodes"]["m1"]["pid"]
            except (OSError, ValueError, KeyError):
                return None
            return pid if pid and procs.is_alive(pid, None) else None
        pid = wait_for(daemon_started, timeout=30, interval=0.01, what="m1's daemon")
        up.send_signal(signal.SIGKILL)
        up.wait()
        assert procs.is_alive(pid, None), "the daemon outlives the harness (its own session)"
        assert list(iter_owned(name)), "the crash left a cluster behind to clean"
        if lose_state_file:
            (cdir / "cluster.json").unlink()

        r = dev_cli("down", "--name", name)
        assert "LEFT BEHIND" not in r.stdout
        assert list(iter_owned(name)) == []
        assert not procs.is_alive(pid, None)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        teardown(name)


def test_up_refuses_a_name_in_use(cluster):
    c = cluster(managers=1, workers=0, init=False)
    with pytest.raises(HarnessError, match="already exists"):
        DevCluster(c.name).up(1, 0)
    assert c.ls()[0].state == "running", "the refused up touched nothing"
