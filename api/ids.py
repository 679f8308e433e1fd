"""Identifiers and timestamps in the forms the Docker swarm API uses."""
from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_id() -> str:
    """A 25-character base36 id, as SwarmKit makes for nodes, services and tasks (128 bits)."""
    n = int.from_bytes(secrets.token_bytes(16), "big")
    out = []
    for _ in range(25):
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "".join(out)


def timestamp(epoch: float | None = None) -> str:
    """RFC 3339 with nanosecond precision, UTC."""
    if epoch is None:
        epoch = time.time()
    whole = int(epoch)
    nanos = int(round((epoch - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    base = _seconds_cache.get(whole)
    if base is None:  # formatting the date is most of the cost; every write stamps one
        base = datetime.fromtimestamp(whole, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        if len(_seconds_cache) > 64:
            _seconds_cache.clear()
        _seconds_cache[whole] = base
    return f"{base}.{nanos:09d}Z"


_seconds_cache: dict[int, str] = {}


def parse_timestamp(text: str) -> float:
    """Inverse of `timestamp` (also accepts fewer fractional digits); 0.0 for an empty string."""
    if not text:
        return 0.0
    body = text.rstrip("Z")
    if "." in body:
        main, frac = body.split(".", 1)
    else:
        main, frac = body, "0"
    whole = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return whole + int(frac[:9].ljust(9, "0")) / 1e9
