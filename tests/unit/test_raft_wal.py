"""The Raft WAL and disk storage: torn writes, bit flips, restarts, compaction."""
from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manager.raft.core import PersistedState, RaftConfig, RaftCore, Role, initial_state
from manager.raft.messages import ConfState, Entry, HardState, Snapshot
from manager.raft.storage.disk import DiskStorage
from manager.raft.storage.memory import MemoryStorage, StorageError
from manager.raft.storage.wal import WAL


def ents(first: int, n: int, term: int = 1, size: int = 10) -> list[Entry]:
    return [Entry(term, i, 0, bytes([i % 256]) * size) for i in range(first, first + n)]


def seg_paths(d: str) -> list[str]:
    return sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(".wal"))


def test_roundtrip_and_reopen(tmp_path):
    d = str(tmp_path / "wal")
    wal, recs, rep = WAL.open(d)
    assert rep.truncated_bytes == 0
    wal.append(HardState(1, "a", 0), ents(1, 3))
    wal.append(HardState(1, "a", 3), [])
    wal.append(None, ents(3, 2, term=2))  # replaces entry 3
    wal.close()
    wal, recs, rep = WAL.open(d)
    wal.close()
    # header + three batches
    assert len(recs) == 4 and rep.truncated_bytes == 0
    assert recs[1].entries == ents(1, 3) and recs[2].hard_state == HardState(1, "a", 3)
    assert [e.term for e in recs[3].entries] == [2, 2]


def test_torn_tail_is_truncated_at_every_cut_point(tmp_path):
    base = tmp_path / "ref"
    wal, _, _ = WAL.open(str(base))
    wal.append(HardState(1, None, 0), ents(1, 2))
    good_size = os.path.getsize(seg_paths(str(base))[0])
    wal.append(HardState(2, "b", 2), ents(3, 2, term=2))
    wal.close()
    seg = seg_paths(str(base))[0]
    full = open(seg, "rb").read()
    for cut in range(good_size, len(full)):
        d = tmp_path / f"cut{cut}"
        os.makedirs(d)
        with open(d / os.path.basename(seg), "wb") as f:
            f.write(full[:cut])
        wal, recs, rep = WAL.open(str(d))
        assert rep.truncated_bytes == cut - good_size
        assert [r.entries for r in recs if r.entries] == [ents(1, 2)]
        assert os.path.getsize(d / os.path.basename(seg)) == good_size
        # the log keeps working after the repair
        wal.append(HardState(3, None, 0), ents(3, 1, term=3))
        wal.close()
        _, recs, rep = WAL.open(str(d))
        assert rep.truncated_bytes == 0 and recs[-1].entries == ents(3, 1, term=3)


def test_bit_flip_in_tail_record_is_detected(tmp_path):
    d = str(tmp_path)
    wal, _, _ = WAL.open(d)
    wal.append(HardState(1, None, 0), ents(1, 2))
    good = os.path.getsize(seg_paths(d)[0])
    wal.append(HardState(1, None, 2), ents(3, 2))
    wal.close()
    seg = seg_paths(d)[0]
    size = os.path.getsize(seg)
    rng = random.Random(1)
    for _ in range(20):
        data = bytearray(open(seg, "rb").read())
        pos = rng.randrange(good, size)
        data[pos] ^= 1 << rng.randrange(8)
        sub = tmp_path / f"flip{pos}"
        os.makedirs(sub, exist_ok=True)
        with open(sub / os.path.basename(seg), "wb") as f:
            f.write(data)
        _, recs, rep = WAL.open(str(sub))
        assert rep.truncated_bytes == size - good, rep.reason
        assert all(e.index <= 2 for r in recs for e in r.entries)


