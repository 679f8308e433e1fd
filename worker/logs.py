"""Reading a container's log: the json-file lines its shim writes (worker/runtime/jsonlog.py),
across rotated files (container.log.N oldest ... container.log.1, container.log newest).

    async for entry in read_logs(runtime.log_path(cid).parent, tail=100, follow=True):
        print(entry.time, entry.stream, entry.line, end="")

`follow` keeps reading as the container writes, through rotations (the open file is read to its
end before the new one is opened), and ends once the container has exited (exit.json exists)
and everything has been read.
"""
from __future__ import annotations

import asyncio
import calendar
import json
import os
import time
from collections import deque
from pathlib import Path
from typing import AsyncIterator, NamedTuple

LOG_NAME = "container.log"
EXIT_NAME = "exit.json"


class LogEntry(NamedTuple):
    time: int        # nanoseconds since the epoch
    stream: str      # "stdout" | "stderr"
    line: str        # as written, with its newline (a cut long line has none)


_SECONDS: dict[str, int] = {}


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch from RFC 3339 in UTC ("2024-01-02T03:04:05.123456789Z")."""
    if not text.endswith("Z"):
        raise ValueError(f"time: {text!r} is not RFC 3339 UTC")
    base, _, frac = text[:-1].partition(".")
    sec = _SECONDS.get(base)
    if sec is None:
        sec = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        _SECONDS[base] = sec
    nanos = int((frac + "000000000")[:9]) if frac else 0
    return sec * 1_000_000_000 + nanos


def format_time(ns: int) -> str:
    sec, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"


def parse_line(raw: bytes) -> LogEntry | None:
    try:
        obj = json.loads(raw)
        return LogEntry(parse_time(obj["time"]), obj["stream"], obj["log"])
    except (ValueError, KeyError, TypeError):
        return None  # a damaged line is skipped, not fatal


def _log_dir(bundle: Path) -> Path:
    bundle = Path(bundle)
    return bundle.parent if bundle.name == LOG_NAME else bundle


def _rotated(directory: Path) -> list[Path]:
    """Rotated files, oldest first."""
    found = []
    for p in directory.glob(LOG_NAME + ".*"):
        suffix = p.name[len(LOG_NAME) + 1:]
        if suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found, reverse=True)]


def _read_file(path: Path, skip_inode: int) -> list[bytes]:
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_ino == skip_inode:
                return []  # rotated while we looked: it is the file we already hold open
            return f.read().splitlines()
    except FileNotFoundError:
        return []


class _Follower:
    """The current log file, read incrementally; reopened when the writer rotates it."""

    def __init__(self, path: Path):
        self.path = path
        self.f = None
        self.rest = b""
        self.open()

    def open(self) -> None:
        try:
            self.f = open(self.path, "rb")
        except FileNotFoundError:
            self.f = None
        self.rest = b""

    @property
    def inode(self) -> int:
        return os.fstat(self.f.fileno()).st_ino if self.f else -1

    def read_lines(self) -> list[bytes]:
        if self.f is None:
            self.open()
            if self.f is None:
                return []
        data = self.rest + self.f.read()
        lines = data.split(b"\n")
        self.rest = lines.pop()  # an incomplete last line waits for its end
        return [ln for ln in lines if ln]

    def rotated(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self.inode
        except FileNotFoundError:
            return False

    def close(self) -> None:
        if self.f:
            self.f.close()


async def read_logs(bundle: Path, since: float | None = None, tail: int | None = None,
                    follow: bool = False, poll_interval: float = 0.1) -> AsyncIterator[LogEntry]:
    """Entries of the container whose state directory (or log file) is `bundle`, oldest first:
    only those at or after `since` (UNIX seconds), only the last `tail` of them, and with
    `follow` new ones as they come until the container has exited."""
    if tail is not None and tail < 0:
        raise ValueError(f"tail: must not be negative, got {tail}")
    directory = _log_dir(bundle)
    since_ns = round(since * 1_000_000_000) if since is not None else None
    current = _Follower(directory / LOG_NAME)

    def wanted(raw_lines: list[bytes]) -> list[LogEntry]:
        out = []
        for raw in raw_lines:
            entry = parse_line(raw)
            if entry is not None and (since_ns is None or entry.time >= since_ns):
                out.append(entry)
        return out

    try:
        newest = wanted(current.read_lines())
        if tail is None or len(newest) < tail:
            older: list[LogEntry] = []
            for path in reversed(_rotated(directory)):  # newest rotated first
                older = wanted(_read_file(path, current.inode)) + older
                if tail is not None and len(older) + len(newest) >= tail:
                    break
            newest = older + newest
        first = newest if tail is None else list(deque(newest, maxlen=tail)) if tail else []
        for entry in first:
            yield entry
        if not follow:
            return
        while True:
            finished = (directory / EXIT_NAME).exists()  # checked before reading: nothing is missed
            batch = current.read_lines()
            if not batch and current.rotated():
                current.close()
                current.open()
                continue
            for entry in wanted(batch):
                yield entry
            if not batch:
                if finished:
                    return
                await asyncio.sleep(poll_interval)
    finally:
        current.close()
