"""The pure parts of the data plane: validation, names, FDB/neighbour diffs, nft rulesets, DNS
codec and names, ESP packets. No root needed."""
from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay import dnsmsg, esp, names, nftrules, peers
from overlay.dnsnames import lookup, service_records
from overlay.dnsserver import DnsServer, host_resolvers
from overlay.model import (Endpoint, EncryptionKey, NetworkSpec, PublishedPort, ServiceDNS, ServiceVIP,
                           mac_for_ip)


# --- model ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [
    (dict(vni=0), "network.vni"), (dict(vni=1 << 24), "network.vni"),
    (dict(subnet="10.0.0.1/24"), "network.subnet"), (dict(subnet="10.0.0.0/31"), "network.subnet"),
    (dict(gateway="10.0.1.1"), "network.gateway"), (dict(gateway="10.0.0.0"), "network.gateway"),
    (dict(mtu=100), "network.mtu"), (dict(id="a b"), "network.id"),
])
def test_network_spec_refuses_bad_values_naming_the_field(kwargs, field):
    base = dict(id="n1", name="n", vni=10, subnet="10.0.0.0/24", gateway="10.0.0.1")
    with pytest.raises(ValueError, match=f"^{field}: "):
        NetworkSpec(**{**base, **kwargs})


def test_endpoint_vip_port_key_validation():
    with pytest.raises(ValueError, match="^endpoint.ip"):
        Endpoint("t", "n", "10.0.0.2", "02:42:0a:00:00:02", "1.2.3.4")
    with pytest.raises(ValueError, match="^endpoint.mac"):
        Endpoint("t", "n", "10.0.0.2/24", "01:00:5e:00:00:01", "1.2.3.4")
    with pytest.raises(ValueError, match="^endpoint.node_addr"):
        Endpoint("t", "n", "10.0.0.2/24", "02:42:0a:00:00:02", "node1")
    with pytest.raises(ValueError, match=r"^vip.ports\[0\].protocol"):
        ServiceVIP("s", "n", "10.0.0.9", (("sctp", 80),))
    with pytest.raises(ValueError, match=r"^vip.backends\[1\]"):
        ServiceVIP("s", "n", "10.0.0.9", (), ("10.0.0.2", "x"))
    with pytest.raises(ValueError, match="^port.mode"):
        PublishedPort("tcp", 80, 80, "n", mode="global")
    with pytest.raises(ValueError, match="^key.key"):
        EncryptionKey(1, b"short")
    assert Endpoint("t", "n", "10.0.0.2/24", "02:42:0A:00:00:02", "1.2.3.4").mac == "02:42:0a:00:00:02"
    assert mac_for_ip("10.0.0.2/24") == "02:42:0a:00:00:02"
    assert ServiceVIP("s", "n", "10.0.0.9/24", (), ("10.0.0.3", "10.0.0.2/24", "10.0.0.3")).backends == \
        ("10.0.0.2", "10.0.0.3")


def test_names_fit_the_kernel_and_differ_per_prefix():
    for prefix in ("shl", "a-very-long-prefix-for-a-test-run-12345"):
        for n in (names.gw_outer(prefix, "net"), names.tun(prefix), names.vxlan_tmp(prefix, "x"),
                  names.veth_host("net", "123", "eth0"), names.veth_tmp("net", "123", "eth0")):
            assert len(n) <= 15
    assert names.tag("a") != names.tag("b")
    assert names.gw_outer("a", "n").startswith(names.tag("a"))
    assert names.netns("shl", "abcdef0123456789xyz") == "shl-ov-abcdef012345"


# --- peers ---------------------------------------------------------------------------------
def _ep(ip, node, mac=None):
    return Endpoint("t", "n", f"{ip}/24", mac or mac_for_ip(ip), node)


