"""Identifiers: resource ids and event ids, with the idempotency mapping."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable

__all__ = ["ID_SHAPE", "IdFactory", "event_id_for_key", "is_valid_id", "new_event_id", "new_id"]

IdFactory = Callable[[str], str]

_IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1f3c52-8d0e-4c55-9a2b-6c1a8f7e2d10")
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_VALID_ID = re.compile(r"[A-Za-z0-9_]{1,100}")

#: What every id we issue looks like, in words (for error messages).
ID_SHAPE = "1 to 100 letters, digits or '_', such as job_0h3kq9v2m8x4c7b1n5p6r2t8w3"


def new_id(prefix: str) -> str:
    """`<prefix>_<26 base32 chars>`: 130 random bits, safe as a NATS subject token."""
    n = secrets.randbits(130)
    chars = []
    for _ in range(26):
        n, r = divmod(n, 32)
        chars.append(_ALPHABET[r])
    return f"{prefix}_{''.join(chars)}"


def is_valid_id(value: str) -> bool:
    """The one rule for an id given to us: the shape of every id we issue (`new_id`, the
    ids derived from an Idempotency-Key, `usr_admin`, name claims and deliveries' hex).
    Such an id is a safe NATS subject token (no `.`, `*`, `>` or spaces) and plain text
    for Postgres (no NUL), so it may go to the log and the read models as it is."""
    return _VALID_ID.fullmatch(value) is not None


def new_event_id() -> str:
    return str(uuid.uuid4())


def event_id_for_key(actor: str, idempotency_key: str, purpose: str) -> str:
    """The deterministic event id for a client's Idempotency-Key: a retried command
    maps to the same id, which JetStream deduplicates as the Nats-Msg-Id. `purpose`
    separates the events one command writes (e.g. "JobRequested")."""
    return str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{actor}\x00{idempotency_key}\x00{purpose}"))
