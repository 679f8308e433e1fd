"""Sizes and durations in the notations users type (Docker's and compose's)."""
from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
       "h": 3_600_000_000_000}


def parse_bytes(text: str, field: str) -> int:
    """'64M', '1g', '512k', '1000' -> bytes (binary multiples, as Docker's RAMInBytes)."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"{field}: invalid size {text!r} (examples: 64M, 1G, 512k)")
    return int(float(m.group(1)) * _MULT[m.group(2).lower()])


def parse_duration(text: str, field: str) -> int:
    """Go-style durations ('10s', '1m30s', '500ms') -> nanoseconds."""
    s = str(text).strip()
    if s == "0":
        return 0
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _NS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"{field}: invalid duration {text!r} (examples: 10s, 1m30s, 500ms)")
    return int(total)


def parse_cpus(text: str, field: str) -> int:
    """'0.5' CPUs -> nano CPUs."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{field}: invalid number of CPUs {text!r}") from None
    if value < 0:
        raise ValueError(f"{field}: must not be negative")
    return int(round(value * 1e9))


def format_duration(ns: int) -> str:
    seconds = ns / 1e9
    if seconds and seconds < 1:
        return f"{ns / 1e6:g}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    return f"{int(seconds // 60)}m{seconds % 60:g}s"


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}B"  # pragma: no cover
