"""Raft consensus for the managers: a pure core (`core`), its values (`messages`) and storage.

See `core` for the runner loop and its durability contract, and README.md beside this file.
"""
from .core import (NotLeader, PersistedState, ProposalDropped, RaftConfig, RaftCore, Ready, Role,
                   SoftState, initial_state)
from .messages import (ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState, Message,
                       MsgType, ReadState, Snapshot)

__all__ = [
    "ConfChange", "ConfChangeType", "ConfState", "Entry", "EntryType", "HardState", "Message",
    "MsgType", "NotLeader", "PersistedState", "ProposalDropped", "RaftConfig", "RaftCore", "Ready",
    "ReadState", "Role", "Snapshot", "SoftState", "initial_state",
]
