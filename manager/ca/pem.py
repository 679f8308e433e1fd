"""Coercions between PEM, DER and `cryptography` objects, so callers can pass whichever they hold."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import CertificateError

CertLike = Union[x509.Certificate, bytes, str]
CertsLike = Union[CertLike, Iterable[x509.Certificate]]
KeyLike = Union[ec.EllipticCurvePrivateKey, bytes, str]

_PEM_CERT_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_ENCRYPTED_KEY = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


def as_cert(value: CertLike, field: str = "certificate") -> x509.Certificate:
    """One certificate from an object, PEM (str/bytes) or DER bytes."""
    if isinstance(value, x509.Certificate):
        return value
    data = value.encode() if isinstance(value, str) else value
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CertificateError(f"{field}: expected a certificate, PEM or DER, got {type(value).__name__}")
    data = bytes(data)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"{field}: not a valid X.509 certificate ({exc})") from None


def as_certs(value: CertsLike, field: str = "CA certificates") -> tuple[x509.Certificate, ...]:
    """A non-empty tuple of certificates from a PEM bundle, DER bytes, an object, or an iterable of those."""
    if isinstance(value, x509.Certificate):
        certs: tuple[x509.Certificate, ...] = (value,)
    elif isinstance(value, (bytes, bytearray, str)):
        data = value.encode() if isinstance(value, str) else bytes(value)
        if _PEM_CERT_BEGIN in data:
            try:
                certs = tuple(x509.load_pem_x509_certificates(data))
            except ValueError as exc:
                raise CertificateError(f"{field}: not a valid PEM bundle ({exc})") from None
        else:
            certs = (as_cert(data, field),)
    else:
        certs = tuple(as_cert(c, field) for c in value)  # type: ignore[union-attr]
    if not certs:
        raise CertificateError(f"{field}: no certificate given")
    return certs


def as_key(value: KeyLike, field: str = "private key", passwords: Sequence[bytes] = ()) -> ec.EllipticCurvePrivateKey:
    """A key from an object or PEM; an encrypted PEM (a locked manager's TLS key) opens with
    one of `passwords`."""
    if isinstance(value, ec.EllipticCurvePrivateKey):
        return value
    data = bytes(value.encode() if isinstance(value, str) else value)
    if _PEM_ENCRYPTED_KEY in data:
        key = _decrypt_key(data, field, passwords)
    else:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise CertificateError(f"{field}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{field}: must be an ECDSA key, got {type(key).__name__}")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def certs_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(cert_pem(c) for c in certs)


def key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM; encrypted with `password` when given (autolock: see manager/encryption)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption(),
    )


def _decrypt_key(data: bytes, field: str, passwords: Sequence[bytes]):
    if not passwords:
        raise CertificateError(f"{field}: encrypted, and this manager is locked (unlock it with `shoal swarm unlock`)")
    for password in passwords:
        try:
            return serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError):
            continue
    raise CertificateError(f"{field}: encrypted under a key this manager does not hold")
