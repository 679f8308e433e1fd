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
