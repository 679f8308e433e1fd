"""Disaster recovery (`shoald --force-new-cluster`): restart a cluster of one from a surviving
manager's state, as Swarm does. Everything this manager had committed is kept; the membership
becomes this manager alone."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import msgpack

from api.ids import timestamp
from manager.raft.core import PersistedState
from manager.raft.messages import ENTRY_CONF, ConfState, HardState, Snapshot
from manager.encryption.aead import Crypter
from manager.raft.storage.disk import DiskStorage
from manager.raft.storage.wal import PLAINTEXT
from manager.store import Action, Store, StoreError


def force_new_cluster(directory: Path, node_id: str, crypter: Crypter = PLAINTEXT) -> int:
    """Rewrite the Raft state in `directory` as a one-member cluster; returns the index kept.
    `crypter` opens the old state and seals the new one (the manager's data-encryption key)."""
    old = DiskStorage(str(directory), crypter=crypter)
    state = old.state
    store = Store()
    if state.snapshot.index:
        store.restore(msgpack.unpackb(state.snapshot.data, raw=False))
    index, term = state.snapshot.index, state.snapshot.term
    for entry in state.entries:
        if entry.index > state.hard_state.commit:
            break  # never committed: not part of the cluster's state
        index, term = entry.index, entry.term
        if entry.type == ENTRY_CONF or not entry.data:
            store.index = entry.index
            continue
        try:
            body = msgpack.unpackb(entry.data, raw=False)
            store.apply(entry.index, body["Time"], [Action.from_wire(a) for a in body["Actions"]])
        except (StoreError, ValueError, KeyError):
            store.index = entry.index
    old.close()
    snap = Snapshot(index, term, ConfState(voters=(node_id,)), msgpack.packb(store.snapshot(), use_bin_type=True))
    fresh = directory.with_name(directory.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    storage = DiskStorage(str(fresh), crypter=crypter)
    storage.bootstrap(PersistedState(HardState(term + 1, None, index), snap, []))
    storage.save_snapshot(snap)
    storage.close()
    backup = directory.with_name(f"{directory.name}.before-force-new-cluster-{int(time.time())}")
    directory.rename(backup)
    fresh.rename(directory)
    return index
