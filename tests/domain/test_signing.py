"""services/domain/signing.py: Standard Webhooks signatures and derived secrets."""

from __future__ import annotations

from services.domain.signing import derive_secret, sign, signature_header, verify


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # From the Standard Webhooks reference libraries' tests.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_secrets_are_derived_per_webhook_and_generation() -> None:
    master = b"m" * 32
    first = derive_secret(master, "whk_a", 1)
    assert first == derive_secret(master, "whk_a", 1)
    assert first.startswith("whsec_")
    assert len({first, derive_secret(master, "whk_a", 2), derive_secret(master, "whk_b", 1)}) == 3
    assert first != derive_secret(b"n" * 32, "whk_a", 1)
    header = signature_header([first, derive_secret(master, "whk_a", 2)], "msg_1", 10, b"{}")
    assert len(header.split()) == 2
    assert verify(first, "msg_1", 10, b"{}", header)
    assert not verify(derive_secret(master, "whk_a", 3), "msg_1", 10, b"{}", header)
