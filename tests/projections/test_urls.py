"""The rule for a URL the read models keep: what may hold a secret is hidden."""

from __future__ import annotations

import pytest

from projections.urls import redacted_url, redacted_urls_in


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        # A presigned S3 GET: the signature and credential are query values.
        (
            "https://b.s3.amazonaws.com/in/a.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIAEXAMPLE%2F20260101&X-Amz-Signature=abc123",
            "https://b.s3.amazonaws.com/in/a.png?X-Amz-Algorithm=***"
            "&X-Amz-Credential=***&X-Amz-Signature=***",
        ),
        ("https://user:pa55@files.example/a.png", "https://***@files.example/a.png"),
        ("https://ghp_token@files.example:8443/a", "https://***@files.example:8443/a"),
        ("https://files.example/a?secret-token", "https://files.example/a?***"),
        ("https://files.example/cb#access_token=xyz", "https://files.example/cb#***"),
        ("http://[2001:db8::1]:8080/a.bin?sig=1", "http://[2001:db8::1]:8080/a.bin?sig=***"),
        # Nothing to hide: as given.
        ("https://files.example/data/in.png", "https://files.example/data/in.png"),
        # Unparseable (the API refuses these; an old event may hold anything).
        ("http://[::1/a?sig=1", "***"),
        ("http://host:99999/a?sig=1", "***"),
    ],
)
def test_a_url_is_shown_without_its_secrets(given: str, shown: str) -> None:
    assert redacted_url(given) == shown


def test_every_url_in_a_message_is_shown_without_its_secrets() -> None:
    message = (
        "could not fetch https://b.s3.amazonaws.com/a.png?X-Amz-Signature=s3cr3t, "
        "redirected to 'http://tok@files.example/b?k=v'; giving up"
    )
    shown = redacted_urls_in(message)
    assert shown == (
        "could not fetch https://b.s3.amazonaws.com/a.png?X-Amz-Signature=***, "
        "redirected to 'http://***@files.example/b?k=***'; giving up"
    )
    assert redacted_urls_in("HTTP 404, nothing to hide") == "HTTP 404, nothing to hide"
