"""Random identifiers in Swarm's format: 128 random bits written as 25 lowercase base36 characters."""

from __future__ import annotations

import re
import secrets

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"

# ceil(log36(2**128)) == 25, so every 128-bit value fits and the length is fixed.
ID_LENGTH = 25
ID_BITS = 128

_ID_RE = re.compile(r"[0-9a-z]{25}")


def to_base36(value: int, width: int) -> str:
    """Write a non-negative integer in lowercase base36, zero-padded to `width`."""
    if value < 0:
        raise ValueError(f"base36: value must be non-negative, got {value}")
    digits: list[str] = []
    while value:
        value, rem = divmod(value, 36)
        digits.append(_ALPHABET[rem])
    text = "".join(reversed(digits)) or "0"
    if len(text) > width:
        raise ValueError(f"base36: value needs {len(text)} digits, more than width {width}")
    return text.rjust(width, "0")


def random_base36(bits: int = ID_BITS, width: int = ID_LENGTH) -> str:
    """`bits` bits from the OS CSPRNG, as `width` base36 characters."""
    return to_base36(secrets.randbits(bits), width)


def new_node_id() -> str:
    """A fresh node (or cluster) id, e.g. '3k9x0c2m7q1w8e5r4t6y0u2i9'."""
    return random_base36()


def is_valid_id(text: object) -> bool:
    return isinstance(text, str) and _ID_RE.fullmatch(text) is not None


def check_id(field: str, text: object, error: type[Exception] = ValueError) -> str:
    """Return `text` if it is a well-formed id, else raise `error` naming `field`."""
    if not is_valid_id(text):
        raise error(f"{field}: must be {ID_LENGTH} lowercase base36 characters, got {text!r}")
    return text  # type: ignore[return-value]