def test_peer_diff_adds_removes_and_is_idempotent():
    want = peers.desired([_ep("10.0.0.2", "1.1.1.1"), _ep("10.0.0.3", "2.2.2.2"), _ep("10.0.0.4", "9.9.9.9")],
                         "n", local_node="9.9.9.9")
    assert set(want) == {"10.0.0.2", "10.0.0.3"}
    ip_lines, br_lines = peers.diff({}, want, "vxlan0")
    assert ip_lines == ["neigh replace 10.0.0.2 lladdr 02:42:0a:00:00:02 dev vxlan0 nud permanent",
                        "neigh replace 10.0.0.3 lladdr 02:42:0a:00:00:03 dev vxlan0 nud permanent"]
    assert "fdb append 02:42:0a:00:00:02 dev vxlan0 dst 1.1.1.1 self permanent" in br_lines
    assert "fdb replace 02:42:0a:00:00:02 dev vxlan0 master static" in br_lines
    assert peers.diff(want, want, "vxlan0") == ([], [])
    less = {k: v for k, v in want.items() if k == "10.0.0.3"}
    ip_lines, br_lines = peers.diff(want, less, "vxlan0")
    assert ip_lines == ["neigh del 10.0.0.2 dev vxlan0"]
    assert br_lines == ["fdb del 02:42:0a:00:00:02 dev vxlan0 dst 1.1.1.1 self",
                        "fdb del 02:42:0a:00:00:02 dev vxlan0 master"]


def test_peer_that_moves_node_is_reprogrammed():
    before = peers.desired([_ep("10.0.0.2", "1.1.1.1")], "n", "9.9.9.9")
    after = peers.desired([_ep("10.0.0.2", "2.2.2.2")], "n", "9.9.9.9")
    ip_lines, br_lines = peers.diff(before, after, "vxlan0")
    assert br_lines[0] == "fdb del 02:42:0a:00:00:02 dev vxlan0 dst 1.1.1.1 self"
    assert "fdb append 02:42:0a:00:00:02 dev vxlan0 dst 2.2.2.2 self permanent" in br_lines
    assert not any("master" in line and "del" in line for line in br_lines)   # the MAC stays known
    assert ip_lines[-1].startswith("neigh replace 10.0.0.2")


# --- nftables ------------------------------------------------------------------------------
def test_container_vip_ruleset():
    text = nftrules.container_vips("t", [
        ServiceVIP("a", "n", "10.0.0.100", (("tcp", 80), ("tcp", 443), ("udp", 53)), ("10.0.0.2", "10.0.0.3")),
        ServiceVIP("b", "n", "10.0.0.101", (), ("10.0.0.4",)),
        ServiceVIP("c", "n", "10.0.0.102", (("tcp", 80),), ()),
    ])
    assert text.startswith("add table ip t\ndelete table ip t\ntable ip t {")
    assert ("ip daddr 10.0.0.100 tcp dport { 80, 443 } dnat to numgen random mod 2 map "
            "{ 0 : 10.0.0.2, 1 : 10.0.0.3 }") in text
    assert "ip daddr 10.0.0.100 udp dport { 53 } dnat to numgen random mod 2" in text
    assert "ip daddr 10.0.0.101 dnat to 10.0.0.4\n" in text
    assert "ip daddr 10.0.0.102 tcp dport { 80 } meta l4proto tcp reject with tcp reset" in text


def test_namespace_and_underlay_rulesets():
    p = PublishedPort("tcp", 8080, 80, "ing", ("10.255.0.10", "10.255.0.11"))
    text = nftrules.network_namespace("t", "br0", "gw0", nftrules.NetnsNat(False, "10.255.0.2", (p,)))
    assert ('iifname "gw0" tcp dport 8080 dnat ip to numgen random mod 2 map '
            '{ 0 : 10.255.0.10 . 80, 1 : 10.255.0.11 . 80 }') in text
    assert 'oifname "br0" ct status dnat snat to 10.255.0.2' in text
    assert "masquerade" not in text          # no egress for an internal network
    u = nftrules.underlay("t", nftrules.UnderlayState("169.254.0.0/17", "sabcg*", (("tcp", 8080, "169.254.0.2"),),
                                                      (4097, 300), "sabcesp", 0x5E001234))
    assert "fib daddr type local tcp dport 8080 dnat to 169.254.0.2" in u
    assert "udp dport 4789 @th,96,24 { 300, 4097 } meta mark set 0x5e001234" in u
    assert 'iifname != "sabcesp" udp dport 4789 @th,96,24 { 300, 4097 } drop' in u
    assert "@th" not in nftrules.underlay("t", nftrules.UnderlayState("169.254.0.0/17", "sabcg*"))


