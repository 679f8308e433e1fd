"""Merging of validated compose trees, later files overriding earlier ones as compose does:
mappings merge key by key, scalars are replaced, most lists are appended without
duplicates, and lists of mounts or references are merged by their identifying key."""
from __future__ import annotations

from typing import Any, Callable

from .nodes import YList, YMap

_Key = Callable[[Any], Any]

# Service-relative paths of lists that an override replaces as a whole.
_REPLACED = {("command",), ("entrypoint",), ("healthcheck", "test")}
# Service-relative paths of lists whose entries are identified by one field.
_KEYED: dict[tuple[str, ...], _Key] = {
    ("volumes",): lambda v: v.get("target"),
    ("tmpfs",): lambda v: v.get("target"),
    ("secrets",): lambda v: v.get("source"),
    ("configs",): lambda v: v.get("source"),
    ("env_file",): lambda v: v.get("path"),
}


def _list_rule(parts: tuple[str | int, ...]) -> str | _Key:
    if len(parts) >= 3 and parts[0] == "services":
        rel = tuple(parts[2:])
        if rel in _REPLACED:
            return "replace"
        if rel in _KEYED:
            return _KEYED[rel]
        return "append"
    # Lists in top-level objects (ipam.config) describe one whole thing: replace.
    return "replace"


def merge_trees(trees: list[YMap]) -> YMap:
    merged = trees[0]
    for tree in trees[1:]:
        merged = _merge(merged, tree, ())
    return merged


def _merge(base: Any, override: Any, parts: tuple[str | int, ...]) -> Any:
    if isinstance(base, YMap) and isinstance(override, YMap):
        out = base.copy()
        for key, value in override.items():
            pos = override.pos_of(key)
            out.put(key, _merge(out[key], value, parts + (key,)) if key in out else value, pos)
        return out
    if isinstance(base, YList) and isinstance(override, YList):
        rule = _list_rule(parts)
        if rule == "replace":
            return override
        out_list = base.copy()
        for value, pos in zip(override, override.item_pos):
            if rule == "append":
                if value not in out_list:
                    out_list.add(value, pos)
                continue
            key = rule(value)
            for index, existing in enumerate(out_list):
                if rule(existing) == key:
                    out_list[index] = value
                    out_list.item_pos[index] = pos
                    break
            else:
                out_list.add(value, pos)
        return out_list
    if override is None and isinstance(base, (YMap, YList)):
        return base
    return override
