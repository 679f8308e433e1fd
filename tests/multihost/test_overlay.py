"""Overlay networks across real nodes (shoal dev: one shoald per network namespace, 1 manager and
2 workers): reachability between hosts, service discovery, VIP load balancing, the routing
mesh, isolation, and networks following tasks. One cluster serves the whole module; each test
removes its services and networks.

Containers are entered from the test with nsenter: `-n` (its network namespace) to run the
probes of tests/overlay/probe.py, `-m -n` to run the container's own busybox with its own
/etc/resolv.conf."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

import overlay
from cli.dev import layout
from cli.dev.cluster import REPO, DevCluster, supports_join
from overlay import names, sh
from tests.multihost.helpers import unique_name, wait_for
from worker.networks import node_prefix

NODES = ("m1", "w1", "w2")
SERVE = ["nc", "-ll", "-p", "8000", "-e", "hostname"]   # answers every connection with its hostname


class Overlay:
    def __init__(self, c: DevCluster):
        self.c = c
        self.node_ids = {host: n["ID"] for host, n in c.swarm_nodes("m1").items()}
        self.hosts = {v: k for k, v in self.node_ids.items()}

    def api(self, path, method="GET", body=None):
        return self.c.api("m1", path, method, body)

    def network(self, name: str, *args: str) -> str:
        return self.c.shoal("m1", "network", "create", "-d", "overlay", *args, name).stdout.strip()

    def service(self, name, replicas=1, networks=(), ports=(), command=SERVE, mode="ingress") -> str:
        spec = {"Name": name, "Mode": {"Replicated": {"Replicas": replicas}},
                "TaskTemplate": {"ContainerSpec": {"Image": "busybox:latest", "Command": list(command),
                                                   "StopSignal": "SIGKILL"},
                                 "Networks": [{"Target": n} for n in networks]}}
        if ports:
            spec["EndpointSpec"] = {"Ports": [{"TargetPort": t, "PublishedPort": p, "PublishMode": mode}
                                              for p, t in ports]}
        return self.api("/services/create", "POST", spec)["ID"]

    def tasks(self, service: str) -> list[dict]:
        q = urllib.parse.quote(json.dumps({"service": [service]}))
        return self.api(f"/tasks?filters={q}")

    def running(self, service: str, n: int, timeout: float = 30) -> list[dict]:
        def ready():
            ts = [t for t in self.tasks(service) if t["DesiredState"] == "running"]
            up = [t for t in ts if t["Status"]["State"] == "running"]
            return up if len(up) == n and len(ts) == n else None
        return wait_for(ready, timeout, 0.2, f"{n} running tasks of {service}")

    def remove(self, *services: str) -> None:
        for s in services:
            self.api(f"/services/{s}", "DELETE")
        wait_for(lambda: not [t for s in services for t in self.api("/tasks") if t["ServiceID"] == s], 30, 0.2,
                 "removed services' tasks gone")

    def netns_of(self, host: str, network_id: str) -> str:
        return names.netns(node_prefix(self.node_ids[host]), network_id)

    def has_network(self, host: str, network_id: str) -> bool:
        return os.path.exists(f"/run/netns/{self.netns_of(host, network_id)}")


def ip_of(task: dict, index: int = 0) -> str:
    return task["NetworksAttachments"][index]["Addresses"][0].split("/")[0]


def pid_of(task: dict) -> int:
    return task["Status"]["ContainerStatus"]["PID"]


def probe(task: dict, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """tests/overlay/probe.py in the container's network namespace."""
    r = subprocess.run(["nsenter", f"--net=/proc/{pid_of(task)}/ns/net", sys.executable, "-m", "tests.overlay.probe",
                        *args], capture_output=True, text=True, cwd=REPO, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"probe {' '.join(args)} in task {task['ID']}: {r.stdout}{r.stderr}")
    return r


def in_container(task: dict, *argv: str) -> subprocess.CompletedProcess:
    """A command of the container's own image, with its own files (resolv.conf)."""
    return subprocess.run(["nsenter", "-t", str(pid_of(task)), "-m", "-n", "--", *argv], capture_output=True,
                          text=True, timeout=30)


