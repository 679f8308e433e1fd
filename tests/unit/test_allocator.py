"""The allocator: networks, task addresses, VIPs, published ports and what each node is told,
driven through a real Store (and its wire round trip) as the leader's pass drives it."""
import copy
import ipaddress
import itertools

import pytest
from hypothesis import given, settings, strategies as st

from api.objects import (
    IPAM, EndpointSpec, IPAMConfig, Network, NetworkAttachmentConfig, NetworkSpec, Node, NodeStatus, PortConfig,
    ReplicatedService, Service, ServiceMode, ServiceSpec, Task, TaskSpec, TaskStatus,
)
from manager import allocator as al
from manager.scheduling import scheduling_actions
from manager.store import Action, Store
from overlay.model import mac_for_ip


class Cluster:
    """A store and a log: every proposal goes through the wire encoding, as Raft carries it."""

    def __init__(self):
        self.store = Store()
        self.index = 0
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        return f"id{next(self._ids):04d}"

    def apply(self, actions):
        self.index += 1
        self.store.apply(self.index, f"2026-01-01T00:00:{self.index % 60:02d}.000000000Z",
                         [Action.from_wire(a.to_wire()) for a in actions])

    def allocate(self) -> int:
        """One pass; the number of actions it proposed."""
        n = 0
        for group in al.allocation_actions(self.store, self.new_id):
            if group:
                self.apply(group)
                n += len(group)
        return n

    def network(self, name, subnet="", gateway="", **spec):
        ipam = IPAM(config=[IPAMConfig(subnet=subnet, gateway=gateway)]) if subnet else None
        s = al.validate_network_spec(NetworkSpec(name=name, ipam=ipam, **spec), self.store.list("network"))
        net = Network(id=self.new_id(), spec=s)
        self.apply([Action("create", "network", net)])
        return net.id

    def node(self, addr, nid=None):
        node = Node(id=nid or self.new_id(), status=NodeStatus(state="ready", addr=addr))
        node.description.hostname = node.id
        self.apply([Action("create", "node", node)])
        return node.id

    def service(self, name, replicas=2, networks=(), ports=(), mode="vip", aliases=None):
        spec = ServiceSpec(name=name, mode=ServiceMode(replicated=ReplicatedService(replicas)),
                           task_template=TaskSpec(networks=[NetworkAttachmentConfig(target=n, aliases=list(aliases or []))
                                                            for n in networks]),
                           endpoint_spec=EndpointSpec(mode=mode, ports=list(ports)))
        svc = Service(id=self.new_id(), spec=spec)
        tasks = [Task(id=self.new_id(), service_id=svc.id, slot=i + 1, spec=copy.deepcopy(spec.task_template))
                 for i in range(replicas)]
        self.apply([Action("create", "service", svc)] + [Action("create", "task", t) for t in tasks])
        return svc.id, [t.id for t in tasks]

    def task(self, tid) -> Task:
        return self.store.get("task", tid)

    def net(self, nid) -> Network:
        return self.store.get("network", nid)

    def set_state(self, tid, state, node_id=""):
        if node_id:
            self.apply([Action("task_assign", "task", {"NodeID": node_id}, tid)])
        self.apply([Action("task_status", "task", TaskStatus(state=state), tid)])


def addresses(c: Cluster, tid: str) -> list[str]:
    return [a for att in c.task(tid).networks_attachments for a in att.addresses]


# --------------------------------------------------------------------------- network create


@pytest.mark.parametrize("spec,field", [
    (NetworkSpec(name=""), "Name"),
    (NetworkSpec(name="a b"), "Name"),
    (NetworkSpec(name="n", driver="bridge"), "Driver"),
    (NetworkSpec(name="n", enable_ipv6=True), "EnableIPv6"),
    (NetworkSpec(name="ingress"), "Name"),
    (NetworkSpec(name="n", scope="local"), "Scope"),
    (NetworkSpec(name="n", ipam=IPAM(config=[IPAMConfig(subnet="10.1.0.1/24")])), r"IPAM.Config\[0\].Subnet"),
    (NetworkSpec(name="n", ipam=IPAM(config=[IPAMConfig(subnet="10.1.0.0/30")])), r"IPAM.Config\[0\].Subnet"),
    (NetworkSpec(name="n", ipam=IPAM(config=[IPAMConfig(subnet="10.1.0.0/24", gateway="10.2.0.1")])),
     r"IPAM.Config\[0\].Gateway"),
    (NetworkSpec(name="n", ipam=IPAM(config=[IPAMConfig(gateway="10.2.0.1")])), r"IPAM.Config\[0\].Subnet"),
    (NetworkSpec(name="n", ipam=IPAM(driver="dhcp")), "IPAM.Driver"),
    (NetworkSpec(name="n", options={al.MTU_OPTION: "99"}), "Options"),
    (NetworkSpec(name="n", ingress=True, attachable=True), "Attachable"),
])
def test_bad_network_specs_name_the_field(spec, field):
    with pytest.raises(al.AllocationError, match=f"^{field}"):
        al.validate_network_spec(spec, [])


