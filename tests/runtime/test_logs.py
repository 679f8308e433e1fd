"""Container logs: the json-file writer (lines, cut long lines, rotation), the reader (tail,
since, follow across rotations), and real containers whose output is rotated and followed."""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time

import pytest

from worker.logs import LogEntry, format_time, parse_time, read_logs
from worker.runtime.jsonlog import MAX_LINE, JsonLog, rfc3339

from .conftest import IS_ROOT, cfg


def entries(path, **kw) -> list[LogEntry]:
    async def collect():
        return [e async for e in read_logs(path, **kw)]
    return asyncio.run(asyncio.wait_for(collect(), 20))


def test_writer_lines_partials_and_long_lines(tmp_path):
    log = JsonLog(str(tmp_path / "container.log"))
    log.feed("stdout", b"one\ntw", 1_700_000_000_123_456_789)
    log.feed("stderr", b"err\n", 1_700_000_000_200_000_000)
    log.feed("stdout", b"o\n" + b"x" * (MAX_LINE + 10), 1_700_000_001_000_000_000)
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "container.log").read_text().splitlines()]
    assert lines[0] == {"log": "one\n", "stream": "stdout", "time": "2023-11-14T22:13:20.123456789Z"}
    assert lines[1] == {"log": "err\n", "stream": "stderr", "time": "2023-11-14T22:13:20.2Z"}
    assert lines[2]["log"] == "two\n"
    assert lines[3]["log"] == "x" * MAX_LINE  # cut, without a newline, as Docker does
    assert lines[4]["log"] == "x" * 10        # the rest, flushed at close
    assert rfc3339(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert parse_time("2023-11-14T22:13:20.2Z") == 1_700_000_000_200_000_000
    assert parse_time(format_time(1_700_000_000_000_000_001)) == 1_700_000_000_000_000_001


def test_writer_escapes_and_replaces_bad_utf8(tmp_path):
    log = JsonLog(str(tmp_path / "container.log"))
    log.feed("stdout", 'quote " backslash \\ tab \t é \x01\n'.encode() + b"\xff\xfe\n", 1)
    log.close()
    got = [json.loads(line)["log"] for line in (tmp_path / "container.log").read_text().splitlines()]
    assert got == ['quote " backslash \\ tab \t é \x01\n', "\ufffd\ufffd\n"]


def test_rotation_keeps_max_files(tmp_path):
    log = JsonLog(str(tmp_path / "container.log"), max_size=1000, max_files=3)
    for i in range(100):
        log.feed("stdout", f"line {i:03d}\n".encode(), 1_000_000_000 + i)
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["container.log", "container.log.1", "container.log.2"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    got = entries(tmp_path)
    assert [e.line for e in got][-1] == "line 099\n"
    numbers = [int(e.line.split()[1]) for e in got]
    assert numbers == list(range(numbers[0], 100))  # contiguous, oldest first, across the three files
    assert [e.line for e in entries(tmp_path, tail=3)] == ["line 097\n", "line 098\n", "line 099\n"]
    assert entries(tmp_path, tail=0) == []
    assert [e.line for e in entries(tmp_path, since=1.000000098)] == ["line 098\n", "line 099\n"]


def test_single_file_is_truncated(tmp_path):
    log = JsonLog(str(tmp_path / "container.log"), max_size=500, max_files=1)
    for i in range(50):
        log.feed("stdout", f"line {i}\n".encode(), 1)
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["container.log"]
    assert entries(tmp_path)[-1].line == "line 49\n"


def test_reader_skips_damaged_lines_and_waits_for_whole_lines(tmp_path):
    (tmp_path / "container.log").write_text(
        '{"log":"a\\n","stream":"stdout","time":"2024-01-01T00:00:00Z"}\nnot json\n'
        '{"log":"b\\n","stream":"stderr","time":"2024-01-01T00:00:01.5Z"}\n{"log":"partial')
    got = entries(tmp_path / "container.log")
    assert [(e.stream, e.line) for e in got] == [("stdout", "a\n"), ("stderr", "b\n")]
    assert got[1].time == parse_time("2024-01-01T00:00:01.500Z")
    with pytest.raises(ValueError, match="tail: must not be negative"):
        entries(tmp_path, tail=-1)


def test_follow_across_rotations_until_exit(tmp_path):
    """A writer rotating every few lines while the reader follows: every line arrives once, in order."""
    log = JsonLog(str(tmp_path / "container.log"), max_size=2000, max_files=2)
    log.feed("stdout", b"before\n", 1)

    def writer():
        for i in range(200):
            log.feed("stdout", f"n {i}\n".encode())
            if i % 20 == 0:
                time.sleep(0.01)
        log.close()
        (tmp_path / "exit.json").write_text("{}")

    async def follow():
        got = []
        async for e in read_logs(tmp_path, tail=1, follow=True, poll_interval=0.002):
            got.append(e.line)
        return got

    t = threading.Thread(target=writer)
    t.start()
    got = asyncio.run(asyncio.wait_for(follow(), 30))
    t.join()
    assert got[0] == "before\n" or got[0].startswith("n ")
    numbers = [int(line.split()[1]) for line in got if line.startswith("n ")]
    # a line can be lost only if it was rotated out twice between two polls; at this pace none is
    assert numbers == list(range(numbers[0], 200)) and numbers[0] <= 1


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="needs root")
def test_container_output_rotates_and_follows(runtime, busybox):
    # paced so that a follower polling every 10 ms sees each file before it is rotated out
    script = ("i=0; while [ $i -lt 400 ]; do echo line $i; echo err $i >&2; i=$((i+1)); "
              "[ $((i % 40)) = 0 ] && sleep 0.05; done; sleep 0.2; echo last")
    config = cfg(busybox, ["sh", "-c", script], log_max_size=8192, log_max_files=2)
    runtime.create(config)
    runtime.start(config.id)

    async def follow():
        return [e async for e in read_logs(runtime.log_path(config.id).parent, follow=True, poll_interval=0.01)]
    got = asyncio.run(asyncio.wait_for(follow(), 20))
    st = asyncio.run(runtime.wait(config.id))
    assert st.exit_code == 0
    files = sorted(p.name for p in runtime.log_path(config.id).parent.glob("container.log*"))
    assert files == ["container.log", "container.log.1"]
    assert all(os.path.getsize(runtime.log_path(config.id).parent / f) <= 8192 for f in files)
    assert got[-1].line == "last\n" and got[-1].stream == "stdout"
    out = [int(e.line.split()[1]) for e in got if e.stream == "stdout" and e.line.startswith("line")]
    err = [int(e.line.split()[1]) for e in got if e.stream == "stderr"]
    assert out == list(range(400)) and err == list(range(400))
    tail = entries(runtime.log_path(config.id).parent, tail=2)
    assert [e.line for e in tail] == ["err 399\n", "last\n"] or [e.line for e in tail] == ["line 399\n", "last\n"]