def lookup(task: dict, name: str) -> list[str]:
    """The addresses busybox nslookup finds for name in the container (its resolv.conf)."""
    out = in_container(task, "nslookup", "-type=a", name).stdout
    answers = out.split("Name:", 1)[1] if "Name:" in out else ""
    return sorted(re.findall(r"Address:\s*([0-9.]+)\s*$", answers, re.M))


@pytest.fixture(scope="module")
def ov(tmp_path_factory, request):
    if os.geteuid() != 0:
        pytest.skip("multi-host tests need root")
    if not supports_join():
        pytest.skip("`shoal swarm join` is not available yet")
    tar = tmp_path_factory.mktemp("image") / "busybox.tar"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make-busybox-image.py"), str(tar)], check=True,
                   capture_output=True)
    c = DevCluster(unique_name())
    prefixes: list[str] = []
    failed_before = request.session.testsfailed
    try:
        c.up(1, 2)
        o = Overlay(c)
        prefixes = [node_prefix(i) for i in o.node_ids.values()]
        for n in NODES:
            c.shoal(n, "image", "import", str(tar), "busybox:latest")
        yield o
    finally:
        if request.session.testsfailed != failed_before and c.exists():
            for n in NODES:
                sys.stderr.write(f"--- {c.name}/{n} shoald log (tail) ---\n{c.log_tail(n, 40)}\n")
        report = c.down()
        # The daemons were killed, so what they made in namespaces of their own stays: purge it
        # as a restarted daemon would, and check nothing else of theirs is left.
        for p in prefixes:
            overlay.purge(p)
        left = [n for n in os.listdir("/run/netns") if any(n.startswith(p + "-") for p in prefixes)]
        assert not report.leftovers and not left, f"left behind: {report.leftovers} {left}"


def test_tasks_on_different_hosts_reach_each_other_by_address_name_and_vip(ov):
    net = ov.network("front")
    srv = ov.service("srv", 3, ["front"])
    tasks = ov.running(srv, 3)
    assert {t["NodeID"] for t in tasks} == set(ov.node_ids.values()), "one replica per node"
    client = ov.running(ov.service("client", 1, ["front"], command=["sleep", "3600"]), 1)[0]
    try:
        local = next(t for t in tasks if t["NodeID"] == client["NodeID"])
        remote = [t for t in tasks if t is not local]
        names_by_ip = {}
        for t in tasks:   # ping and TCP over VXLAN, to the tasks on the other hosts and on its own
            assert probe(client, "ping", ip_of(t), "2").stdout.strip() == "2/2"
            names_by_ip[ip_of(t)] = probe(client, "connect", ip_of(t), "8000").stdout.strip()
        assert len(set(names_by_ip.values())) == 3
        links = json.loads(subprocess.run(["nsenter", f"--net=/proc/{pid_of(client)}/ns/net", "ip", "-j", "link",
                                           "show", "eth0"], capture_output=True, text=True).stdout)
        assert links[0]["mtu"] == 1450, "the underlay's 1500 less the VXLAN header"
        resolv = open(f"/proc/{pid_of(client)}/root/etc/resolv.conf").read()
        gateway = ov.api(f"/networks/{net}")["IPAM"]["Config"][0]["Gateway"]
        assert resolv.startswith(f"nameserver {gateway}\n")
        # Names: the service's VIP, and tasks.<service> every replica.
        vip = next(v["Addr"] for v in ov.api(f"/services/{srv}")["Endpoint"]["VirtualIPs"] if v["NetworkID"] == net)
        assert lookup(client, "srv") == [vip.split("/")[0]]
        assert lookup(client, "tasks.srv") == sorted(ip_of(t) for t in tasks)
        # The VIP spreads connections over every replica, wherever it runs.
        counts = json.loads(probe(client, "spread", vip.split("/")[0], "8000", "30").stdout)
        assert set(counts) == set(names_by_ip.values()), counts
        # A task that stops leaves the names and the VIP at once.
        ov.api(f"/services/{srv}/update?version={ov.api(f'/services/{srv}')['Version']['Index']}", "POST",
               dict(ov.api(f"/services/{srv}")["Spec"], Mode={"Replicated": {"Replicas": 2}}))
        left = ov.running(srv, 2)
        wait_for(lambda: lookup(client, "tasks.srv") == sorted(ip_of(t) for t in left), 10, 0.2, "tasks.srv follows")
        counts = json.loads(probe(client, "spread", vip.split("/")[0], "8000", "20").stdout)
        assert set(counts) == {names_by_ip[ip_of(t)] for t in left}, counts
        assert remote  # the assertions above crossed hosts: the client had a local peer and two remote
    finally:
        ov.remove(srv, client["ServiceID"])
        ov.c.shoal("m1", "network", "rm", "front")


