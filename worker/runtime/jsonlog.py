"""The container's stdout and stderr as Docker's json-file log, with size rotation.

One JSON object per line: {"log": "<line with its newline>", "stream": "stdout"|"stderr",
"time": "<RFC 3339, nanoseconds, UTC>"}. A line longer than 16 KiB is cut into entries without
a newline, as Docker does. When the file would grow past max_size it is renamed to .1 (.1 to
.2, ...), keeping max_files files in all; with max_files 1 it is truncated instead.

Written by the shim (importable on its own, no json module: the C encoder is enough);
worker/logs.py reads it.
"""
import os
import time

from _json import encode_basestring

MAX_LINE = 16 * 1024


def rfc3339(ns: int) -> str:
    sec, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    if not frac:
        return base + "Z"
    return base + ("." + f"{frac:09d}").rstrip("0") + "Z"


class JsonLog:
    def __init__(self, path: str, max_size: int = 10 * 1024 * 1024, max_files: int = 3):
        self.path = path
        self.max_size = max_size
        self.max_files = max_files
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.size = os.fstat(self.fd).st_size
        self.partial = {}

    def feed(self, stream: str, data: bytes, now_ns: int = 0) -> None:
        """Append what a read from the stream returned; complete lines are written at once."""
        buf = self.partial.get(stream, b"") + data
        entries = []
        stamp = None
        start = 0
        while True:
            nl = buf.find(b"\n", start, start + MAX_LINE)
            if nl >= 0:
                end = nl + 1
            elif len(buf) - start >= MAX_LINE:
                end = start + MAX_LINE  # a long line: cut it, as Docker's 16 KiB buffer does
            else:
                break
            if stamp is None:
                stamp = rfc3339(now_ns or time.time_ns())
            entries.append(self._entry(stream, buf[start:end], stamp).encode())
            start = end
        self.partial[stream] = buf[start:]
        if entries:
            self._write(entries)

    def flush(self, stream: str, now_ns: int = 0) -> None:
        """At end of stream: what is left without a newline becomes an entry of its own."""
        rest = self.partial.pop(stream, b"")
        if rest:
            self._write([self._entry(stream, rest, rfc3339(now_ns or time.time_ns())).encode()])

    @staticmethod
    def _entry(stream: str, raw: bytes, stamp: str) -> str:
        text = raw.decode("utf-8", "replace")
        return '{"log":' + encode_basestring(text) + ',"stream":"' + stream + '","time":"' + stamp + '"}\n'

    def _write(self, entries: list) -> None:
        """Write entries in as few writes as possible, rotating before one would not fit."""
        batch, size = [], self.size
        for entry in entries:
            if size and size + len(entry) > self.max_size:
                self._put(b"".join(batch))
                self.rotate()
                batch, size = [], 0
            batch.append(entry)
            size += len(entry)
        self._put(b"".join(batch))

    def _put(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.size += len(data)

    def rotate(self) -> None:
        if self.max_files <= 1:
            os.ftruncate(self.fd, 0)
            self.size = 0
            return
        os.close(self.fd)
        for i in range(self.max_files - 1, 0, -1):
            older = f"{self.path}.{i - 1}" if i > 1 else self.path
            try:
                os.rename(older, f"{self.path}.{i}")
            except FileNotFoundError:
                pass
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.size = 0

    def close(self) -> None:
        for stream in list(self.partial):
            self.flush(stream)
        os.close(self.fd)


class NullLog:
    """The "none" log driver: the output is still read (a full pipe would block the container)
    and then dropped."""

    def feed(self, stream: str, data: bytes, now_ns: int = 0) -> None:
        pass

    def flush(self, stream: str, now_ns: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


def open_log(cfg: dict, state: str):
    """The log a shim writes, from the "log" part of its start request."""
    if cfg.get("driver") == "none":
        return NullLog()
    return JsonLog(cfg.get("path") or os.path.join(state, "container.log"),
                   int(cfg.get("max_size") or 10 * 1024 * 1024), int(cfg.get("max_files") or 3))
