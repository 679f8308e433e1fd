"""The swarm's unlock key (the key-encryption key), in Swarm's human-readable form:
`SWMKEY-1-<32 random bytes, base64 without padding>`."""
from __future__ import annotations

import base64
import binascii
import os

PREFIX = "SWMKEY-1-"
KEY_BYTES = 32


class InvalidUnlockKey(ValueError):
    """Messages start with "invalid key: " and name the reason."""

    def __init__(self, reason: str):
        super().__init__(f"invalid key: {reason}")


def new_unlock_key() -> str:
    return format_unlock_key(os.urandom(KEY_BYTES))


def format_unlock_key(secret: bytes) -> str:
    return PREFIX + base64.b64encode(secret).decode().rstrip("=")


def parse_unlock_key(text: str) -> bytes:
    """The key's 32 secret bytes; InvalidUnlockKey says what is wrong with the text."""
    if not isinstance(text, str):
        raise InvalidUnlockKey("UnlockKey: must be a string")
    text = text.strip()
    if not text:
        raise InvalidUnlockKey("UnlockKey: empty")
    if not text.startswith(PREFIX):
        raise InvalidUnlockKey(f"UnlockKey: not a swarm unlock key (it starts with {PREFIX})")
    body = text[len(PREFIX):]
    try:
        secret = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidUnlockKey("UnlockKey: not valid base64 after " + PREFIX) from None
    if len(secret) != KEY_BYTES:
        raise InvalidUnlockKey(f"UnlockKey: holds {len(secret)} bytes, a swarm unlock key holds {KEY_BYTES} "
                               "(cut short when copied?)")
    return secret
