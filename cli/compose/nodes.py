"""Containers that remember where each entry was written, so later stages can report file:line."""
from __future__ import annotations

from typing import Any, Iterable

from .errors import Pos


class YMap(dict):
    """A str-keyed mapping; key_pos[k] is the position of key k (its line in the file)."""

    __slots__ = ("pos", "key_pos")

    def __init__(self, pos: Pos, items: Iterable[tuple[str, Any, Pos]] = ()):
        super().__init__()
        self.pos = pos
        self.key_pos: dict[str, Pos] = {}
        for key, value, key_pos in items:
            self.put(key, value, key_pos)

    def put(self, key: str, value: Any, pos: Pos) -> None:
        self[key] = value
        self.key_pos[key] = pos

    def pos_of(self, key: str) -> Pos:
        return self.key_pos.get(key, self.pos)

    def copy(self) -> "YMap":
        return YMap(self.pos, ((k, v, self.pos_of(k)) for k, v in self.items()))


class YList(list):
    """A list; item_pos[i] is the position of item i."""

    __slots__ = ("pos", "item_pos")

    def __init__(self, pos: Pos, items: Iterable[tuple[Any, Pos]] = ()):
        super().__init__()
        self.pos = pos
        self.item_pos: list[Pos] = []
        for value, item_pos in items:
            self.add(value, item_pos)

    def add(self, value: Any, pos: Pos) -> None:
        self.append(value)
        self.item_pos.append(pos)

    def pos_of(self, index: int) -> Pos:
        return self.item_pos[index] if 0 <= index < len(self.item_pos) else self.pos

    def copy(self) -> "YList":
        return YList(self.pos, zip(self, self.item_pos))


def plain(value: Any) -> Any:
    """Strip positions: YMap/YList trees to ordinary dicts and lists."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
