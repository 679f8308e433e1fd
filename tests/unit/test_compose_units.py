"""Durations, sizes, CPU counts and the short syntaxes of ports, volumes and tmpfs."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from cli.compose import syntax, units


@pytest.mark.parametrize("text, ns", [
    ("0", 0), ("10s", 10_000_000_000), ("1m30s", 90_000_000_000), ("500ms", 500_000_000),
    ("1h", 3_600_000_000_000), ("1.5s", 1_500_000_000), ("2h45m", 9_900_000_000_000),
    ("100us", 100_000), ("100µs", 100_000), ("7ns", 7), (".5s", 500_000_000), ("1m0.5s", 60_500_000_000),
])
def test_durations(text, ns):
    assert units.parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "10", "s", "10x", "-1s", "1 s", "1s2", "1d", "ten seconds"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        units.parse_duration(text)


@given(st.integers(0, 10_000), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_duration_components_add_up(h, m, s, ms):
    text = f"{h}h{m}m{s}s{ms}ms"
    assert units.parse_duration(text) == ((h * 60 + m) * 60 + s) * 1_000_000_000 + ms * 1_000_000


@pytest.mark.parametrize("value, size", [
    (1024, 1024), ("1024", 1024), ("512k", 512 << 10), ("512K", 512 << 10), ("64M", 64 << 20), ("64m", 64 << 20),
    ("1g", 1 << 30), ("1G", 1 << 30), ("1gb", 1 << 30), ("1GiB", 1 << 30), ("2t", 2 << 40), ("1p", 1 << 50),
    ("1.5g", 3 << 29), ("100b", 100), ("10 MB", 10 << 20),
])
def test_sizes(value, size):
    assert units.parse_size(value) == size


@pytest.mark.parametrize("value", ["", "abc", "1x", "-1", "1.g", "m", -5])
def test_bad_sizes(value):
    with pytest.raises(ValueError):
        units.parse_size(value)


@pytest.mark.parametrize("value, nano", [
    ("0.5", 500_000_000), (0.5, 500_000_000), (2, 2_000_000_000), ("1.000000001", 1_000_000_001), (0.1, 100_000_000),
    ("0", 0),
])
def test_cpus(value, nano):
    assert units.parse_cpus(value) == nano


@pytest.mark.parametrize("value", ["half", "-1", "0.0000000001", "nan", "inf"])
def test_bad_cpus(value):
    with pytest.raises(ValueError):
        units.parse_cpus(value)


@pytest.mark.parametrize("spec, expected", [
    ("80", [(80, None, "tcp", None)]),
    ("8080:80", [(80, 8080, "tcp", None)]),
    ("53:53/udp", [(53, 53, "udp", None)]),
    ("132/sctp", [(132, None, "sctp", None)]),
    ("3000-3002", [(3000, None, "tcp", None), (3001, None, "tcp", None), (3002, None, "tcp", None)]),
    ("9090-9091:8080-8081", [(8080, 9090, "tcp", None), (8081, 9091, "tcp", None)]),
    ("127.0.0.1:8001:8001", [(8001, 8001, "tcp", "127.0.0.1")]),
    ("127.0.0.1::5000", [(5000, None, "tcp", "127.0.0.1")]),
    ("[::1]:6000:6001/udp", [(6001, 6000, "udp", "::1")]),
    ("80/TCP", [(80, None, "tcp", None)]),
])
def test_port_short_syntax(spec, expected):
    assert [(m.target, m.published, m.protocol, m.host_ip) for m in syntax.parse_port(spec)] == expected


@pytest.mark.parametrize("spec", ["", "x", "0", "65536", "80:", "a:b:c:d", "80/ip", "81-80", "1-2:3", "[::1:80"])
def test_bad_ports(spec):
    with pytest.raises(ValueError):
        syntax.parse_port(spec)


@given(st.integers(1, 65535), st.integers(1, 65535), st.sampled_from(syntax.PROTOCOLS))
def test_port_round_trip(published, target, protocol):
    (mapping,) = syntax.parse_port(f"{published}:{target}/{protocol}")
    assert (mapping.published, mapping.target, mapping.protocol) == (published, target, protocol)


@pytest.mark.parametrize("spec, expected", [
    ("/data", ("volume", None, "/data", False)),
    ("vol:/data", ("volume", "vol", "/data", False)),
    ("vol:/data:ro", ("volume", "vol", "/data", True)),
    ("./rel:/data:rw", ("bind", "./rel", "/data", False)),
    ("/abs:/data:ro", ("bind", "/abs", "/data", True)),
    ("~/home:/data", ("bind", "~/home", "/data", False)),
    ("../up:/data:ro,rslave", ("bind", "../up", "/data", True)),
])
def test_volume_short_syntax(spec, expected):
    parsed = syntax.parse_volume(spec)
    assert (parsed.type, parsed.source, parsed.target, parsed.read_only) == expected


def test_volume_options():
    assert syntax.parse_volume("v:/d:nocopy").nocopy
    assert syntax.parse_volume("./a:/d:shared").propagation == "shared"
    assert syntax.parse_volume("./a:/d:delegated").consistency == "delegated"
    assert syntax.parse_volume("./a:/d:z").selinux == "z"
    for bad in ("", "a::b", "a:b:c:d", "./a:/d:nocopy", "v:/d:rshared", "v:/d:bogus"):
        with pytest.raises(ValueError):
            syntax.parse_volume(bad)


def test_tmpfs_short_syntax():
    spec = syntax.parse_tmpfs("/run:rw,size=64m,mode=1777,noexec", units.parse_size)
    assert (spec.target, spec.size, spec.mode, spec.read_only, spec.dropped) == ("/run", 64 << 20, 0o1777, False, ("noexec",))
    assert syntax.parse_tmpfs("/tmp", units.parse_size).size is None
    for bad in ("run", "/run:mode=999", "/run:weird", "/run:size=big"):
        with pytest.raises(ValueError):
            syntax.parse_tmpfs(bad, units.parse_size)
