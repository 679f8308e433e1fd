"""Autolock's keys: sealing payloads, the unlock key's format, the key file (wrapped or not)."""
from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from manager.encryption import (Crypter, DataKey, DecryptError, InvalidUnlockKey, KeyFile, KeyFileError, RaftKeys,
                                new_unlock_key, parse_unlock_key)
from manager.encryption.unlockkey import format_unlock_key

AAD = b"test"


def test_seal_open_round_trip_and_ciphertext_hides_the_plaintext():
    k = DataKey.new()
    c = Crypter(k, plaintext_ok=False)
    blob = c.seal(b"the secret value", AAD)
    assert b"the secret value" not in blob
    assert blob[0] == 0xC1  # never a msgpack first byte
    assert c.open(blob, AAD) == b"the secret value"
    assert c.seal(b"x", AAD) != c.seal(b"x", AAD)  # fresh nonces


def test_open_refuses_wrong_key_tampering_other_domain_and_plaintext():
    k1, k2 = DataKey.new(), DataKey.new()
    blob = Crypter(k1).seal(b"payload", AAD)
    with pytest.raises(DecryptError, match="does not hold"):
        Crypter(k2).open(blob, AAD)
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    with pytest.raises(DecryptError, match="authentication failed"):
        Crypter(k1).open(bytes(flipped), AAD)
    with pytest.raises(DecryptError, match="authentication failed"):
        Crypter(k1).open(blob, b"another-domain")
    with pytest.raises(DecryptError, match="refusing plaintext"):
        Crypter(k1, plaintext_ok=False).open(b"\x93\x01\x02\x03", AAD)
    assert Crypter(k1, plaintext_ok=True).open(b"\x93\x01\x02\x03", AAD) == b"\x93\x01\x02\x03"


def test_rotation_crypter_opens_both_keys_and_seals_with_the_new_one():
    old, new = DataKey.new(), DataKey.new()
    keys = RaftKeys(old, new)
    c = keys.crypter()
    assert c.open(Crypter(old).seal(b"a", AAD), AAD) == b"a"
    sealed = c.seal(b"b", AAD)
    assert Crypter(new).open(sealed, AAD) == b"b"
    with pytest.raises(DecryptError):
        Crypter(old).open(sealed, AAD)


def test_unlock_key_format_and_parse_errors_name_the_reason():
    key = new_unlock_key()
    assert key.startswith("SWMKEY-1-") and "=" not in key
    secret = parse_unlock_key(key)
    assert len(secret) == 32 and format_unlock_key(secret) == key
    assert parse_unlock_key(f"  {key}\n") == secret  # pasted with whitespace
    for bad, reason in (("", "empty"), ("SWMKEY-2-abc", "not a swarm unlock key"),
                        ("SWMKEY-1-!!!!", "not valid base64"), ("SWMKEY-1-AAAA", "holds 3 bytes")):
        with pytest.raises(InvalidUnlockKey, match=reason) as exc:
            parse_unlock_key(bad)
        assert str(exc.value).startswith("invalid key: UnlockKey: ")


def test_key_file_plain_round_trip(tmp_path):
    f = KeyFile(tmp_path / "keys.json")
    keys = RaftKeys.new()
    f.save(keys)
    assert stat.S_IMODE(os.stat(f.path).st_mode) == 0o600
    assert not f.is_locked()
    back = f.load()
    assert back.dek == keys.dek and back.kek is None and back.tls_password() is None


def test_key_file_wrapped_needs_the_right_key_and_holds_no_raw_dek(tmp_path):
    f = KeyFile(tmp_path / "keys.json")
    kek = parse_unlock_key(new_unlock_key())
    keys = RaftKeys(DataKey.new(), DataKey.new(), kek)
    f.save(keys)
    raw = f.path.read_bytes()
    for k in (keys.dek, keys.pending):
        assert base64.b64encode(k.secret) not in raw and k.secret not in raw
    assert f.is_locked()
    with pytest.raises(InvalidUnlockKey, match="locked"):
        f.load(None)
    with pytest.raises(InvalidUnlockKey, match="does not unlock this manager"):
        f.load(parse_unlock_key(new_unlock_key()))
    back = f.load(kek)
    assert (back.dek, back.pending, back.kek) == (keys.dek, keys.pending, kek)
    assert back.tls_password() == keys.pending.tls_password()  # the key being rotated to


def test_key_file_malformed_is_a_key_file_error_not_a_wrong_key(tmp_path):
    f = KeyFile(tmp_path / "keys.json")
    with pytest.raises(KeyFileError, match="missing"):
        f.load()
    f.path.write_text("{not json")
    with pytest.raises(KeyFileError, match="unreadable"):
        f.load()
    f.path.write_text(json.dumps({"Version": 1, "Locked": False, "DEK": "AAAA", "PendingDEK": None}))
    with pytest.raises(KeyFileError, match="DEK: data key: must be 32 bytes"):
        f.load()
