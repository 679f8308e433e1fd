"""Node keys, CSRs, signing, identity and renewal."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from manager.ca import (
    DEFAULT_VALIDITY,
    CertificateError,
    ClusterCA,
    Identity,
    NodeCredentials,
    RootCA,
    issued_by,
    make_csr,
    make_node_key,
    needs_renewal,
    new_node_id,
    parse_identity,
    sign_csr,
)

UTC = dt.timezone.utc
NOW = dt.datetime(2031, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def cluster() -> ClusterCA:
    return ClusterCA.create(now=NOW - dt.timedelta(days=1))


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return make_node_key()


@pytest.fixture(scope="module")
def ids() -> tuple[str, str]:
    return new_node_id(), new_node_id()


def _sign(cluster, key, ids, role="worker", **kw) -> x509.Certificate:
    node_id, cluster_id = ids
    pem = sign_csr(cluster, make_csr(key), node_id, role, cluster_id, now=NOW, **kw)
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    return x509.load_pem_x509_certificate(pem)


def _attr(cert: x509.Certificate, oid) -> list[str]:
    return [a.value for a in cert.subject.get_attributes_for_oid(oid)]


def test_node_key_is_p256(key) -> None:
    assert isinstance(key.curve, ec.SECP256R1)


def test_signed_certificate_carries_swarm_style_subject(cluster, key, ids) -> None:
    node_id, cluster_id = ids
    cert = _sign(cluster, key, ids, role="manager")
    assert _attr(cert, NameOID.COMMON_NAME) == [node_id]
    assert _attr(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == ["swarm-manager"]
    assert _attr(cert, NameOID.ORGANIZATION_NAME) == [cluster_id]
    assert cert.issuer == cluster.signer.cert.subject
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    cert.verify_directly_issued_by(cluster.signer.cert)
    assert issued_by(cert, cluster.signer.cert)


def test_signed_certificate_extensions(cluster, key, ids) -> None:
    node_id, _ = ids
    cert = _sign(cluster, key, ids, ips=["10.0.0.5", "fd00::1"])
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [node_id]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("fd00::1"),
    ]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = cluster.signer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_certificate_public_key_is_the_csrs(cluster, key, ids) -> None:
    cert = _sign(cluster, key, ids)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def test_default_validity_is_90_days_and_configurable(cluster, key, ids) -> None:
    assert DEFAULT_VALIDITY == dt.timedelta(days=90)
    cert = _sign(cluster, key, ids)
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=90)
    assert cert.not_valid_before_utc == NOW - dt.timedelta(hours=1)
    short = _sign(cluster, key, ids, validity=dt.timedelta(minutes=10))
    assert short.not_valid_after_utc == NOW + dt.timedelta(minutes=10)
    # Backdating stays small for short certificates, else they would be born due for renewal.
    assert short.not_valid_before_utc == NOW - dt.timedelta(minutes=1)
    assert not needs_renewal(short, NOW)


def test_validity_never_outlives_the_root(cluster, key, ids) -> None:
    cert = _sign(cluster, key, ids, validity=dt.timedelta(days=365 * 50))
    assert cert.not_valid_after_utc == cluster.signer.cert.not_valid_after_utc


def test_csr_asking_for_a_manager_subject_gets_the_role_the_ca_chose(cluster, ids) -> None:
    node_id, cluster_id = ids
    attacker = make_node_key()
    greedy = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, new_node_id()),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "swarm-manager"),
                    x509.NameAttribute(NameOID.COMMON_NAME, new_node_id()),
                ]
            )
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("evil.example")]), critical=False)
        .sign(attacker, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    pem = sign_csr(cluster, greedy, node_id, "worker", cluster_id, now=NOW)
    identity = parse_identity(pem)
    assert (identity.node_id, identity.role, identity.cluster_id) == (node_id, "worker", cluster_id)
    cert = x509.load_pem_x509_certificate(pem)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [node_id]


def test_csr_with_a_broken_signature_is_refused(cluster, key, ids) -> None:
    csr = x509.load_pem_x509_csr(make_csr(key))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # last byte of the ECDSA signature's s
    with pytest.raises(CertificateError, match="^csr: signature does not verify"):
        sign_csr(cluster, bytes(der), ids[0], "worker", ids[1], now=NOW)


def test_csr_with_an_rsa_key_is_refused(cluster, ids) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(rsa_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(CertificateError, match="^csr: public key must be ECDSA"):
        sign_csr(cluster, csr, ids[0], "worker", ids[1], now=NOW)


def test_garbage_csr_is_refused(cluster, ids) -> None:
    with pytest.raises(CertificateError, match="^csr: not a valid certificate signing request"):
        sign_csr(cluster, b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", ids[0], "worker", ids[1])
    with pytest.raises(CertificateError, match="^csr: expected PEM bytes"):
        sign_csr(cluster, 12, ids[0], "worker", ids[1])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("node_id", {"node_id": "Not-An-Id"}),
        ("cluster_id", {"cluster_id": "short"}),
        ("role", {"role": "admin"}),
        ("validity", {"validity": dt.timedelta(seconds=5)}),
        ("validity", {"validity": 90}),
        ("ips", {"ips": ["not-an-ip"]}),
    ],
)
def test_bad_signing_input_names_the_field(cluster, key, ids, field: str, kwargs: dict) -> None:
    args = {"node_id": ids[0], "role": "worker", "cluster_id": ids[1]}
    args.update(kwargs)
    extra = {k: v for k, v in args.items() if k in ("validity", "ips")}
    with pytest.raises(CertificateError, match=f"^{field}: "):
        sign_csr(cluster, make_csr(key), args["node_id"], args["role"], args["cluster_id"], now=NOW, **extra)


def test_ca_without_key_cannot_sign(cluster, key, ids) -> None:
    with pytest.raises(CertificateError, match="cannot sign"):
        sign_csr(RootCA(cert=cluster.signer.cert), make_csr(key), ids[0], "worker", ids[1])


def test_parse_identity(cluster, key, ids) -> None:
    cert = _sign(cluster, key, ids, role="manager")
    identity = parse_identity(cert)
    assert identity == Identity(
        node_id=ids[0],
        role="manager",
        cluster_id=ids[1],
        not_after=NOW + DEFAULT_VALIDITY,
        serial=cert.serial_number,
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    assert parse_identity(der) == identity == parse_identity(cert.public_bytes(serialization.Encoding.PEM))


def _self_signed(subject: list[x509.NameAttribute]) -> x509.Certificate:
    k = make_node_key()
    name = x509.Name(subject)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(k.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(k, hashes.SHA256())
    )


def test_parse_identity_rejects_foreign_subjects(cluster) -> None:
    with pytest.raises(CertificateError, match=r"expected exactly one OU \(role\), found 0"):
        parse_identity(cluster.signer.cert)
    nid = new_node_id()
    bad_ou = _self_signed(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, nid),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "swarm-admin"),
            x509.NameAttribute(NameOID.COMMON_NAME, nid),
        ]
    )
    with pytest.raises(CertificateError, match="OU 'swarm-admin' is not a Shoal role"):
        parse_identity(bad_ou)
    bad_cn = _self_signed(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, nid),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "swarm-worker"),
            x509.NameAttribute(NameOID.COMMON_NAME, "host.example"),
        ]
    )
    with pytest.raises(CertificateError, match=r"CN \(node id\): must be 25 lowercase base36"):
        parse_identity(bad_cn)


def test_needs_renewal_window(cluster, key, ids) -> None:
    cert = _sign(cluster, key, ids, validity=dt.timedelta(days=100))
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    total = end - start

    def at(remaining_fraction: float) -> dt.datetime:
        return end - total * remaining_fraction

    assert not needs_renewal(cert, NOW)
    # jitter 0: renew once less than half remains
    assert not needs_renewal(cert, at(0.51), jitter=0.0)
    assert needs_renewal(cert, at(0.49), jitter=0.0)
    # jitter 1: wait until less than a third remains
    assert not needs_renewal(cert, at(0.34), jitter=1.0)
    assert needs_renewal(cert, at(0.32), jitter=1.0)
    # jitter in between lands in between
    assert not needs_renewal(cert, at(0.43), jitter=0.5)
    assert needs_renewal(cert, at(0.41), jitter=0.5)
    # expired certificates always need renewal
    assert needs_renewal(cert, end + dt.timedelta(seconds=1), jitter=1.0)


def test_needs_renewal_rejects_bad_arguments(cluster, key, ids) -> None:
    cert = _sign(cluster, key, ids)
    with pytest.raises(ValueError, match=r"^jitter: must be within \[0, 1\]"):
        needs_renewal(cert, NOW, jitter=1.5)
    with pytest.raises(ValueError, match="^now: must be timezone-aware"):
        needs_renewal(cert, NOW.replace(tzinfo=None))


def test_certificates_after_rotation_come_from_the_new_root(cluster, key, ids) -> None:
    rotated = cluster.start_rotation()
    cert = _sign(rotated, key, ids)
    assert issued_by(cert, rotated.signer.cert)
    assert not issued_by(cert, cluster.signer.cert)


def test_issued_by_checks_the_signature_not_just_the_name(cluster, key, ids) -> None:
    # Every root is called shoal-root-ca: the name alone must not pass.
    cert = _sign(cluster, key, ids)
    impostor = ClusterCA.create(now=NOW - dt.timedelta(days=1)).signer.cert
    assert impostor.subject == cluster.signer.cert.subject
    assert not issued_by(cert, impostor)


def test_node_credentials_refuse_a_mismatched_key(cluster, key, ids) -> None:
    cert = _sign(cluster, key, ids)
    creds = NodeCredentials.of(key, cert, cluster.trust_bundle_pem)
    assert creds.identity.node_id == ids[0]
    assert creds.ca_certs == cluster.trusted
    with pytest.raises(CertificateError, match="private key does not match the certificate"):
        NodeCredentials.of(make_node_key(), cert, cluster.trust_bundle_pem)
