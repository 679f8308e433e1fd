"""Real containers from the busybox image: isolation checked from inside, limits, exit
reporting (OOM included), stop/kill (also when the daemon dies midway), re-adoption by a new
daemon, a lean shim, and nothing left behind after delete."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from worker.runtime import ContainerExistsError, ContainerStateError, Runtime
from worker.runtime import procfs

from .conftest import IS_ROOT, ROOT, _mounts_under, cfg, facts, log_lines, run

pytestmark = [pytest.mark.root, pytest.mark.skipif(not IS_ROOT, reason="needs root")]

MiB = 1024 * 1024


INSPECT = r"""
echo pid=$$
echo cmdline=$(tr '\0' ' ' < /proc/1/cmdline)
echo hostname=$(hostname)
for ns in pid mnt uts ipc net cgroup; do echo ns_$ns=$(readlink /proc/self/ns/$ns); done
echo root=$(grep ' / ' /proc/mounts)
echo dev=$(ls /dev | tr '\n' ' ')
echo ptmx=$(ls /dev/pts/ptmx)
echo null=$(echo hello > /dev/null && echo ok)
echo lo=$(cat /sys/class/net/lo/flags)
echo links=$(ls /sys/class/net | tr '\n' ' ')
echo sysro=$(touch /sys/probe 2>/dev/null && echo writable || echo readonly)
echo memcg=$(grep memory /proc/self/cgroup)
echo procs=$(ls /proc | grep '^[0-9]' | tr '\n' ' ')
echo caps=$(grep CapEff /proc/self/status)
"""


def test_isolation_seen_from_inside(runtime, busybox, cgroup_parent):
    config = cfg(busybox, ["sh", "-c", INSPECT])
    st, log = run(runtime, config)
    assert (st.status, st.exit_code, st.error) == ("stopped", 0, ""), log
    f = facts(log)
    assert f["pid"] == "1"
    assert f["cmdline"].startswith("sh -c")
    assert f["hostname"] == config.id[:12]
    for ns in ("pid", "mnt", "uts", "ipc", "net", "cgroup"):
        assert f[f"ns_{ns}"] and f[f"ns_{ns}"] != os.readlink(f"/proc/self/ns/{ns}"), ns
    assert f["root"].startswith("overlay / overlay ")
    assert f"lowerdir={busybox.layers[0]}" in f["root"]
    assert set(f["dev"].split()) >= {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm"}
    assert f["ptmx"] == "/dev/pts/ptmx" and f["null"] == "ok"
    assert f["lo"] == "0x9"  # IFF_UP | IFF_LOOPBACK
    assert f["links"].split() == ["lo"]
    assert f["sysro"] == "readonly"
    assert f["memcg"].endswith(":memory:/")  # a cgroup namespace rooted at the container's cgroup
    pids = sorted(int(p) for p in f["procs"].split())
    assert pids[0] == 1 and len(pids) <= 5  # only our sh and its pipeline: no host processes
    assert f["caps"].split()[-1] == "00000000a80425fb"  # Docker's default set


def test_hostname_env_cwd_and_user(runtime, busybox):
    config = cfg(busybox, ["sh", "-c", "echo host=$(hostname); echo foo=$FOO; echo cwd=$(pwd); "
                                       "echo uid=$(id -u) gid=$(id -g); "
                                       "echo caps=$(grep CapEff /proc/self/status)"],
                 hostname="web-1", cwd="/srv/data", user="nobody")
    config.env.append("FOO=bar baz")
    st, log = run(runtime, config)
    assert st.exit_code == 0, log
    f = facts(log)
    assert f["host"] == "web-1" and f["foo"] == "bar baz" and f["cwd"] == "/srv/data"
    assert f["uid"] == "65534 gid=65534"
    assert f["caps"].split()[-1] == "0000000000000000"


def test_limits_are_in_the_cgroup(runtime, busybox):
    config = cfg(busybox, ["true"], memory_limit=32 * MiB, pids_limit=50, nano_cpus=500_000_000)
    runtime.create(config)
    dirs = {d.parts[-3] if runtime.layout.version == 1 else "unified": d for d in runtime.cgroup_dirs(config.id)}
    if runtime.layout.version == 1:
        assert int((dirs["memory"] / "memory.limit_in_bytes").read_text()) == 32 * MiB
        assert (dirs["pids"] / "pids.max").read_text().strip() == "50"
        assert int((dirs["cpu"] / "cpu.cfs_quota_us").read_text()) == 50_000
        assert int((dirs["cpu"] / "cpu.cfs_period_us").read_text()) == 100_000
    else:
        d = dirs["unified"]
        assert int((d / "memory.max").read_text()) == 32 * MiB
        assert (d / "pids.max").read_text().strip() == "50"
        assert (d / "cpu.max").read_text().split() == ["50000", "100000"]


def test_pids_limit_is_enforced(runtime, busybox):
    config = cfg(busybox, ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.5 & done; wait; echo done"],
                 pids_limit=5)
    st, log = run(runtime, config)
    assert "can't fork" in log or "Resource temporarily unavailable" in log, log


def test_oom_kill_is_reported(runtime, busybox):
    config = cfg(busybox, ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"], memory_limit=16 * MiB)
    st, log = run(runtime, config)
    assert st.status == "stopped"
    assert st.oom_killed is True
    assert st.exit_code == 137


def test_no_oom_when_within_limit(runtime, busybox):
    st, log = run(runtime, cfg(busybox, ["dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=4"],
                               memory_limit=32 * MiB))
    assert (st.exit_code, st.oom_killed) == (0, False), log


def test_exit_code_and_output_reach_the_log(runtime, busybox):
    config = cfg(busybox, ["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 42"])
    st, log = run(runtime, config)
    assert st.exit_code == 42 and st.error == ""
    assert log_lines(runtime, config.id, "stdout") == "to-stdout\n"
    assert log_lines(runtime, config.id, "stderr") == "to-stderr\n"
    assert st.started_at <= st.finished_at


def test_signal_exit_is_128_plus_signal(runtime, busybox):
    st, _ = run(runtime, cfg(busybox, ["sh", "-c", "kill -USR1 $$; sleep 0.3"]))
    # pid 1 ignores signals it has no handler for, even from itself: sh runs on to the end
    assert st.exit_code == 0
    st, _ = run(runtime, cfg(busybox, ["sh", "-c", "trap 'exit 9' USR1; kill -USR1 $$; sleep 0.1"]))
    assert st.exit_code == 9


@pytest.mark.parametrize("args, code, message", [
    (["no-such-command"], 127, 'exec: "no-such-command": executable file not found in $PATH'),
    (["/no/such/file"], 127, "exec: /no/such/file: no such file or directory"),
    (["/etc/passwd"], 126, "exec: /etc/passwd: permission denied"),
])
def test_command_that_cannot_run(runtime, busybox, args, code, message):
    config = cfg(busybox, args)
    runtime.create(config)
    pid = runtime.start(config.id)
    assert isinstance(pid, int)
    st = asyncio.run(asyncio.wait_for(runtime.wait(config.id), 10))
    assert (st.status, st.exit_code, st.error) == ("stopped", code, message)


def test_etc_files_sysctls_and_no_log(runtime, busybox):
    """Extra /etc/hosts lines and DNS settings reach the container's files; a sysctl the kernel
    refuses fails the start naming it; with log_driver "none" the output goes nowhere."""
    config = cfg(busybox, ["sh", "-c", "cat /etc/hosts /etc/resolv.conf; echo shmmni=$(cat /proc/sys/kernel/shmmni)"],
                 extra_hosts=["10.1.2.3 db.internal db"], dns_servers=["192.0.2.53"], dns_search=["example.test"],
                 dns_options=["ndots:3"], sysctls={"kernel.shmmni": "1234"})
    st, log = run(runtime, config)
    assert (st.exit_code, st.error) == (0, ""), log
    assert "10.1.2.3\tdb.internal db\n" in log
    assert "search example.test\nnameserver 192.0.2.53\noptions ndots:3\n" in log
    assert facts(log)["shmmni"] == "1234"

    bad = cfg(busybox, ["true"], sysctls={"net.ipv4.no_such_knob": "1"})
    runtime.create(bad)
    try:
        runtime.start(bad.id)
    except Exception as exc:  # the engine may report it at start or as the exit
        error = str(exc)
    else:
        st = asyncio.run(asyncio.wait_for(runtime.wait(bad.id), 10))
        assert st.exit_code != 0
        error = st.error
    assert "sysctl net.ipv4.no_such_knob: No such file or directory" in error

    quiet = cfg(busybox, ["sh", "-c", "echo dropped; echo dropped >&2"], log_driver="none")
    st, log = run(runtime, quiet)
    assert st.exit_code == 0 and log == ""


def test_stop_falls_back_to_sigkill(runtime, busybox):
    config = cfg(busybox, ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"])
    runtime.create(config)
    runtime.start(config.id)
    assert runtime.state(config.id).status == "running"
    t0 = time.monotonic()
    st = asyncio.run(runtime.stop(config.id, timeout=0.5))
    elapsed = time.monotonic() - t0
    assert st.status == "stopped" and st.exit_code == 137 and not st.oom_killed
    assert 0.5 <= elapsed < 5


def test_stop_lets_a_cooperative_process_exit(runtime, busybox):
    config = cfg(busybox, ["sh", "-c", "trap 'echo bye; exit 3' TERM; while :; do sleep 0.05; done"])
    runtime.create(config)
    runtime.start(config.id)
    time.sleep(0.2)  # let sh install its trap
    t0 = time.monotonic()
    st = asyncio.run(runtime.stop(config.id, timeout=10))
    assert st.exit_code == 3 and time.monotonic() - t0 < 3
    assert "bye" in log_lines(runtime, config.id)


def test_kill_and_state_errors(runtime, busybox):
    config = cfg(busybox, ["sleep", "100"])
    runtime.create(config)
    assert runtime.state(config.id).status == "created"
    with pytest.raises(ContainerStateError, match="not running"):
        runtime.kill(config.id, signal.SIGTERM)
    with pytest.raises(ContainerExistsError, match="already exists"):
        runtime.create(config)
    runtime.start(config.id)
    with pytest.raises(ContainerStateError, match="is running, not created"):
        runtime.start(config.id)
    runtime.kill(config.id, signal.SIGKILL)
    st = asyncio.run(asyncio.wait_for(runtime.wait(config.id), 10))
    assert st.exit_code == 137
    with pytest.raises(ContainerStateError, match="not running"):
        runtime.kill(config.id, signal.SIGKILL)


@pytest.mark.parametrize("change, message", [
    ({"user": "ghost"}, "user: no user 'ghost'"),
    ({"memory_limit": MiB}, "memory_limit: minimum is"),
    ({"args": []}, "args: must be a non-empty list"),
    ({"cwd": "relative"}, "cwd: must be an absolute path"),
])
def test_bad_config_is_refused_and_leaves_nothing(runtime, busybox, change, message):
    config = cfg(busybox, ["true"])
    for key, value in change.items():
        setattr(config, key, value)
    with pytest.raises(ValueError, match=message):
        runtime.create(config)
    assert not (runtime.root / config.id).exists()
    assert not any(d.exists() for d in runtime.cgroup_dirs(config.id))
    assert _mounts_under(runtime.root) == []


_DAEMON = """
import json, sys
from pathlib import Path
from worker.runtime import ContainerConfig, Runtime
rt = Runtime(Path(sys.argv[1]), cgroup_parent=sys.argv[2])
cfg = ContainerConfig(**json.loads(sys.argv[3]))
cfg.layers = [Path(p) for p in cfg.layers]
rt.create(cfg)
print(rt.start(cfg.id))
"""


def test_containers_survive_the_daemon_and_are_readopted(runtime, busybox, cgroup_parent):
    config = cfg(busybox, ["sh", "-c", "sleep 0.8; echo finished; exit 7"])
    as_json = json.dumps({"id": config.id, "args": config.args, "env": config.env,
                          "layers": [str(p) for p in config.layers]})
    # An earlier daemon: a separate process that starts the container and exits.
    proc = subprocess.run([sys.executable, "-c", _DAEMON, str(runtime.root), cgroup_parent, as_json],
                          capture_output=True, text=True, cwd=ROOT, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout.strip())
    # A new daemon on the same root.
    fresh = Runtime(runtime.root, cgroup_parent=cgroup_parent)
    [st] = fresh.list()
    assert (st.id, st.status, st.pid) == (config.id, "running", pid)
    st = asyncio.run(asyncio.wait_for(fresh.wait(config.id), 10))
    assert (st.status, st.exit_code) == ("stopped", 7)
    assert log_lines(fresh, config.id) == "finished\n"
    # and yet another one still knows how it ended
    again = Runtime(runtime.root, cgroup_parent=cgroup_parent).state(config.id)
    assert (again.status, again.exit_code, again.pid) == ("stopped", 7, pid)


def test_delete_leaves_nothing_behind(runtime, busybox):
    config = cfg(busybox, ["sh", "-c", "sleep 100 & sleep 100 & wait"])
    runtime.create(config)
    pid = runtime.start(config.id)
    bundle = runtime.root / config.id
    run_state = json.loads((bundle / "state.json").read_text())
    procs_file = runtime.cgroup_dirs(config.id)[0] / "cgroup.procs"
    deadline = time.monotonic() + 5
    while len(children := [int(p) for p in procs_file.read_text().split()]) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pid in children and len(children) == 3  # sh + two sleeps
    with pytest.raises(ContainerStateError, match="is running"):
        runtime.delete(config.id)
    runtime.delete(config.id, force=True)
    assert not bundle.exists()
    assert not any(d.exists() for d in runtime.cgroup_dirs(config.id))
    assert _mounts_under(runtime.root) == []
    for p, start in [(pid, run_state["pid_start"]), (run_state["shim_pid"], run_state["shim_start"])]:
        assert not procfs.is_alive(p, start)
    for p in children:
        assert not procfs.is_alive(p, None)
    runtime.delete(config.id)  # idempotent
    assert runtime.list() == []


def _smaps(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split()[:2]
        out[key.rstrip(":")] = int(value)
    return out


def test_shim_is_lean(runtime, busybox):
    """The shim is a fork of the node supervisor: what it owns alone (its private pages) is
    what each container costs; the rest it shares with the supervisor and the other shims."""
    configs = [cfg(busybox, ["sleep", "100"]) for _ in range(3)]
    for config in configs:
        runtime.create(config)
        runtime.start(config.id)
    time.sleep(0.3)
    shims = [json.loads((runtime.root / c.id / "state.json").read_text())["shim_pid"] for c in configs]
    assert len(set(shims)) == 3
    for pid in shims:
        m = _smaps(pid)
        print(f"shim {pid}: RSS {m['Rss']} KiB, PSS {m['Pss']} KiB, private {m['Private_Dirty']} KiB")
        assert m["Private_Dirty"] + m["Private_Clean"] < 2048
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "shoal-shim"
    for config in configs:
        runtime.delete(config.id, force=True)


def test_many_containers_in_parallel(runtime, busybox):
    configs = [cfg(busybox, ["sh", "-c", f"echo n={i}; exit {i}"]) for i in range(8)]

    async def all_of_them():
        for c in configs:
            runtime.create(c)
            runtime.start(c.id)
        return await asyncio.wait_for(asyncio.gather(*(runtime.wait(c.id) for c in configs)), 20)

    states = asyncio.run(all_of_them())
    assert [s.exit_code for s in states] == list(range(8))
    assert [log_lines(runtime, c.id) for c in configs] == [f"n={i}\n" for i in range(8)]
    for c in configs:
        runtime.delete(c.id)
    assert runtime.list() == [] and _mounts_under(runtime.root) == []
    assert not Path(runtime.root).joinpath(configs[0].id).exists()


def _unified_mount() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        if post.startswith("cgroup2 "):
            return Path(pre.split()[4])
    return None


@pytest.mark.skipif(_unified_mount() is None, reason="no cgroup2 mount")
def test_cgroup_v2_membership(tmp_path, busybox, cgroup_parent):
    """On a hybrid host (v1 controllers), run on the unified hierarchy too: it has no
    controllers here, so no limits, but the container must join it and leave nothing."""
    from worker.runtime import CgroupLayout
    from worker.runtime.cgroups import detect_layout
    if detect_layout().version == 2:
        pytest.skip("the other tests already run on cgroup v2 here")
    unified = _unified_mount()
    rt = Runtime(tmp_path / "containers", cgroup_parent=cgroup_parent, layout=CgroupLayout(2, unified=unified))
    config = cfg(busybox, ["sh", "-c", "cat /proc/self/cgroup; mknod /tmp/sda b 8 0 && head -c1 /tmp/sda; "
                                       "echo null=$(echo x > /dev/null && echo ok)"])
    try:
        rt.create(config)
        pid = rt.start(config.id)
        host_view = Path(f"/proc/{pid}/cgroup").read_text() if procfs.is_alive(pid, None) else ""
        st = asyncio.run(asyncio.wait_for(rt.wait(config.id), 10))
        log = log_lines(rt, config.id)
        assert st.exit_code == 0, st.error
        assert "0::/" in log.splitlines()  # its own cgroup namespace
        if host_view:
            assert f"0::/{cgroup_parent}/{config.id}" in host_view.splitlines()
        # no devices controller on v2: the eBPF device program refuses the block device
        assert "head: /tmp/sda: Operation not permitted" in log and "null=ok" in log
        with pytest.raises(RuntimeError, match="^memory_limit: the memory cgroup controller is not available"):
            rt.create(cfg(busybox, ["true"], memory_limit=64 * MiB))
    finally:
        for st in rt.list():
            rt.delete(st.id, force=True)
        rt.close()
        try:
            (unified / cgroup_parent).rmdir()
        except OSError:
            pass
    assert not (unified / cgroup_parent / config.id).exists()
    assert _mounts_under(rt.root) == []


_STOPPING_DAEMON = """
import asyncio, sys
from pathlib import Path
from worker.runtime import Runtime
rt = Runtime(Path(sys.argv[1]), cgroup_parent=sys.argv[2])
print("stopping", flush=True)
asyncio.run(rt.stop(sys.argv[3], timeout=float(sys.argv[4])))
"""


def _daemon_dies_while_stopping(runtime, cgroup_parent, cid, timeout):
    """A daemon that asks for a stop and is killed at once, before it could SIGKILL."""
    proc = subprocess.Popen([sys.executable, "-c", _STOPPING_DAEMON, str(runtime.root), cgroup_parent, cid,
                             str(timeout)], stdout=subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline() == b"stopping\n"
        deadline = time.monotonic() + 10
        while not (runtime.root / cid / "stop.json").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()


def test_stop_finishes_when_the_daemon_dies_midway(runtime, busybox, cgroup_parent):
    config = cfg(busybox, ["sh", "-c", "trap 'echo got TERM' TERM; while :; do sleep 0.1; done"])
    runtime.create(config)
    runtime.start(config.id)
    time.sleep(0.2)
    t0 = time.monotonic()
    _daemon_dies_while_stopping(runtime, cgroup_parent, config.id, 1.0)
    assert runtime.state(config.id).status == "running"
    # nobody is left to escalate but the shim: the container is SIGKILLed at the deadline
    st = asyncio.run(asyncio.wait_for(Runtime(runtime.root, cgroup_parent=cgroup_parent).wait(config.id), 10))
    assert (st.exit_code, st.oom_killed) == (137, False) and 0.9 < time.monotonic() - t0 < 4
    assert "got TERM" in log_lines(runtime, config.id)


def test_a_new_daemon_continues_the_same_stop(runtime, busybox, cgroup_parent):
    config = cfg(busybox, ["sh", "-c", "trap 'echo got TERM' TERM; while :; do sleep 0.1; done"])
    runtime.create(config)
    runtime.start(config.id)
    time.sleep(0.2)
    t0 = time.monotonic()
    _daemon_dies_while_stopping(runtime, cgroup_parent, config.id, 2.0)
    fresh = Runtime(runtime.root, cgroup_parent=cgroup_parent)
    st = asyncio.run(fresh.stop(config.id, timeout=30))  # same deadline, not a new 30 s one
    assert st.exit_code == 137 and time.monotonic() - t0 < 5
    assert log_lines(runtime, config.id).count("got TERM") == 1  # the signal was not sent twice


def test_oom_kill_of_a_child_is_reported_too(runtime, busybox):
    """As Docker's OOMKilled: any kill by the OOM killer in the container, not only of pid 1."""
    config = cfg(busybox, ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1; echo dd=$?"],
                 memory_limit=16 * MiB)
    st, log = run(runtime, config)
    assert (st.exit_code, st.oom_killed) == (0, True) and "dd=137" in log