def test_published_port_answers_on_every_node(ov):
    pub = ov.service("pub", 1, ports=[(8080, 8000)])
    (task,) = ov.running(pub, 1)
    try:
        name = probe(task, "connect", "127.0.0.1", "8000").stdout.strip()
        for src in NODES:
            for dst in NODES:   # two of the three run no task of the service
                # The mesh is programmed on every node as its assignments arrive: allow it a moment.
                def answered(src=src, dst=dst):
                    r = ov.c.exec(src, sys.executable, "-m", "tests.overlay.probe", "connect", ov.c.address(dst), "8080")
                    return r.stdout.strip() == name
                wait_for(answered, 15, 0.3, f"{dst}:8080 from {src}")
        ingress = next(n for n in ov.api("/networks") if n["Ingress"])
        assert all(ov.has_network(h, ingress["Id"]) for h in NODES), "every node is on the routing mesh"
    finally:
        ov.remove(pub)
    r = ov.c.exec("w1", sys.executable, "-m", "tests.overlay.probe", "connect", ov.c.address("m1"), "8080", "1")
    assert r.returncode != 0, "an unpublished port answers nowhere"


def test_host_mode_ports_answer_where_their_task_runs_and_never_share_a_node(ov):
    ov.network("hostnet")
    svc = ov.service("hostp", 4, ["hostnet"], ports=[(9090, 8000)], mode="host")
    try:
        def three_running():
            up = [t for t in ov.tasks(svc) if t["Status"]["State"] == "running"]
            return up if len(up) == 3 else None
        tasks = wait_for(three_running, 30, 0.2, "3 running tasks of hostp")
        assert len({t["NodeID"] for t in tasks}) == 3
        waiting = [t for t in ov.tasks(svc) if t["Status"]["State"] == "pending"]
        assert len(waiting) == 1 and "host-mode port already in use" in waiting[0]["Status"]["Err"]
        for t in tasks:   # each node's port reaches the task on that very node
            host = ov.hosts[t["NodeID"]]
            own = probe(t, "connect", "127.0.0.1", "8000").stdout.strip()
            r = ov.c.exec("m1", sys.executable, "-m", "tests.overlay.probe", "connect", ov.c.address(host), "9090")
            assert r.stdout.strip() == own, (host, r.stdout, r.stderr)
    finally:
        ov.remove(svc)
        ov.c.shoal("m1", "network", "rm", "hostnet")


