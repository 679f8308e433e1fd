"""ContainerConfig.init (Docker's --init): pid 1 is Shoal's init, which runs the entrypoint as
pid 2, forwards signals to it, reaps orphans and exits with its status; it is confined as the
container process is. Each behaviour is also checked without an init, where it differs, so that
the tests fail if the init is not there."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from worker.runtime import Runtime, UserNamespace

from .conftest import IS_ROOT, cfg, cleanup_root, facts, log_lines, run

pytestmark = [pytest.mark.root, pytest.mark.skipif(not IS_ROOT, reason="needs root")]

PROBE = r"""
echo comm1=$(cat /proc/1/comm)
echo cmdline1=$(tr '\0' ' ' < /proc/1/cmdline)
echo pid=$$ ppid=$PPID
echo procs=$(ls /proc | grep '^[0-9]' | sort -n | tr '\n' ' ')
readlink /proc/1/exe >/dev/null 2>&1 && echo exe1=readable || echo exe1=hidden
exit 3
"""


def _wait(rt: Runtime, id: str, timeout: float = 20.0):
    return asyncio.run(asyncio.wait_for(rt.wait(id), timeout))


def _status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if ":\t" in line)


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_status(int(entry.name)).get("PPid", "0")) == pid:
                    out.append(int(entry.name))
            except (OSError, ValueError):
                continue
    return out


def _wait_for_log(rt: Runtime, id: str, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = log_lines(rt, id)
        if text in log:
            return log
        time.sleep(0.02)
    raise AssertionError(f"{text!r} not in the log: {log_lines(rt, id)!r}")


def test_init_is_pid_1_and_the_exit_status_is_the_entrypoints(runtime, busybox):
    st, log = run(runtime, cfg(busybox, ["sh", "-c", PROBE], init=True))
    f = facts(log)
    assert st.exit_code == 3 and st.error == "", log
    assert f["comm1"] == "shoal-init" and f["cmdline1"] == "shoal-init", f  # no host path shows
    assert f["pid"] == "2 ppid=1", f
    assert f["exe1"] == "hidden", "the init is non-dumpable: its /proc files are closed to the container"
    # without an init the entrypoint is pid 1 itself
    st, log = run(runtime, cfg(busybox, ["sh", "-c", PROBE]))
    assert st.exit_code == 3 and facts(log)["comm1"] == "sh" and facts(log)["pid"] == "1 ppid=0"


def test_killed_by_a_signal_is_128_plus_signal(runtime, busybox):
    # pid 1 ignores a signal it has no handler for; under an init the entrypoint is pid 2 and dies
    script = ["sh", "-c", "kill -USR1 $$; sleep 0.3"]
    assert run(runtime, cfg(busybox, script, init=True))[0].exit_code == 128 + signal.SIGUSR1
    assert run(runtime, cfg(busybox, script))[0].exit_code == 0


def test_sigterm_stops_a_shell_that_has_no_trap(runtime, busybox):
    """busybox sh as pid 1 ignores SIGTERM (the stop waits for SIGKILL); under the init it stops
    at once, with 143 (128 + SIGTERM)."""
    with_init = cfg(busybox, ["sh", "-c", "sleep 1000"], init=True)
    runtime.create(with_init)
    pid = runtime.start(with_init.id)
    deadline = time.monotonic() + 5
    while not _children(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    st = asyncio.run(runtime.stop(with_init.id, timeout=10))
    assert (st.exit_code, st.oom_killed) == (143, False) and time.monotonic() - t0 < 2

    without = cfg(busybox, ["sh", "-c", "sleep 1000"])
    runtime.create(without)
    runtime.start(without.id)
    time.sleep(0.2)
    t0 = time.monotonic()
    st = asyncio.run(runtime.stop(without.id, timeout=1))
    assert st.exit_code == 137 and time.monotonic() - t0 >= 1  # only SIGKILL stopped it


def test_signals_are_forwarded(runtime, busybox):
    script = ("for s in HUP INT USR1 USR2 QUIT WINCH; do trap \"echo got $s\" $s; done; "
              "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.05; done")
    config = cfg(busybox, ["sh", "-c", script], init=True)
    runtime.create(config)
    runtime.start(config.id)
    _wait_for_log(runtime, config.id, "ready")
    sent = ["HUP", "INT", "USR1", "USR2", "QUIT", "WINCH"]
    for name in sent:
        runtime.kill(config.id, getattr(signal, "SIG" + name))
        _wait_for_log(runtime, config.id, f"got {name}")
    st = asyncio.run(runtime.stop(config.id, timeout=10))
    assert st.exit_code == 7
    assert log_lines(runtime, config.id).split() == ["ready"] + [w for n in sent + ["TERM"] for w in ("got", n)]


ZOMBIES = "for s in /proc/[0-9]*/status; do grep -q '^State:.*Z' $s && echo zombie; done; true"


@pytest.mark.parametrize("init, zombies", [(True, 0), (False, 3)])
def test_orphans_are_reaped(runtime, busybox, init, zombies):
    """Three orphans that exit are re-parented to pid 1: the init reaps them; `sleep` as pid 1
    leaves them as zombies (the control case)."""
    config = cfg(busybox, ["sleep", "1000"], init=init)
    runtime.create(config)
    runtime.start(config.id)

    async def scenario():
        made = await runtime.exec_run(config.id, ["sh", "-c", "for i in 1 2 3; do sleep 0.1 & done; exit 0"])
        assert made.exit_code == 0
        await asyncio.sleep(0.6)
        return await runtime.exec_run(config.id, ["sh", "-c", ZOMBIES])
    res = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert res.stdout.decode().split().count("zombie") == zombies, res
    asyncio.run(runtime.stop(config.id, timeout=1))


def test_the_init_is_confined_like_the_container_process(runtime, busybox):
    """Same user, groups, capabilities, no_new_privs, seccomp filter, namespaces and root as its
    child, seen from the host."""
    config = cfg(busybox, ["sleep", "1000"], init=True, user="nobody", groups=["44"], cap_drop=["NET_RAW"],
                 ulimits={"nofile": (100, 200)})
    runtime.create(config)
    pid = runtime.start(config.id)
    deadline = time.monotonic() + 5
    while not _children(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    (child,) = _children(pid)
    init, proc = _status(pid), _status(child)
    assert init["Name"] == "shoal-init" and proc["Name"] == "sleep"
    for key in ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
                "Seccomp", "Seccomp_filters"):
        assert init[key] == proc[key], key
    assert init["Uid"].split()[0] == "65534" and int(init["CapEff"], 16) == 0 and init["Seccomp"] == "2"
    assert init["Groups"].split() == ["44"]
    nofile = [line.split()[3:5] for line in Path(f"/proc/{child}/limits").read_text().splitlines()
              if line.startswith("Max open files")]
    assert nofile == [["100", "200"]], "the entrypoint has the rlimits (the init need not)"
    for ns in ("pid", "mnt", "uts", "ipc", "net", "cgroup", "user"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/{child}/ns/{ns}"), ns
    assert os.stat(f"/proc/{pid}/root/etc/hostname").st_ino == os.stat(f"/proc/{child}/root/etc/hostname").st_ino
    asyncio.run(runtime.stop(config.id, timeout=5))


def test_a_command_that_cannot_run_is_reported_as_without_init(runtime, busybox):
    config = cfg(busybox, ["/no/such/file"], init=True)
    runtime.create(config)
    runtime.start(config.id)
    st = _wait(runtime, config.id)
    assert (st.exit_code, st.error) == (127, "exec: /no/such/file: no such file or directory")


def test_init_in_a_user_namespace(open_root, busybox, cgroup_parent):
    rt = Runtime(open_root, cgroup_parent=cgroup_parent)
    config = cfg(busybox, ["sh", "-c", "echo comm1=$(cat /proc/1/comm) pid=$$; sleep 1000"], init=True,
                 user_namespace=UserNamespace(310000, 310000, 65536))
    rt.create(config)
    pid = rt.start(config.id)
    log = _wait_for_log(rt, config.id, "comm1=")
    assert facts(log)["comm1"] == "shoal-init pid=2", log
    assert _status(pid)["Uid"].split()[0] == "310000"
    st = asyncio.run(rt.stop(config.id, timeout=10))
    assert st.exit_code == 143


def test_init_with_ptrace_needs_a_user_namespace(runtime, busybox):
    config = cfg(busybox, ["true"], init=True, cap_add=["SYS_PTRACE"])
    with pytest.raises(ValueError, match=r"^init: cannot be combined with capability SYS_PTRACE"):
        runtime.create(config)
    assert not (runtime.root / config.id).exists()


OTHER_ENGINES = [e for e in ("runc", "crun") if shutil.which(e)]


@pytest.mark.skipif(not OTHER_ENGINES, reason="neither runc nor crun is installed")
@pytest.mark.parametrize("engine", OTHER_ENGINES)
def test_other_engines_refuse_init(tmp_path, busybox, cgroup_parent, engine):
    root = tmp_path / f"state-{engine}"
    rt = Runtime(root, cgroup_parent=cgroup_parent, engine=engine)
    try:
        config = cfg(busybox, ["true"], init=True)
        with pytest.raises(ValueError) as err:
            rt.create(config)
        assert str(err.value) == (f"init: the {engine} engine cannot run an init in the container "
                                  f"(no init binary on this node); only the shoal engine can")
        assert not (root / config.id).exists()
    finally:
        cleanup_root(root, cgroup_parent, engine)
