import pytest

from api.objects import Service, ServiceSpec, Task, TaskStatus
from manager.store import Action, Conflict, NotFound, Store


def svc(name="web", sid="s1"):
    return Service(id=sid, spec=ServiceSpec(name=name))


def test_create_sets_version_to_log_index():
    st = Store()
    st.apply(1, "2026-01-01T00:00:00.000000000Z", [Action("create", "service", svc())])
    assert st.get("service", "s1").version.index == 1
    assert st.index == 1


def test_entry_applies_whole_or_not_at_all():
    st = Store()
    st.apply(1, "t", [Action("create", "service", svc())])
    with pytest.raises(Conflict, match="name: a service named 'web' already exists"):
        st.apply(2, "t", [Action("create", "service", svc("other", "s2")), Action("create", "service", svc("web", "s3"))])
    assert st.get("service", "s2") is None


def test_stale_update_is_refused():
    st = Store()
    st.apply(1, "t", [Action("create", "service", svc())])
    first = st.get("service", "s1")
    import copy
    a, b = copy.deepcopy(first), copy.deepcopy(first)
    st.apply(2, "t", [Action("update", "service", a)])
    with pytest.raises(Conflict, match="version: update out of sequence"):
        st.apply(3, "t", [Action("update", "service", b)])


def test_delete_missing():
    with pytest.raises(NotFound):
        Store().apply(1, "t", [Action("delete", "service", None, "nope")])


def test_task_status_only_moves_forward():
    st = Store()
    st.apply(1, "t", [Action("create", "task", Task(id="t1"))])
    st.apply(2, "t", [Action("task_status", "task", TaskStatus(state="running"), "t1")])
    st.apply(3, "t", [Action("task_status", "task", TaskStatus(state="preparing"), "t1")])
    assert st.get("task", "t1").status.state == "running"
    st.apply(4, "t", [Action("task_desired", "task", "shutdown", "t1")])
    st.apply(5, "t", [Action("task_desired", "task", "running", "t1")])
    assert st.get("task", "t1").desired_state == "shutdown"


def test_wire_round_trip_and_snapshot():
    st = Store()
    actions = [Action("create", "service", svc()), Action("create", "task", Task(id="t1", service_id="s1"))]
    st.apply(1, "t", [Action.from_wire(a.to_wire()) for a in actions])
    copy_ = Store()
    copy_.restore(st.snapshot())
    assert copy_.get("task", "t1") == st.get("task", "t1")
    assert copy_.index == 1


def test_bad_action_from_peer_is_named():
    from api.codec import DecodeError
    with pytest.raises(DecodeError, match="action.Op"):
        Action.from_wire({"Op": "explode", "Kind": "task"})
    with pytest.raises(DecodeError, match="action.Object.Spec.Name: must be a string"):
        Action.from_wire({"Op": "create", "Kind": "service", "Object": {"ID": "x", "Spec": {"Name": 3}}})


def test_owned_objects_are_kept_others_copied():
    st = Store()
    mine, theirs = svc("a", "s1"), svc("b", "s2")
    st.apply(1, "t", [Action("create", "service", mine)], owned=True)
    st.apply(2, "t", [Action("create", "service", theirs)])
    assert st.get("service", "s1") is mine
    assert st.get("service", "s2") is not theirs and st.get("service", "s2").spec == theirs.spec
    theirs.spec.name = "changed"  # the caller's object stays the caller's
    assert st.get("service", "s2").spec.name == "b"


def test_task_operations_leave_the_stored_version_untouched():
    st = Store()
    st.apply(1, "t", [Action("create", "task", Task(id="t1", labels={"k": "v"}))])
    before = st.get("task", "t1")
    st.apply(2, "t2", [Action("task_status", "task", TaskStatus(state="running"), "t1")])
    st.apply(3, "t3", [Action("task_desired", "task", "shutdown", "t1")])
    after = st.get("task", "t1")
    assert after is not before
    assert (before.version.index, before.status.state, before.desired_state, before.updated_at) == (1, "new", "running", "t")
    assert (after.version.index, after.status.state, after.desired_state) == (3, "running", "shutdown")
    assert after.labels == {"k": "v"}
