"""The read-model tables as the fold sees them: column lists and the SQL that loads and
upserts whole rows. Names are unqualified: the connection's search_path picks the schema."""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any, Final

__all__ = ["TABLES", "TableSpec"]


class TableSpec:
    """One table: its columns (in write order) and primary-key columns."""

    __slots__ = ("columns", "key", "load_sql", "name", "upsert_sql", "values")

    def __init__(self, name: str, columns: tuple[str, ...], key: tuple[str, ...] = ("id",)) -> None:
        self.name = name
        self.columns = columns
        self.key = key
        cols = ", ".join(_q(c) for c in columns)
        params = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        updates = ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in columns if c not in key)
        conflict = ", ".join(_q(c) for c in key)
        self.upsert_sql = (
            f"INSERT INTO {name} ({cols}) VALUES ({params}) "
            f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
        )
        self.load_sql = f"SELECT {cols} FROM {name} WHERE id = ANY($1::text[])"
        # A row dict's values in column order, as one tuple (`itemgetter` of one name
        # returns the bare value).
        self.values: Callable[[dict[str, Any]], tuple[Any, ...]] = (
            itemgetter(*columns) if len(columns) > 1 else lambda row: (row[columns[0]],)
        )


def _q(column: str) -> str:
    return f'"{column}"'


USERS: Final = TableSpec(
    "users",
    (
        "id",
        "name",
        "email",
        "is_admin",
        "created_at",
        "max_queued_jobs",
        "max_running_jobs",
        "password_hash",
        "password_set_at",
        "last_seq",
    ),
)
API_KEYS: Final = TableSpec(
    "api_keys",
    (
        "id",
        "user_id",
        "name",
        "key_hash",
        "prefix",
        "is_admin",
        "created_at",
        "revoked_at",
        "last_seq",
    ),
)
MODELS: Final = TableSpec(
    "models",
    (
        "id",
        "owner",
        "name",
        "description",
        "visibility",
        "latest_version",
        "created_at",
        "updated_at",
        "deleted_at",
        "last_seq",
    ),
)
VERSIONS: Final = TableSpec(
    "versions",
    (
        "id",
        "model_id",
        "owner",
        "number",
        "status",
        "package_key",
        "package_hash",
        "requirements_hash",
        "size_bytes",
        "filename",
        "runtime",
        "artifact",
        "artifact_details",
        "build_attempt",
        "build_duration_s",
        "failure_reason",
        "log_tail",
        "log_key",
        "reused_from",
        "created_at",
        "updated_at",
        "built_at",
        "last_seq",
    ),
)
BUILD_LOG_CHUNKS: Final = TableSpec(
    "build_log_chunks", ("version_id", "index", "text", "seq"), key=("version_id", "index")
)
JOBS: Final = TableSpec(
    "jobs",
    (
        "id",
        "owner",
        "model_id",
        "version_id",
        "status",
        "input_key",
        "input_filename",
        "input_size_bytes",
        "input_url",
        "params",
        "inputs",
        "timeout_s",
        "deadline",
        "webhook",
        "cancel_requested",
        "attempt",
        "result",
        "outputs",
        "result_blob",
        "outputs_blob",
        "error_kind",
        "error_message",
        "traceback",
        "timings",
        "log_key",
        "created_at",
        "started_at",
        "finished_at",
        "updated_at",
        "last_seq",
    ),
)

WEBHOOKS: Final = TableSpec(
    "webhooks",
    (
        "id",
        "owner",
        "url",
        "events",
        "description",
        "generation",
        "rotated_at",
        "previous_valid_until",
        "enabled",
        "disabled_reason",
        "disabled_at",
        "deleted_at",
        "consecutive_failures",
        "failing_since",
        "last_delivery_at",
        "created_at",
        "updated_at",
        "created_seq",
        "last_seq",
    ),
)
WEBHOOK_DELIVERIES: Final = TableSpec(
    "webhook_deliveries",
    (
        "id",
        "endpoint_id",
        "owner",
        "message_id",
        "event_type",
        "source_seq",
        "source_id",
        "resource_id",
        "url",
        "status",
        "attempts",
        "next_attempt_at",
        "horizon_from",
        "last_status_code",
        "last_error",
        "created_at",
        "updated_at",
        "last_seq",
    ),
)
WEBHOOK_ATTEMPTS: Final = TableSpec(
    "webhook_attempts",
    (
        "delivery_id",
        "attempt",
        "endpoint_id",
        "outcome",
        "status_code",
        "latency_ms",
        "error",
        "next_attempt_at",
        "attempted_at",
        "seq",
    ),
    key=("delivery_id", "attempt"),
)

# Write order; every table but build_log_chunks and webhook_attempts is keyed by `id`.
TABLES: Final = (
    USERS,
    API_KEYS,
    MODELS,
    VERSIONS,
    BUILD_LOG_CHUNKS,
    JOBS,
    WEBHOOKS,
    WEBHOOK_DELIVERIES,
    WEBHOOK_ATTEMPTS,
)
