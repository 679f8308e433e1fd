"""Raft values: log entries, hard state, configurations, snapshots and peer messages.

Everything a peer sends goes through `Message.from_wire`, which checks every field and
raises `ValueError("<field>: <reason>")` on malformed input. The runner drops such a
message; it never reaches the core, so a buggy or hostile peer cannot crash a node.

Wire form: plain dicts of ints, strs, bytes, bools and lists (msgpack-friendly). Fields
holding their default value are left out to keep heartbeats small.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import msgpack


class EntryType(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


# Plain ints for the hot path (comparisons against IntEnum members are slower).
ENTRY_NORMAL = 0
ENTRY_CONF = 1


class MsgType(enum.IntEnum):
    APP = 1
    APP_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAP = 9
    READ_INDEX = 10
    READ_INDEX_RESP = 11
    TIMEOUT_NOW = 12
    TRANSFER_LEADER = 13


class ConfChangeType(enum.IntEnum):
    ADD_VOTER = 0  # also promotes an existing learner
    ADD_LEARNER = 1
    REMOVE = 2


MAX_ID_LEN = 128
MAX_CONTEXT_LEN = 4096
_MAX_U64 = (1 << 64) - 1

# Vote requests carrying this context come from a leadership transfer (TimeoutNow): the
# receivers must not ignore them because they still hear from the old leader.
CAMPAIGN_TRANSFER = b"transfer"


@dataclass(slots=True)
class Entry:
    term: int
    index: int
    type: int = ENTRY_NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message of the same Ready is sent."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class ConfState:
    """Cluster membership; both tuples are sorted so iteration order is deterministic."""

    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()

    def is_member(self, node_id: str) -> bool:
        return node_id in self.voters or node_id in self.learners

    def to_wire(self) -> dict[str, Any]:
        return {"voters": list(self.voters), "learners": list(self.learners)}

    @staticmethod
    def from_wire(obj: Any, path: str = "conf_state") -> ConfState:
        d = _dict(obj, path)
        voters = _id_list(d.get("voters", []), f"{path}.voters")
        learners = _id_list(d.get("learners", []), f"{path}.learners")
        if set(voters) & set(learners):
            raise ValueError(f"{path}: a node is both voter and learner")
        return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ConfChangeType
    node_id: str
    context: bytes = b""  # opaque to raft (e.g. the new member's address)

    def encode(self) -> bytes:
        return msgpack.packb([int(self.type), self.node_id, self.context])

    @staticmethod
    def decode(data: bytes) -> ConfChange:
        try:
            obj = msgpack.unpackb(data)
        except Exception as exc:  # msgpack raises several unrelated types
            raise ValueError(f"conf_change: undecodable ({exc.__class__.__name__})") from None
        if not isinstance(obj, list) or len(obj) != 3:
            raise ValueError("conf_change: expected [type, node_id, context]")
        kind, node_id, context = obj
        if not isinstance(kind, int) or kind not in ConfChangeType._value2member_map_:
            raise ValueError(f"conf_change.type: unknown value {kind!r}")
        _check_id(node_id, "conf_change.node_id")
        if not isinstance(context, bytes):
            raise ValueError("conf_change.context: expected bytes")
        return ConfChange(ConfChangeType(kind), node_id, context)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """State machine image at `index` (whose entry had `term`) with the membership there."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = ConfState()
    data: bytes = b""

    def to_wire(self) -> dict[str, Any]:
        return {"index": self.index, "term": self.term, "conf_state": self.conf_state.to_wire(),
                "data": self.data}

    @staticmethod
    def from_wire(obj: Any, path: str = "snapshot") -> Snapshot:
        d = _dict(obj, path)
        index = _int(d, "index", path)
        term = _int(d, "term", path)
        if (index == 0) != (term == 0):
            raise ValueError(f"{path}.term: must be 0 exactly when index is 0")
        return Snapshot(index, term, ConfState.from_wire(d.get("conf_state", {}), f"{path}.conf_state"),
                        _bytes(d, "data", path, None))


@dataclass(frozen=True, slots=True)
class ReadState:
    """The state machine may answer read `context` once it has applied `index`."""

    index: int
    context: bytes


