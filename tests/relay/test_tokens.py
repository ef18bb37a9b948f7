"""Capability tokens: minting and every rejection reason (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.errors import AuthRejected
from relay.tokens import check_channel, mint_token, mint_tokens, new_channel, verify_token

SECRET = b"secret"


def _reason(token: str | None, channel: str = "ch", role: str = "producer", **kw: float) -> str:
    with pytest.raises(AuthRejected) as info:
        verify_token(SECRET, token, channel, role, **kw)
    return info.value.reason


def test_minted_tokens_verify_for_their_own_channel_and_role() -> None:
    """The producer token grants producer, the consumer token grants consumer."""
    tokens = mint_tokens(SECRET, "ch", ttl=60)
    verify_token(SECRET, tokens.producer, "ch", "producer")
    verify_token(SECRET, tokens.consumer, "ch", "consumer")


def test_str_and_bytes_secrets_are_equivalent() -> None:
    """A secret given as str signs like its UTF-8 bytes."""
    token = mint_token("secret", "ch", "producer", 60)
    verify_token(b"secret", token, "ch", "producer")


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token_is_rejected_as_missing(token: str | None) -> None:
    """No token at all reads as 'missing'."""
    assert _reason(token) == "missing"


def test_token_signed_with_another_secret_is_forged() -> None:
    """A token minted under another secret reads as 'forged'."""
    assert _reason(mint_token(b"other", "ch", "producer", 60)) == "forged"


@pytest.mark.parametrize(
    "garbage",
    [
        "x",
        "v1.producer.ch.123",
        "v1.producer.ch.abc.sig",
        "v2.producer.ch.1.sig",
        "v1.producer.ch.1.%%%",
    ],
)
def test_malformed_tokens_are_forged(garbage: str) -> None:
    """Tokens that do not parse read as 'forged'."""
    assert _reason(garbage) == "forged"


def test_editing_the_role_or_channel_or_expiry_breaks_the_signature() -> None:
    """Changing any signed field of a token makes it 'forged'."""
    token = mint_token(SECRET, "ch", "consumer", 60)
    version, role, channel, expiry, sig = token.split(".")
    assert _reason(".".join([version, "producer", channel, expiry, sig])) == "forged"
    assert _reason(".".join([version, role, "other", expiry, sig]), "other", "consumer") == "forged"
    longer = str(int(expiry) + 10_000_000)
    assert _reason(".".join([version, role, channel, longer, sig]), role="consumer") == "forged"


def test_token_for_another_channel_is_wrong_channel() -> None:
    """A valid token presented on another channel reads as 'wrong-channel'."""
    assert _reason(mint_token(SECRET, "other", "producer", 60)) == "wrong-channel"


def test_token_for_the_other_role_is_wrong_role() -> None:
    """A consumer token used to produce reads as 'wrong-role'."""
    assert _reason(mint_token(SECRET, "ch", "consumer", 60)) == "wrong-role"


def test_expired_token_is_expired() -> None:
    """A token past its ttl reads as 'expired'."""
    token = mint_token(SECRET, "ch", "producer", 10, now=1000.0)
    verify_token(SECRET, token, "ch", "producer", now=1009.0)
    assert _reason(token, now=1010.5) == "expired"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "admin"}, "role"),
        ({"ttl": 0}, "ttl"),
        ({"channel": "a b"}, "channel"),
        ({"secret": b""}, "secret"),
    ],
)
def test_minting_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    """Bad role, ttl, channel or an empty secret raise ValueError naming the argument."""
    args: dict[str, object] = {"secret": SECRET, "channel": "ch", "role": "producer", "ttl": 5}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        mint_token(**args)  # type: ignore[arg-type]


def test_new_channels_are_unique_and_valid() -> None:
    """new_channel returns distinct ids that pass check_channel."""
    ids = {new_channel() for _ in range(100)}
    assert len(ids) == 100
    assert all(check_channel(c) == c for c in ids)


def test_token_never_contains_the_secret() -> None:
    """The secret itself does not appear in a token."""
    secret = "a-very-recognisable-secret"
    assert secret not in mint_token(secret, "ch", "producer", 60)


@given(st.text(max_size=80))
def test_arbitrary_token_text_raises_only_auth_rejected(text: str) -> None:
    """Whatever string is presented, verification accepts or raises AuthRejected."""
    try:
        verify_token(SECRET, text, "ch", "producer")
    except AuthRejected as exc:
        assert exc.reason in {"missing", "forged"}
