"""Service discovery: the node's DNS server answers each container from the names of its own
networks, and relays everything else to the host's resolvers (or to the container's own, when
it has some: DNSConfig.Nameservers)."""
from __future__ import annotations

import time

import pytest

from overlay.model import NetworkSpec, ServiceDNS
from tests.overlay.fabric import FakeResolver

pytestmark = pytest.mark.root

NET1 = NetworkSpec("dnsnet1aaaaaaaa", "front", 4201, "10.210.1.0/24", "10.210.1.1")
NET2 = NetworkSpec("dnsnet2bbbbbbbb", "back", 4202, "10.210.2.0/24", "10.210.2.1")

WEB = ServiceDNS("shop_web", vip="10.210.1.100", task_ips=("10.210.1.2", "10.210.1.3"), aliases=("frontend",),
                 stack="shop", task_names=(("shop_web.1.abc", "10.210.1.2"),))
DB = ServiceDNS("db", endpoint_mode="dnsrr", task_ips=("10.210.1.7", "10.210.1.8"))
API = ServiceDNS("api", vip="10.210.2.100", task_ips=("10.210.2.2",))


@pytest.fixture
def upstream():
    r = FakeResolver({"example.test": "192.0.2.7"})
    try:
        yield r
    finally:
        r.close()


def test_names_per_network_and_forwarding(fabric, upstream):
    f = fabric(2, dns_upstreams=[("127.0.0.1", upstream.port)])
    a, b = f.nodes
    for node in (a, b):
        for spec in (NET1, NET2):
            node.net.ensure_network(spec)
        node.net.set_dns_records(NET1.id, [WEB, DB])
        node.net.set_dns_records(NET2.id, [API])
    c1, c2, both = f.container(), f.container(), f.container()
    b.net.attach(NET1.id, c1.pid, "eth0", "10.210.1.20/24", default_route=True)
    b.net.attach(NET2.id, c2.pid, "eth0", "10.210.2.20/24", default_route=True)
    b.net.attach(NET1.id, both.pid, "eth0", "10.210.1.21/24", default_route=True)
    b.net.attach(NET2.id, both.pid, "eth1", "10.210.2.21/24")
    ns1 = b.net.resolver(NET1.id)
    assert ns1 == "10.210.1.1"

    def ask(c, name, qtype="1", transport="udp", server=ns1):
        return c.probe_json("dns", server, name, qtype, transport)

    vip = {"rcode": 0, "addrs": ["10.210.1.100"]}
    tasks = {"rcode": 0, "addrs": ["10.210.1.2", "10.210.1.3"]}
    assert ask(c1, "shop_web") == vip
    assert ask(c1, "web") == vip                     # the stack's short name
    assert ask(c1, "frontend") == vip                # a network alias
    assert ask(c1, "WEB.") == vip                    # case and the trailing dot do not matter
    assert ask(c1, "tasks.web") == tasks
    assert ask(c1, "tasks.shop_web", transport="tcp") == tasks
    assert ask(c1, "tasks.frontend") == tasks
    assert ask(c1, "shop_web.1.abc") == {"rcode": 0, "addrs": ["10.210.1.2"]}
    assert ask(c1, "db") == {"rcode": 0, "addrs": ["10.210.1.7", "10.210.1.8"]}   # dnsrr: the tasks
    assert ask(c1, "web", qtype="28") == {"rcode": 0, "addrs": []}            # AAAA: the name exists
    # Everything else goes to the host's resolvers, over UDP and TCP alike.
    assert ask(c1, "example.test") == {"rcode": 0, "addrs": ["192.0.2.7"]}
    assert ask(c1, "example.test", transport="tcp") == {"rcode": 0, "addrs": ["192.0.2.7"]}
    # Another network's names are not seen, not even through the gateway of the other network.
    assert ask(c1, "api") == {"rcode": 3, "addrs": []}
    assert "api" in upstream.asked
    assert ask(c2, "web", server=NET2.gateway)["rcode"] == 3
    assert ask(c2, "api", server=NET2.gateway) == {"rcode": 0, "addrs": ["10.210.2.100"]}
    # A container on both networks sees both, whichever nameserver it uses.
    assert ask(both, "api") == {"rcode": 0, "addrs": ["10.210.2.100"]}
    assert ask(both, "web", server=NET2.gateway) == vip
    # Node a answers its own containers the same names.
    c3 = f.container()
    a.net.attach(NET1.id, c3.pid, "eth0", "10.210.1.30/24", default_route=True)
    assert ask(c3, "tasks.web") == tasks


def test_records_follow_tasks_at_once(fabric, upstream):
    f = fabric(1, dns_upstreams=[("127.0.0.1", upstream.port)])
    (a,) = f.nodes
    a.net.ensure_network(NET1)
    c = f.container()
    a.net.attach(NET1.id, c.pid, "eth0", "10.210.1.20/24", default_route=True)
    a.net.set_dns_records(NET1.id, [WEB])
    assert c.probe_json("dns", NET1.gateway, "tasks.web")["addrs"] == ["10.210.1.2", "10.210.1.3"]
    t0 = time.monotonic()
    a.net.set_dns_records(NET1.id, [ServiceDNS("shop_web", vip="10.210.1.100", task_ips=("10.210.1.3",),
                                               stack="shop")])
    assert c.probe_json("dns", NET1.gateway, "tasks.web")["addrs"] == ["10.210.1.3"]
    assert time.monotonic() - t0 < 2
    a.net.set_dns_records(NET1.id, [])
    assert c.probe_json("dns", NET1.gateway, "web")["rcode"] == 3


def test_a_container_with_its_own_nameservers_is_relayed_to_them(fabric, upstream):
    """As Docker's embedded DNS: names the node does not know go to the container's --dns servers
    (port 53 of the given address, reached from the node), and only its own."""
    try:
        own = FakeResolver({"example.test": "192.0.2.99"}, host="127.0.0.77", port=53)
    except OSError as exc:
        pytest.skip(f"port 53 of 127.0.0.77 is not free here: {exc}")
    try:
        f = fabric(1, dns_upstreams=[("127.0.0.1", upstream.port)])
        (a,) = f.nodes
        a.net.ensure_network(NET1)
        a.net.set_dns_records(NET1.id, [WEB])
        mine, other = f.container(), f.container()
        a.net.attach(NET1.id, mine.pid, "eth0", "10.210.1.20/24", default_route=True, dns_upstreams=["127.0.0.77"])
        a.net.attach(NET1.id, other.pid, "eth0", "10.210.1.21/24", default_route=True)
        assert mine.probe_json("dns", NET1.gateway, "example.test") == {"rcode": 0, "addrs": ["192.0.2.99"]}
        assert mine.probe_json("dns", NET1.gateway, "web")["addrs"] == ["10.210.1.100"]  # local names first
        assert other.probe_json("dns", NET1.gateway, "example.test") == {"rcode": 0, "addrs": ["192.0.2.7"]}
        assert own.asked == ["example.test"] and upstream.asked == ["example.test"]
    finally:
        own.close()
