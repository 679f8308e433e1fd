"""The routing mesh (a published port answers on every node, through the ingress network),
mode=host ports (only where the task runs), and egress from containers to the outside."""
from __future__ import annotations

import json
import subprocess

import pytest

from overlay.model import Endpoint, NetworkSpec, PublishedPort, mac_for_ip
from tests.overlay.fabric import PYTHON

pytestmark = pytest.mark.root

INGRESS = NetworkSpec("ingress00000000", "ingress", 4096, "10.255.0.0/16", "10.255.0.1", ingress=True)
NET = NetworkSpec("appnet1aaaaaaaa", "app", 4401, "10.230.0.0/24", "10.230.0.1")
INTERNAL = NetworkSpec("intnet1aaaaaaaa", "int", 4402, "10.231.0.0/24", "10.231.0.1", internal=True)


def test_published_port_answers_on_every_node(fabric):
    f = fabric(3)
    nodes = f.nodes
    sbox = {n.index: f"10.255.0.{n.index + 2}" for n in nodes}     # each node's own ingress address
    eps = [Endpoint(f"ingress-{n.index}", INGRESS.id, f"{sbox[n.index]}/16", mac_for_ip(sbox[n.index]), n.addr)
           for n in nodes]
    for n in nodes:
        n.net.ensure_network(INGRESS, node_ip=sbox[n.index])
    tasks = []
    for i, n in enumerate(nodes[:2]):                               # tasks on nodes 0 and 1, none on 2
        c = f.container()
        ip = f"10.255.1.{i + 10}"
        mac = n.net.attach(INGRESS.id, c.pid, "eth0", f"{ip}/16")
        c.serve_name(f"task{i}", 80)
        eps.append(Endpoint(f"t{i}", INGRESS.id, f"{ip}/16", mac, n.addr))
        tasks.append(ip)
    port = PublishedPort("tcp", 8080, 80, INGRESS.id, tuple(tasks))
    for n in nodes:
        n.net.set_remote_endpoints(INGRESS.id, eps)
        n.net.set_published_ports([port])
    client = nodes[0]
    for target in nodes:                                            # including node 2, which runs no task
        out = client.run(PYTHON, "-m", "tests.overlay.probe", "spread", target.addr, "8080", "24")
        counts = json.loads(out.stdout)
        assert set(counts) == {"task0", "task1"}, (target.addr, counts)
    # From the node without a task, to itself.
    assert nodes[2].run(PYTHON, "-m", "tests.overlay.probe", "connect", nodes[2].addr, "8080").stdout.startswith("task")
    # Unpublished: nothing answers.
    for n in nodes:
        n.net.set_published_ports([])
    assert nodes[0].run(PYTHON, "-m", "tests.overlay.probe", "connect", nodes[2].addr, "8080", "1",
                        check=False).returncode != 0


def test_host_mode_port_only_where_the_task_runs_and_egress(fabric):
    f = fabric(2)
    a, b = f.nodes
    for n in (a, b):
        n.net.ensure_network(NET)
    c = f.container()
    b.net.attach(NET.id, c.pid, "eth0", "10.230.0.5/24", default_route=True)
    c.serve_name("hosted", 9000)
    b.net.set_published_ports([PublishedPort("tcp", 9090, 9000, NET.id, ("10.230.0.5",), mode="host")])
    assert a.run(PYTHON, "-m", "tests.overlay.probe", "connect", b.addr, "9090").stdout.strip() == "hosted"
    assert a.run(PYTHON, "-m", "tests.overlay.probe", "connect", a.addr, "9090", "1",
                 check=False).returncode != 0
    with pytest.raises(ValueError, match=r"ports\[1\].published_port"):
        b.net.set_published_ports([PublishedPort("tcp", 9090, 9000, NET.id, ("10.230.0.5",), mode="host")] * 2)
    with pytest.raises(ValueError, match=r"ports\[0\].network_id"):
        b.net.set_published_ports([PublishedPort("tcp", 9090, 9000, NET.id, ("10.230.0.5",))])
    # Egress: a container reaches a server on another node's underlay address, seen as its node.
    server = subprocess.Popen(
        ["ip", "netns", "exec", a.ns, PYTHON, "-c",
         "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
         "s.bind(('0.0.0.0',7000));s.listen();print('up',flush=True)\n"
         "while True:\n c,p=s.accept();c.sendall(p[0].encode()+b'\\n');c.close()"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "up"
        assert c.probe("connect", a.addr, "7000").stdout.strip() == b.addr
        # An internal network has no way out.
        b.net.ensure_network(INTERNAL)
        d = f.container()
        b.net.attach(INTERNAL.id, d.pid, "eth0", "10.231.0.5/24", default_route=True)
        assert d.probe("connect", a.addr, "7000", "1", check=False).returncode != 0
    finally:
        server.kill()
        server.wait()
