"""What the managers send a node about its networks, read back by the node (worker/networks.py):
the same values on both sides, and bad messages refused with the field named."""
import base64

import msgpack
import pytest

from api.objects import PortConfig
from manager import allocator as al
from tests.unit.test_allocator import Cluster, addresses
from worker.networks import node_prefix, parse_view, resolv_conf, spec_of, task_interfaces


def _cluster():
    c = Cluster()
    n1, n2 = c.node("192.0.2.1"), c.node("192.0.2.2")
    c.network("front", options={"encrypted": ""})
    c.network("back", "10.50.0.0/16", internal=True, options={al.MTU_OPTION: "1400"})
    sid, (t1, t2) = c.service("web", 2, networks=["front", "back"], ports=[PortConfig(target_port=80)])
    c.allocate()
    c.allocate()
    c.set_state(t1, "running", n1)
    c.set_state(t2, "running", n2)
    return c, n1, t1


def test_the_node_reads_what_the_managers_send():
    c, n1, t1 = _cluster()
    wire = msgpack.unpackb(msgpack.packb(al.node_view(c.store, n1), use_bin_type=True), raw=False)
    view = parse_view(wire)
    assert view.node_addr == "192.0.2.1"
    ingress = al.ingress_network(c.store.list("network"))
    assert {s.name for s, _ in view.networks.values()} == {"front", "back", "ingress"}
    assert view.networks[ingress.id][1] == c.store.get("node", n1).attachments[0].addresses[0]
    task = c.task(t1)
    ifaces = task_interfaces(task, view)
    assert [(s.name, a) for s, a in ifaces] == [("front", addresses(c, t1)[0]), ("back", addresses(c, t1)[1]),
                                               ("ingress", addresses(c, t1)[2])]
    front, back = ifaces[0][0], ifaces[1][0]
    assert front.encrypted and not front.internal
    assert back.internal and back.mtu == 1400 and back.subnet == "10.50.0.0/16"
    # The network as the task carries it gives the very same data-plane spec.
    for att, (spec, _) in zip(task.networks_attachments, ifaces):
        assert spec_of(att.network) == spec
    assert len(view.endpoints[front.id]) == 2
    assert {p.published_port for p in view.ports} == {30000}
    assert [d.name for d in view.dns[front.id]] == ["web"] and view.vips[front.id][0].backends
    assert resolv_conf(front.gateway).startswith(f"nameserver {front.gateway}\n")
    keys = c.store.get("networkkeys", al.KEYS_ID).keys
    assert [(k.key_id, base64.b64encode(k.key).decode()) for k in view.keys] == [(1, keys[0].key)]
    assert len(view.keys[0].key) == 16 and "key" not in repr(view).lower(), "keys stay out of logs"


@pytest.mark.parametrize("message,field", [
    ({"Networks": [{"ID": "x", "VNI": "1", "Subnet": "10.0.0.0/24", "Gateway": "10.0.0.1"}]}, r"Networks\[0\].VNI"),
    ({"Networks": [{"ID": "x", "VNI": 5, "Subnet": "10.0.0.0/24", "Gateway": "10.9.0.1"}]}, "network.gateway"),
    ({"Endpoints": [{"TaskID": "t", "NetworkID": "n", "IP": "10.0.0.2", "MAC": "02:42:0a:00:00:02",
                     "NodeAddr": "192.0.2.1"}]}, "endpoint.ip"),
    ({"Ports": [{"Protocol": "sctp", "PublishedPort": 80, "TargetPort": 80, "NetworkID": "n"}]}, "port.protocol"),
    ({"Services": [{"NetworkID": "n", "Name": "web", "TaskIPs": [1]}]}, r"Services\[0\].TaskIPs"),
    ({"NodeAddr": 7}, "message.NodeAddr"),
    ({"EncryptionKeys": [{"ID": 1, "Key": "not base64!"}]}, r"EncryptionKeys\[0\].Key"),
    ({"EncryptionKeys": [{"ID": 300, "Key": "AAAAAAAAAAAAAAAAAAAAAA=="}]}, "key.key_id"),
])
def test_malformed_messages_name_the_field(message, field):
    with pytest.raises(ValueError, match=field):
        parse_view(message)


def test_node_prefixes_are_short_and_distinct():
    a, b = node_prefix("abcdefghij0123456789xyz12"), node_prefix("abcdefghik0123456789xyz12")
    assert a != b and len(a) <= 11 and a.isalnum()


def test_the_cli_request_is_what_the_api_takes():
    from api import codec
    from api.objects import NetworkSpec
    from cli.client import CLIError
    from cli.commands.network import create_body
    body = create_body("secret", "overlay", "10.30.0.0/24", "10.30.0.254", None, True, True, False,
                       ["encrypted="], ["team=blue"])
    body.pop("CheckDuplicate")
    spec = al.validate_network_spec(codec.decode(NetworkSpec, body), [])
    assert (spec.attachable, spec.internal, spec.labels) == (True, True, {"team": "blue"})
    assert spec.ipam.config[0].gateway == "10.30.0.254"
    net = al.allocate_network(al.Network(id="n1", spec=spec), al.Pools())
    assert al.is_encrypted(net) and str(al.network_subnet(net)[0]) == "10.30.0.0/24"
    with pytest.raises(CLIError, match="^--driver"):
        create_body("x", "bridge", None, None, None, False, False, False, [], [])
    with pytest.raises(CLIError, match="^--gateway"):
        create_body("x", "overlay", None, "10.0.0.1", None, False, False, False, [], [])
