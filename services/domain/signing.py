"""Webhook signing secrets and Standard Webhooks signatures.

No secret is ever stored. Each is derived when needed from a server key:

    whsec_ + base64(HMAC-SHA256(master_key, f"{endpoint}:{generation}"))

`master_key` is CLINAI_WEBHOOK_KEY, or else derived (domain-separated) from the key
that signs blob URLs (`services.infra.connections.signing_key`: CLINAI_SIGNING_KEY or the one
generated once into the data directory). Events record only a subscription's
`generation`; rotating the secret bumps it. A job's own webhook URL is signed with its
owner's *default* secret: endpoint `default.<user id>`, generation 1, which the owner
reads with `GET /v1/webhooks/default/secret`.

A signature follows https://www.standardwebhooks.com: `v1,` + base64(HMAC-SHA256(key,
f"{msg_id}.{timestamp}.{body}")), where key is the base64-decoded part of the secret
after `whsec_`; several space-separated signatures may be sent (rotation grace).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from services.infra.connections import signing_key
from services.settings import Settings, SettingsError

__all__ = [
    "SECRET_PREFIX",
    "default_secret",
    "derive_secret",
    "master_key",
    "sign",
    "signature_header",
    "verify",
]

SECRET_PREFIX = "whsec_"
_DOMAIN = b"clinai.webhooks.v1"


def master_key(settings: Settings) -> bytes:
    """The server key webhook secrets derive from (see the module docstring)."""
    if settings.webhook_key:
        if len(settings.webhook_key) < 32:
            raise SettingsError("CLINAI_WEBHOOK_KEY must be at least 32 characters")
        return settings.webhook_key.encode()
    return hmac.new(signing_key(settings), _DOMAIN, hashlib.sha256).digest()


def derive_secret(master: bytes, endpoint_id: str, generation: int) -> str:
    """The signing secret of one endpoint generation, in the `whsec_...` form."""
    if generation < 1:
        raise ValueError(f"generation must be at least 1, got {generation}")
    digest = hmac.new(master, f"{endpoint_id}:{generation}".encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(digest).decode()


def default_secret(master: bytes, user_id: str) -> str:
    """The secret that signs deliveries to a user's per-job webhook URLs."""
    return derive_secret(master, f"default.{user_id}", 1)


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    return base64.b64decode(secret[len(SECRET_PREFIX) :])


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per valid secret, space-separated."""
    if not secrets:
        raise ValueError("need at least one secret to sign with")
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets)


def verify(secret: str, msg_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """True when any signature in `header` is valid for `secret` (receiver side; the
    caller also checks the timestamp's freshness)."""
    expected = sign(secret, msg_id, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in header.split())
