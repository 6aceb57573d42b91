"""The write side: each command reads the aggregates it decides from out of the log,
checks the rules, and appends its events (one message or one atomic batch) with the
expected sequences it decided from. Used by the API and the CLI.

The commands of each aggregate live in its own module (`users`, `models`, `versions`,
`jobs`, `accounts`; webhooks in `webhooks`); `Commands` is all of them over one event store."""

from __future__ import annotations

from services.domain.accounts import AccountCommands
from services.domain.jobs import JobCommands
from services.domain.users import UserCommands
from services.domain.versions import VersionCommands

__all__ = ["Commands"]


class Commands(UserCommands, AccountCommands, VersionCommands, JobCommands):
    """The commands of users (and their sign-in), API keys, models, versions and jobs."""
