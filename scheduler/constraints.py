"""Placement constraints: `<key> == <value>` and `<key> != <value>`, with Swarm's matching rules.

Values compare case-insensitively. A label constraint on a node that lacks the
label behaves as if the label were empty: `==` fails and `!=` passes. Unlike
Swarm, an unknown key is refused when parsed instead of silently never matching.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from scheduler.types import NodeInfo

NODE_ID = "node.id"
NODE_HOSTNAME = "node.hostname"
NODE_ROLE = "node.role"
NODE_OS = "node.platform.os"
NODE_ARCH = "node.platform.arch"
NODE_LABELS = "node.labels"
ENGINE_LABELS = "engine.labels"

_PLAIN_FIELDS = (NODE_ID, NODE_HOSTNAME, NODE_ROLE, NODE_OS, NODE_ARCH)
_LABEL_FIELDS = (NODE_LABELS, ENGINE_LABELS)
_OPERATORS = ("==", "!=")
# The character sets Swarm accepts, so that stacks valid there are valid here.
_KEY = re.compile(r"[a-z_][a-z0-9\-_.]+", re.IGNORECASE)
_VALUE = re.compile(r"[a-z0-9:\-_\s.*()?+\[\]\\^$|/]+", re.IGNORECASE)
_EXPECTED_KEYS = ", ".join(_PLAIN_FIELDS) + ", node.labels.<key> or engine.labels.<key>"


@dataclass(frozen=True, slots=True)
class Constraint:
    field: str  # one of the NODE_*/ENGINE_* names above
    label: str  # label name for label fields (case-sensitive), else ""
    op: str  # "==" | "!="
    value: str

    @property
    def key(self) -> str:
        return f"{self.field}.{self.label}" if self.label else self.field

    @property
    def attribute(self) -> tuple[str, str]:
        """What the constraint reads from a node; constraints sharing it share an index."""
        return (self.field, self.label)

    @property
    def folded_value(self) -> str:
        return self.value.casefold()

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"

    def matches(self, node: NodeInfo) -> bool:
        actual = node_attribute(node, self.attribute)
        equal = actual is not None and actual.casefold() == self.folded_value
        return equal if self.op == "==" else not equal


def node_attribute(node: NodeInfo, attribute: tuple[str, str]) -> str | None:
    """The node's value for a constraint attribute; None when a label is absent."""
    field, label = attribute
    if field == NODE_LABELS:
        return node.labels.get(label)
    if field == ENGINE_LABELS:
        return node.engine_labels.get(label)
    if field == NODE_ID:
        return node.id
    if field == NODE_HOSTNAME:
        return node.hostname
    if field == NODE_ROLE:
        return node.role
    if field == NODE_OS:
        return node.os
    if field == NODE_ARCH:
        return node.arch
    raise ValueError(f"constraint: unknown attribute {field!r}")


def parse_constraint(text: str) -> Constraint:
    """Parse one constraint; raises ValueError("constraint: ...") naming what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"constraint: expected a string, got {type(text).__name__}")
    return _parse_constraint(text)


@lru_cache(maxsize=4096)
def _parse_constraint(text: str) -> Constraint:
    for op in _OPERATORS:
        if op in text:
            raw_key, raw_value = text.split(op, 1)
            break
    else:
        raise ValueError(f"constraint: {text!r} has no operator (expected == or !=)")
    key, value = raw_key.strip(), raw_value.strip()
    if not key:
        raise ValueError(f"constraint: {text!r} has an empty key")
    if not _KEY.fullmatch(key):
        raise ValueError(f"constraint: key {key!r} in {text!r} is invalid")
    if not value:
        raise ValueError(f"constraint: {text!r} has an empty value")
    if not _VALUE.fullmatch(value):
        raise ValueError(f"constraint: value {value!r} in {text!r} has characters other than "
                         "letters, digits, spaces and :-_.*()?+[]\\^$|/")
    lowered = key.lower()
    if lowered in _PLAIN_FIELDS:
        return Constraint(lowered, "", op, value)
    for field in _LABEL_FIELDS:
        prefix = field + "."
        if lowered.startswith(prefix) and len(key) > len(prefix):
            # The prefix is case-insensitive, the label name is not (as in Swarm).
            return Constraint(field, key[len(prefix):], op, value)
    raise ValueError(f"constraint: unknown key {key!r} in {text!r} (expected {_EXPECTED_KEYS})")


def parse_constraints(texts: tuple[str, ...]) -> tuple[Constraint, ...]:
    return tuple(parse_constraint(t) for t in texts)