def test_names_unique_and_subnets_may_not_overlap():
    c = Cluster()
    c.network("front", "10.10.0.0/16")
    with pytest.raises(al.AllocationError, match="^Name: a network named 'front' already exists"):
        al.validate_network_spec(NetworkSpec(name="front"), c.store.list("network"))
    with pytest.raises(al.AllocationError, match=r"overlaps network front \(10.10.0.0/16\)"):
        al.validate_network_spec(NetworkSpec(name="x", ipam=IPAM(config=[IPAMConfig(subnet="10.10.5.0/24")])),
                                 c.store.list("network"))
    assert al.validate_network_spec(NetworkSpec(name="x", driver=""), []).driver == "overlay"


def test_networks_get_distinct_vnis_and_subnets_skipping_node_networks():
    c = Cluster()
    c.node("10.0.2.7")                                   # a node's own /24 is never an overlay subnet
    a, b = c.network("a"), c.network("b")
    explicit = c.network("x", "192.168.50.0/24", "192.168.50.254")
    c.allocate()
    got = {n: (al.network_vni(c.net(n)), *map(str, al.network_subnet(c.net(n)))) for n in (a, b, explicit)}
    # The one that asks for a subnet goes first; 10.0.0.0/24 is kept for ingress.
    assert got[explicit] == (4097, "192.168.50.0/24", "192.168.50.254")
    assert got[a] == (4098, "10.0.1.0/24", "10.0.1.1")
    assert got[b] == (4099, "10.0.3.0/24", "10.0.3.1")
    assert c.allocate() == 0, "a second pass changes nothing"


def test_requested_subnets_and_vnis_win_over_default_ones():
    c = Cluster()
    first = c.network("first")                           # created first, but asks for nothing
    pinned = c.network("pinned", "10.0.1.0/24", options={al.VXLAN_ID_OPTION: "4097"})
    c.allocate()
    assert str(al.network_subnet(c.net(pinned))[0]) == "10.0.1.0/24" and al.network_vni(c.net(pinned)) == 4097
    assert str(al.network_subnet(c.net(first))[0]) == "10.0.2.0/24" and al.network_vni(c.net(first)) == 4098


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 40)), min_size=1, max_size=12))
def test_property_subnets_never_overlap_and_vnis_are_unique(requests):
    c = Cluster()
    for i, third in enumerate(requests):
        subnet = f"10.0.{third}.0/24" if third is not None else ""
        try:
            c.network(f"n{i}", subnet)
        except al.AllocationError:
            pass   # refused at create: overlaps one asked for before
        if i % 3 == 0:
            c.allocate()
    c.allocate()
    nets = c.store.list("network")
    assert all(al.is_allocated(n) for n in nets)
    subnets = [al.network_subnet(n)[0] for n in nets]
    assert not any(x.overlaps(y) for x, y in itertools.combinations(subnets, 2))
    vnis = [al.network_vni(n) for n in nets]
    assert len(set(vnis)) == len(vnis)


# --------------------------------------------------------------------------- tasks and services


def test_tasks_get_addresses_in_spec_order_then_pending_and_services_a_vip():
    c = Cluster()
    front, back = c.network("front"), c.network("back")
    sid, tids = c.service("web", 3, networks=["front", back])   # by name and by id
    assert c.allocate() > 0
    svc = c.store.get("service", sid)
    vips = {v.network_id: v.addr for v in svc.endpoint.virtual_ips}
    assert set(vips) == {front, back}
    seen = set(vips.values())
    for tid in tids:
        t = c.task(tid)
        assert t.status.state == "pending"
        assert [a.network.id for a in t.networks_attachments] == [front, back]
        assert all(al.is_allocated(a.network) for a in t.networks_attachments), "the network as allocated"
        for addr in addresses(c, tid):
            assert addr not in seen
            seen.add(addr)
    first = addresses(c, tids[0])[0]
    assert first.startswith("10.0.1.") and first.endswith("/24")
    assert "10.0.1.1/24" not in seen, "the gateway is never a task's"
    assert c.allocate() == 0


