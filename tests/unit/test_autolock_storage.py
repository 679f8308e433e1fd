"""Encryption at rest of the Raft storage: sealed WAL records and snapshots, torn tails,
wrong keys, rewriting under a new key (and crashes during it), and the manager's key
rotation steps (daemon/autolock.py) including its TLS key."""
from __future__ import annotations

import asyncio
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from api.objects import Cluster, EncryptionConfig, EncryptionKey, SwarmSpec
from daemon.autolock import Autolock
from manager.ca import CertificateError, ClusterCA, make_csr, make_node_key, new_node_id, sign_csr
from manager.ca import storage as ca_storage
from manager.encryption import Crypter, DataKey, InvalidUnlockKey, KeyFile, RaftKeys, new_unlock_key, parse_unlock_key
from manager.raft.messages import ConfState, Entry, HardState, Snapshot
from manager.raft.storage.disk import REKEY_NEW, REKEY_OLD, DiskStorage, write_storage
from manager.raft.storage.memory import StorageError
from manager.raft.storage.wal import WAL

SECRET = b"password=hunter2-known-value"


def ents(first: int, n: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, 0, SECRET + b"-%d" % i) for i in range(first, first + n)]


def all_bytes(d: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(Path(d).rglob("*")) if p.is_file())


def seg_paths(d: Path) -> list[Path]:
    return sorted(p for p in Path(d).iterdir() if p.suffix == ".wal")


def populated(d: Path, crypter: Crypter) -> DiskStorage:
    st = DiskStorage(str(d), crypter=crypter)
    st.save(HardState(1, "m1", 0), ents(1, 5))
    st.save_snapshot(Snapshot(3, 1, ConfState(voters=("m1",)), SECRET + b"-snapshot"))
    st.save(HardState(1, "m1", 5), ents(6, 2))
    return st


def test_encrypted_storage_round_trips_and_holds_no_plaintext(tmp_path):
    key = DataKey.new()
    d = tmp_path / "raft"
    populated(d, Crypter(key, plaintext_ok=False)).close()
    assert SECRET not in all_bytes(d)
    # the same operations without encryption do leave it readable: the check above can fail
    populated(tmp_path / "plain", Crypter()).close()
    assert SECRET in all_bytes(tmp_path / "plain")
    st = DiskStorage(str(d), crypter=Crypter(key, plaintext_ok=False))
    assert st.state.snapshot.data == SECRET + b"-snapshot"
    assert [e.index for e in st.state.entries] == [4, 5, 6, 7]
    assert st.state.hard_state == HardState(1, "m1", 5)


def test_torn_encrypted_tail_is_truncated_at_every_cut_point(tmp_path):
    c = Crypter(DataKey.new(), plaintext_ok=False)
    base = tmp_path / "ref"
    wal, _, _ = WAL.open(str(base), crypter=c)
    wal.append(HardState(1, None, 0), ents(1, 2))
    good = os.path.getsize(seg_paths(base)[0])
    wal.append(HardState(2, "b", 2), ents(3, 2, term=2))
    wal.close()
    full = seg_paths(base)[0].read_bytes()
    for cut in range(good, len(full)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / seg_paths(base)[0].name).write_bytes(full[:cut])
        wal, recs, rep = WAL.open(str(d), crypter=c)
        assert rep.truncated_bytes == cut - good
        assert [r.entries for r in recs if r.entries] == [ents(1, 2)]
        wal.append(None, ents(3, 1))  # the log keeps working after the repair
        wal.close()
        assert [r.entries for r in WAL.open(str(d), crypter=c)[1] if r.entries] == [ents(1, 2), ents(3, 1)]


def test_wrong_key_refuses_to_open_and_truncates_nothing(tmp_path):
    d = tmp_path / "raft"
    populated(d, Crypter(DataKey.new(), plaintext_ok=False)).close()
    before = {p: p.stat().st_size for p in d.rglob("*") if p.is_file()}
    with pytest.raises(StorageError, match="cannot be decrypted: sealed with key .* does not hold"):
        DiskStorage(str(d), crypter=Crypter(DataKey.new(), plaintext_ok=False))
    with pytest.raises(StorageError, match="refusing plaintext|cannot be decrypted"):
        DiskStorage(str(d), crypter=Crypter())  # no key at all
    assert {p: p.stat().st_size for p in d.rglob("*") if p.is_file()} == before