# --- DNS -----------------------------------------------------------------------------------
def test_service_records_follow_swarm_rules():
    r = service_records([
        ServiceDNS("shop_web", vip="10.0.0.100", task_ips=("10.0.0.2", "10.0.0.3"), aliases=("Front",),
                   stack="shop"),
        ServiceDNS("db", endpoint_mode="dnsrr", vip="10.0.0.101", task_ips=("10.0.0.7",)),
        ServiceDNS("cache", aliases=("front",), vip="10.0.0.102", task_ips=("10.0.0.9",)),
    ])
    assert r["shop_web"] == r["web"] == ("10.0.0.100",)
    assert r["tasks.web"] == r["tasks.shop_web"] == ("10.0.0.2", "10.0.0.3")
    assert r["front"] == ("10.0.0.100", "10.0.0.102")      # an alias shared by two services answers both
    assert r["db"] == ("10.0.0.7",)                          # dnsrr ignores any VIP
    assert lookup("WEB.", [{}, r]) == ("10.0.0.100",)
    assert lookup("nothing", [r]) is None


def test_dns_codec_roundtrip_and_errors():
    q = dnsmsg.parse_query(dnsmsg.build_query("Tasks.Web", dnsmsg.TYPE_A, qid=7))
    assert (q.id, q.name, q.qtype, q.recursion_desired) == (7, "tasks.web", 1, True)
    rcode, addrs = dnsmsg.parse_a_answers(dnsmsg.response(q, ["10.0.0.2", "10.0.0.3"]))
    assert (rcode, addrs) == (0, ["10.0.0.2", "10.0.0.3"])
    assert dnsmsg.parse_a_answers(dnsmsg.response(q, [], rcode=3)) == (3, [])
    with pytest.raises(dnsmsg.DnsFormatError):
        dnsmsg.parse_query(b"\x00" * 5)
    with pytest.raises(dnsmsg.DnsFormatError):
        dnsmsg.parse_query(dnsmsg.build_query("x")[:-3])
    assert dnsmsg.error_response(b"\x12\x34" + b"\x01\x00" + b"\0" * 8, 2)[:4] == b"\x12\x34\x81\x82"


@given(st.binary(max_size=80))
@settings(max_examples=300, deadline=None)
def test_dns_server_never_crashes_on_garbage(data):
    s = DnsServer(upstreams=[])
    s.set_records("n", {"web": ("10.0.0.1",)})
    out = s.answer_local("n", "10.0.0.5", data)
    assert out is None or isinstance(out, bytes)


def test_dns_views_and_resolv_conf(tmp_path):
    s = DnsServer(upstreams=[])
    s.set_records("n1", {"web": ("10.0.1.100",)})
    s.set_records("n2", {"api": ("10.0.2.100",)})
    s.set_members("n1", {"10.0.1.5": ("n1",), "10.0.1.6": ("n1", "n2")})
    ask = lambda src, name: s.answer_local("n1", src, dnsmsg.build_query(name))  # noqa: E731
    assert dnsmsg.parse_a_answers(ask("10.0.1.5", "web"))[1] == ["10.0.1.100"]
    assert ask("10.0.1.5", "api") is None                       # not its network: relayed upstream
    assert dnsmsg.parse_a_answers(ask("10.0.1.6", "api"))[1] == ["10.0.2.100"]
    conf = tmp_path / "resolv.conf"
    conf.write_text("search x\nnameserver 192.0.2.53\nnameserver ::1\nnameserver 127.0.0.53\n")
    assert host_resolvers(str(conf)) == [("192.0.2.53", 53), ("127.0.0.53", 53)]


