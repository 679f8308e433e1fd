"""Exceptions of the CA package; every message is one line naming the field and the reason."""

from __future__ import annotations


class CAError(Exception):
    """Base class for everything the CA package refuses."""


class TokenError(CAError):
    """A join token is malformed, wrong, or rotated. Messages start with "join token: "."""


class CertificateError(CAError):
    """A certificate, CSR or key is unusable (bad subject, wrong issuer, expired, mismatched key)."""


class PeerRejected(CAError):
    """A TLS peer authenticated, but its identity is not allowed here (role, cluster, removed)."""


class BootstrapError(CAError):
    """A joining node could not pin the cluster CA: the server's chain does not match the token."""
