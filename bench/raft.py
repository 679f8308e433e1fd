"""Raft between 3 managers on one machine, over loopback with mutual TLS and fsync on.

    python3 bench/raft.py [--seconds 5] [--kills 3] [--catchup-entries 50000] [--keep]
                          [--phases inproc,api,failover,catchup] [--soak SECONDS]
                          [--profile DIR] [--cprofile DIR]

Each manager is a process of its own running what shoald runs for a manager: `Manager` (its
`RaftNode`, `DiskStorage` with fsync, `RaftTransport` websockets) behind a `ClusterAPI` on a
loopback port (the /raft route and the control API under /control, mutual TLS with
certificates from manager/ca). What shoald adds around a manager (the worker agent, the
runtime, the unix-socket API) is left out, so the processes need no root, and the image
resolver accepts any image. Each process also serves a small bench API on a unix socket in its
state dir (`serve` below) through which the driver reads its Raft status and starts loads
inside it. The cluster forms the way `swarm join` does: m1 founds it, m2 and m3 join as
learners and are promoted once caught up.

Figures (values of about 100 bytes):
- inproc: proposals made inside the leader's process through `RaftNode`, 1,000 in flight
  (and one at a time, for the latency); each entry is a store entry with no actions and a
  100-byte value, so it goes through propose, WAL fsync, transport, commit and apply.
- api: 64 writers from one aiohttp client over mutual TLS to the leader's control API on the
  cluster port (the client presents m2's manager certificate, as a forwarding manager does);
  each writer creates a service (0 replicas, a 100-byte label) and removes it again: two Raft
  writes per cycle, each counted, with its latency.
  Reference measured in the same run: the same client reading a node from the leader (same
  TLS, HTTP stack and certificate check, no Raft): the ceiling of the HTTP layer here.
- failover: SIGKILL the leader's process; time until a write (service create) succeeds on the
  new leader; the killed manager is restarted and caught up before the next kill. Median.
- catchup: SIGKILL a follower, commit --catchup-entries entries without it, restart it on its
  own data dir; time from the spawn until it has applied the leader's commit index (with the
  time to start the interpreter, open the storage, listen, and hear from the leader).
- soak (--soak SECONDS, after the rest): the API load for that long with all managers
  healthy; every manager's (term, leader) is polled, and any change counts: leader_changes=N
  (the issue asks for none in 10 minutes).
For each load, the CPU share of every process, of everything else on the machine (a shared
machine skews the figures: the report says by how much), and the CPU milliseconds per
operation, which bound the rate once a process saturates its core; for the API load also, per
write and per manager, the Readies handled, fsyncs, Raft messages sent, microseconds a writer
waited for its commit (leader) and milliseconds in the garbage collector. --profile DIR records
py-spy stacks of the leader, a follower (and the client) during the loads; --cprofile DIR
cProfile stats of the leader's and a follower's event-loop thread timed in CPU time (a sampling
profile on a busy machine also counts the time a process waits for a core). --phases runs only
some loads. Experiments (environment of the manager processes): SHOAL_BENCH_LOOP=uvloop runs
them on uvloop (if installed); SHOAL_BENCH_GC=g0,g1,g2 sets the collector's thresholds;
SHOAL_BENCH_DEBUG=logger,... logs those at debug level.
Last line: inproc_writes_per_s=… api_writes_per_s=… api_p50_ms=… api_p99_ms=… failover_s=… catchup_s=…
The issue's reference figures (measured on this machine: PySyncObj 12,180/s in process without
fsync; etcd 3.4 4,313/s, p50 1.7 ms, p99 3.2 ms through its gateway; failover etcd 1.13 s) are
printed with the ratios against the targets.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import msgpack  # noqa: E402
from aiohttp import web  # noqa: E402

from api.ids import new_id, timestamp  # noqa: E402
from api.objects import (  # noqa: E402
    CAConfig, Cluster, JoinTokens, ManagerStatus, Node, NodeDescription, NodeSpec, NodeStatus, SwarmSpec,
)
from manager.ca import ClusterCA, load_node_credentials, make_csr, make_node_key, save_node_credentials, sign_csr  # noqa: E402
from manager.ca.pem import as_certs, as_key, cert_pem, key_pem  # noqa: E402
from manager.ca.root import RootCA  # noqa: E402
from manager.ca.tls import client_context, server_context  # noqa: E402
from manager.store import Action, StoreError  # noqa: E402

NAMES = ("m1", "m2", "m3")
TARGETS = {"inproc_writes_per_s": 12_000, "api_writes_per_s": 5_000, "failover_s": 1.0, "catchup_s": 1.0}
REFERENCE = "PySyncObj in process 12,180/s (no fsync), one at a time 2,724/s; etcd 3.4 gateway 4,313/s " \
            "p50 1.7 ms p99 3.2 ms; failover etcd 1.13 s, PySyncObj 1.62 s"


# ============================================================ one manager process (`serve`)


def _raft_status(manager) -> dict:
    core = manager.raft.core
    st = core.status()
    return {"role": st["role"], "term": st["term"], "lead": st["lead"], "committed": st["committed"],
            "applied": st["applied"], "last_index": st["last_index"], "snapshot_index": st["snapshot_index"],
            "voters": st["voters"], "learners": st["learners"], "store_index": manager.store.index,
            "progress": st.get("progress"), "stats": dict(manager.raft.stats),
            "persist_threaded": manager.raft._persister.threaded}


async def inproc_load(raft, inflight: int, seconds: float, warmup: float, size: int, count: int = 0) -> dict:
    """`inflight` writers, each proposing its next entry as soon as the last one committed.
    Counts the writes committed in the measured window (after `warmup`), or until `count`."""
    rnd = random.Random(inflight)
    done = errors = 0
    last_error = ""
    running = True

    async def writer() -> None:
        nonlocal done, errors, last_error
        value = rnd.randbytes(size)
        while running:
            data = msgpack.packb({"Time": timestamp(), "Actions": [], "Value": value}, use_bin_type=True)
            try:
                await raft._propose_data(data)
                done += 1
            except StoreError as exc:
                errors += 1
                last_error = str(exc)
                await asyncio.sleep(0.01)

    term0 = raft.core.term
    tasks = [asyncio.create_task(writer()) for _ in range(inflight)]
    try:
        await asyncio.sleep(warmup)
        d0, e0, t0 = done, errors, time.perf_counter()
        if count:
            while done - d0 < count and time.perf_counter() - t0 < 600:
                await asyncio.sleep(0.01)
        else:
            await asyncio.sleep(seconds)
        d1, e1, t1 = done, errors, time.perf_counter()
    finally:
        running = False
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"writes": d1 - d0, "errors": e1 - e0, "seconds": t1 - t0, "last_error": last_error,
            "term_changes": raft.core.term - term0, "commit": raft.core.committed}


async def serve(args: argparse.Namespace) -> None:
    from manager.clusterapi import ClusterAPI
    from manager.controlapi import ControlAPI
    from manager.manager import Manager

    started = time.time()
    state_dir = Path(args.dir)
    import gc
    gc_time = [0.0, 0.0, 0]  # seconds spent in the cyclic collector, start of the current run, runs

    def gc_timer(phase: str, info: dict) -> None:
        if phase == "start":
            gc_time[1] = time.thread_time()
        else:
            gc_time[0] += time.thread_time() - gc_time[1]
            gc_time[2] += 1
    gc.callbacks.append(gc_timer)
    if os.environ.get("SHOAL_BENCH_GC"):  # experiment: collector thresholds
        gc.set_threshold(*map(int, os.environ["SHOAL_BENCH_GC"].split(",")))
    logging.basicConfig(filename=str(state_dir / "manager.log"), level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in filter(None, os.environ.get("SHOAL_BENCH_DEBUG", "").split(",")):
        logging.getLogger(name).setLevel(logging.DEBUG)  # e.g. shoal.raft.transport
    creds = load_node_credentials(state_dir / "certs")
    client_ssl = client_context(creds, creds.ca_certs)
    manager = Manager(state_dir, args.id, ssl_context=lambda: client_ssl, peer_addrs=json.loads(args.peers))
    manager.load(bootstrap=args.bootstrap)
    opened = time.time()
    first_contact: list[float] = []
    step_many = manager.step_many

    def step_and_note(msgs) -> None:  # when the leader's first message got here (catch-up breakdown)
        if not first_contact:
            first_contact.append(time.time())
        step_many(msgs)
    manager.step_many = step_and_note
    await manager.start()

    def get_ca() -> ClusterCA:
        cluster = manager.cluster
        if cluster is None or not cluster.root_ca_key:
            raise StoreError("the cluster CA is not available on this manager yet")
        signer = RootCA(cert=as_certs(cluster.root_ca_cert.encode(), "RootCACert")[0],
                        key=as_key(cluster.root_ca_key.encode(), "RootCAKey"))
        return ClusterCA(signer=signer, trusted=as_certs(cluster.tls_info.trust_root.encode(), "TrustRoot"))

    control = ControlAPI(lambda: manager, None, get_ca)  # images kept as given
    cluster_api = ClusterAPI(manager, get_ca, control, cluster_id=args.cluster_id)
    runner = web.AppRunner(cluster_api.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    host, port = args.listen.rsplit(":", 1)
    await web.TCPSite(runner, host, int(port), reuse_address=True,
                      ssl_context=server_context(creds, creds.ca_certs, require_client_cert=False)).start()
    listening = time.time()

    async def status(request: web.Request) -> web.Response:
        return web.json_response(dict(_raft_status(manager), id=args.id, pid=os.getpid(), started=started,
                                      gc_seconds=gc_time[0], gc_runs=gc_time[2],
                                      opened=opened, listening=listening,
                                      first_contact=first_contact[0] if first_contact else None))

    async def init(request: web.Request) -> web.Response:
        """The cluster object and the three manager nodes, as `swarm init` and `join` make them."""
        body = await request.json()
        ca_cert, ca_key = body["ca_cert"], body["ca_key"]
        cluster = Cluster(id=args.cluster_id, spec=SwarmSpec(ca_config=CAConfig()), join_tokens=JoinTokens(),
                          root_ca_cert=ca_cert, root_ca_key=ca_key)
        cluster.tls_info.trust_root = ca_cert
        actions = [Action("create", "cluster", cluster)]
        for name, (node_id, addr) in body["nodes"].items():
            actions.append(Action("create", "node", Node(
                id=node_id, spec=NodeSpec(role="manager", availability="active"),
                description=NodeDescription(hostname=name), status=NodeStatus(state="unknown", addr=addr),
                manager_status=ManagerStatus(reachability="unknown", addr=addr))))
        await manager.propose(actions)
        return web.json_response({"ok": True})

    async def add_manager(request: web.Request) -> web.Response:
        body = await request.json()
        await manager.add_manager(body["id"], body["addr"])
        return web.json_response({"ok": True})

    async def inproc(request: web.Request) -> web.Response:
        b = await request.json()
        if not manager.is_leader:
            return web.json_response({"error": "not the leader"}, status=421)
        result = await inproc_load(manager.raft, int(b["inflight"]), float(b.get("seconds", 0)),
                                   float(b.get("warmup", 0)), int(b.get("size", 100)), int(b.get("count", 0)))
        return web.json_response(result)

    profiler: list = []

    async def cprofile(request: web.Request) -> web.Response:
        """--cprofile: cProfile of this process's event loop thread, timed in its CPU time (a
        sampling profile under CPU contention also counts the time spent waiting for a core)."""
        import cProfile
        b = await request.json()
        if b["action"] == "start":
            profiler[:] = [cProfile.Profile(time.thread_time)]
            profiler[0].enable()
        elif profiler:
            profiler[0].disable()
            profiler[0].dump_stats(b["path"])
            profiler.clear()
        return web.json_response({"ok": True})

    bench = web.Application()
    bench.add_routes([web.get("/status", status), web.post("/init", init), web.post("/add_manager", add_manager),
                      web.post("/inproc", inproc), web.post("/cprofile", cprofile)])
    bench_runner = web.AppRunner(bench, access_log=None)
    await bench_runner.setup()
    sock = state_dir / "bench.sock"
    sock.unlink(missing_ok=True)
    await web.UnixSite(bench_runner, str(sock)).start()
    logging.getLogger("bench").info("manager %s serving on %s (opened in %.3fs, listening %.3fs after start)",
                                    args.id, args.listen, opened - started, listening - started)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await bench_runner.cleanup()
    await runner.cleanup()
    await manager.stop()


# ============================================================ the driver


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used so far (all cores)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Usage:
    """CPU share of each process over a window, and of everything else on the machine: on a
    shared 2-core machine, other work changes the figures, so the report says how much there was."""

    def __init__(self, procs: dict[str, int]):
        self.procs = procs
        self.t0 = time.monotonic()
        self.c0 = {n: cpu_seconds(p) for n, p in procs.items()}
        self.m0 = machine_busy_seconds()

    def report(self) -> str:
        dt = time.monotonic() - self.t0
        used = self.used = {n: cpu_seconds(p) - self.c0[n] for n, p in self.procs.items()}
        others = max(0.0, machine_busy_seconds() - self.m0 - sum(used.values()))
        return ", ".join(f"{n} {100 * u / dt:.0f}%" for n, u in used.items()) + \
            f"; other processes {100 * others / dt:.0f}% (of {100 * (os.cpu_count() or 1)}%)"


def start_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    """py-spy (if installed) records the process's stacks for the window, collapsed format."""
    exe = shutil.which("py-spy")
    if exe is None:
        print("--profile: py-spy is not installed (pip install py-spy); no profile taken", file=sys.stderr)
        return None
    return subprocess.Popen([exe, "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", "200",
                             "--format", "raw", "-o", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ManagerProc:
    name: str
    node_id: str
    dir: Path
    addr: str
    proc: subprocess.Popen | None = None
    spawned_at: float = 0.0
    http: aiohttp.ClientSession | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self, cluster_id: str, peers: dict[str, str], bootstrap: bool) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "serve", "--dir", str(self.dir), "--id", self.node_id,
                "--listen", self.addr, "--cluster-id", cluster_id, "--peers", json.dumps(peers)]
        if bootstrap:
            argv.append("--bootstrap")
        (self.dir / "bench.sock").unlink(missing_ok=True)
        with open(self.dir / "manager.log", "a") as log:
            log.write(f"--- bench: starting {self.name} at {time.strftime('%H:%M:%S')}\n")
            log.flush()
            self.spawned_at = time.time()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=REPO)

    def kill(self) -> None:
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    async def call(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> Any:
        if self.http is None:
            self.http = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.dir / "bench.sock")))
        async with self.http.request(method, f"http://bench{path}", json=body,
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            data = await resp.json()
            if resp.status >= 400:
                raise RuntimeError(f"{self.name}: {method} {path}: {resp.status} {data}")
            return data

    async def status(self) -> dict | None:
        if not self.alive:
            return None
        try:
            return await self.call("GET", "/status", timeout=2.0)
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError, RuntimeError):
            return None

    async def close_http(self) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None


