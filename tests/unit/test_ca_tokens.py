"""Join tokens: format, parsing errors, role lookup, rotation."""

from __future__ import annotations

import hmac
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from manager.ca import JoinTokens, Token, TokenError, create_root_ca, make_token, parse_token, token_role
import manager.ca.tokens as tokens_mod

TOKEN_RE = re.compile(r"SHLTKN-1-[0-9a-f]{64}-[0-9a-z]{25}")


@pytest.fixture(scope="module")
def root():
    return create_root_ca()


@pytest.fixture()
def tokens(root) -> JoinTokens:
    return JoinTokens.generate(root.cert)


def test_token_format_pins_the_ca_digest(root) -> None:
    token = make_token(root.cert, "worker")
    assert TOKEN_RE.fullmatch(token)
    parsed = parse_token(token)
    assert parsed == Token("1", root.digest, token.rsplit("-", 1)[1])
    assert str(parsed) == token


def test_tokens_are_random(root) -> None:
    assert len({make_token(root.cert, "worker") for _ in range(50)}) == 50


def test_make_token_rejects_unknown_role(root) -> None:
    with pytest.raises(ValueError, match="role: must be 'worker' or 'manager'"):
        make_token(root.cert, "admin")  # type: ignore[arg-type]


def test_parse_token_strips_surrounding_whitespace(root) -> None:
    token = make_token(root.cert, "manager")
    assert str(parse_token(f"  {token}\n")) == token


SECRET = "abcdefghijklmnopqrstuvwxy"
DIGEST = "0" * 64


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("SHLTKN-1-abc", "expected 4 parts"),
        (f"SHLTKN-1-{DIGEST}-{SECRET}-x", "expected 4 parts"),
        (f"SWMTKN-1-{DIGEST}-{SECRET}", "must start with 'SHLTKN', got 'SWMTKN'"),
        (f"SHLTKN-2-{DIGEST}-{SECRET}", "unsupported version '2'"),
        (f"SHLTKN-1-{'0' * 63}-{SECRET}", "CA digest must be 64 lowercase hex characters, got 63"),
        (f"SHLTKN-1-{'A' * 64}-{SECRET}", "CA digest must be 64 lowercase hex"),
        (f"SHLTKN-1-{'g' * 64}-{SECRET}", "CA digest must be 64 lowercase hex"),
        (f"SHLTKN-1-{DIGEST}-{SECRET[:-1]}", "secret must be 25 lowercase base36 characters, got 24"),
        (f"SHLTKN-1-{DIGEST}-{SECRET.upper()}", "secret must be 25 lowercase base36"),
        (f"SHLTKN-1-{DIGEST}-{SECRET[:-1]}!", "secret must be 25 lowercase base36"),
    ],
)
def test_malformed_tokens_raise_a_clear_token_error(text: str, reason: str) -> None:
    with pytest.raises(TokenError) as info:
        parse_token(text)
    message = str(info.value)
    assert message.startswith("join token: ")
    assert reason in message
    assert "\n" not in message


def test_parse_errors_never_echo_the_secret() -> None:
    secret = "zzzzzzzzzzzzzzzzzzzzzzzzq"
    with pytest.raises(TokenError) as info:
        parse_token(f"SHLTKN-2-{DIGEST}-{secret}")
    assert secret not in str(info.value)


def test_parse_token_rejects_non_strings() -> None:
    with pytest.raises(TokenError, match="join token: expected a string, got int"):
        parse_token(42)


@given(st.text(max_size=200))
def test_parse_token_only_ever_raises_token_error(text: str) -> None:
    try:
        parsed = parse_token(text)
    except TokenError as exc:
        assert str(exc).startswith("join token: ")
    else:
        assert TOKEN_RE.fullmatch(str(parsed))


def test_token_role_picks_the_role_by_secret(tokens: JoinTokens) -> None:
    assert token_role(tokens.worker, tokens) == "worker"
    assert token_role(tokens.manager, tokens) == "manager"
    assert token_role(parse_token(tokens.manager), tokens) == "manager"
    assert tokens.for_role("worker") == tokens.worker


def test_rotated_token_is_refused_at_once_and_the_other_role_keeps_working(root, tokens: JoinTokens) -> None:
    rotated = tokens.rotate("worker", root.cert)
    assert rotated.manager == tokens.manager and rotated.worker != tokens.worker
    with pytest.raises(TokenError, match=r"^join token: secret is not valid for this cluster \(wrong token, or it was rotated\)$"):
        token_role(tokens.worker, rotated)
    assert token_role(rotated.worker, rotated) == "worker"
    assert token_role(tokens.manager, rotated) == "manager"

    rotated_mgr = rotated.rotate("manager", root.cert)
    with pytest.raises(TokenError, match="rotated"):
        token_role(tokens.manager, rotated_mgr)


def test_token_of_another_ca_is_refused_for_its_digest(root, tokens: JoinTokens) -> None:
    other = make_token(create_root_ca().cert, "worker")
    with pytest.raises(TokenError, match="join token: CA digest does not match this cluster's root CA"):
        token_role(other, tokens)
    # Same secret, other digest: still refused.
    forged = str(Token("1", "f" * 64, parse_token(tokens.manager).secret))
    with pytest.raises(TokenError, match="CA digest does not match"):
        token_role(forged, tokens)


def test_malformed_token_is_refused_by_token_role(tokens: JoinTokens) -> None:
    with pytest.raises(TokenError, match="join token: expected 4 parts"):
        token_role("SHLTKN-1-nope", tokens)


def test_with_ca_keeps_secrets_and_repins(tokens: JoinTokens) -> None:
    new_root = create_root_ca()
    moved = tokens.with_ca(new_root.cert)
    assert parse_token(moved.worker).secret == parse_token(tokens.worker).secret
    assert parse_token(moved.manager).ca_digest == new_root.digest
    assert token_role(moved.worker, moved) == "worker"
    with pytest.raises(TokenError, match="issued before a CA rotation"):
        token_role(tokens.worker, moved)


def test_both_secrets_are_compared_in_constant_time(monkeypatch, tokens: JoinTokens) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens_mod.hmac, "compare_digest", spy)
    token_role(tokens.worker, tokens)
    # Even though the first comparison matched, the second one ran too.
    assert len(calls) == 2


def test_reprs_hide_the_secrets(tokens: JoinTokens) -> None:
    for token in (tokens.worker, tokens.manager):
        secret = parse_token(token).secret
        assert secret not in repr(tokens)
        assert secret not in repr(parse_token(token))


def test_join_tokens_validate_their_fields() -> None:
    with pytest.raises(TokenError, match="join token:"):
        JoinTokens(worker="x", manager="y")
