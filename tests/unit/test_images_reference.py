import pytest
from hypothesis import given, strategies as st

from worker.images.reference import Reference, normalize_reference, parse_reference


@pytest.mark.parametrize("ref, expected", [
    ("busybox", "busybox:latest"),
    ("busybox:1.36", "busybox:1.36"),
    ("library/busybox", "library/busybox:latest"),
    ("localhost:5000/team/app", "localhost:5000/team/app:latest"),
    ("localhost:5000/team/app:v2", "localhost:5000/team/app:v2"),
    ("registry.example.com/a/b-c_d.e__f", "registry.example.com/a/b-c_d.e__f:latest"),
    ("busybox@sha256:" + "a" * 64, "busybox@sha256:" + "a" * 64),
    ("busybox:1@sha256:" + "b" * 64, "busybox:1@sha256:" + "b" * 64),
    ("a--b", "a--b:latest"),
])
def test_normalize_valid(ref, expected):
    assert normalize_reference(ref) == expected


@pytest.mark.parametrize("ref, reason", [
    ("", "empty"),
    ("  ", "empty"),
    (" busybox", "whitespace"),
    ("BusyBox", "lowercase"),
    ("busybox:", "invalid tag"),
    ("busybox:-x", "invalid tag"),
    ("busybox:" + "x" * 129, "invalid tag"),
    ("busy box", "invalid repository name"),
    ("-busybox", "invalid repository name"),
    ("busybox-", "invalid repository name"),
    ("a//b", "invalid repository name"),
    ("busybox@sha256:abc", "invalid digest"),
    ("busybox@md5:" + "a" * 32, "invalid digest"),
    ("a" * 64, "image id"),
    ("bad_host:x/app", "invalid registry host"),
    ("x/" * 130 + "a", "longer than"),
])
def test_normalize_invalid(ref, reason):
    with pytest.raises(ValueError) as exc:
        normalize_reference(ref)
    assert str(exc.value).startswith("reference: ")
    assert reason in str(exc.value)
    assert "\n" not in str(exc.value)


def test_parse_parts():
    assert parse_reference("localhost:5000/app:1.0") == Reference("localhost:5000/app", "1.0", None)
    assert parse_reference("app") == Reference("app", None, None)
    d = "sha256:" + "c" * 64
    assert parse_reference(f"app@{d}") == Reference("app", None, d)
    # A port is not a tag.
    assert parse_reference("host:5000/app").tag is None


_component = st.from_regex(r"[a-z0-9]{1,5}([._-][a-z0-9]{1,5}){0,2}", fullmatch=True)
# A first component with a dot would be read as a registry host, as Docker does.
_first = st.from_regex(r"[a-z0-9]{1,5}([_-][a-z0-9]{1,5}){0,2}", fullmatch=True)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(_first, st.lists(_component, max_size=2), st.one_of(st.none(), _tag))
def test_roundtrip(first, rest, tag):
    components = [first, *rest]
    ref = "/".join(components) + (f":{tag}" if tag else "")
    normalized = normalize_reference(ref)
    assert normalize_reference(normalized) == normalized
    parsed = parse_reference(normalized)
    assert parsed.name == "/".join(components)
    assert parsed.tag == (tag or "latest")