def test_unallocated_tasks_are_not_scheduled_and_allocated_ones_are():
    c = Cluster()
    n1 = c.node("192.0.2.1")
    c.network("front")
    _, tids = c.service("web", 2, networks=["front"])
    assert scheduling_actions(c.store) == [], "new tasks wait for the allocator"
    c.allocate()
    assigned = {a.id for a in scheduling_actions(c.store) if a.obj.get("NodeID") == n1}
    assert assigned == set(tids)


def test_a_missing_network_is_named_on_the_task_which_stays_new():
    c = Cluster()
    _, (tid, _) = c.service("web", 2, networks=["nope"])
    c.allocate()
    t = c.task(tid)
    assert t.status.state == "new"
    assert t.status.err == "TaskTemplate.Networks[0].Target: network 'nope' not found"
    assert c.allocate() == 0, "the same error is not proposed again"
    c.network("nope")
    c.allocate()
    c.allocate()
    assert c.task(tid).status.state == "pending" and c.task(tid).status.err == ""


def test_addresses_of_finished_tasks_come_back_last():
    c = Cluster()
    c.network("small", "10.20.0.0/29")                # 6 hosts: the gateway .1, then .2 - .6
    sid, tids = c.service("web", 2, networks=["small"])
    c.allocate()
    node = c.node("192.0.2.1")
    assert c.store.get("service", sid).endpoint.virtual_ips[0].addr == "10.20.0.2/29"
    assert [addresses(c, t)[0] for t in tids] == ["10.20.0.3/29", "10.20.0.4/29"]
    c.set_state(tids[0], "running", node)
    c.set_state(tids[0], "failed")
    _, more = c.service("api", 3, networks=["small"], mode="dnsrr")
    c.allocate()
    # Fresh addresses while there are any; then the finished task's.
    assert [addresses(c, t)[0] for t in more] == ["10.20.0.5/29", "10.20.0.6/29", "10.20.0.3/29"]


def test_pool_exhaustion_is_reported_on_the_task():
    c = Cluster()
    c.network("tiny", "10.20.0.0/29")
    _, tids = c.service("web", 6, networks=["tiny"], mode="dnsrr")   # 5 free host addresses
    c.allocate()
    states = [c.task(t).status for t in tids]
    assert sum(s.state == "pending" for s in states) == 5
    assert any("no free address left in 10.20.0.0/29" in s.err for s in states)


def test_published_ports_ingress_network_and_node_addresses():
    c = Cluster()
    n1, n2 = c.node("192.0.2.1"), c.node("192.0.2.2")
    sid, tids = c.service("web", 2, ports=[PortConfig(target_port=80, published_port=8080),
                                           PortConfig(target_port=81)])
    c.allocate()
    ingress = al.ingress_network(c.store.list("network"))
    assert ingress is not None and ingress.spec.name == "ingress"
    assert str(al.network_subnet(ingress)[0]) == al.INGRESS_SUBNET and al.network_vni(ingress) == al.INGRESS_VNI
    svc = c.store.get("service", sid)
    assert [(p.target_port, p.published_port) for p in svc.endpoint.ports] == [(80, 8080), (81, 30000)]
    node_ips = {c.store.get("node", n).attachments[0].addresses[0] for n in (n1, n2)}
    assert len(node_ips) == 2
    for tid in tids:
        assert [a.network.id for a in c.task(tid).networks_attachments] == [ingress.id]
        assert addresses(c, tid)[0] not in node_ips
    # A second service: the next free port; asking for a taken one is refused on its tasks.
    sid2, _ = c.service("api", 1, ports=[PortConfig(target_port=80)])
    _, bad = c.service("clash", 1, ports=[PortConfig(target_port=80, published_port=8080)])
    c.allocate()
    assert c.store.get("service", sid2).endpoint.ports[0].published_port == 30001
    assert c.task(bad[0]).status.state == "new"
    assert c.task(bad[0]).status.err == \
        "EndpointSpec.Ports[0].PublishedPort: 8080/tcp is already in use by service web"
    # Allocations survive a change of leader: a new store from a snapshot has nothing to redo.
    other = Cluster()
    other.store.restore(c.store.snapshot())
    other.index = c.index
    assert al.allocation_actions(other.store, other.new_id) == [[], [], []]


