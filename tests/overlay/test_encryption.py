"""Encrypted networks: VXLAN between nodes travels as ESP (AES-GCM), the underlay never sees the
payload, keys rotate by SPI without loss, and without a key nothing is sent in the clear."""
from __future__ import annotations

import os
import struct

import pytest

from overlay.model import Endpoint, EncryptionKey, NetworkSpec
from tests.overlay.fabric import Capture

pytestmark = pytest.mark.root

SECRET = NetworkSpec("encnet1aaaaaaaa", "secret", 4501, "10.240.0.0/24", "10.240.0.1", encrypted=True)
PLAIN = NetworkSpec("plnnet1aaaaaaaa", "plain", 4502, "10.241.0.0/24", "10.241.0.1")
K1 = EncryptionKey(1, os.urandom(16))
K2 = EncryptionKey(2, os.urandom(16))
TEXT = "TOP-SECRET-PAYLOAD-0123456789"


def _setup(f, spec, keys):
    a, b = f.nodes
    eps, cs = [], []
    for node, ip in ((a, "2"), (b, "3")):
        node.net.ensure_network(spec)
        if keys is not None:
            node.net.set_encryption_keys(keys)
        c = f.container()
        addr = spec.subnet.replace("0/24", ip) + "/24"
        mac = node.net.attach(spec.id, c.pid, "eth0", addr, default_route=True)
        eps.append(Endpoint(f"t{ip}", spec.id, addr, mac, node.addr))
        cs.append(c)
    for node in (a, b):
        node.net.set_remote_endpoints(spec.id, eps)
    return cs


def _esp(frames):
    """(SPI, packet) for each ESP packet on the underlay."""
    out = []
    for fr in frames:
        got = Capture.ipv4(fr)
        if got and got[0] == 50:
            out.append((struct.unpack("!I", got[1][:4])[0], fr))
    return out


def test_encrypted_network_shows_only_esp_on_the_underlay(fabric):
    f = fabric(2)
    c1, c2 = _setup(f, SECRET, [K1])
    c2.serve_name("c2", 8000)
    cap = f.capture()
    assert c1.probe("ping", "10.240.0.3", "2").returncode == 0
    assert c1.probe("connect", "10.240.0.3", "8000", "3", TEXT).stdout.strip() == f"c2|{TEXT}"
    assert f.nodes[0].net.mtu(SECRET.id) == 1500 - 50 - 40
    big = str(f.nodes[0].net.mtu(SECRET.id) - 28)       # a full-size packet still passes unfragmented
    assert c1.probe("ping", "10.240.0.3", "1", "2", big).returncode == 0
    frames = cap.stop()
    esp = _esp(frames)
    assert len(esp) >= 8, "no ESP on the underlay"
    assert {spi >> 24 for spi, _ in esp} == {K1.key_id}
    assert not any(cap.vxlan_inner(fr) for fr in frames), "plaintext VXLAN seen"
    assert not any(TEXT.encode() in fr or b"c2\n" in fr for fr in frames), "payload visible on the underlay"


def test_key_rotation_changes_the_spi_without_loss_and_no_key_means_no_traffic(fabric):
    f = fabric(2)
    a, b = f.nodes
    c1, c2 = _setup(f, SECRET, [K1])
    c2.serve_name("c2", 8000)
    assert c1.probe("ping", "10.240.0.3").returncode == 0
    # Rotation as the managers do it: add K2 everywhere, then make it primary, then drop K1.
    for keys in ([K1, K2], [K2, K1], [K2]):
        for node in (a, b):
            node.net.set_encryption_keys(keys)
        cap = f.capture()
        assert c1.probe("connect", "10.240.0.3", "8000", "3", TEXT).stdout.strip() == f"c2|{TEXT}"
        assert {spi >> 24 for spi, _ in _esp(cap.stop())} == {keys[0].key_id}
    # A node without the key neither sends in the clear nor accepts the other's packets.
    a.net.set_encryption_keys([])
    cap = f.capture()
    assert c1.probe("ping", "10.240.0.3", "1", "1", check=False).returncode != 0
    assert c2.probe("ping", "10.240.0.2", "1", "1", check=False).returncode != 0
    frames = cap.stop()
    assert not any(cap.vxlan_inner(fr) for fr in frames), "plaintext VXLAN seen without a key"


def test_plain_and_encrypted_networks_side_by_side(fabric):
    f = fabric(2)
    s1, _ = _setup(f, SECRET, [K1])
    p1, _ = _setup(f, PLAIN, None)
    cap = f.capture()
    assert s1.probe("ping", "10.240.0.3").returncode == 0
    assert p1.probe("ping", "10.241.0.3").returncode == 0
    frames = cap.stop()
    vnis = {struct.unpack("!I", b"\0" + fr[14 + 20 + 8 + 4:14 + 20 + 8 + 7])[0] for fr in frames
            if cap.vxlan_inner(fr) is not None}
    assert vnis == {PLAIN.vni}
    assert _esp(frames)
