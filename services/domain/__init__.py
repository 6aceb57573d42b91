"""The write side and the rules every service shares, over the log:

- `context`: what a command carries (who asks, correlation, idempotency) and the
  command errors;
- the commands, one module per aggregate (`users`, `models`, `versions`, `jobs`,
  `webhooks`, `limits`), and `commands.Commands`, all of them over one event store;
- `aggregates`, `webhook_aggregates`: the aggregates' state folded from their events;
- `access`: who may see and change what;
- `views`: resources as the API returns them and webhooks carry them;
- `destinations`, `signing`, `event_types`: where webhooks may go, how they are signed,
  which events they carry.

The API and the notifier use this package and never import each other."""

from services.domain.commands import Commands
from services.domain.context import (
    CommandContext,
    CommandError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
)
from services.domain.users import IssuedKey, hash_api_key

__all__ = [
    "CommandContext",
    "CommandError",
    "Commands",
    "ConflictError",
    "ForbiddenError",
    "IssuedKey",
    "NotFoundError",
    "hash_api_key",
]
