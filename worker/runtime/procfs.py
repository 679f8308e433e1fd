"""Process identity from /proc: a pid plus its start time names one process, even after
the pid is reused. Importable on its own (the shim imports it as `procfs`)."""


def stat_fields(pid: int):
    """Fields of /proc/<pid>/stat from field 3 (state) on, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rfind(b")") + 2:].split()


def start_time(pid: int):
    """Start time in clock ticks since boot (field 22), or None if the process is gone."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields else None


def is_alive(pid, start) -> bool:
    """True if `pid` is still the process that had start time `start` and is not a zombie."""
    if not pid:
        return False
    fields = stat_fields(pid)
    if not fields or fields[0] in (b"Z", b"X"):
        return False
    return start is None or int(fields[19]) == start


def rss_kib(pid: int):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None