def test_altered_record_with_a_valid_checksum_is_an_error_not_a_torn_tail(tmp_path):
    key = DataKey.new()
    c = Crypter(key, plaintext_ok=False)
    d = tmp_path / "wal"
    wal, _, _ = WAL.open(str(d), crypter=c)
    wal.append(HardState(1, None, 0), ents(1, 2))
    wal.close()
    seg = seg_paths(d)[0]
    data = bytearray(seg.read_bytes())
    (length,) = struct.unpack_from("<I", data, 0)
    second = 8 + length  # the record after the segment header
    (length2,) = struct.unpack_from("<I", data, second)
    data[second + 8 + length2 - 1] ^= 0x55  # inside the tag
    struct.pack_into("<I", data, second + 4, zlib.crc32(bytes(data[second + 8:second + 8 + length2])))
    seg.write_bytes(bytes(data))
    with pytest.raises(Exception, match="at byte %d: record cannot be decrypted: authentication failed" % second):
        WAL.open(str(d), crypter=c)
    assert seg.stat().st_size == len(data)


def test_rekey_rewrites_everything_under_the_new_key(tmp_path):
    old, new = DataKey.new(), DataKey.new()
    d = tmp_path / "raft"
    populated(d, Crypter(old, plaintext_ok=False)).close()
    st = DiskStorage(str(d), crypter=Crypter(old, plaintext_ok=False))
    state = st.state
    assert state.snapshot.index == 3
    st.rekey(RaftKeys(old, new).crypter())
    st.save(None, ents(8, 1))
    st.close()
    only_new = Crypter(new, plaintext_ok=False)
    back = DiskStorage(str(d), crypter=only_new)
    assert back.state.snapshot == state.snapshot and back.state.hard_state == state.hard_state
    assert back.state.entries == state.entries + ents(8, 1)
    back.close()
    with pytest.raises(StorageError):
        DiskStorage(str(d), crypter=Crypter(old, plaintext_ok=False))
    assert not (tmp_path / ("raft" + REKEY_NEW)).exists() and not (tmp_path / ("raft" + REKEY_OLD)).exists()


def test_rekey_migrates_plaintext_storage(tmp_path):
    d = tmp_path / "raft"
    populated(d, Crypter()).close()
    assert SECRET in all_bytes(d)
    keys = RaftKeys(None, DataKey.new())  # the key file of a manager from before encryption
    st = DiskStorage(str(d), crypter=keys.crypter())
    st.rekey(keys.crypter())
    st.close()
    assert SECRET not in all_bytes(d)
    assert DiskStorage(str(d), crypter=RaftKeys(keys.pending).crypter()).state.entries[-1] == ents(7, 1)[0]


def test_crash_while_writing_the_copy_keeps_the_original(tmp_path):
    key = DataKey.new()
    d = tmp_path / "raft"
    populated(d, Crypter(key)).close()
    partial = tmp_path / ("raft" + REKEY_NEW)
    (partial / "wal").mkdir(parents=True)
    (partial / "wal" / "0000000000000001.wal").write_bytes(b"\x10\x00")
    st = DiskStorage(str(d), crypter=Crypter(key))
    assert [e.index for e in st.state.entries] == [4, 5, 6, 7]
    assert not partial.exists()


def test_crash_between_the_two_renames_finishes_the_swap(tmp_path):
    old, new = DataKey.new(), DataKey.new()
    d = tmp_path / "raft"
    populated(d, Crypter(old)).close()
    opened = DiskStorage(str(d), crypter=Crypter(old))
    state = opened.state
    opened.close()
    assert state.snapshot.index == 3
    write_storage(str(d) + REKEY_NEW, state, Crypter(new))
    os.rename(d, str(d) + REKEY_OLD)  # ... and the process dies here
    back = DiskStorage(str(d), crypter=RaftKeys(old, new).crypter())
    assert back.state == state
    assert not Path(str(d) + REKEY_OLD).exists() and not Path(str(d) + REKEY_NEW).exists()
    back.close()
    DiskStorage(str(d), crypter=Crypter(new, plaintext_ok=False)).close()  # the new copy won