async def wait_until(predicate, timeout: float, what: str, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Bench:
    def __init__(self, root: Path, args: argparse.Namespace):
        self.root = root
        self.args = args
        self.cluster_id = new_id()
        self.ca = ClusterCA.create()
        self.ms: dict[str, ManagerProc] = {}
        for name in NAMES:
            d = root / name
            d.mkdir(parents=True)
            m = ManagerProc(name, new_id(), d, f"127.0.0.1:{free_port()}")
            key = make_node_key()
            save_node_credentials(d / "certs", key, sign_csr(self.ca, make_csr(key), m.node_id, "manager",
                                                             self.cluster_id), self.ca.signer.cert)
            self.ms[name] = m

    def peers(self) -> dict[str, str]:
        return {m.node_id: m.addr for m in self.ms.values()}

    async def close(self) -> None:
        for m in self.ms.values():
            await m.close_http()
            m.kill()

    # --- cluster state ------------------------------------------------------------------

    async def statuses(self) -> dict[str, dict]:
        out = {}
        for name, m in self.ms.items():
            st = await m.status()
            if st is not None:
                out[name] = st
        return out

    async def leader(self, timeout: float = 20.0) -> ManagerProc:
        async def find():
            sts = await self.statuses()
            leaders = [n for n, s in sts.items() if s["role"] == "leader"]
            if len(leaders) == 1:
                return self.ms[leaders[0]]
            return None
        return await wait_until(find, timeout, "a leader")

    async def healthy(self, timeout: float = 30.0) -> ManagerProc:
        """All three alive, three voters, every one applied up to the leader's commit."""
        async def check():
            sts = await self.statuses()
            if len(sts) != 3:
                return None
            leaders = [n for n, s in sts.items() if s["role"] == "leader"]
            if len(leaders) != 1:
                return None
            lead = sts[leaders[0]]
            if len(lead["voters"]) != 3 or lead["learners"]:
                return None
            if any(s["applied"] < lead["committed"] for s in sts.values()):
                return None
            return self.ms[leaders[0]]
        return await wait_until(check, timeout, "three healthy managers", 0.05)

    async def form(self) -> None:
        m1 = self.ms["m1"]
        m1.spawn(self.cluster_id, {}, bootstrap=True)
        await wait_until(lambda: self._is_leader(m1), 20, "m1 leading")
        await m1.call("POST", "/init", {
            "ca_cert": cert_pem(self.ca.signer.cert).decode(), "ca_key": key_pem(self.ca.signer.key).decode(),
            "nodes": {m.name: (m.node_id, m.addr) for m in self.ms.values()}})
        for name in ("m2", "m3"):
            m = self.ms[name]
            m.spawn(self.cluster_id, {m1.node_id: m1.addr}, bootstrap=False)
            await wait_until(m.status, 20, f"{name} up")
            await m1.call("POST", "/add_manager", {"id": m.node_id, "addr": m.addr}, timeout=20)

            async def promoted(node_id=m.node_id):
                st = await m1.status()
                return st is not None and node_id in st["voters"]
            await wait_until(promoted, 30, f"{name} promoted to voter", 0.05)
        await self.healthy()

    async def _is_leader(self, m: ManagerProc) -> bool:
        st = await m.status()
        return st is not None and st["role"] == "leader"

    # --- loads --------------------------------------------------------------------------

    async def inproc(self, inflight: int, seconds: float, warmup: float = 1.0, count: int = 0) -> dict:
        lead = await self.leader()
        return await lead.call("POST", "/inproc", {"inflight": inflight, "seconds": seconds, "warmup": warmup,
                                                   "size": self.args.value_size, "count": count},
                               timeout=seconds + warmup + 660)

    def client_ssl(self):
        creds = load_node_credentials(self.ms["m2"].dir / "certs")
        return client_context(creds, creds.ca_certs)

    async def api_reads(self, writers: int, seconds: float, warmup: float = 1.0) -> dict:
        """The reference for the API figure, measured in the same run: the same client, TLS and
        HTTP stack and authentication, reading one node from the leader's store (no Raft)."""
        lead = await self.leader()
        url = f"https://{lead.addr}/control/nodes/{lead.node_id}"
        done = 0
        measuring, running = False, True

        async def reader(http) -> None:
            nonlocal done
            while running:
                async with http.get(url) as resp:
                    await resp.read()
                    if measuring and resp.status == 200:
                        done += 1

        conn = aiohttp.TCPConnector(ssl=self.client_ssl(), limit=writers)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as http:
            tasks = [asyncio.create_task(reader(http)) for _ in range(writers)]
            await asyncio.sleep(warmup)
            measuring = True
            t0 = time.perf_counter()
            await asyncio.sleep(seconds)
            measuring = False
            elapsed = time.perf_counter() - t0
            running = False
            await asyncio.gather(*tasks, return_exceptions=True)
        return {"writes": done, "seconds": elapsed}

    async def api_load(self, writers: int, seconds: float, warmup: float = 1.0) -> dict:
        lead = await self.leader()
        base = f"https://{lead.addr}/control"
        label = "v" * self.args.value_size
        ssl_ctx = self.client_ssl()
        lat: list[float] = []
        statuses: dict[int, int] = {}
        messages: dict[int, str] = {}
        measuring = False
        running = True

        total_ok = 0  # successful writes, warm-up and drain included (for entries per write)

        async def call(http, method: str, url: str, body: Any = None) -> Any:
            nonlocal total_ok
            t0 = time.perf_counter()
            async with http.request(method, url, json=body) as resp:
                data = await resp.read()
                dt = time.perf_counter() - t0
            total_ok += resp.status < 300
            if measuring:
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status < 300:
                    lat.append(dt)
                else:
                    messages.setdefault(resp.status, data[:200].decode(errors="replace"))
            return resp.status, data

        async def writer(http, w: int) -> None:
            n = 0
            while running:
                n += 1
                spec = {"Name": f"b{w}-{n}", "Labels": {"v": label}, "Mode": {"Replicated": {"Replicas": 0}},
                        "TaskTemplate": {"ContainerSpec": {"Image": "busybox:latest"}}}
                try:
                    st, data = await call(http, "POST", f"{base}/services/create", spec)
                    if st == 201:
                        await call(http, "DELETE", f"{base}/services/{json.loads(data)['ID']}")
                    else:
                        await asyncio.sleep(0.01)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    messages.setdefault(-1, f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.05)

        before = await lead.status()
        before_all = await self.statuses()
        conn = aiohttp.TCPConnector(ssl=ssl_ctx, limit=writers)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as http:
            tasks = [asyncio.create_task(writer(http, w)) for w in range(writers)]
            await asyncio.sleep(warmup)
            measuring = True
            t0 = time.perf_counter()
            await asyncio.sleep(seconds)
            measuring = False
            elapsed = time.perf_counter() - t0
            running = False
            await asyncio.gather(*tasks, return_exceptions=True)
        after = await lead.status()
        after_all = await self.statuses()
        lat.sort()
        # Per write, for each manager: Readies handled, fsyncs, Raft messages sent (batching).
        batching = {}
        for name, st in after_all.items():
            b0 = before_all.get(name, {}).get("stats") or {}
            if total_ok and b0:
                batching[name] = {k: (v - b0.get(k, 0)) / total_ok for k, v in st["stats"].items()}
                batching[name]["gc_ms"] = 1000 * (st["gc_seconds"] - before_all[name]["gc_seconds"]) / total_ok
        # Log entries per API write over the whole run (warm-up included): the allocator adds
        # an entry for each new service's endpoint, and a refused batch costs entries too.
        entries = (after or {}).get("committed", 0) - (before or {}).get("committed", 0)
        return {"writes": len(lat), "seconds": elapsed, "statuses": statuses, "errors": messages,
                "entries_per_write": entries / total_ok if total_ok else float("nan"), "batching": batching,
                "p50_ms": 1000 * lat[len(lat) // 2] if lat else float("nan"),
                "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan"),
                "term_changes": (after or {}).get("term", 0) - (before or {}).get("term", 0)}

    async def measured(self, what: str, load, client: bool = False, warmup: float = 1.0):
        """Runs a load (its first `warmup` seconds unmeasured) and reports each process's CPU
        share over it; with --profile, py-spy records the leader (and the client) meanwhile."""
        lead = await self.leader()
        procs = {("leader " if m is lead else "") + m.name: m.proc.pid for m in self.ms.values() if m.alive}
        procs["client"] = os.getpid()
        task = asyncio.create_task(load)
        await asyncio.sleep(warmup)
        usage = Usage(procs)
        spies = []
        if self.args.profile:
            pdir = Path(self.args.profile)
            pdir.mkdir(parents=True, exist_ok=True)
            targets = {"leader": lead.proc.pid, **({"client": os.getpid()} if client else {})}
            follower = next((m for m in self.ms.values() if m is not lead and m.alive), None)
            if follower is not None:  # a follower's share (WAL, apply) is a third of the work
                targets["follower"] = follower.proc.pid
            spies = [start_profile(pid, self.args.seconds - 0.5, pdir / f"{what}-{who}.txt")
                     for who, pid in targets.items()]
        cprofiled = []
        if self.args.cprofile:
            pdir = Path(self.args.cprofile)
            pdir.mkdir(parents=True, exist_ok=True)
            follower = next((m for m in self.ms.values() if m is not lead and m.alive), None)
            cprofiled = [(who, m) for who, m in (("leader", lead), ("follower", follower)) if m is not None]
            for _, m in cprofiled:
                await m.call("POST", "/cprofile", {"action": "start"})
        result = await task
        report = usage.report()
        for who, m in cprofiled:
            await m.call("POST", "/cprofile", {"action": "stop",
                                               "path": str(Path(self.args.cprofile).resolve() / f"{what}-{who}.prof")})
        for spy in spies:
            if spy is not None:
                spy.wait()
        writes = result.get("writes", 0)
        if writes:
            # CPU per write: what bounds the rate once a process saturates its core.
            per = {n.split()[-1]: 1000 * u / (writes / result["seconds"] * (time.monotonic() - usage.t0))
                   for n, u in usage.used.items()}
            report += "; cpu ms per op: " + ", ".join(f"{n} {v:.3f}" for n, v in per.items())
        return result, report

    # --- faults -------------------------------------------------------------------------

    async def one_failover(self) -> float:
        lead = await self.healthy()
        survivors = [m for m in self.ms.values() if m is not lead]
        ssl_ctx = self.client_ssl()
        label = "v" * self.args.value_size
        conn = aiohttp.TCPConnector(ssl=ssl_ctx, limit=0)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=5)) as http:
            # Connections to the survivors are open before the kill, as a client's would be.
            for m in survivors:
                async with http.get(f"https://{m.addr}/control/swarm") as r:
                    await r.read()
            done = asyncio.Event()
            success_at: list[float] = []
            n = 0

            async def attempt(m: ManagerProc) -> None:
                nonlocal n
                n += 1
                spec = {"Name": f"failover-{time.monotonic_ns()}-{n}", "Labels": {"v": label},
                        "Mode": {"Replicated": {"Replicas": 0}},
                        "TaskTemplate": {"ContainerSpec": {"Image": "busybox:latest"}}}
                try:
                    async with http.post(f"https://{m.addr}/control/services/create", json=spec) as r:
                        await r.read()
                        if r.status == 201 and not done.is_set():
                            success_at.append(time.monotonic())
                            done.set()
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    pass

            t0 = time.monotonic()
            lead.kill()
            pending: dict[str, asyncio.Task] = {}
            while not done.is_set():
                if time.monotonic() - t0 > 30:
                    raise RuntimeError("no write succeeded within 30 s of killing the leader")
                for m in survivors:
                    t = pending.get(m.name)
                    if t is None or t.done():
                        pending[m.name] = asyncio.create_task(attempt(m))
                try:
                    await asyncio.wait_for(done.wait(), 0.01)
                except asyncio.TimeoutError:
                    pass
            for t in pending.values():
                t.cancel()
            await asyncio.gather(*pending.values(), return_exceptions=True)
        elapsed = success_at[0] - t0
        lead.spawn(self.cluster_id, self.peers(), bootstrap=False)
        await self.healthy(60)
        return elapsed

    async def catchup(self, entries: int) -> dict:
        lead = await self.healthy()
        follower = next(m for m in self.ms.values() if m is not lead)
        follower.kill()
        load = await self.inproc(self.args.inflight, 0, warmup=0, count=entries)
        st = await lead.status()
        target = st["committed"]
        follower.spawn(self.cluster_id, self.peers(), bootstrap=False)

        async def caught_up():
            s = await follower.status()
            return s if s is not None and s["applied"] >= target else None
        s = await wait_until(caught_up, 120, f"{follower.name} caught up to {target}", 0.005)
        done = time.time()
        return {"seconds": done - follower.spawned_at, "behind": entries, "written": load["writes"],
                "leader_index": target, "process_to_listening_s": s["listening"] - follower.spawned_at,
                "open_storage_s": s["opened"] - s["started"], "interpreter_start_s": s["started"] - follower.spawned_at,
                "first_contact_s": (s["first_contact"] or done) - follower.spawned_at,
                "snapshot_index": s["snapshot_index"]}


def fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if x == x else "nan"


async def drive(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-raft-", dir=args.dir))
    b = Bench(root, args)
    out: dict[str, str] = {}
    try:
        t = time.monotonic()
        await b.form()
        print(f"formed 3 managers in {time.monotonic() - t:.2f}s (state in {root})", flush=True)

        phases = set(args.phases.split(","))
        if "inproc" in phases:
            await inproc_phase(b, args, out)
        if "api" in phases:
            await api_phase(b, args, out)
        if "failover" in phases:
            await failover_phase(b, args, out)
        if "catchup" in phases and args.catchup_entries:
            await catchup_phase(b, args, out)
        if args.soak:
            await soak_phase(b, args, out)
    except BaseException:
        print(f"bench failed; manager logs kept in {root}", file=sys.stderr)
        args.keep = True
        raise
    finally:
        await b.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("reference: " + REFERENCE)
    print("vs target: " + " ".join(
        f"{k}={(float(out[k]) / v if k.endswith('per_s') else v / float(out[k])):.2f}x"
        for k, v in TARGETS.items() if k in out and float(out[k]) > 0))
    print(" ".join(f"{k}={v}" for k, v in out.items()))


async def inproc_phase(b: Bench, args: argparse.Namespace, out: dict[str, str]) -> None:
    r, usage = await b.measured("inproc", b.inproc(args.inflight, args.seconds))
    inproc = r["writes"] / r["seconds"]
    print(f"inproc {args.inflight} in flight: {r['writes']} writes in {r['seconds']:.2f}s = {inproc:.0f}/s "
          f"(errors {r['errors']}{', ' + r['last_error'] if r['errors'] else ''}; "
          f"term changes {r['term_changes']}; log index {r['commit']}); cpu: {usage}", flush=True)
    r1 = await b.inproc(1, min(args.seconds, 3.0))
    one = r1["writes"] / r1["seconds"]
    print(f"inproc 1 in flight: {one:.0f}/s ({1000 / one if one else float('nan'):.2f} ms a write)", flush=True)
    out["inproc_writes_per_s"] = f"{inproc:.0f}"
    out["inproc_one_writes_per_s"] = f"{one:.0f}"


async def api_phase(b: Bench, args: argparse.Namespace, out: dict[str, str]) -> None:
    await b.healthy()
    a, usage = await b.measured("api", b.api_load(args.writers, args.seconds), client=True)
    api = a["writes"] / a["seconds"]
    print(f"api {args.writers} writers: {a['writes']} writes in {a['seconds']:.2f}s = {api:.0f}/s, "
          f"p50 {fmt(a['p50_ms'])} ms, p99 {fmt(a['p99_ms'])} ms; statuses {a['statuses']}; "
          f"term changes {a['term_changes']}; ~{fmt(a['entries_per_write'])} log entries per write; cpu: {usage}" + (f"; errors {a['errors']}" if a["errors"] else ""),
          flush=True)
    print("  per write: " + "; ".join(f"{n} " + ", ".join(f"{k} {v:.2f}" for k, v in st.items())
                                      for n, st in a["batching"].items()), flush=True)
    out["api_writes_per_s"] = f"{api:.0f}"
    rd, usage = await b.measured("reads", b.api_reads(args.writers, min(args.seconds, 3.0)))
    reads = rd["writes"] / rd["seconds"]
    print(f"reference, api reads with the same client and {args.writers} readers: {reads:.0f}/s "
          f"(writes/reads {api / reads if reads else float('nan'):.2f}); cpu: {usage}", flush=True)
    out["api_reads_per_s"] = f"{reads:.0f}"
    out["api_p50_ms"] = fmt(a["p50_ms"])
    out["api_p99_ms"] = fmt(a["p99_ms"])


async def failover_phase(b: Bench, args: argparse.Namespace, out: dict[str, str]) -> None:
    kills = []
    for i in range(args.kills):
        s = await b.one_failover()
        kills.append(s)
        print(f"failover {i + 1}: {s:.3f}s", flush=True)
    if kills:
        out["failover_s"] = fmt(statistics.median(kills), 3)
        out["failover_max_s"] = fmt(max(kills), 3)


async def catchup_phase(b: Bench, args: argparse.Namespace, out: dict[str, str]) -> None:
    c = await b.catchup(args.catchup_entries)
    print(f"catchup: {c['behind']} entries behind (leader log index {c['leader_index']}): caught up "
          f"{c['seconds']:.3f}s after the spawn (interpreter and imports {c['interpreter_start_s']:.3f}s, "
          f"opening its storage {c['open_storage_s']:.3f}s, listening at {c['process_to_listening_s']:.3f}s, "
          f"first message from a peer at {c['first_contact_s']:.3f}s; "
          f"its snapshot index {c['snapshot_index']})", flush=True)
    out["catchup_s"] = fmt(c["seconds"], 3)
    out["catchup_after_listening_s"] = fmt(c["seconds"] - c["process_to_listening_s"], 3)


async def soak_phase(b: Bench, args: argparse.Namespace, out: dict[str, str]) -> None:
    """Full write load (the API load) for --soak seconds with all managers healthy; any
    leader change is a failure of the issue's item. Each manager's view (term, leader) is
    polled meanwhile, so a change that heals before the end still counts."""
    lead = await b.healthy()
    first = await lead.status()
    seen: list[tuple[int, str]] = [(first["term"], first["lead"])]
    stop = asyncio.Event()

    async def monitor() -> None:
        while not stop.is_set():
            for st in (await b.statuses()).values():
                view = (st["term"], st["lead"])
                if st["lead"] and view[0] > seen[-1][0]:  # one leader per term: a new term is a change
                    seen.append(view)
                    print(f"soak: leader change seen by {st['id'][:8]}: term {view[0]} leader "
                          f"{(view[1] or '')[:8]}", flush=True)
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass

    watcher = asyncio.create_task(monitor())
    try:
        a, usage = await b.measured("soak", b.api_load(args.writers, args.soak), client=True)
    finally:
        stop.set()
        await watcher
    last = await (await b.leader()).status()
    changes = len(seen) - 1
    rate = a["writes"] / a["seconds"]
    print(f"soak {args.soak:.0f}s, {args.writers} writers: {a['writes']} writes = {rate:.0f}/s, p50 {fmt(a['p50_ms'])} ms, "
          f"p99 {fmt(a['p99_ms'])} ms; statuses {a['statuses']}; leader changes {changes} "
          f"(term {first['term']} -> {last['term']}); cpu: {usage}", flush=True)
    out["soak_s"] = f"{args.soak:.0f}"
    out["soak_writes_per_s"] = f"{rate:.0f}"
    out["leader_changes"] = str(changes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    s = sub.add_parser("serve", help="(internal) one manager process")
    s.add_argument("--dir", required=True)
    s.add_argument("--id", required=True)
    s.add_argument("--listen", required=True)
    s.add_argument("--cluster-id", required=True)
    s.add_argument("--peers", default="{}")
    s.add_argument("--bootstrap", action="store_true")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds of each load")
    ap.add_argument("--inflight", type=int, default=1000)
    ap.add_argument("--writers", type=int, default=64)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--catchup-entries", type=int, default=50_000)
    ap.add_argument("--phases", default="inproc,api,failover,catchup",
                    help="comma-separated loads to run (default: all of inproc,api,failover,catchup)")
    ap.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                    help="after the other phases, run the API write load for SECONDS with all managers "
                         "healthy and report leader_changes (the issue asks for none in 10 minutes)")
    ap.add_argument("--dir", default=None, help="where the managers' state dirs go (default: the temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the state dirs and logs")
    ap.add_argument("--cprofile", default="", metavar="DIR",
                    help="record cProfile stats (CPU time of the event loop thread) of the leader and a "
                         "follower during the loads into DIR (slows them down)")
    ap.add_argument("--profile", default="", metavar="DIR",
                    help="record py-spy profiles (collapsed stacks) of the leader and the client into DIR")
    args = ap.parse_args()
    if args.cmd == "serve":
        if os.environ.get("SHOAL_BENCH_LOOP") == "uvloop":  # experiment: the managers on uvloop
            import uvloop
            uvloop.install()
        asyncio.run(serve(args))
    else:
        asyncio.run(drive(args))


if __name__ == "__main__":
    main()