# --- ESP -----------------------------------------------------------------------------------
A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def _pair(keys_a, keys_b):
    ra, rb = esp.Keyring(A), esp.Keyring(B)
    ra.set_keys(keys_a)
    rb.set_keys(keys_b)
    return ra, rb


@given(st.binary(min_size=8, max_size=1600))
@settings(max_examples=50, deadline=None)
def test_esp_roundtrip_any_datagram(udp):
    ra, rb = _pair([(1, b"k" * 16)], [(1, b"k" * 16)])
    sealed = ra.seal(B, udp)
    assert rb.open(A, sealed) == udp
    assert udp[8:] == b"" or udp[8:] not in sealed or len(udp) < 16


def test_esp_format_replay_tamper_and_wrong_key():
    key = os.urandom(16)
    ra, rb = _pair([(3, key)], [(3, key)])
    udp = struct.pack("!HHHH", 40000, 4789, 20, 0) + b"hello secret"
    p1 = ra.seal(B, udp)
    spi, seq = struct.unpack("!II", p1[:8])
    assert spi >> 24 == 3 and seq == 1 and len(p1) == 8 + 8 + len(udp) + 2 + 2 + 16   # 2 bytes of padding to a multiple of 4
    assert len(p1) % 4 == 0 and b"secret" not in p1
    assert rb.open(A, p1) == udp
    with pytest.raises(esp.EspError, match="replayed"):
        rb.open(A, p1)
    p2 = bytearray(ra.seal(B, udp))
    p2[20] ^= 1
    with pytest.raises(esp.EspError, match="authentication"):
        rb.open(A, bytes(p2))
    p3 = ra.seal(B, udp)
    assert rb.open(A, p3) == udp                      # the tampered one did not advance anything
    with pytest.raises(esp.EspError, match="authentication"):
        rb.open(bytes([10, 0, 0, 9]), ra.seal(B, udp))  # keys are per direction and pair
    _, rc = _pair([(3, key)], [(4, key)])
    with pytest.raises(esp.EspError, match="unknown SPI"):
        rc.open(A, ra.seal(B, udp))
    ra.set_keys([])
    with pytest.raises(esp.EspError, match="no key"):
        ra.seal(B, udp)


def test_esp_rotation_new_primary_new_spi_and_old_key_accepted_until_dropped():
    k1, k2 = os.urandom(16), os.urandom(16)
    ra, rb = _pair([(1, k1)], [(1, k1)])
    old = ra.seal(B, b"x" * 20)
    assert rb.open(A, old)
    rb.set_keys([(1, k1), (2, k2)])
    ra.set_keys([(2, k2), (1, k1)])
    new = ra.seal(B, b"y" * 20)
    assert struct.unpack("!I", new[:4])[0] >> 24 == 2
    assert rb.open(A, new) == b"y" * 20
    ra.set_keys([(1, k1)])                          # back to an old primary: a fresh SPI, never seq reuse
    again = ra.seal(B, b"z" * 20)
    assert again[:4] != old[:4]
    assert rb.open(A, again) == b"z" * 20
    rb.set_keys([(2, k2)])
    with pytest.raises(esp.EspError):
        rb.open(A, ra.seal(B, b"w" * 20))


def test_ipv4_helpers():
    pkt = esp.ipv4_packet(A, B, 17, b"payload")
    assert esp.ipv4_split(pkt) == (A, B, 17, b"payload")
    s = sum(struct.unpack("!10H", pkt[:20]))
    assert (s & 0xFFFF) + (s >> 16) == 0xFFFF       # header checksum verifies
