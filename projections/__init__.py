"""Postgres read models built from the event stream: migrations, the fold, the
projector, the rebuild, the queries the API uses and the projection watermark."""

from projections import queries
from projections.apply import PROJECTION
from projections.db import LIVE_SCHEMA, NOTIFY_CHANNEL, connect, create_pool
from projections.migrate import apply_migrations
from projections.projector import Projector

__all__ = [
    "LIVE_SCHEMA",
    "NOTIFY_CHANNEL",
    "PROJECTION",
    "Projector",
    "apply_migrations",
    "connect",
    "create_pool",
    "queries",
]
