"""Field-level differences between two JSON values (API specs), for people to read:
`TaskTemplate.ContainerSpec.Env: ["A=1"] -> ["A=2"]`, `Mode.Replicated.Replicas: 2 -> 3`.

Objects are compared key by key; lists of objects of the same length element by element (so a
changed port shows as `EndpointSpec.Ports[0].PublishedPort: 8080 -> 8081`); any other list is
one value (an environment reads better whole than as shifted indices) unless it is too long to
read, and a long string shows only around its change. Pure.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_VALUE = 120  # longer values are cut: the line is a hint, `service inspect` has the rest


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()  # a key on one side only


@dataclass(frozen=True)
class Change:
    path: str
    old: Any
    new: Any

    def __str__(self) -> str:
        old, new = self.old, self.new
        if isinstance(old, str) and isinstance(new, str) and max(len(old), len(new)) > MAX_VALUE // 2:
            old, new = _around_difference(old, new)
        return f"{self.path}: {render(old)} -> {render(new)}"


def _around_difference(old: str, new: str, context: int = 20) -> tuple[str, str]:
    """Long strings (a script in Args) shown around what changed: "…-h /www" -> "…-h /www -v"."""
    start = 0
    while start < min(len(old), len(new)) and old[start] == new[start]:
        start += 1
    end = 0
    while end < min(len(old), len(new)) - start and old[-1 - end] == new[-1 - end]:
        end += 1
    cut = max(0, start - context)
    keep = max(0, end - context)

    def part(text: str) -> str:
        return ("…" if cut else "") + text[cut:len(text) - keep] + ("…" if keep else "")
    return part(old), part(new)


def _key(path: str, key: str) -> str:
    # Label keys hold dots ("com.docker.stack.image"): quote them so the path stays readable.
    part = key if _IDENT.match(key) else json.dumps(key)
    if not path:
        return part if _IDENT.match(key) else f"[{part}]"
    return f"{path}.{part}" if _IDENT.match(key) else f"{path}[{part}]"


def diff(old: Any, new: Any, path: str = "") -> list[Change]:
    """Every leaf where old and new differ, in key order."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[Change] = []
        for key in sorted(set(old) | set(new)):
            out += diff(old.get(key, ABSENT), new.get(key, ABSENT), _key(path, key))
        return out
    if (isinstance(old, list) and isinstance(new, list) and len(old) == len(new)
            and (any(isinstance(v, dict) for v in old + new) or len(json.dumps(old)) > MAX_VALUE)):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out += diff(a, b, f"{path}[{i}]")
        return out
    if old == new and type(old) is type(new):
        return []
    return [Change(path, old, new)]


def render(value: Any) -> str:
    if value is ABSENT:
        return "(unset)"
    text = json.dumps(value, separators=(", ", ": "), sort_keys=True, ensure_ascii=False)
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE - 3] + "..."
