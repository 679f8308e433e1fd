"""How fast services converge: Shoal on the `shoal dev` harness (1 manager + 2 workers) against
Docker Swarm on one node of this machine, measured in the same run.

    sudo python3 bench/converge.py [--sizes 10,50,100] [--skip-swarm]

Each figure is the time from the command (the CLI, run with --detach) to the state observed
through the API (polled every 50 ms):
  nN_s          `service create --replicas N` until N tasks run (N = 10, 50, 100)
  scale_up_s    `service scale S=100` from 1 until 100 tasks run
  scale_down_s  `service scale S=1` from 100 until one task runs
  update_s      rolling update of 20 replicas, parallelism 5, no delay, until the 20 new tasks run
  update_done_s the same until UpdateStatus says completed (after the 5 s monitor)
and the same with a `swarm_` prefix for Docker Swarm, and `ratio_*` = Shoal / Swarm.

Fair to both, as the reference was measured: both are warmed up first (one task per node); Swarm gets the image by its ID (given a tag it
looks it up in a registry for every task, which this offline machine answers in 5 s waves), the
payload exits on SIGTERM (a shell that traps TERM) so neither waits out the 10 s stop grace, and
both keep their defaults (update monitor 5 s, stop grace 10 s).

Docker: Debian's docker.io is installed if dockerd is missing; this script runs its own dockerd
on a private --data-root, --exec-root and socket (it never talks to a system docker), makes it a
one-node swarm, imports the same busybox root filesystem as Shoal's, and removes all it made.
The last line carries the figures as name=value pairs.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAYLOAD = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]  # exits at once on SIGTERM
POLL = 0.05


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(POLL)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


class Target:
    """What a measurement needs from an orchestrator: its CLI and two API reads."""
    name = ""

    def cli(self, *args: str) -> None:
        raise NotImplementedError

    def tasks(self, service: str | None = None) -> list[dict]:
        raise NotImplementedError

    def service(self, name: str) -> dict:
        raise NotImplementedError

    def running(self, service: str, env: str | None = None, any_desired: bool = False) -> int:
        return sum(1 for t in self.tasks(service)
                   if t["Status"]["State"] == "running" and (any_desired or t.get("DesiredState") == "running")
                   and (env is None or env in t["Spec"]["ContainerSpec"].get("Env", [])))

    def remove(self, service: str) -> None:
        self.cli("service", "rm", service)
        wait_until(lambda: not self.tasks(), 180, f"{self.name}: tasks of {service} removed")


def measure(t: Target, image: str, sizes: list[int], nodes: int) -> dict[str, float]:
    out: dict[str, float] = {}
    # Warm up both alike: one task per node first, so that no figure pays for a first use (Docker
    # unpacks an image when it imports it; Shoal's nodes prepare it on first use).
    t.cli("service", "create", "--detach", "--name", "warm", "--mode", "global", image, *PAYLOAD)
    wait_until(lambda: t.running("warm") == nodes, 120, f"{t.name}: warm-up")
    t.remove("warm")

    def timed(key: str, command: tuple, done: Callable[[], bool], timeout: float = 300) -> None:
        t0 = time.monotonic()
        t.cli(*command)
        wait_until(done, timeout, f"{t.name}: {key}")
        out[key] = round(time.monotonic() - t0, 2)
        print(f"  {t.name} {key} = {out[key]:.2f} s", flush=True)

    for n in sizes:
        name = f"c{n}"
        timed(f"n{n}_s", ("service", "create", "--detach", "--name", name, "--replicas", str(n), image, *PAYLOAD),
              lambda: t.running(name) == n)
        t.remove(name)
    t.cli("service", "create", "--detach", "--name", "sc", "--replicas", "1", image, *PAYLOAD)
    wait_until(lambda: t.running("sc") == 1, 120, f"{t.name}: 1 task")
    timed("scale_up_s", ("service", "scale", "--detach", "sc=100"), lambda: t.running("sc") == 100)
    timed("scale_down_s", ("service", "scale", "--detach", "sc=1"), lambda: t.running("sc", any_desired=True) == 1)
    t.remove("sc")
    t.cli("service", "create", "--detach", "--name", "up", "--replicas", "20", "--update-parallelism", "5",
          "--update-delay", "0s", image, *PAYLOAD)
    wait_until(lambda: t.running("up") == 20, 180, f"{t.name}: 20 tasks")
    t0 = time.monotonic()
    timed("update_s", ("service", "update", "--detach", "--env-add", "V=2", "up"),
          lambda: t.running("up", env="V=2") == 20)
    wait_until(lambda: (t.service("up").get("UpdateStatus") or {}).get("State") == "completed", 120,
               f"{t.name}: update completed")
    out["update_done_s"] = round(time.monotonic() - t0, 2)
    print(f"  {t.name} update_done_s = {out['update_done_s']:.2f} s", flush=True)
    t.remove("up")
    return out


# --- Shoal on the dev harness -------------------------------------------------------------------

class Shoal(Target):
    name = "shoal"

    def __init__(self, cluster):
        self.c = cluster

    def cli(self, *args: str) -> None:
        self.c.shoal("m1", *args, timeout=300)

    def tasks(self, service: str | None = None) -> list[dict]:
        q = "" if service is None else "?filters=" + urllib.parse.quote(json.dumps({"service": [service]}))
        return self.c.api("m1", "/tasks" + q)

    def service(self, name: str) -> dict:
        return self.c.api("m1", f"/services/{name}")


def run_shoal(sizes: list[int], tar: Path) -> dict[str, float]:
    from cli.dev.cluster import DevCluster
    cluster = DevCluster(f"bench{os.getpid() % 10000}")
    try:
        cluster.up(1, 2)
        for node in ("m1", "w1", "w2"):
            cluster.shoal(node, "image", "import", str(tar), "busybox:latest")
        return measure(Shoal(cluster), "busybox:latest", sizes, nodes=3)
    finally:
        report = cluster.down()
        if report.leftovers:
            print(f"shoal dev left things behind: {report.leftovers}", file=sys.stderr)


# --- Docker Swarm on a private dockerd ------------------------------------------------------------

class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=30)
        self.path_ = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path_)


class PrivateDocker:
    """dockerd on its own data root, exec root and socket; `close` removes everything it made."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="shoal-bench-docker-"))
        self.sock = self.root / "docker.sock"
        self.proc: subprocess.Popen | None = None
        self.links_before = _links()
        self.run_before = {p for p in ("/run/docker", "/var/run/docker", "/etc/docker", "/run/containerd")
                           if os.path.exists(p)}
        self.docker = next((p for p in ("/usr/bin/docker", shutil.which("docker")) if p and os.path.exists(p)), "docker")

    def start(self) -> None:
        log = open(self.root / "dockerd.log", "wb")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--host", f"unix://{self.sock}", "--pidfile", str(self.root / "dockerd.pid"), "--iptables=false",
             "--ip-masq=false", "--containerd-namespace", "shoalbench", "--containerd-plugins-namespace",
             "shoalbench-plugins"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_until(lambda: self.sock.exists() and self._ping(), 60, "dockerd to answer")

    def _ping(self) -> bool:
        try:
            return self.get("/_ping") == "OK"
        except OSError:
            return False

    def get(self, path: str):
        conn = _Unix(str(self.sock))
        try:
            conn.request("GET", "/v1.41" + path)
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status >= 400:
                raise RuntimeError(f"docker {path}: {resp.status} {raw[:200]!r}")
            return json.loads(raw) if resp.getheader("Content-Type", "").startswith("application/json") else raw.decode()
        finally:
            conn.close()

    def cli(self, *args: str, capture: bool = False) -> str:
        r = subprocess.run([self.docker, "-H", f"unix://{self.sock}", *args], capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def close(self) -> list[str]:
        leftovers = []
        if self.proc is not None:
            try:
                self.cli("swarm", "leave", "--force")
            except Exception:
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        needle = str(self.root).encode()
        for _ in range(20):  # shims and containers of our dockerd, found by their paths
            pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, needle)]
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not pids:
                break
            time.sleep(0.2)
        for target in sorted(_mounts_under(self.root), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True)
        for link in sorted(_links() - self.links_before):  # docker0, docker_gwbridge, veths
            subprocess.run(["ip", "link", "delete", link], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        for p in ("/run/docker", "/var/run/docker", "/etc/docker", "/run/containerd"):
            if p not in self.run_before and os.path.exists(p):
                shutil.rmtree(p, ignore_errors=True)
        for cg in ("/sys/fs/cgroup/cpu/docker", "/sys/fs/cgroup/memory/docker", "/sys/fs/cgroup/pids/docker"):
            if os.path.isdir(cg):
                subprocess.run(["find", cg, "-depth", "-type", "d", "-exec", "rmdir", "{}", ";"], capture_output=True)
        if self.root.exists():
            leftovers.append(str(self.root))
        leftovers += [link for link in _links() - self.links_before]
        return leftovers


def _cmdline_has(p: Path, needle: bytes) -> bool:
    try:
        return needle in (p / "cmdline").read_bytes()
    except OSError:
        return False


def _mounts_under(root: Path) -> list[str]:
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            target = line.split()[1].encode().decode("unicode_escape")
            if target == str(root) or target.startswith(str(root) + "/"):
                out.append(target)
    return out


def _links() -> set[str]:
    r = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
    return {line.split(":")[1].strip().split("@")[0] for line in r.stdout.splitlines()}


class Swarm(Target):
    name = "swarm"

    def __init__(self, docker: PrivateDocker):
        self.d = docker

    def cli(self, *args: str) -> None:
        self.d.cli(*args)

    def tasks(self, service: str | None = None) -> list[dict]:
        q = "" if service is None else "?filters=" + urllib.parse.quote(json.dumps({"service": [service]}))
        return self.d.get("/tasks" + q)

    def service(self, name: str) -> dict:
        return self.d.get(f"/services/{name}")


def ensure_dockerd() -> None:
    if shutil.which("dockerd"):
        return
    print("dockerd is missing: installing Debian's docker.io", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker.io"], check=True, env=env)


def run_swarm(sizes: list[int], tar: Path) -> dict[str, float]:
    ensure_dockerd()
    docker = PrivateDocker()
    try:
        docker.start()
        docker.cli("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", f"127.0.0.1:{_free_port()}")
        image_id = docker.cli("import", str(tar), "busybox:bench").strip()
        return measure(Swarm(docker), image_id, sizes, nodes=1)
    finally:
        leftovers = docker.close()
        if leftovers:
            print(f"the private dockerd left things behind: {leftovers}", file=sys.stderr)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,50,100", help="replica counts for the create figures")
    ap.add_argument("--skip-swarm", action="store_true", help="measure Shoal only")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/converge.py: needs root (network namespaces, cgroups, dockerd)")
    sizes = [int(x) for x in args.sizes.split(",") if x]
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    try:
        tar = work / "busybox.tar"
        subprocess.run([sys.executable, str(REPO / "scripts" / "make-busybox-image.py"), str(tar)], check=True,
                       capture_output=True)
        print("Shoal, shoal dev harness with 1 manager + 2 workers:", flush=True)
        figures = dict(run_shoal(sizes, tar))
        if not args.skip_swarm:
            print("Docker Swarm, one node on this machine:", flush=True)
            swarm = run_swarm(sizes, tar)
            figures.update({f"swarm_{k}": v for k, v in swarm.items()})
            for k, v in swarm.items():
                if v:
                    figures[f"ratio_{k[:-2]}"] = round(figures[k] / v, 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