# --- the manager's key rotation (daemon/autolock.py) -----------------------------------------


@pytest.fixture(scope="module")
def ca() -> ClusterCA:
    return ClusterCA.create()


def manager_dirs(tmp_path: Path, ca: ClusterCA) -> Autolock:
    key = make_node_key()
    cert = sign_csr(ca, make_csr(key), new_node_id(), "manager", new_node_id())
    ca_storage.save_node_credentials(tmp_path / "swarm" / "certs", key, cert, ca.signer.cert)
    return Autolock(tmp_path / "swarm", tmp_path / "raft")


def test_tls_key_encrypted_under_autolock(tmp_path, ca):
    al = manager_dirs(tmp_path, ca)
    al.create(parse_unlock_key(new_unlock_key()))
    al._rewrite_tls(RaftKeys(None), al.keys)
    assert b"ENCRYPTED PRIVATE KEY" in (al.certs_dir / "node.pem").read_bytes()
    with pytest.raises(CertificateError, match="encrypted, and this manager is locked"):
        ca_storage.load_node_credentials(al.certs_dir)
    with pytest.raises(CertificateError, match="does not hold"):
        ca_storage.load_node_credentials(al.certs_dir, (DataKey.new().tls_password(),))
    assert ca_storage.load_node_credentials(al.certs_dir, al.tls_passwords()).cert is not None


@dataclass
class FakeRaft:
    storage: DiskStorage

    async def rekey(self, crypter: Crypter) -> None:
        self.storage.rekey(crypter)


@dataclass
class FakeManager:
    raft: FakeRaft
    cluster: Cluster = field(default_factory=Cluster)

    def autolock(self, on: bool, key: str = "") -> None:
        self.cluster.spec = SwarmSpec(encryption_config=EncryptionConfig(auto_lock_managers=on))
        self.cluster.unlock_keys = [EncryptionKey("manager", key)] if key else []


def test_follow_turns_autolock_on_rotates_the_key_and_turns_it_off(tmp_path, ca):
    al = manager_dirs(tmp_path, ca)
    keys = al.open()
    assert keys.kek is None and not al.file.is_locked()
    storage = populated(al.raft_dir, keys.crypter())
    m = FakeManager(FakeRaft(storage))
    first_dek = keys.dek

    # on: a new DEK, the storage rewritten under it, both wrapped, the TLS key encrypted
    k1 = new_unlock_key()
    m.autolock(True, k1)
    asyncio.run(al.follow(m))
    assert al.file.is_locked() and al.keys.dek != first_dek and al.keys.pending is None
    assert SECRET not in all_bytes(al.raft_dir)
    assert b"ENCRYPTED PRIVATE KEY" in (al.certs_dir / "node.pem").read_bytes()
    with pytest.raises(StorageError):  # the DEK that lay on disk unwrapped opens nothing now
        DiskStorage(str(al.raft_dir), crypter=Crypter(first_dek, plaintext_ok=False))
    restarted = KeyFile(al.file.path).load(parse_unlock_key(k1))
    DiskStorage(str(al.raft_dir), crypter=restarted.crypter()).close()

    # rotation: the old unlock key no longer unlocks this manager
    k2 = new_unlock_key()
    m.autolock(True, k2)
    asyncio.run(al.follow(m))
    with pytest.raises(InvalidUnlockKey):
        KeyFile(al.file.path).load(parse_unlock_key(k1))
    locked_keys = KeyFile(al.file.path).load(parse_unlock_key(k2))
    assert ca_storage.load_node_credentials(al.certs_dir, locked_keys.tls_passwords())

    # off: the same DEK stored plainly, the TLS key in the clear again
    m.autolock(False)
    asyncio.run(al.follow(m))
    assert not al.file.is_locked() and KeyFile(al.file.path).load().dek == locked_keys.dek
    assert b"ENCRYPTED" not in (al.certs_dir / "node.pem").read_bytes()
    storage.save(None, ents(8, 1))
    storage.close()
    assert DiskStorage(str(al.raft_dir), crypter=al.keys.crypter()).state.entries[-1] == ents(8, 1)[0]


