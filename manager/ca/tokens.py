"""Join tokens: `SHLTKN-1-<ca digest>-<secret>`.

The digest is the 64-hex sha256 of the root CA certificate's DER (Swarm writes the same digest
in base36; hex is easier to check by eye against `openssl x509 -outform der | sha256sum`).
The secret is 128 random bits as 25 base36 characters. The digest lets a joining node pin the
CA before it trusts anything; the secret proves it was invited and decides its role.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Literal

from .errors import TokenError
from .ids import ID_LENGTH, random_base36
from .pem import CertLike
from .root import DIGEST_HEX_LENGTH, ca_digest

Role = Literal["worker", "manager"]
ROLES: tuple[Role, ...] = ("worker", "manager")

TOKEN_PREFIX = "SHLTKN"
TOKEN_VERSION = "1"
SECRET_LENGTH = ID_LENGTH  # 25 base36 characters hold 128 bits

_DIGEST_RE = re.compile(rf"[0-9a-f]{{{DIGEST_HEX_LENGTH}}}")
_SECRET_RE = re.compile(rf"[0-9a-z]{{{SECRET_LENGTH}}}")


@dataclass(frozen=True)
class Token:
    version: str
    ca_digest: str
    secret: str

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}-{self.version}-{self.ca_digest}-{self.secret}"

    def __repr__(self) -> str:
        # Tokens end up in logs via reprs of larger objects; the secret must not.
        return f"Token(version={self.version!r}, ca_digest={self.ca_digest!r}, secret='***')"


@dataclass(frozen=True)
class JoinTokens:
    """The cluster's two current tokens, as full token strings."""

    worker: str
    manager: str

    def __post_init__(self) -> None:
        parse_token(self.worker)
        parse_token(self.manager)

    def __repr__(self) -> str:
        return f"JoinTokens(worker={parse_token(self.worker)!r}, manager={parse_token(self.manager)!r})"

    @classmethod
    def generate(cls, ca_cert: CertLike) -> JoinTokens:
        return cls(worker=make_token(ca_cert, "worker"), manager=make_token(ca_cert, "manager"))

    def for_role(self, role: Role) -> str:
        _check_role(role)
        return self.worker if role == "worker" else self.manager

    def rotate(self, role: Role, ca_cert: CertLike) -> JoinTokens:
        """A new secret for `role`; the old token for that role stops working at once."""
        _check_role(role)
        fresh = make_token(ca_cert, role)
        if role == "worker":
            return JoinTokens(worker=fresh, manager=self.manager)
        return JoinTokens(worker=self.worker, manager=fresh)

    def with_ca(self, ca_cert: CertLike) -> JoinTokens:
        """Same secrets, pinned to a new root (after `swarm ca --rotate`, as Swarm does)."""
        digest = ca_digest(ca_cert)
        w, m = parse_token(self.worker), parse_token(self.manager)
        return JoinTokens(
            worker=str(Token(TOKEN_VERSION, digest, w.secret)),
            manager=str(Token(TOKEN_VERSION, digest, m.secret)),
        )


def _check_role(role: object) -> None:
    if role not in ROLES:
        raise ValueError(f"role: must be 'worker' or 'manager', got {role!r}")


def make_token(ca_cert: CertLike, role: Role) -> str:
    """A new random token pinned to `ca_cert`. The role is not encoded in the token (as in Swarm):
    it is decided by which of the cluster's two tokens the secret matches."""
    _check_role(role)
    return str(Token(TOKEN_VERSION, ca_digest(ca_cert), random_base36()))


def parse_token(text: object) -> Token:
    """Parse a token, raising TokenError("join token: <reason>"). Never echoes the secret."""
    if isinstance(text, Token):
        return text
    if not isinstance(text, str):
        raise TokenError(f"join token: expected a string, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise TokenError("join token: empty")
    parts = text.split("-")
    if len(parts) != 4:
        raise TokenError(
            f"join token: expected 4 parts {TOKEN_PREFIX}-1-<ca digest>-<secret> separated by '-', got {len(parts)}"
        )
    prefix, version, digest, secret = parts
    if prefix != TOKEN_PREFIX:
        shown = prefix if len(prefix) <= 16 else prefix[:16] + "..."
        raise TokenError(f"join token: must start with {TOKEN_PREFIX!r}, got {shown!r}")
    if version != TOKEN_VERSION:
        shown = version if len(version) <= 8 else version[:8] + "..."
        raise TokenError(f"join token: unsupported version {shown!r}, this node understands {TOKEN_VERSION!r}")
    if not _DIGEST_RE.fullmatch(digest):
        raise TokenError(
            f"join token: CA digest must be {DIGEST_HEX_LENGTH} lowercase hex characters, got {len(digest)} characters"
        )
    if not _SECRET_RE.fullmatch(secret):
        raise TokenError(
            f"join token: secret must be {SECRET_LENGTH} lowercase base36 characters, got {len(secret)} characters"
        )
    return Token(version, digest, secret)


def token_role(token: str | Token, tokens: JoinTokens) -> Role:
    """The role `token` grants in a cluster whose current tokens are `tokens`.

    Raises TokenError if the token is malformed, pins another CA, or matches neither current
    secret (wrong, or rotated away). Both secrets are always compared, in constant time, so the
    time taken tells nothing about either.
    """
    given = parse_token(token)
    worker, manager = parse_token(tokens.worker), parse_token(tokens.manager)
    given_secret = given.secret.encode()
    is_worker = hmac.compare_digest(given_secret, worker.secret.encode())
    is_manager = hmac.compare_digest(given_secret, manager.secret.encode())
    # The digest is public (it is in every TLS handshake), so a plain comparison is fine.
    if given.ca_digest not in (worker.ca_digest, manager.ca_digest):
        raise TokenError(
            "join token: CA digest does not match this cluster's root CA "
            "(token of another cluster, or issued before a CA rotation)"
        )
    if is_manager and given.ca_digest == manager.ca_digest:
        return "manager"
    if is_worker and given.ca_digest == worker.ca_digest:
        return "worker"
    raise TokenError("join token: secret is not valid for this cluster (wrong token, or it was rotated)")
