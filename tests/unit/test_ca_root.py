"""Root CA creation, digest, rotation trust set, and id generation."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from manager.ca import CertificateError, ClusterCA, RootCA, ca_digest, create_root_ca, new_node_id
from manager.ca.ids import check_id, is_valid_id, to_base36


@pytest.fixture(scope="module")
def root() -> RootCA:
    return create_root_ca()


def test_root_ca_is_a_p256_self_signed_ca_named_shoal_root_ca(root: RootCA) -> None:
    cert = root.cert
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "shoal-root-ca"
    assert cert.subject == cert.issuer
    assert isinstance(root.key, ec.EllipticCurvePrivateKey)
    assert isinstance(root.key.curve, ec.SECP256R1)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    cert.verify_directly_issued_by(cert)  # self-signature holds


def test_root_ca_is_valid_for_twenty_years() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    cert = create_root_ca(now=now).cert
    assert cert.not_valid_before_utc <= now
    assert cert.not_valid_after_utc == now + dt.timedelta(days=20 * 365)


def test_ca_digest_is_sha256_hex_of_der_whatever_the_encoding(root: RootCA) -> None:
    der = root.cert.public_bytes(serialization.Encoding.DER)
    expected = hashlib.sha256(der).hexdigest()
    assert len(expected) == 64
    assert ca_digest(root.cert) == expected
    assert ca_digest(der) == expected
    assert ca_digest(root.cert_pem) == expected
    assert ca_digest(root.cert_pem.decode()) == expected
    assert root.digest == expected


def test_two_roots_have_different_digests(root: RootCA) -> None:
    assert create_root_ca().digest != root.digest


def test_ca_digest_rejects_garbage() -> None:
    with pytest.raises(CertificateError, match="certificate: not a valid X.509"):
        ca_digest(b"not a certificate")


def test_keyless_root_cannot_sign(root: RootCA) -> None:
    public = RootCA(cert=root.cert)
    assert not public.can_sign
    with pytest.raises(CertificateError, match="holds no CA key"):
        public.signing_key()


def test_cluster_ca_rotation_trusts_both_roots_then_only_the_new_one() -> None:
    cluster = ClusterCA.create()
    old = cluster.signer
    assert cluster.trusted == (old.cert,) and not cluster.rotating

    new = create_root_ca()
    rotating = cluster.start_rotation(new)
    assert rotating.signer is new
    assert rotating.digest == new.digest != old.digest
    assert rotating.rotating
    assert [ca_digest(c) for c in rotating.trusted] == [new.digest, old.digest]
    assert rotating.trust_bundle_pem == new.cert_pem + old.cert_pem

    done = rotating.finish_rotation()
    assert done.trusted == (new.cert,) and not done.rotating
    # The original is unchanged: ClusterCA is a value.
    assert cluster.signer is old and cluster.trusted == (old.cert,)


def test_rotation_generates_a_fresh_root_by_default() -> None:
    cluster = ClusterCA.create()
    rotated = cluster.start_rotation()
    assert rotated.digest != cluster.digest and rotated.signer.can_sign


def test_rotation_refuses_a_root_without_key() -> None:
    cluster = ClusterCA.create()
    with pytest.raises(CertificateError, match="new root must come with its key"):
        cluster.start_rotation(RootCA(cert=create_root_ca().cert))


def test_cluster_ca_signer_must_be_trusted() -> None:
    a, b = create_root_ca(), create_root_ca()
    with pytest.raises(CertificateError, match="signing root must be among the trusted"):
        ClusterCA(signer=a, trusted=(b.cert,))
    with pytest.raises(CertificateError, match="must not be empty"):
        ClusterCA(signer=a, trusted=())


def test_node_ids_are_25_lowercase_base36_and_unique() -> None:
    ids = {new_node_id() for _ in range(200)}
    assert len(ids) == 200
    for node_id in ids:
        assert len(node_id) == 25 and is_valid_id(node_id)
        assert int(node_id, 36) < 2**128


def test_to_base36_round_trips_and_pads() -> None:
    for value in (0, 1, 35, 36, 2**128 - 1):
        text = to_base36(value, 25)
        assert len(text) == 25 and int(text, 36) == value
    with pytest.raises(ValueError, match="more than width"):
        to_base36(36**3, 3)
    with pytest.raises(ValueError, match="non-negative"):
        to_base36(-1, 3)


def test_check_id_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"^node_id: must be 25 lowercase base36"):
        check_id("node_id", "ABC")
    assert not is_valid_id("a" * 24) and not is_valid_id("A" * 25) and not is_valid_id(None)