def test_finish_rotation_after_a_crash_mid_rotation(tmp_path, ca):
    al = manager_dirs(tmp_path, ca)
    unlock_key = new_unlock_key()
    kek = parse_unlock_key(unlock_key)
    old = DataKey.new()
    populated(al.raft_dir, Crypter(old)).close()
    # step 1 was done (key file with the pending DEK), the rewrite was not
    al.file.save(RaftKeys(old, DataKey.new(), kek))
    restarted = Autolock(al.swarm_dir, al.raft_dir)
    assert restarted.locked()
    with pytest.raises(InvalidUnlockKey):
        restarted.unlock(new_unlock_key())
    assert restarted.locked()
    pending = restarted.unlock(unlock_key).pending
    restarted.finish_rotation()
    assert restarted.keys.dek == pending and restarted.keys.pending is None
    assert KeyFile(al.file.path).load(kek).pending is None
    DiskStorage(str(al.raft_dir), crypter=Crypter(pending, plaintext_ok=False)).close()
    assert ca_storage.load_node_credentials(al.certs_dir, (pending.tls_password(),))


def test_demotion_drops_the_keys_and_decrypts_the_tls_key(tmp_path, ca):
    al = manager_dirs(tmp_path, ca)
    al.create(parse_unlock_key(new_unlock_key()))
    al._rewrite_tls(RaftKeys(None), al.keys)
    al.drop()
    assert not al.file.exists() and not al.locked()
    assert ca_storage.load_node_credentials(al.certs_dir)  # no password needed


def test_manager_from_before_encryption_is_migrated_on_start(tmp_path, ca):
    al = manager_dirs(tmp_path, ca)
    populated(al.raft_dir, Crypter()).close()  # written by a version without encryption
    assert SECRET in all_bytes(al.raft_dir)
    al.finish_rotation()  # what starting the manager does
    assert al.keys.dek is not None and al.keys.pending is None and not al.file.is_locked()
    assert SECRET not in all_bytes(al.raft_dir)
    st = DiskStorage(str(al.raft_dir), crypter=KeyFile(al.file.path).load().crypter())
    assert st.state.snapshot.data == SECRET + b"-snapshot" and st.state.entries[-1] == ents(7, 1)[0]
    st.close()


def test_a_failed_rewrite_is_retried_and_loses_nothing(tmp_path, ca):
    al = manager_dirs(tmp_path, ca)
    keys = al.open()
    storage = populated(al.raft_dir, keys.crypter())

    @dataclass
    class FailingOnce(FakeRaft):
        failed: bool = False

        async def rekey(self, crypter: Crypter) -> None:
            if not self.failed:
                self.failed = True
                raise OSError(28, "No space left on device")
            self.storage.rekey(crypter)

    m = FakeManager(FailingOnce(storage))
    key = new_unlock_key()
    m.autolock(True, key)
    with pytest.raises(OSError):
        asyncio.run(al.follow(m))
    # a restart now would unlock with the key and open the storage (still under the old DEK)
    DiskStorage(str(al.raft_dir), crypter=KeyFile(al.file.path).load(parse_unlock_key(key)).crypter()).close()
    asyncio.run(al.follow(m))
    assert al.keys.pending is None and SECRET not in all_bytes(al.raft_dir)
    storage.close()
    DiskStorage(str(al.raft_dir), crypter=Crypter(al.keys.dek, plaintext_ok=False)).close()


def test_rekey_failing_midway_keeps_the_storage_usable_under_the_old_key(tmp_path, monkeypatch):
    from manager.raft.storage import disk
    old = DataKey.new()
    d = tmp_path / "raft"
    populated(d, Crypter(old)).close()
    st = DiskStorage(str(d), crypter=Crypter(old))

    def full_disk(directory, *args, **kwargs):
        Path(directory).mkdir()
        (Path(directory) / "partial").write_bytes(b"x")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(disk, "write_storage", full_disk)
    with pytest.raises(OSError):
        st.rekey(RaftKeys(old, DataKey.new()).crypter())
    assert not Path(str(d) + REKEY_NEW).exists()
    st.save(None, ents(8, 1))  # still writing, with the old key
    st.close()
    assert DiskStorage(str(d), crypter=Crypter(old, plaintext_ok=False)).state.entries[-1] == ents(8, 1)[0]
