"""Write-ahead log in segment files.

Record framing: u32 little-endian payload length, u32 CRC-32 of the payload, payload (a
msgpack list, sealed by the manager's data-encryption key when the WAL has a `Crypter` that
encrypts: see manager/encryption/aead.py). One record holds one persistence batch (a Ready's
hard state, entries and snapshot reference), so a batch is durable entirely or not at all.

On open every segment is read in order; the first record that is cut short, fails its
checksum or does not decode ends the log: the file is truncated there and any later
segment removed, so a torn write is never applied. `WAL.open` reports what was dropped.
The checksum covers the sealed bytes, so torn tails are found exactly as before; a record
whose checksum holds but which does not decrypt (a wrong key, or bytes altered on disk) is
not a torn write and must not be cut away with everything after it: opening fails instead.

Every segment starts with a header record carrying the current hard state and snapshot
reference, so older segments can be deleted once a snapshot covers their entries.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import Iterator

import msgpack

from manager.encryption.aead import Crypter, DecryptError

from ..messages import Entry, EntryType, HardState

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
MAX_RECORD = 1 << 30
SEGMENT_SUFFIX = ".wal"
RECORD_AAD = b"shoal-wal-record"
PLAINTEXT = Crypter()  # no encryption: the simulation's and tests' default
# Segments wholly covered by a snapshot are deleted, so the size bounds what a restart
# replays beyond the last snapshot; 8 MiB is tens of thousands of entries, a cut every few
# seconds at most under full write load.
SEGMENT_BYTES = 8 << 20


class WALError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    index: int
    term: int
    reset: bool  # installed from the leader: the log before it is void


@dataclass(slots=True)
class Record:
    hard_state: HardState | None
    entries: list[Entry]
    snapshot: SnapshotRef | None


@dataclass
class OpenReport:
    records: int = 0
    segments: int = 0
    truncated_bytes: int = 0  # bytes of torn or corrupt tail that were cut off
    removed_segments: list[str] = field(default_factory=list)
    reason: str = ""


def encode_record(rec: Record, crypter: Crypter = PLAINTEXT) -> bytes:
    hs = rec.hard_state
    payload = crypter.seal(msgpack.packb([
        None if hs is None else [hs.term, hs.vote, hs.commit],
        [[e.term, e.index, e.type, e.data] for e in rec.entries],
        None if rec.snapshot is None else [rec.snapshot.index, rec.snapshot.term, rec.snapshot.reset],
    ]), RECORD_AAD)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> Record:
    """Raise ValueError naming the field when a checksummed payload still makes no sense."""
    try:
        obj = msgpack.unpackb(payload)
    except Exception as exc:
        raise ValueError(f"record: undecodable ({exc.__class__.__name__})") from None
    if not isinstance(obj, list) or len(obj) != 3:
        raise ValueError("record: expected [hard_state, entries, snapshot]")
    raw_hs, raw_ents, raw_snap = obj
    hs = None
    if raw_hs is not None:
        if (not isinstance(raw_hs, list) or len(raw_hs) != 3 or not _nat(raw_hs[0]) or not _nat(raw_hs[2])
                or not (raw_hs[1] is None or isinstance(raw_hs[1], str))):
            raise ValueError("record.hard_state: expected [term, vote, commit]")
        hs = HardState(raw_hs[0], raw_hs[1], raw_hs[2])
    if not isinstance(raw_ents, list):
        raise ValueError("record.entries: expected a list")
    ents = _entries_fast(raw_ents)
    if ents is not None:
        return Record(hs, ents, _snapshot_ref(raw_snap))
    ents = []
    for i, e in enumerate(raw_ents):
        if (not isinstance(e, list) or len(e) != 4 or not _nat(e[0]) or not _nat(e[1])
                or e[2] not in EntryType._value2member_map_ or not isinstance(e[3], bytes)):
            raise ValueError(f"record.entries[{i}]: expected [term, index, type, data]")
        if ents and e[1] != ents[-1].index + 1:
            raise ValueError(f"record.entries[{i}].index: not contiguous")
        ents.append(Entry(e[0], e[1], e[2], e[3]))
    return Record(hs, ents, _snapshot_ref(raw_snap))


def _snapshot_ref(raw_snap) -> SnapshotRef | None:
    if raw_snap is None:
        return None
    if (not isinstance(raw_snap, list) or len(raw_snap) != 3 or not _nat(raw_snap[0])
            or not _nat(raw_snap[1]) or not isinstance(raw_snap[2], bool)):
        raise ValueError("record.snapshot: expected [index, term, reset]")
    return SnapshotRef(raw_snap[0], raw_snap[1], raw_snap[2])


_ENTRY_TYPES = frozenset(int(t) for t in EntryType)


def _entries_fast(raw_ents: list) -> list[Entry] | None:
    """The entries of a well-formed record, checked with whole-column operations that run in
    C (opening a WAL replays every record: a per-entry loop of checks in Python was most of a
    restart). None when anything is off: the per-entry loop then names what is wrong."""
    n = len(raw_ents)
    if not n:
        return []
    if set(map(type, raw_ents)) != {list} or set(map(len, raw_ents)) != {4}:
        return None
    terms, idxs, kinds, datas = zip(*raw_ents)
    if (set(map(type, terms)) != {int} or set(map(type, idxs)) != {int} or set(map(type, kinds)) != {int}
            or set(map(type, datas)) != {bytes} or min(terms) < 0 or idxs[0] < 0
            or not set(kinds) <= _ENTRY_TYPES or idxs != tuple(range(idxs[0], idxs[0] + n))):
        return None
    return list(map(Entry, terms, idxs, kinds, datas))


def _nat(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection meanwhile. Replaying a log builds hundreds of thousands of
    lists and entries that all stay alive, and the collector would walk them again and again
    (a third of the time of opening a large WAL); they hold no reference cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _segment_name(seq: int) -> str:
    return f"{seq:016x}{SEGMENT_SUFFIX}"


def _scan(data: bytes, crypter: Crypter = PLAINTEXT) -> tuple[list[Record], int, str]:
    """Valid records of one segment, the offset where they end, and why they end there.
    Raises DecryptError (with `.offset`) for a whole record that does not decrypt."""
    records = []
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < _HEADER.size:
            return records, pos, "torn record header"
        length, crc = _HEADER.unpack_from(data, pos)
        if length == 0 and crc == 0:
            return records, pos, "zero-filled tail"
        if length > MAX_RECORD or pos + _HEADER.size + length > n:
            return records, pos, "torn record"
        payload = data[pos + _HEADER.size:pos + _HEADER.size + length]
        if zlib.crc32(payload) != crc:
            return records, pos, "checksum mismatch"
        try:
            payload = crypter.open(payload, RECORD_AAD)
        except DecryptError as exc:
            exc.offset = pos  # type: ignore[attr-defined]
            raise
        try:
            records.append(decode_payload(payload))
        except ValueError as exc:
            return records, pos, str(exc)
        pos += _HEADER.size + length
    return records, pos, ""


class WAL:
    """Append-only, single writer. Not thread-safe: the runner serialises calls."""

    def __init__(self, directory: str, segment_bytes: int, sync: bool, crypter: Crypter = PLAINTEXT):
        self.dir = directory
        self.crypter = crypter
        self.segment_bytes = segment_bytes
        self.sync = sync
        self._fd = -1
        self._seq = 0
        self._size = 0
        self.hard_state = HardState()
        self.snapshot: SnapshotRef = SnapshotRef(0, 0, False)
        # seq -> highest entry index written in that segment (0: none)
        self._max_index: dict[int, int] = {}

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, directory: str, segment_bytes: int = SEGMENT_BYTES, sync: bool = True,
             crypter: Crypter = PLAINTEXT) -> tuple[WAL, list[Record], OpenReport]:
        """Open (creating if needed) and return every valid record in order. WALError when a
        record cannot be decrypted (nothing is truncated then)."""
        if segment_bytes < 1024:
            raise ValueError("segment_bytes: must be at least 1024")
        os.makedirs(directory, exist_ok=True)
        with gc_paused():
            return cls._open(directory, segment_bytes, sync, crypter)

    @classmethod
    def _open(cls, directory: str, segment_bytes: int, sync: bool,
              crypter: Crypter) -> tuple[WAL, list[Record], OpenReport]:
        wal = cls(directory, segment_bytes, sync, crypter)
        report = OpenReport()
        records: list[Record] = []
        seqs = wal._segments()
        for k, seq in enumerate(seqs):
            path = os.path.join(directory, _segment_name(seq))
            with open(path, "rb") as f:
                data = f.read()
            try:
                recs, end, reason = _scan(data, crypter)
            except DecryptError as exc:
                raise WALError(f"{_segment_name(seq)} at byte {getattr(exc, 'offset', '?')}: "
                               f"record cannot be decrypted: {exc}") from None
            records.extend(recs)
            wal._max_index[seq] = max((r.entries[-1].index for r in recs if r.entries), default=0)
            report.segments += 1
            if end < len(data):
                report.truncated_bytes += len(data) - end
                report.reason = f"{_segment_name(seq)} at byte {end}: {reason}"
                with open(path, "r+b") as f:
                    f.truncate(end)
                    os.fsync(f.fileno())
                for later in seqs[k + 1:]:
                    name = _segment_name(later)
                    lp = os.path.join(directory, name)
                    report.truncated_bytes += os.path.getsize(lp)
                    os.remove(lp)
                    report.removed_segments.append(name)
                fsync_dir(directory)
                log.warning("raft WAL: dropped %d bytes after %s", report.truncated_bytes, report.reason)
                seqs = seqs[:k + 1]
                break
        report.records = len(records)
        for rec in records:
            wal._track(rec)
        if seqs:
            wal._seq = seqs[-1]
            path = os.path.join(directory, _segment_name(wal._seq))
            wal._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            wal._size = os.path.getsize(path)
            if wal._size == 0:  # its header was torn: every segment must open with one
                wal._write(encode_record(Record(wal.hard_state, [], wal.snapshot), wal.crypter))
                if sync:
                    os.fsync(wal._fd)
        else:
            wal._open_segment(1)
        return wal, records, report

    def _segments(self) -> list[int]:
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(SEGMENT_SUFFIX):
                try:
                    out.append(int(name[:-len(SEGMENT_SUFFIX)], 16))
                except ValueError:
                    continue
        return sorted(out)

    def _track(self, rec: Record) -> None:
        if rec.hard_state is not None:
            self.hard_state = rec.hard_state
        if rec.snapshot is not None and rec.snapshot.index >= self.snapshot.index:
            self.snapshot = SnapshotRef(rec.snapshot.index, rec.snapshot.term, False)

    def _open_segment(self, seq: int) -> None:
        path = os.path.join(self.dir, _segment_name(seq))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._fd, self._seq, self._size = fd, seq, 0
        self._max_index[seq] = 0
        self._write(encode_record(Record(self.hard_state, [], self.snapshot), self.crypter))
        if self.sync:
            os.fsync(fd)
            fsync_dir(self.dir)

    # ------------------------------------------------------------------ writing
    def append(self, hard_state: HardState | None, entries: list[Entry],
               snapshot: SnapshotRef | None = None, sync: bool = True) -> None:
        """Write one batch; durable when this returns if `sync` (and the WAL syncs)."""
        if self._fd < 0:
            raise WALError("wal: closed")
        rec = Record(hard_state, entries, snapshot)
        self._write(encode_record(rec, self.crypter))
        self._track(rec)
        if entries:
            self._max_index[self._seq] = max(self._max_index[self._seq], entries[-1].index)
        if sync and self.sync:
            os.fdatasync(self._fd)
        if self._size >= self.segment_bytes:
            self._cut()

    def _write(self, buf: bytes) -> None:
        view = memoryview(buf)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(buf)

    def _cut(self) -> None:
        if self.sync:
            os.fdatasync(self._fd)
        os.close(self._fd)
        self._open_segment(self._seq + 1)

    def sync_now(self) -> None:
        if self._fd >= 0:
            os.fdatasync(self._fd)

    def release_to(self, index: int) -> list[str]:
        """Delete whole segments holding only entries <= `index` (a durable snapshot's).

        The active segment stays; every remaining segment starts with a header, so the
        log still opens from the first one left.
        """
        removed = []
        for seq in sorted(self._max_index):
            if seq == self._seq or self._max_index[seq] > index:
                break
            name = _segment_name(seq)
            os.remove(os.path.join(self.dir, name))
            del self._max_index[seq]
            removed.append(name)
        if removed and self.sync:
            fsync_dir(self.dir)
        return removed

    def segment_count(self) -> int:
        return len(self._max_index)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
