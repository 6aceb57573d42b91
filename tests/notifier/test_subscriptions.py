"""The notifier keeps each owner's subscriptions until a commit changes a webhook."""

from __future__ import annotations

from events import EventStore
from projections.db import create_pool
from projections.watermark import ProjectionWatermark
from services.domain.webhooks import WebhookCommands
from services.notifier._subscriptions import Subscriptions
from services.settings import Settings
from tests.notifier._support import ctx_of, job_lifecycle, request_job


async def test_an_owner_without_webhooks_is_read_once_until_one_is_created(
    settings: Settings, store: EventStore, projector: None, webhooks: WebhookCommands
) -> None:
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, min_size=1, reset_sessions=False)
    try:
        async with await ProjectionWatermark.open(settings.database_url) as mark:
            subs = Subscriptions(pool, mark)
            for _ in range(3):
                await job_lifecycle(store, "usr_carol")
                other = await job_lifecycle(store, "usr_dave")  # the log moves on
                seq = await store.last_seq("job", other)
                assert await mark.wait_for(seq, 10)
                assert await subs.of("usr_carol", seq + 1) == []
            assert subs.reads == 1

            created = await webhooks.create(
                ctx_of("usr_carol"),
                url="https://example.test/hook",
                events=["job.*"],
                description="",
            )
            job_id = await request_job(store, "usr_carol")
            seq = await store.last_seq("job", job_id)
            assert await mark.wait_for(seq, 10)
            assert [h.id for h in await subs.of("usr_carol", seq)] == [created.webhook_id]
            assert subs.reads == 2
            # A subscription receives only the events after it was created.
            assert await subs.of("usr_carol", created.seq) == []
    finally:
        await pool.close()
