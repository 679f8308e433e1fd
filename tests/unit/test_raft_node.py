"""The asyncio runner around the Raft core, as a cluster of one on a real WAL."""
from __future__ import annotations

import asyncio

import pytest

from api.objects import Service, ServiceSpec
from manager.raft import node as node_mod
from manager.raft.node import NoLeader, RaftNode
from manager.store import Action, Conflict, Store


def test_writes_commit_apply_and_time_out(tmp_path, monkeypatch):
    monkeypatch.setattr(node_mod, "PROPOSE_TIMEOUT_S", 0.3)

    async def main():
        store = Store()
        raft = RaftNode("a", tmp_path / "raft", store)
        raft.open(bootstrap=True)
        raft.start()
        for _ in range(100):
            if raft.is_leader:
                break
            await asyncio.sleep(0.01)
        # concurrent writes share Readies; each is answered with its own result once applied
        results = await asyncio.gather(*(raft.propose([Action("create", "service", Service(
            id=f"s{i}", spec=ServiceSpec(name=f"n{i}")))]) for i in range(50)))
        assert [r[0].obj.id for r in results] == [f"s{i}" for i in range(50)]
        assert store.get("service", "s7").version.index == results[7][0].obj.version.index
        with pytest.raises(Conflict):  # refused by the store: the writer hears why
            await raft.propose([Action("create", "service", Service(id="s1", spec=ServiceSpec(name="x")))])
        # a write whose entry never commits fails after PROPOSE_TIMEOUT_S (the ticker checks)
        with pytest.raises(NoLeader, match="not committed in time"):
            await raft._wait(raft.core.term, raft.core.log.last_index() + 1000)
        assert not raft._waiters
        await raft.close()
        reopened = RaftNode("a", tmp_path / "raft", Store())
        reopened.open()
        assert reopened.core.log.last_index() >= 52
        reopened.storage.close()

    asyncio.run(main())
