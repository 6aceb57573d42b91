"""An Idempotency-Key reused: the same request replays the first answer, a different one
is refused. A keyed command's first event records its request's digest
(`request_digest`); a later command under the same key compares its own with it."""

from __future__ import annotations

from events.catalogue import Event
from events.errors import IdempotencyKeyReusedError

__all__ = ["check_same_request", "request_digest_of"]


def request_digest_of(event: Event) -> str | None:
    """The digest of the request that appended `event` (None: no key, an event type
    without one, or one appended before digests were recorded)."""
    digest = getattr(event, "request_digest", None)
    return digest if isinstance(digest, str) else None


def check_same_request(stored: Event, digest: str | None) -> None:
    """Raise IdempotencyKeyReusedError when `stored` (a keyed command's event) was
    appended for another request than the one whose digest is `digest`. Either digest
    unknown (an old event, a caller that computes none): no refusal, as before."""
    recorded = request_digest_of(stored)
    if digest is not None and recorded is not None and recorded != digest:
        raise IdempotencyKeyReusedError(stored.aggregate, stored.aggregate_id)
