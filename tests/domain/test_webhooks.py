"""services/domain/webhooks.py: webhook subscriptions, decided from the log."""

from __future__ import annotations

import pytest

from events import EventStore
from services.domain import NotFoundError
from services.domain.destinations import DestinationPolicy
from services.domain.signing import derive_secret
from services.domain.webhooks import InvalidWebhookError, WebhookCommands
from tests.domain.conftest import as_user

_MASTER = b"m" * 32


@pytest.fixture
def webhooks(store: EventStore) -> WebhookCommands:
    return WebhookCommands(
        store, _MASTER, policy=DestinationPolicy.from_setting(""), rotation_grace_s=60.0
    )


@pytest.mark.parametrize(
    ("url", "events"),
    [
        ("ftp://example.com/h", ["*"]),
        ("http://127.0.0.1/h", ["*"]),
        ("https://example.com/h", ["NoSuchEvent"]),
    ],
)
async def test_a_destination_or_filter_the_notifier_would_refuse_is_refused(
    webhooks: WebhookCommands, url: str, events: list[str]
) -> None:
    with pytest.raises(InvalidWebhookError):
        await webhooks.create(as_user("usr_a"), url=url, events=events, description="")


async def test_a_retried_create_is_one_webhook_with_one_secret(webhooks: WebhookCommands) -> None:
    ctx = as_user("usr_a", key="k1")
    first = await webhooks.create(ctx, url="https://example.com/h", events=["*"], description="")
    again = await webhooks.create(ctx, url="https://example.com/h", events=["*"], description="")
    assert (again.webhook_id, again.secret) == (first.webhook_id, first.secret)
    assert first.secret == derive_secret(_MASTER, first.webhook_id, 1)


async def test_another_users_webhook_is_not_found(webhooks: WebhookCommands) -> None:
    issued = await webhooks.create(
        as_user("usr_a"), url="https://example.com/h", events=["*"], description=""
    )
    for change in (webhooks.delete, webhooks.enable, webhooks.rotate):
        with pytest.raises(NotFoundError):
            await change(as_user("usr_b"), issued.webhook_id)
    await webhooks.load(as_user("adm", admin=True), issued.webhook_id)


async def test_rotating_makes_a_new_generation_and_deleting_hides_it(
    webhooks: WebhookCommands,
) -> None:
    ctx = as_user("usr_a")
    issued = await webhooks.create(ctx, url="https://example.com/h", events=["*"], description="")
    rotated = await webhooks.rotate(ctx, issued.webhook_id)
    assert rotated.generation == 2 and rotated.secret != issued.secret
    assert rotated.previous_valid_until is not None
    await webhooks.delete(ctx, issued.webhook_id)
    with pytest.raises(NotFoundError):
        await webhooks.load(ctx, issued.webhook_id)
