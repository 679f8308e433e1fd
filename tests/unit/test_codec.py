import pytest

from api import codec
from api.objects import ServiceSpec, Task, TaskStatus


def test_wire_names_follow_docker():
    assert codec.wire_name("node_id") == "NodeID"
    assert codec.wire_name("nano_cpus") == "NanoCPUs"
    assert codec.wire_name("global_") == "Global"
    assert codec.wire_name("task_template") == "TaskTemplate"


def test_round_trip_service_spec():
    data = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": ["sleep", "1"],
            "Env": ["A=1"]}, "Resources": {"Limits": {"MemoryBytes": 67108864}}},
            "Mode": {"Replicated": {"Replicas": 3}}}
    spec = codec.decode(ServiceSpec, data)
    assert spec.mode.replicated.replicas == 3
    assert spec.task_template.resources.limits.memory_bytes == 64 << 20
    assert codec.encode(spec) == data


def test_unknown_field_is_named():
    with pytest.raises(codec.DecodeError, match=r"TaskTemplate.ContainerSpec.Imgae: unknown field"):
        codec.decode(ServiceSpec, {"TaskTemplate": {"ContainerSpec": {"Imgae": "x"}}})


def test_wrong_type_is_named():
    with pytest.raises(codec.DecodeError, match=r'Mode.Replicated.Replicas: must be an integer, got "three"'):
        codec.decode(ServiceSpec, {"Mode": {"Replicated": {"Replicas": "three"}}})
    with pytest.raises(codec.DecodeError, match=r"Replicas: must be an integer, got a boolean"):
        codec.decode(ServiceSpec, {"Mode": {"Replicated": {"Replicas": True}}})


def test_list_items_are_named():
    with pytest.raises(codec.DecodeError, match=r"TaskTemplate.ContainerSpec.Env\[1\]: must be a string"):
        codec.decode(ServiceSpec, {"TaskTemplate": {"ContainerSpec": {"Env": ["A=1", 3]}}})


def test_task_defaults():
    t = codec.decode(Task, {"ID": "x", "Status": {"State": "running"}})
    assert t.status == TaskStatus(state="running")
    assert t.desired_state == "running"


def _reference_encode(obj):
    """The plain rule `encode` implements with per-class encoders."""
    import dataclasses
    if dataclasses.is_dataclass(obj):
        out = {}
        for name, wire, _ in codec._fields(type(obj)):
            value = getattr(obj, name)
            if value is None or (isinstance(value, (list, dict, str)) and not value):
                continue
            if (value is False or (type(value) in (int, float) and value == 0)) \
                    and codec._default(type(obj), name) == value:
                continue
            out[wire] = _reference_encode(value)
        return out
    if isinstance(obj, list):
        return [_reference_encode(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _reference_encode(v) for k, v in obj.items()}
    return obj


def test_compiled_codec_matches_the_reference_rules():
    """Per-type encoders and decoders (built for speed) against the plain recursive rules, on
    random objects of every stored kind and random corruptions of their wire form: same
    values, same errors naming the same field."""
    import copy
    import dataclasses
    import random
    import types
    import typing

    from api.objects import KINDS

    rnd = random.Random(7)
    junk = [None, 0, 1, 2.5, 0.0, True, False, "", "x", [], ["a"], [1], {}, {"a": "b"}, {"a": 1}, b"b"]

    def value(tp, depth):
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
            return None if rnd.random() < 0.3 else value(inner, depth)
        if origin is list:
            return [value(typing.get_args(tp)[0], depth + 1) for _ in range(rnd.randrange(3))]
        if origin is dict:
            return {f"k{i}": value(typing.get_args(tp)[1], depth + 1) for i in range(rnd.randrange(3))}
        if dataclasses.is_dataclass(tp):
            return filled(tp, depth + 1) if depth < 5 else tp()
        return {str: lambda: rnd.choice(["", "v"]), int: lambda: rnd.choice([0, 5]), float: lambda: rnd.choice([0.0, 1.5]),
                bool: lambda: rnd.choice([True, False]), bytes: lambda: b"x"}.get(tp, lambda: rnd.choice(["a", 1, None]))()

    def filled(tp, depth=0):
        return tp(**{name: value(ft, depth) for name, _, ft in codec._fields(tp) if rnd.random() < 0.7})

    def mutate(d):
        if isinstance(d, dict) and d:
            k = rnd.choice(list(d))
            if isinstance(d[k], (dict, list)) and d[k] and rnd.random() < 0.5:
                mutate(d[k])
            elif rnd.random() < 0.8:
                d[k] = copy.deepcopy(rnd.choice(junk))
            else:
                d["Bogus" + k] = 1
        elif isinstance(d, list) and d:
            d[rnd.randrange(len(d))] = copy.deepcopy(rnd.choice(junk))

    def outcome(f):
        try:
            return "ok", f()
        except codec.DecodeError as exc:
            return "error", str(exc)

    for tp in list(KINDS.values()) + [ServiceSpec, TaskStatus]:
        for _ in range(60):
            obj = filled(tp)
            wire = codec.encode(obj)
            assert wire == _reference_encode(obj)
            assert codec.decode(tp, wire) == codec._decode(tp, wire, "")
            for _ in range(3):
                bad = copy.deepcopy(wire)
                mutate(bad)
                assert outcome(lambda: codec.decode(tp, bad)) == outcome(lambda: codec._decode(tp, bad, ""))