@dataclass(slots=True)
class Message:
    type: MsgType
    to: str
    frm: str
    term: int
    log_term: int = 0  # APP: term at `index`; APP_RESP reject: hint term; votes: last log term
    index: int = 0  # APP: index before `entries`; votes: last log index; resp: match/reject
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""

    def to_wire(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": int(self.type), "to": self.to, "from": self.frm, "term": self.term}
        if self.log_term:
            d["log_term"] = self.log_term
        if self.index:
            d["index"] = self.index
        if self.entries:
            d["entries"] = [[e.term, e.index, e.type, e.data] for e in self.entries]
        if self.commit:
            d["commit"] = self.commit
        if self.reject:
            d["reject"] = True
        if self.reject_hint:
            d["reject_hint"] = self.reject_hint
        if self.snapshot is not None:
            d["snapshot"] = self.snapshot.to_wire()
        if self.context:
            d["context"] = self.context
        return d

    @staticmethod
    def from_wire(obj: Any) -> Message:
        d = _dict(obj, "message")
        raw_type = d.get("type")
        if not isinstance(raw_type, int) or isinstance(raw_type, bool) \
                or raw_type not in MsgType._value2member_map_:
            raise ValueError(f"type: unknown message type {raw_type!r}")
        mtype = MsgType(raw_type)
        to = d.get("to")
        _check_id(to, "to")
        frm = d.get("from")
        _check_id(frm, "from")
        term = _int(d, "term", "", required=True)
        log_term = _int(d, "log_term", "")
        index = _int(d, "index", "")
        commit = _int(d, "commit", "")
        reject_hint = _int(d, "reject_hint", "")
        reject = d.get("reject", False)
        if not isinstance(reject, bool):
            raise ValueError("reject: expected a bool")
        context = _bytes(d, "context", "", MAX_CONTEXT_LEN)
        entries = _entries(d.get("entries", []), mtype, term, index, log_term)
        snapshot = None
        if "snapshot" in d:
            if mtype != MsgType.SNAP:
                raise ValueError("snapshot: only allowed in a SNAP message")
            snapshot = Snapshot.from_wire(d["snapshot"])
            if snapshot.term > term:
                raise ValueError("snapshot.term: greater than the message term")
        elif mtype == MsgType.SNAP:
            raise ValueError("snapshot: required in a SNAP message")
        if mtype == MsgType.TRANSFER_LEADER:
            try:
                _check_id(context.decode(), "context")
            except UnicodeDecodeError:
                raise ValueError("context: transfer target is not UTF-8") from None
        return Message(mtype, to, frm, term, log_term, index, entries, commit, reject, reject_hint,
                       snapshot, context)


def _dict(obj: Any, path: str) -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a map, got {type(obj).__name__}")
    return obj


def _int(d: dict, key: str, path: str, required: bool = False) -> int:
    name = f"{path}.{key}" if path else key
    if key not in d:
        if required:
            raise ValueError(f"{name}: missing")
        return 0
    v = d[key]
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"{name}: expected an integer, got {type(v).__name__}")
    if v < 0 or v > _MAX_U64:
        raise ValueError(f"{name}: out of range")
    return v


def _bytes(d: dict, key: str, path: str, limit: int | None) -> bytes:
    name = f"{path}.{key}" if path else key
    v = d.get(key, b"")
    if not isinstance(v, bytes):
        raise ValueError(f"{name}: expected bytes, got {type(v).__name__}")
    if limit is not None and len(v) > limit:
        raise ValueError(f"{name}: longer than {limit} bytes")
    return v


def _check_id(v: Any, name: str) -> None:
    if not isinstance(v, str) or not v:
        raise ValueError(f"{name}: expected a non-empty node id string")
    if len(v) > MAX_ID_LEN:
        raise ValueError(f"{name}: node id longer than {MAX_ID_LEN}")


def _id_list(v: Any, name: str) -> list[str]:
    if not isinstance(v, list):
        raise ValueError(f"{name}: expected a list")
    for i, x in enumerate(v):
        _check_id(x, f"{name}[{i}]")
    if len(set(v)) != len(v):
        raise ValueError(f"{name}: duplicate node id")
    return v


def _entries(v: Any, mtype: MsgType, term: int, index: int, log_term: int) -> list[Entry]:
    if not isinstance(v, list):
        raise ValueError("entries: expected a list")
    if not v:
        return []
    if mtype != MsgType.APP:
        raise ValueError("entries: only allowed in an APP message")
    out: list[Entry] = []
    prev_term = log_term
    expect = index + 1
    for i, e in enumerate(v):
        if not isinstance(e, list) or len(e) != 4:
            raise ValueError(f"entries[{i}]: expected [term, index, type, data]")
        et, ei, ek, data = e
        if not isinstance(et, int) or isinstance(et, bool) or not (prev_term <= et <= term):
            raise ValueError(f"entries[{i}].term: must be an int between the previous term and the message term")
        if not isinstance(ei, int) or isinstance(ei, bool) or ei != expect:
            raise ValueError(f"entries[{i}].index: expected {expect}")
        if not isinstance(ek, int) or isinstance(ek, bool) or ek not in EntryType._value2member_map_:
            raise ValueError(f"entries[{i}].type: unknown entry type {ek!r}")
        if not isinstance(data, bytes):
            raise ValueError(f"entries[{i}].data: expected bytes")
        out.append(Entry(et, ei, ek, data))
        prev_term = et
        expect += 1
    return out
