"""The two environment-file formats: compose's .env (quotes, export) and docker's --env-file (raw)."""
from __future__ import annotations

import re
from typing import Mapping

from .errors import ComposeError, Pos

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$"}


def parse_dotenv(text: str, filename: str) -> dict[str, str]:
    """Parse a compose .env file: KEY=VALUE lines, optional "export ", '#' comments,
    single quotes literal, double quotes with backslash escapes, inline " #" comments
    after unquoted values."""
    result: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export"):].lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep:
            raise ComposeError(f'expected KEY=VALUE, got "{line}"', Pos(filename, number))
        if not _NAME.match(name):
            raise ComposeError(f'invalid variable name "{name}"', Pos(filename, number))
        result[name] = _dotenv_value(value.strip(), Pos(filename, number))
    return result


def _dotenv_value(value: str, pos: Pos) -> str:
    if value[:1] in ("'", '"'):
        quote = value[0]
        out: list[str] = []
        i = 1
        while i < len(value):
            ch = value[i]
            if quote == '"' and ch == "\\" and i + 1 < len(value):
                nxt = value[i + 1]
                out.append(_ESCAPES.get(nxt, "\\" + nxt))
                i += 2
                continue
            if ch == quote:
                rest = value[i + 1:].strip()
                if rest and not rest.startswith("#"):
                    raise ComposeError(f"unexpected text after the closing quote: {rest}", pos)
                return "".join(out)
            out.append(ch)
            i += 1
        raise ComposeError(f"missing closing {quote} quote", pos)
    comment = re.search(r"\s#", value)
    if comment:
        value = value[: comment.start()]
    return value.rstrip()


def parse_env_file(text: str, lookup: Mapping[str, str]) -> list[tuple[str, str]]:
    """Parse a service env_file the way `docker stack deploy` does: KEY=VALUE passed
    through verbatim (no quote removal), a bare KEY takes its value from lookup and is
    dropped when lookup lacks it. Raises ValueError naming the bad line."""
    pairs: list[tuple[str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not name:
            raise ValueError(f"line {number}: no variable name")
        if any(c.isspace() for c in name):
            raise ValueError(f'line {number}: variable "{name}" contains whitespace')
        if sep:
            pairs.append((name, value))
        elif name in lookup:
            pairs.append((name, lookup[name]))
    return pairs
