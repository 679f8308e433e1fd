"""Plain tables and human ages, as Docker's CLI prints them."""
from __future__ import annotations

import json
import time
from typing import Any, Sequence

import typer

from api.ids import parse_timestamp


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [list(map(str, headers))] + [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        line = "   ".join(c.ljust(w) for c, w in zip(r, widths))
        typer.echo(line.rstrip())


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=4))


def ago(ts: str, now: float | None = None) -> str:
    """'5 seconds ago', as Docker's HumanDuration."""
    if not ts:
        return ""
    seconds = max(0.0, (now or time.time()) - parse_timestamp(ts))
    if seconds < 1:
        return "Less than a second ago"
    if seconds < 60:
        n = int(seconds)
        return f"{n} second{'s' if n != 1 else ''} ago"
    minutes = seconds / 60
    if minutes < 60:
        n = int(round(minutes)) if minutes >= 2 else 1
        return "About a minute ago" if n == 1 else f"{n} minutes ago"
    hours = minutes / 60
    if hours < 48:
        n = int(round(hours))
        return "About an hour ago" if n == 1 else f"{n} hours ago"
    days = int(hours / 24)
    return f"{days} days ago"