def test_corruption_mid_log_drops_everything_after_it(tmp_path):
    d = str(tmp_path)
    wal, _, _ = WAL.open(d, segment_bytes=1024)
    for i in range(1, 60):
        wal.append(HardState(1, None, i - 1), ents(i, 1, size=50))
    wal.close()
    segs = seg_paths(d)
    assert len(segs) >= 3
    data = bytearray(open(segs[1], "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(segs[1], "wb").write(bytes(data))
    wal, recs, rep = WAL.open(d)
    wal.close()
    assert rep.truncated_bytes > 0 and rep.removed_segments
    assert len(seg_paths(d)) == 2
    idx = [e.index for r in recs for e in r.entries]
    assert idx == list(range(1, len(idx) + 1)) and len(idx) < 59


def test_zero_filled_tail(tmp_path):
    d = str(tmp_path)
    wal, _, _ = WAL.open(d)
    wal.append(HardState(1, None, 0), ents(1, 1))
    wal.close()
    with open(seg_paths(d)[0], "ab") as f:
        f.write(b"\0" * 4096)  # preallocated space never written
    _, recs, rep = WAL.open(d)
    assert rep.truncated_bytes == 4096 and recs[-1].entries == ents(1, 1)


def test_segments_released_after_snapshot_and_reopen(tmp_path):
    d = str(tmp_path)
    st = DiskStorage(d, segment_bytes=2048)
    st.save(*_init(["a"]))
    for i in range(2, 200):
        st.save(HardState(1, None, i), ents(i, 1, size=40))
    before = st.wal.segment_count()
    assert before > 4
    snap = Snapshot(150, 1, ConfState(("a",)), b"state@150")
    st.save_snapshot(snap)
    assert st.wal.segment_count() < before
    st.close()
    st2 = DiskStorage(d, segment_bytes=2048)
    s = st2.state
    assert s.snapshot == snap
    assert [e.index for e in s.entries] == list(range(151, 200))
    assert s.hard_state == HardState(1, None, 199)
    assert os.listdir(os.path.join(d, "snap")) == [os.path.basename(st2.snaps.path(150, 1))]
    st2.close()


def _init(voters):
    s = initial_state(voters)
    return s.hard_state, s.entries


def test_installed_snapshot_replaces_log(tmp_path):
    d = str(tmp_path)
    st = DiskStorage(d)
    st.save(HardState(2, "a", 3), ents(1, 6, term=2))
    snap = Snapshot(10, 3, ConfState(("a", "b", "c")), b"img")
    st.save(HardState(3, None, 10), ents(11, 2, term=3), snap)
    st.close()
    s = DiskStorage(d).state
    assert s.snapshot == snap and [e.index for e in s.entries] == [11, 12]
    assert s.hard_state.commit == 10


def test_orphan_snapshot_without_wal_record_is_ignored(tmp_path):
    d = str(tmp_path)
    st = DiskStorage(d)
    st.save(*_init(["a"]))
    st.snaps.save(Snapshot(1, 1, ConfState(("a",)), b"never recorded"))
    open(os.path.join(d, "snap", "junk.snap.tmp"), "wb").write(b"half")
    st.close()
    st = DiskStorage(d)
    assert st.state.snapshot.index == 0 and len(st.state.entries) == 1
    with pytest.raises(StorageError, match="already holds"):
        st.bootstrap(initial_state(["a"]))
    assert os.listdir(os.path.join(d, "snap")) == []


def test_corrupt_referenced_snapshot_refuses_to_start(tmp_path):
    d = str(tmp_path)
    st = DiskStorage(d)
    st.save(*_init(["a"]))
    snap = Snapshot(1, 1, ConfState(("a",)), b"x" * 100)
    st.save_snapshot(snap)
    st.close()
    path = st.snaps.path(1, 1)
    data = bytearray(open(path, "rb").read())
    data[-5] ^= 0x10
    open(path, "wb").write(bytes(data))
    with pytest.raises(StorageError, match="checksum"):
        DiskStorage(d)


def test_torn_header_of_new_segment_gets_a_header(tmp_path):
    d = str(tmp_path)
    wal, _, _ = WAL.open(d, segment_bytes=1024)
    while len(seg_paths(d)) < 2:
        wal.append(HardState(5, "x", 0), ents(1, 1, size=300))
    wal.close()
    last = seg_paths(d)[-1]
    with open(last, "r+b") as f:
        f.truncate(3)
    wal, _, rep = WAL.open(d, segment_bytes=1024)
    assert rep.truncated_bytes == 3
    wal.close()
    assert os.path.getsize(last) > 0
    _, recs, _ = WAL.open(d, segment_bytes=1024)
    assert recs[-1].hard_state == HardState(5, "x", 0)


def test_node_restarted_from_disk_rejoins_with_log_intact(tmp_path):
    ids = ["a", "b", "c"]
    dirs = {i: str(tmp_path / i) for i in ids}
    stores = {}
    for i in ids:
        stores[i] = DiskStorage(dirs[i], segment_bytes=4096)
        stores[i].bootstrap(initial_state(ids))
    nodes = {i: RaftCore(RaftConfig(i), stores[i].state, random.Random(k)) for k, i in enumerate(ids)}

    def pump():
        for _ in range(200):
            q = []
            for i, n in nodes.items():
                if n.has_ready():
                    rd = n.ready()
                    stores[i].save(rd.hard_state, rd.entries, rd.snapshot, sync=rd.must_sync)
                    q += rd.messages
                    n.advance(rd)
            for m in q:
                if m.to in nodes:
                    nodes[m.to].step(m)
            if not q and not any(n.has_ready() for n in nodes.values()):
                return

    for _ in range(30):
        for n in nodes.values():
            n.tick()
        pump()
    leader = next(n for n in nodes.values() if n.role is Role.LEADER)
    for k in range(300):
        leader.propose(b"cmd%d" % k)
        pump()
    victim = next(i for i in ids if i != leader.id)
    before = (nodes[victim].log.last_index(), nodes[victim].log.committed, nodes[victim].term)
    stores[victim].close()
    del nodes[victim]
    stores[victim] = DiskStorage(dirs[victim], segment_bytes=4096)
    state = stores[victim].state
    assert state.entries[-1].index == before[0] and state.hard_state.term == before[2]
    nodes[victim] = RaftCore(RaftConfig(victim), state, random.Random(9))
    leader.propose(b"after restart")
    pump()
    for _ in range(3):
        for n in nodes.values():
            n.tick()
        pump()
    assert nodes[victim].log.committed == leader.log.committed == before[1] + 1
    for s in stores.values():
        s.close()


# A random history of persistence batches must read back exactly as the reference
# in-memory storage holds it, whatever the segment size.
_batch = st.tuples(
    st.integers(0, 3),  # how far back the batch starts (0: append)
    st.integers(0, 4),  # entries
    st.booleans(),  # with hard state
    st.integers(0, 9),  # 0: local snapshot, 1: installed snapshot, else none
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_batch, min_size=1, max_size=25), st.sampled_from([1024, 4096]))
def test_disk_matches_memory_storage(tmp_path_factory, batches, segment_bytes):
    d = str(tmp_path_factory.mktemp("wal"))
    disk = DiskStorage(d, segment_bytes=segment_bytes)
    mem = MemoryStorage(PersistedState())
    term, last, commit, snap_index = 1, 0, 0, 0
    for back, n, with_hs, snap_kind in batches:
        if snap_kind == 1 and last > snap_index:
            term += 1
            idx = last + 2
            snap = Snapshot(idx, term, ConfState(("a",)), b"s%d" % idx)
            disk.save(HardState(term, None, idx), [], snap)
            mem.save(HardState(term, None, idx), [], snap)
            last = commit = snap_index = idx
            continue
        if snap_kind == 0 and commit > snap_index:
            snap = Snapshot(commit, term, ConfState(("a",)), b"l%d" % commit)
            disk.save_snapshot(snap)
            mem.save_snapshot(snap)
            snap_index = commit
            continue
        start = max(commit + 1, last + 1 - back)
        if start < last + 1:
            term += 1  # a new leader rewrites the uncommitted tail
        batch = ents(start, n, term=term, size=100) if n else []
        if batch:
            last = batch[-1].index
        elif start <= last:
            continue
        hs = HardState(term, None, commit) if with_hs else None
        if with_hs and last > commit:
            commit = min(last, commit + 2)
            hs = HardState(term, None, commit)
        disk.save(hs, batch)
        mem.save(hs, batch)
    disk.close()
    got = DiskStorage(d, segment_bytes=segment_bytes).state
    want = mem.load()
    assert got.snapshot == want.snapshot
    assert got.entries == want.entries
    assert got.hard_state == want.hard_state


def test_record_decoding_fast_path_agrees_with_the_checks():
    """Well-formed records take a whole-column path; anything odd falls back to the per-entry
    checks, which accept or refuse exactly as before."""
    import msgpack
    from manager.raft.storage import wal as walmod

    good = [[1, 5, 0, b"a"], [2, 6, 1, b"bb"], [2, 7, 0, b""]]
    rec = walmod.decode_payload(msgpack.packb([None, good, None]))
    assert rec.entries == [Entry(1, 5, 0, b"a"), Entry(2, 6, 1, b"bb"), Entry(2, 7, 0, b"")]
    assert walmod._entries_fast(good) is not None
    odd = [[1, 5, True, b"a"]]  # a bool entry type: the slow path's rule decides (accepted)
    assert walmod._entries_fast(odd) is None
    assert walmod.decode_payload(msgpack.packb([None, odd, None])).entries == [Entry(1, 5, True, b"a")]
    for bad, why in (([[1, 5, 0, b"a"], [1, 7, 0, b"b"]], "not contiguous"),
                     ([[1, 5, 0, "text"]], "expected [term, index, type, data]"),
                     ([[1, 5, 9, b"a"]], "expected [term, index, type, data]"),
                     ([[-1, 5, 0, b"a"]], "expected [term, index, type, data]"),
                     ([[1, 5, 0]], "expected [term, index, type, data]")):
        assert walmod._entries_fast(bad) is None
        with pytest.raises(ValueError, match=why.replace("[", r"\[").replace("]", r"\]")):
            walmod.decode_payload(msgpack.packb([None, bad, None]))


def test_old_segments_are_released_with_the_default_segment_size(tmp_path):
    """A restart replays at most about a segment past the last snapshot."""
    from manager.raft.storage.wal import SEGMENT_BYTES
    d = str(tmp_path / "raft")
    st = DiskStorage(d, sync=False)
    st.bootstrap(initial_state(["a"]))
    big = SEGMENT_BYTES // 4
    index = 2
    for _ in range(9):
        st.save(None, [Entry(1, index, 0, b"x" * big)], sync=False)
        index += 1
    assert st.wal.segment_count() >= 2
    st.save_snapshot(Snapshot(index - 1, 1, ConfState(("a",)), b"state"))
    assert st.wal.segment_count() == 1
    st.close()
    st = DiskStorage(d, sync=False)
    assert st.state.snapshot.index == index - 1 and st.state.entries == []
    st.close()