def test_dnsrr_services_have_no_vip_and_refuse_ingress_ports():
    c = Cluster()
    c.network("front")
    sid, _ = c.service("db", 1, networks=["front"], mode="dnsrr")
    _, bad = c.service("bad", 1, networks=["front"], mode="dnsrr", ports=[PortConfig(target_port=80)])
    c.allocate()
    assert c.store.get("service", sid).endpoint.virtual_ips == []
    assert c.task(bad[0]).status.err.startswith("EndpointSpec.Ports[0].PublishMode: ingress ports need")


def test_host_mode_ports_keep_two_tasks_off_one_node():
    c = Cluster()
    c.node("192.0.2.1")
    c.network("front")
    _, tids = c.service("web", 2, networks=["front"], ports=[PortConfig(target_port=80, published_port=80,
                                                                        publish_mode="host")])
    c.allocate()
    c.apply(scheduling_actions(c.store))
    states = sorted(c.task(t).status.state for t in tids)
    assert states == ["assigned", "pending"]
    waiting = next(c.task(t).status for t in tids if c.task(t).status.state == "pending")
    assert "host-mode port already in use" in waiting.err


def test_network_in_use():
    c = Cluster()
    nid = c.network("front")
    sid, tids = c.service("web", 1, networks=["front"])
    c.allocate()
    args = lambda: (c.net(nid), c.store.list("service"), c.store.list("task"), c.store.list("network"))  # noqa
    assert al.network_in_use(*args()) == "network front is in use by service web"
    c.apply([Action("delete", "service", None, sid)])
    assert al.network_in_use(*args()) is None, "tasks of a removed service do not hold it"


# --------------------------------------------------------------------------- what a node is told


def test_node_view_endpoints_names_vips_and_ports():
    c = Cluster()
    n1, n2, n3 = c.node("192.0.2.1"), c.node("192.0.2.2"), c.node("192.0.2.3")
    front, other = c.network("front"), c.network("other")
    sid, (t1, t2) = c.service("shop_web", 2, networks=["front"], ports=[PortConfig(target_port=80,
                                                                                  published_port=8080)],
                              aliases=["www"])
    _, (t3,) = c.service("elsewhere", 1, networks=["other"])
    c.apply([Action("update", "service", _labelled(c.store.get("service", sid), "shop"))])
    c.allocate()
    c.allocate()
    c.set_state(t1, "running", n1)
    c.set_state(t2, "starting", n2)
    c.set_state(t3, "running", n2)
    ingress = al.ingress_network(c.store.list("network"))

    v1 = al.node_view(c.store, n1)
    assert v1["NodeAddr"] == "192.0.2.1"
    assert {n["ID"] for n in v1["Networks"]} == {front, ingress.id}, "only the networks of its tasks, and ingress"
    by_net = {}
    for e in v1["Endpoints"]:
        by_net.setdefault(e["NetworkID"], set()).add((e["IP"], e["NodeAddr"]))
        assert e["MAC"] == mac_for_ip(e["IP"])
    assert by_net[front] == {(addresses(c, t1)[0], "192.0.2.1"), (addresses(c, t2)[0], "192.0.2.2")}
    assert len(by_net[ingress.id]) == 2 + 3, "two tasks and every node's own ingress address"
    web = next(s for s in v1["Services"] if s["NetworkID"] == front)
    vip = next(v.addr for v in c.store.get("service", sid).endpoint.virtual_ips if v.network_id == front)
    assert (web["Name"], web["VIP"], web["Stack"], web["Aliases"]) == ("shop_web", vip, "shop", ["www"])
    assert web["TaskIPs"] == [addresses(c, t1)[0]], "only a running task answers"
    assert [s["Name"] for s in v1["Services"]] == ["shop_web"], "no names on ingress, none of other networks"
    assert v1["VIPs"] == [{"ServiceID": sid, "NetworkID": front, "VIP": vip, "Backends": [addresses(c, t1)[0]]}]
    assert v1["Ports"] == [{"Protocol": "tcp", "PublishedPort": 8080, "TargetPort": 80, "NetworkID": ingress.id,
                            "Backends": [addresses(c, t1)[1]], "Mode": "ingress"}]
    # A node without a task of the service: ingress only, and the port still answers there.
    v3 = al.node_view(c.store, n3)
    assert [n["ID"] for n in v3["Networks"]] == [ingress.id]
    assert v3["Networks"][0]["NodeIP"] == c.store.get("node", n3).attachments[0].addresses[0]
    assert [p["PublishedPort"] for p in v3["Ports"]] == [8080]
    # The task stops: it leaves every list at once.
    c.set_state(t1, "complete")
    v2 = al.node_view(c.store, n2)
    assert next(s for s in v2["Services"] if s["NetworkID"] == front)["TaskIPs"] == []
    assert all(e["IP"] != addresses(c, t1)[0] for e in v2["Endpoints"])


