import pytest

from api.units import parse_bytes, parse_cpus, parse_duration


def test_sizes():
    assert parse_bytes("64M", "f") == 64 << 20
    assert parse_bytes("1g", "f") == 1 << 30
    assert parse_bytes("512k", "f") == 512 << 10
    assert parse_bytes("1000", "f") == 1000
    with pytest.raises(ValueError, match="--limit-memory: invalid size 'lots'"):
        parse_bytes("lots", "--limit-memory")


def test_durations():
    assert parse_duration("10s", "f") == 10_000_000_000
    assert parse_duration("1m30s", "f") == 90_000_000_000
    assert parse_duration("500ms", "f") == 500_000_000
    assert parse_duration("0", "f") == 0
    for bad in ("", "10", "s", "1x", "10s junk"):
        with pytest.raises(ValueError, match="--restart-delay: invalid duration"):
            parse_duration(bad, "--restart-delay")


def test_cpus():
    assert parse_cpus("0.5", "f") == 500_000_000
    with pytest.raises(ValueError):
        parse_cpus("half", "--limit-cpu")
