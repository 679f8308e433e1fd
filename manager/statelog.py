"""The single path by which cluster state changes: append to the log, persist, apply.

`LocalLog` is the single-member engine: entries are framed records (length, crc32, msgpack) in
one write-ahead file, fsync'ed in groups, then applied to the store. Raft replaces this engine
under the same `propose` call; callers do not change.
"""
from __future__ import annotations

import asyncio
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import msgpack

from api.ids import timestamp
from manager.store import Action, Change, Store, StoreError

_HEADER = struct.Struct(">II")  # payload length, crc32 of payload


class NoQuorum(StoreError):
    status = 503


def encode_record(payload: dict) -> bytes:
    body = msgpack.packb(payload, use_bin_type=True)
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def read_records(path: Path) -> tuple[list[dict], int]:
    """All valid records, and the byte offset after the last one (a torn or corrupt tail
    beyond it is not returned, so the caller can truncate it)."""
    records: list[dict] = []
    if not path.exists():
        return records, 0
    data = path.read_bytes()
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        start, end = pos + _HEADER.size, pos + _HEADER.size + length
        if end > len(data) or zlib.crc32(data[start:end]) != crc:
            break
        try:
            records.append(msgpack.unpackb(data[start:end], raw=False))
        except Exception:
            break
        pos = end
    return records, pos


@dataclass
class _Pending:
    actions: list[Action]
    future: asyncio.Future


class LocalLog:
    SNAPSHOT_EVERY = 10_000

    def __init__(self, store: Store, directory: Path):
        self.store = store
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.wal_path = self.dir / "wal.log"
        self.snap_path = self.dir / "snapshot.msgpack"
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task | None = None
        self._fd: int | None = None
        self._since_snapshot = 0

    def load(self) -> None:
        """Restore the store from the snapshot and replay the log after it."""
        if self.snap_path.exists():
            self.store.restore(msgpack.unpackb(self.snap_path.read_bytes(), raw=False))
        records, valid_end = read_records(self.wal_path)
        if self.wal_path.exists() and valid_end < self.wal_path.stat().st_size:
            with open(self.wal_path, "r+b") as f:  # drop the torn tail, never apply it
                f.truncate(valid_end)
                os.fsync(f.fileno())
        for rec in records:
            if rec["Index"] <= self.store.index:
                continue
            try:
                actions = [Action.from_wire(a) for a in rec["Actions"]]
                self.store.apply(rec["Index"], rec["Time"], actions)
            except StoreError:
                self.store.index = rec["Index"]  # refused when first applied: refused again
            self._since_snapshot += 1
        self._fd = os.open(self.wal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._writer:
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def propose(self, actions: Sequence[Action]) -> list[Change]:
        """Append, persist and apply one entry; returns what it changed or raises StoreError."""
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(list(actions), fut))
        self._wakeup.set()
        return await fut

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            # Group commit: one write and one fsync for everything queued meanwhile.
            ts = timestamp()
            index = self.store.index
            blob = bytearray()
            entries = []
            for p in batch:
                index += 1
                entries.append((index, p))
                blob += encode_record({"Index": index, "Time": ts, "Actions": [a.to_wire() for a in p.actions]})
            try:
                await asyncio.to_thread(self._append, bytes(blob))
            except OSError as exc:
                for _, p in entries:
                    if not p.future.done():
                        p.future.set_exception(NoQuorum(f"state could not be persisted: {exc}"))
                continue
            for idx, p in entries:
                try:
                    result = self.store.apply(idx, ts, p.actions)
                except StoreError as exc:
                    self.store.index = idx
                    if not p.future.done():
                        p.future.set_exception(exc)
                    continue
                if not p.future.done():
                    p.future.set_result(result)
            self._since_snapshot += len(entries)
            if self._since_snapshot >= self.SNAPSHOT_EVERY:
                await asyncio.to_thread(self._snapshot)

    def _append(self, blob: bytes) -> None:
        assert self._fd is not None
        os.write(self._fd, blob)
        os.fsync(self._fd)

    def _snapshot(self) -> None:
        tmp = self.snap_path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(msgpack.packb(self.store.snapshot(), use_bin_type=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.snap_path)
        # Entries up to the snapshot are no longer needed.
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        self._since_snapshot = 0
