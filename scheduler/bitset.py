"""Sets of node indices as Python ints, so that intersecting filters costs a few word operations.

Nodes are indexed 0..n-1 in node-id order; bit i stands for node i.
"""
from __future__ import annotations

from itertools import compress
from typing import Iterable

_TO_FLAGS = bytes.maketrans(b"01", b"\x00\x01")


def from_indices(indices: Iterable[int], size: int) -> int:
    digits = bytearray(b"0" * size)
    for i in indices:
        digits[size - 1 - i] = 0x31  # most significant digit first
    return int(digits, 2) if size else 0


def to_indices(mask: int) -> list[int]:
    """The set bits of mask, ascending."""
    if not mask:
        return []
    flags = format(mask, "b").encode()[::-1].translate(_TO_FLAGS)
    return list(compress(range(len(flags)), flags))


def count(mask: int) -> int:
    return mask.bit_count()
