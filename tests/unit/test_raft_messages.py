"""Raft wire messages: round trips and validation of whatever a peer may send."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manager.raft.messages import (ConfChange, ConfChangeType, ConfState, Entry, Message, MsgType,
                                   Snapshot)


def sample_messages() -> list[Message]:
    snap = Snapshot(7, 2, ConfState(("a", "b"), ("c",)), b"img")
    return [
        Message(MsgType.APP, "b", "a", 3, log_term=2, index=4,
                entries=[Entry(2, 5, 0, b"x"), Entry(3, 6, 1, b"y")], commit=4),
        Message(MsgType.APP_RESP, "a", "b", 3, index=4, reject=True, reject_hint=2, log_term=1),
        Message(MsgType.VOTE, "b", "a", 3, log_term=2, index=6, context=b"transfer"),
        Message(MsgType.PRE_VOTE_RESP, "a", "b", 4),
        Message(MsgType.HEARTBEAT, "b", "a", 3, commit=6, context=b"r1"),
        Message(MsgType.SNAP, "b", "a", 3, snapshot=snap),
        Message(MsgType.READ_INDEX_RESP, "b", "a", 3, index=6, context=b"r1"),
        Message(MsgType.TRANSFER_LEADER, "a", "b", 3, context=b"c"),
    ]


@pytest.mark.parametrize("m", sample_messages(), ids=lambda m: m.type.name)
def test_round_trip_through_msgpack(m):
    back = Message.from_wire(msgpack.unpackb(msgpack.packb(m.to_wire())))
    assert back == m


def test_heartbeat_wire_form_is_small():
    d = Message(MsgType.HEARTBEAT, "b", "a", 3).to_wire()
    assert set(d) == {"type", "to", "from", "term"}


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("from"), "from"),
    (lambda d: d.update(to=""), "to"),
    (lambda d: d.update(term="3"), "term"),
    (lambda d: d.update(term=-1), "term"),
    (lambda d: d.update(term=True), "term"),
    (lambda d: d.update(type=42), "type"),
    (lambda d: d.update(commit=1 << 70), "commit"),
    (lambda d: d.update(reject=1), "reject"),
    (lambda d: d.update(context="text"), "context"),
    (lambda d: d.update(entries="x"), "entries"),
    (lambda d: d.update(entries=[[3, 5, 0]]), "entries[0]"),
    (lambda d: d.update(entries=[[3, 9, 0, b""]]), "entries[0].index"),
    (lambda d: d.update(entries=[[9, 5, 0, b""]]), "entries[0].term"),
    (lambda d: d.update(entries=[[3, 5, 7, b""]]), "entries[0].type"),
    (lambda d: d.update(entries=[[3, 5, 0, "s"]]), "entries[0].data"),
    (lambda d: d.update(snapshot={"index": 1, "term": 1}), "snapshot"),
])
def test_malformed_app_names_the_field(mutate, field):
    d = sample_messages()[0].to_wire()
    mutate(d)
    with pytest.raises(ValueError) as ei:
        Message.from_wire(d)
    assert str(ei.value).startswith(field)


def test_snapshot_message_validation():
    good = sample_messages()[5].to_wire()
    for mutate, field in [
        (lambda d: d.pop("snapshot"), "snapshot"),
        (lambda d: d["snapshot"].update(term=9), "snapshot.term"),
        (lambda d: d["snapshot"]["conf_state"].update(voters=["a", "a"]), "snapshot.conf_state.voters"),
        (lambda d: d["snapshot"]["conf_state"].update(learners=["a"]), "snapshot.conf_state"),
        (lambda d: d["snapshot"].update(data=5), "snapshot.data"),
    ]:
        d = msgpack.unpackb(msgpack.packb(good))
        mutate(d)
        with pytest.raises(ValueError) as ei:
            Message.from_wire(d)
        assert str(ei.value).startswith(field), str(ei.value)


def test_entries_only_in_app_and_not_a_map():
    d = sample_messages()[1].to_wire()
    d["entries"] = [[1, 5, 0, b""]]
    with pytest.raises(ValueError, match="^entries: only allowed"):
        Message.from_wire(d)
    with pytest.raises(ValueError, match="^message: expected a map"):
        Message.from_wire([1, 2])


def test_conf_change_codec():
    cc = ConfChange(ConfChangeType.ADD_LEARNER, "n4", b"10.0.0.4:2377")
    assert ConfChange.decode(cc.encode()) == cc
    with pytest.raises(ValueError, match="^conf_change.type"):
        ConfChange.decode(msgpack.packb([9, "n4", b""]))
    with pytest.raises(ValueError, match="^conf_change.node_id"):
        ConfChange.decode(msgpack.packb([0, "", b""]))
    with pytest.raises(ValueError, match="^conf_change"):
        ConfChange.decode(b"\xc1")


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 1 << 65), st.text(max_size=4),
                  st.binary(max_size=4))
_value = st.recursive(_leaf, lambda c: st.one_of(st.lists(c, max_size=4),
                                                  st.dictionaries(st.text(max_size=8), c, max_size=4)),
                      max_leaves=12)
_keys = st.sampled_from(["type", "to", "from", "term", "log_term", "index", "entries", "commit", "reject",
                         "reject_hint", "snapshot", "context"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_keys, _value, max_size=12), st.integers(1, 13))
def test_garbage_only_ever_raises_value_error(d, mtype):
    d.setdefault("type", mtype)
    try:
        m = Message.from_wire(d)
    except ValueError:
        return
    assert isinstance(m, Message)
    assert Message.from_wire(m.to_wire()) == m
