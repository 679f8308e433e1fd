import asyncio

from api.objects import Service, ServiceSpec
from manager.statelog import LocalLog
from manager.store import Action, Store


def run(coro):
    return asyncio.run(coro)


def test_log_replays_after_restart_and_truncates_torn_tail(tmp_path):
    async def write():
        log = LocalLog(Store(), tmp_path)
        log.load()
        log.start()
        for i in range(5):
            await log.propose([Action("create", "service", Service(id=f"s{i}", spec=ServiceSpec(name=f"n{i}")))])
        await log.close()
    run(write())
    wal = tmp_path / "wal.log"
    size = wal.stat().st_size
    with open(wal, "ab") as f:
        f.write(b"\x00\x00\x01\x00garbage")  # a torn record
    store = Store()
    log = LocalLog(store, tmp_path)
    log.load()
    assert sorted(s.spec.name for s in store.list("service")) == [f"n{i}" for i in range(5)]
    assert store.index == 5
    assert wal.stat().st_size == size
    run(log.close())


def test_refused_entry_is_refused_again_on_replay(tmp_path):
    async def write():
        log = LocalLog(Store(), tmp_path)
        log.load()
        log.start()
        await log.propose([Action("create", "service", Service(id="a", spec=ServiceSpec(name="x")))])
        try:
            await log.propose([Action("create", "service", Service(id="b", spec=ServiceSpec(name="x")))])
        except Exception:
            pass
        await log.propose([Action("create", "service", Service(id="c", spec=ServiceSpec(name="y")))])
        await log.close()
    run(write())
    store = Store()
    LocalLog(store, tmp_path).load()
    assert sorted(s.id for s in store.list("service")) == ["a", "c"]
    assert store.index == 3


def test_snapshot_compacts_log(tmp_path):
    async def write():
        log = LocalLog(Store(), tmp_path)
        log.SNAPSHOT_EVERY = 3
        log.load()
        log.start()
        for i in range(7):
            await log.propose([Action("create", "service", Service(id=f"s{i}", spec=ServiceSpec(name=f"n{i}")))])
        await log.close()
    run(write())
    assert (tmp_path / "snapshot.msgpack").exists()
    store = Store()
    LocalLog(store, tmp_path).load()
    assert len(store.list("service")) == 7 and store.index == 7
