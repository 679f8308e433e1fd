"""Error type and source positions shared by the compose loader, validator and converter."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pos:
    """Where a value came from: the file as the user named it, and a 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class ComposeError(ValueError):
    """A compose file that cannot be deployed; str(e) is one line: "file:line: path: reason"."""

    def __init__(self, reason: str, pos: Pos | None = None, path: str = "", file: str | None = None):
        self.reason = reason
        self.pos = pos
        self.path = path
        self.file = pos.file if pos is not None else file
        parts = []
        if pos is not None:
            parts.append(str(pos))
        elif file:
            parts.append(file)
        if path:
            parts.append(path)
        parts.append(reason)
        super().__init__(": ".join(parts))


def render_path(parts: tuple[str | int, ...]) -> str:
    """("services", "web", "ports", 0, "target") -> "services.web.ports[0].target"."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def describe(value: object) -> str:
    """A short rendering of a bad value for error messages: strings quoted, containers named."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)