def _labelled(svc, stack):
    new = copy.deepcopy(svc)
    new.spec.labels["com.docker.stack.namespace"] = stack
    return new


def test_subnet_iteration_is_cheap_for_big_networks():
    c = Cluster()
    c.network("big", "10.128.0.0/9")
    _, tids = c.service("web", 3, networks=["big"], mode="dnsrr")
    c.allocate()
    assert [ipaddress.IPv4Interface(addresses(c, t)[0]).ip for t in tids] == \
        [ipaddress.IPv4Address("10.128.0.2"), ipaddress.IPv4Address("10.128.0.3"), ipaddress.IPv4Address("10.128.0.4")]


def test_a_clusters_vxlan_ids_start_at_its_own_offset():
    from api.objects import Cluster as ClusterObject
    c = Cluster()
    c.apply([Action("create", "cluster", ClusterObject(id="clusterA"))])
    nid = c.network("front")
    c.allocate()
    offset = al.vni_offset("clusterA")
    assert 0 < offset < al.VNI_SPREAD and offset != al.vni_offset("clusterB")
    assert al.network_vni(c.net(nid)) == al.FIRST_VNI + offset


def test_encryption_keys_made_for_the_first_encrypted_network_and_rotated_in_three_steps():
    made = itertools.count(1)
    key = lambda n: bytes([next(made)]) * n  # noqa: E731
    assert al.key_plan(None, needed=False, now=1000.0, make_key=key) is None
    k = al.key_plan(None, needed=True, now=1000.0, make_key=key)
    assert [x.key_id for x in k.keys] == [1]
    period, step = 100.0, 10.0
    plan = lambda cur, now: al.key_plan(cur, True, now, key, period, step)  # noqa: E731
    assert plan(k, 1099.0) is None
    k2 = plan(k, 1100.0)                      # 1: the new key joins; the old one still encrypts
    assert [x.key_id for x in k2.keys] == [1, 2]
    assert plan(k2, 1105.0) is None           # every node must hear of it first
    k3 = plan(k2, 1110.0)                     # 2: the new key encrypts; the old one still decrypts
    assert [x.key_id for x in k3.keys] == [2, 1]
    k4 = plan(k3, 1120.0)                     # 3: the old one goes
    assert [x.key_id for x in k4.keys] == [2]
    assert len({x.key for x in k2.keys}) == 2 and k4.keys[0].key == k2.keys[1].key
    last = copy.deepcopy(k4)
    last.keys[0].key_id = 255
    assert [x.key_id for x in plan(last, 1220.0).keys] == [255, 1], "key ids wrap within one byte"


def test_keys_go_only_to_nodes_with_an_encrypted_network():
    c = Cluster()
    n1, n2 = c.node("192.0.2.1"), c.node("192.0.2.2")
    c.network("secret", options={"encrypted": ""})
    c.network("plain")
    _, (t1,) = c.service("s", 1, networks=["secret"])
    _, (t2,) = c.service("p", 1, networks=["plain"])
    c.allocate()
    c.set_state(t1, "running", n1)
    c.set_state(t2, "running", n2)
    keys = c.store.get("networkkeys", al.KEYS_ID)
    assert keys is not None and len(keys.keys) == 1
    assert al.node_view(c.store, n1)["EncryptionKeys"] == [{"ID": 1, "Key": keys.keys[0].key}]
    assert "EncryptionKeys" not in al.node_view(c.store, n2)


def test_a_task_joins_the_networks_of_its_own_spec():
    c = Cluster()
    front, back = c.network("front"), c.network("back")
    sid, (tid,) = c.service("web", 1, networks=["front"])
    svc = copy.deepcopy(c.store.get("service", sid))   # updated before its old task was allocated
    svc.spec.task_template.networks = [NetworkAttachmentConfig(target="back")]
    c.apply([Action("update", "service", svc)])
    c.allocate()
    assert [a.network.id for a in c.task(tid).networks_attachments] == [front]
    assert [v.network_id for v in c.store.get("service", sid).endpoint.virtual_ips] == [back]
