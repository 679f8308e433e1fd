"""Placement preferences: `spread=node.labels.<key>` or `spread=engine.labels.<key>`."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from scheduler.constraints import ENGINE_LABELS, NODE_LABELS
from scheduler.types import NodeInfo

STRATEGIES = ("spread",)


@dataclass(frozen=True, slots=True)
class Preference:
    strategy: str  # "spread"
    field: str  # NODE_LABELS | ENGINE_LABELS
    label: str

    @property
    def descriptor(self) -> str:
        return f"{self.field}.{self.label}"

    def __str__(self) -> str:
        return f"{self.strategy}={self.descriptor}"

    def value(self, node: NodeInfo) -> str:
        # A node without the label joins the "" group, as in Swarm, so nodes that lack
        # the label still get their share instead of being skipped or overloaded.
        labels = node.labels if self.field == NODE_LABELS else node.engine_labels
        return labels.get(self.label, "")


def parse_preference(text: str) -> Preference:
    """Parse one preference; raises ValueError("placement preference: ...")."""
    if not isinstance(text, str):
        raise ValueError(f"placement preference: expected a string, got {type(text).__name__}")
    return _parse_preference(text)


@lru_cache(maxsize=1024)
def _parse_preference(text: str) -> Preference:
    strategy, sep, descriptor = text.partition("=")
    strategy, descriptor = strategy.strip(), descriptor.strip()
    if not sep or not strategy or not descriptor:
        raise ValueError(f"placement preference: {text!r} is not of the form spread=node.labels.<key>")
    if strategy.lower() not in STRATEGIES:
        raise ValueError(f"placement preference: unsupported strategy {strategy!r} in {text!r} "
                         "(only spread is supported)")
    lowered = descriptor.lower()
    for field in (NODE_LABELS, ENGINE_LABELS):
        prefix = field + "."
        if lowered.startswith(prefix) and len(descriptor) > len(prefix):
            return Preference("spread", field, descriptor[len(prefix):])
    raise ValueError(f"placement preference: cannot spread over {descriptor!r} in {text!r} "
                     "(expected node.labels.<key> or engine.labels.<key>)")


def parse_preferences(texts: tuple[str, ...]) -> tuple[Preference, ...]:
    return tuple(parse_preference(t) for t in texts)
