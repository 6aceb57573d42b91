"""Each owner's enabled webhook subscriptions, read once and kept until a projection
commit changes a subscription (the commit notices say so: `projections.notice`), so an
event of an owner with no webhooks costs no query. When the notices cannot say (one was
missed, or too long ago), the owner's subscriptions are read again."""

from __future__ import annotations

import msgspec

from projections import webhook_queries
from projections.watermark import ProjectionWatermark
from projections.webhook_queries import WebhookView

__all__ = ["Subscriptions"]


class _Kept(msgspec.Struct):
    as_of: int  # the projection checkpoint before they were read
    hooks: list[WebhookView]


class Subscriptions:
    def __init__(
        self, pool: object, watermark: ProjectionWatermark, *, owners_kept: int = 10_000
    ) -> None:
        self._pool = pool
        self._watermark = watermark
        self._owners_kept = owners_kept
        self._kept: dict[str, _Kept] = {}
        self.reads = 0  # queries run (for tests)

    async def of(self, owner: str, before_seq: int) -> list[WebhookView]:
        """`owner`'s enabled subscriptions that existed before sequence `before_seq`;
        call once the projection has reached `before_seq`."""
        kept = self._kept.get(owner)
        checkpoint = self._watermark.checkpoint
        if kept is not None and self._watermark.changed("webhook", kept.as_of) is False:
            # Still true at this checkpoint: later checks then scan only newer notices.
            kept.as_of = checkpoint
        else:
            self.reads += 1
            kept = _Kept(checkpoint, await webhook_queries.enabled_webhooks(self._pool, owner))
            if len(self._kept) >= self._owners_kept:
                self._kept.clear()
            self._kept[owner] = kept
        return [hook for hook in kept.hooks if hook.created_seq < before_seq]
