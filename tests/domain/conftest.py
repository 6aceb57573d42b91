"""The domain's commands in process, over a real event store (a fresh NATS server per
test): no API, no consumers."""

from __future__ import annotations

import pytest

from events import EventStore
from services.domain import CommandContext, Commands


def as_user(user_id: str, *, admin: bool = False, key: str | None = None) -> CommandContext:
    """The context of a command `user_id` sends (under Idempotency-Key `key`)."""
    return CommandContext(
        actor=user_id, is_admin=admin, correlation_id=f"cor-{user_id}", idempotency_key=key
    )


@pytest.fixture
def commands(store: EventStore) -> Commands:
    return Commands(store)