def test_networks_are_isolated_and_follow_their_tasks(ov):
    n1, n2 = ov.network("blue"), ov.network("green", "--subnet", "10.99.0.0/24")
    a = ov.service("a", 2, ["blue"])
    b = ov.service("b", 2, ["green"])
    ta, tb = ov.running(a, 2), ov.running(b, 2)
    try:
        r = ov.c.shoal("m1", "network", "rm", "blue", check=False)
        assert r.returncode != 0 and "in use by service a" in r.stderr
        rows = {line.split()[1]: line.split() for line in ov.c.shoal("m1", "network", "ls").stdout.splitlines()[1:]}
        assert rows["blue"][0] == n1[:12] and rows["green"][2:] == ["overlay", "swarm"]
        (green,) = json.loads(ov.c.shoal("m1", "network", "inspect", "green").stdout)
        assert green["IPAM"]["Config"] == [{"Subnet": "10.99.0.0/24", "Gateway": "10.99.0.1"}]
        assert all(ip_of(t).startswith("10.99.0.") for t in tb)
        peer = next(t for t in ta if t["NodeID"] != ta[0]["NodeID"])
        assert probe(ta[0], "ping", ip_of(peer), "1").returncode == 0
        for t in tb:   # no way from blue to green, by address or by name
            assert probe(ta[0], "ping", ip_of(t), "1", "1", check=False).returncode != 0
            assert probe(ta[0], "connect", ip_of(t), "8000", "1", check=False).returncode != 0
        assert lookup(ta[0], "b") == [] and lookup(ta[0], "a") != []
        # Networks follow tasks: a node keeps a network while it has a task on it, and only then.
        hosts = {ov.hosts[t["NodeID"]] for t in ta}
        assert {h for h in NODES if ov.has_network(h, n1)} == hosts
        spec = ov.api(f"/services/{a}")
        ov.api(f"/services/{a}/update?version={spec['Version']['Index']}", "POST",
               dict(spec["Spec"], Mode={"Replicated": {"Replicas": 1}}))
        (kept,) = ov.running(a, 1)
        gone = hosts - {ov.hosts[kept["NodeID"]]}
        wait_for(lambda: not any(ov.has_network(h, n1) for h in gone), 10, 0.2, "blue gone from the node left")
        assert ov.has_network(ov.hosts[kept["NodeID"]], n1)
    finally:
        ov.remove(a, b)
    assert not any(ov.has_network(h, n) for h in NODES for n in (n1, n2)), "no task left: no network left"
    ov.c.shoal("m1", "network", "rm", "blue", "green")
    assert {n["Name"] for n in ov.api("/networks")} <= {"ingress"}


class Capture:
    """Every frame on the cluster's wire: a packet socket in the namespace of the harness's
    bridge, which carries everything between nodes."""

    def __init__(self, netns: str):
        def open_sock() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            s.settimeout(0.1)
            return s
        self.frames: list[bytes] = []
        self._stop = False
        self.sock = sh.in_netns(sh.named(netns), open_sock)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                self.frames.append(self.sock.recv(65535))
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self) -> list[bytes]:
        time.sleep(0.2)
        self._stop = True
        self.thread.join(2)
        self.sock.close()
        return self.frames


def ip_proto(frame: bytes) -> tuple[int, bytes] | None:
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    return frame[23], frame[14 + (frame[14] & 0xF) * 4:]


def test_an_encrypted_network_shows_only_esp_on_the_wire(ov):
    text = "TOP-SECRET-PAYLOAD-4711"
    ov.network("secret", "--opt", "encrypted")
    echo = ov.service("echo", 2, ["secret"], command=["nc", "-ll", "-p", "8000", "-e", "cat"])
    client = ov.running(ov.service("sclient", 1, ["secret"], command=["sleep", "3600"]), 1)[0]
    try:
        servers = [t for t in ov.running(echo, 2) if t["NodeID"] != client["NodeID"]]
        assert servers, "a server on another host"
        cap = Capture(layout.bridge_netns(ov.c.name))
        try:
            for t in servers:
                r = in_container(client, "sh", "-c", f"echo {text} | nc -w 2 {ip_of(t)} 8000")
                assert r.stdout.strip() == text, (r.stdout, r.stderr)
        finally:
            frames = cap.stop()
        parsed = [p for p in map(ip_proto, frames) if p]
        assert sum(proto == 50 for proto, _ in parsed) >= 4, "the exchange crossed the wire as ESP"
        assert not any(text.encode() in f for f in frames), "payload visible on the wire"
        assert not any(proto == 17 and body[2:4] == b"\x12\xb5" for proto, body in parsed), "plaintext VXLAN"
    finally:
        ov.remove(echo, client["ServiceID"])
        ov.c.shoal("m1", "network", "rm", "secret")


STACK = """
version: "3.8"
services:
  web:
    image: busybox:latest
    command: ["nc", "-ll", "-p", "8000", "-e", "hostname"]
    stop_signal: SIGKILL
    networks: [front]
    deploy: {replicas: 2}
  client:
    image: busybox:latest
    command: ["sleep", "3600"]
    stop_signal: SIGKILL
    networks:
      front:
        aliases: [shopper]
      back: {}
  db:
    image: busybox:latest
    command: ["sleep", "3600"]
    stop_signal: SIGKILL
networks:
  front: {}
  back:
    internal: true
"""


