"""Compose value syntaxes: Go-style durations, docker memory sizes, fractional CPU counts."""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NS_PER_UNIT = {
    "ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
    "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_duration(text: str) -> int:
    """"1m30s" -> 90_000_000_000 (nanoseconds). Same grammar as Go's time.ParseDuration,
    without the sign: compose durations are never negative."""
    if text == "0":
        return 0
    pos = 0
    total = Decimal(0)
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            raise ValueError(f'invalid duration "{text}" (use a number with a unit: "500ms", "10s", "1m30s", "2h")')
        total += Decimal(match.group(1)) * _NS_PER_UNIT[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(f'invalid duration "{text}"')
    return int(total)


def parse_size(value: str | int) -> int:
    """"64M" -> 67108864, "1g", "512k", "1.5GiB"; plain numbers are bytes. Units are binary, as docker's."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value}: must not be negative")
        return value
    match = _SIZE.match(value.strip())
    if match is None:
        raise ValueError(f'invalid size "{value}" (use bytes or a number with k, m, g, t or p, e.g. "64M")')
    return int(Decimal(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()])


def parse_cpus(value: str | int | float) -> int:
    """"0.5" -> 500_000_000 NanoCPUs; refuses precision finer than a nano-CPU, as docker does."""
    text = repr(value) if isinstance(value, float) else str(value)
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f'invalid CPU count "{value}" (use a number of CPUs such as 0.5 or 2)') from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f'invalid CPU count "{value}": must be a non-negative number')
    nano = amount * 1_000_000_000
    if nano != nano.to_integral_value():
        raise ValueError(f'invalid CPU count "{value}": more precise than 0.000000001')
    return int(nano)
