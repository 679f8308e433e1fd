"""`shoald --userns-remap`: every task runs in a user namespace on id-mapped image layers, and
exec, health checks, logs, stats, re-adoption and removal work as without it; the state dir
opens only what the remapped root must pass through."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.integration.harness import cgroup_dirs, mounts_under, new_daemon, wait_for

START = 310000  # a range no other test uses: a process or file of it is this test's
SIZE = 65536
SCRIPT = "echo started-in-userns; touch /etc/from-init; trap 'exit 0' TERM; while true; do sleep 1; done"


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def _pids_of_uid(uid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if _uid_of(int(p.name)) == uid:
                    out.append(int(p.name))
            except (OSError, AssertionError):
                pass
    return out


def _mode(path: Path) -> tuple[str, int, int]:
    st = os.stat(path)
    return oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid


def _running(d, service: str) -> list[dict]:
    return [t for t in d.api_tasks(service) if t["Status"]["State"] == "running"]


def test_userns_remap_end_to_end(busybox_tar):
    d = new_daemon()
    os.chmod(d.root, 0o711)  # the remapped root must pass through every dir above the state dir
    remap = ("--userns-remap", f"{START}:{START}:{SIZE}")
    try:
        d.start(extra=remap)
        assert "name=userns" in d.api("/info")["SecurityOptions"]
        d.cli("image", "import", str(busybox_tar), "busybox:latest")
        d.cli("swarm", "init", "--advertise-addr", f"127.0.0.1:{d.port}")

        # The state dir is passable, its secrets are not.
        state = d.state_dir
        assert _mode(state) == ("0o711", 0, 0)
        for private in ("swarm", "swarm/certs", "raft", "images"):
            assert _mode(state / private) == ("0o700", 0, 0), private
        for shared in ("containers", "volumes", "taskfiles"):
            assert _mode(state / shared) == ("0o710", 0, START), shared

        d.cli("secret", "create", "pw", "-", input="userns-secret")
        d.cli("service", "create", "--name", "u", "--detach", "--mount", "type=volume,source=data,target=/data",
              "--secret", "source=pw,uid=1000,gid=1000,mode=0400",
              "--health-cmd", "touch /etc/healthy", "--health-interval", "1s", "busybox", "sh", "-c", SCRIPT)
        # running only once the health check (an exec in the user namespace) has passed
        (task,) = wait_for(lambda: _running(d, "u"), 60, what="a healthy running task")
        cid = task["Status"]["ContainerStatus"]["ContainerID"]
        pid = task["Status"]["ContainerStatus"]["PID"]
        assert _uid_of(pid) == START  # root inside is an unprivileged uid on the host

        r = d.cli("exec", "u.1", "sh", "-c", "tr -s ' ' < /proc/self/uid_map; id -u; "
                                             "touch /etc/x && mkdir /var/newdir && echo wrote-etc; "
                                             "touch /data/f && echo wrote-volume")
        assert r.stdout.splitlines() == [f" 0 {START} {SIZE}", "0", "wrote-etc", "wrote-volume"], r
        upper = state / "containers" / cid / "upper"
        for path in ("etc/x", "var/newdir", "etc/from-init", "etc/healthy"):
            assert os.stat(upper / path).st_uid == START, path
        assert os.stat(state / "volumes" / "data" / "_data" / "f").st_uid == START
        # a secret's owner is shifted into the range: uid 1000 inside is START+1000 on the host
        secret = Path(f"/proc/{pid}/root/run/secrets/pw")
        assert secret.read_text() == "userns-secret" and _mode(secret) == ("0o400", START + 1000, START + 1000)
        assert _mode(state / "volumes" / "data" / "_data")[1:] == (START, START)
        assert "started-in-userns" in d.cli("service", "logs", "u").stdout
        assert "u.1" in d.cli("stats", "u").stdout

        # A restarted daemon re-adopts the container, and exec still joins its namespaces.
        d.stop()
        d.start(extra=remap)
        wait_for(lambda: d.cli("exec", "u.1", "cat", "/proc/self/uid_map", check=False).returncode == 0, 30,
                 what="exec after the restart")
        (again,) = _running(d, "u")
        assert again["ID"] == task["ID"] and again["Status"]["ContainerStatus"]["PID"] == pid

        d.cli("service", "rm", "u")
        wait_for(lambda: not (state / "containers" / cid).exists(), 30, what="the container removed")
        assert mounts_under(d.root) == []
        assert _pids_of_uid(START) == []
        for parent in cgroup_dirs(d.cgroup_parent):
            assert [c for c in parent.iterdir() if c.is_dir()] == [], parent
    finally:
        d.cleanup()


def test_bad_userns_remap_is_refused_in_one_line():
    d = new_daemon()
    try:
        for value, reason in (("0:0:65536", "container root would be host root"),
                              ("no-such-user-xyz", "no such user")):
            try:
                d.start(timeout=10, extra=("--userns-remap", value))
            except RuntimeError as exc:
                text = str(exc)
            else:
                raise AssertionError(f"shoald started with --userns-remap {value}")
            assert "exited with 2" in text and "shoald: --userns-remap: " in text and reason in text, text
        # the state dir's parent (mkdtemp: 0700) does not let the remapped root through
        try:
            d.start(timeout=10, extra=("--userns-remap", f"{START}:{START}:{SIZE}"))
        except RuntimeError as exc:
            assert f"--userns-remap: {d.root} does not let the remapped root" in str(exc), exc
        else:
            raise AssertionError("shoald started under a closed parent dir")
    finally:
        d.cleanup()