def test_a_stacks_services_join_its_networks(ov, tmp_path):
    path = tmp_path / "shop.yml"
    path.write_text(STACK)
    out = ov.c.shoal("m1", "stack", "deploy", "-c", str(path), "shop").stdout
    assert "Creating network shop_default" in out and "Creating network shop_front" in out
    try:
        nets = {n["Name"]: n for n in ov.api("/networks")}
        assert {"shop_default", "shop_front", "shop_back"} <= set(nets)
        assert nets["shop_back"]["Internal"] and nets["shop_front"]["Labels"] == {
            "com.docker.stack.namespace": "shop"}
        services = {s["Spec"]["Name"]: s["ID"] for s in ov.api("/services")}
        web = ov.running(services["shop_web"], 2)
        (client,) = ov.running(services["shop_client"], 1)
        (db,) = ov.running(services["shop_db"], 1)
        # eth0, eth1 in the order of the task's networks; the default route through the first.
        order = [a["Network"]["Spec"]["Name"] for a in client["NetworksAttachments"]]
        links = subprocess.run(["nsenter", f"--net=/proc/{pid_of(client)}/ns/net", "ip", "-o", "-4", "addr"],
                               capture_output=True, text=True).stdout
        for i, name in enumerate(order):
            assert re.search(rf"eth{i}\s+inet {re.escape(ip_of(client, i))}/", links), (i, name, links)
        route = subprocess.run(["nsenter", f"--net=/proc/{pid_of(client)}/ns/net", "ip", "route", "show", "default"],
                               capture_output=True, text=True).stdout
        gateway = nets[order[0]]["IPAM"]["Config"][0]["Gateway"]
        assert route.startswith(f"default via {gateway} dev eth0")
        # Names: the service by its short and its stack name, its tasks, an alias; nothing of
        # a network the client is not on.
        vip = next(v["Addr"].split("/")[0] for v in ov.api(f"/services/{services['shop_web']}")["Endpoint"]
                   ["VirtualIPs"] if v["NetworkID"] == nets["shop_front"]["Id"])
        assert lookup(client, "web") == lookup(client, "shop_web") == [vip]
        assert lookup(client, "tasks.web") == sorted(ip_of(t) for t in web)
        client_vip = next(v["Addr"].split("/")[0] for v in ov.api(f"/services/{services['shop_client']}")
                          ["Endpoint"]["VirtualIPs"] if v["NetworkID"] == nets["shop_front"]["Id"])
        assert lookup(web[0], "shopper") == [client_vip], "a network alias answers like the service name"
        assert lookup(client, "db") == [], "db is on shop_default only"
        assert probe(client, "connect", vip, "8000").returncode == 0
    finally:
        out = ov.c.shoal("m1", "stack", "rm", "shop").stdout
    assert "Removing network shop_front" in out
    assert not {"shop_default", "shop_front", "shop_back"} & {n["Name"] for n in ov.api("/networks")}


def test_a_restarted_daemon_gives_its_running_containers_their_networks_back(ov):
    ov.network("durable")
    srv = ov.service("durable", 3, ["durable"])
    tasks = ov.running(srv, 3)
    try:
        on_w1 = next(t for t in tasks if ov.hosts[t["NodeID"]] == "w1")
        peer = next(t for t in tasks if ov.hosts[t["NodeID"]] == "w2")
        name = probe(peer, "connect", ip_of(on_w1), "8000").stdout.strip()
        ov.c.restart("w1")   # its networks are rebuilt from scratch: the old daemon's state is gone
        wait_for(lambda: probe(peer, "connect", ip_of(on_w1), "8000", "1", check=False).stdout.strip() == name,
                 20, 0.2, "the task on w1 reachable again")
        assert lookup(on_w1, "tasks.durable") == sorted(ip_of(t) for t in tasks)
        assert {t["ID"] for t in ov.running(srv, 3)} == {t["ID"] for t in tasks}, "the same tasks, re-adopted"
    finally:
        ov.remove(srv)
        ov.c.shoal("m1", "network", "rm", "durable")
