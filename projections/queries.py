"""The read side the API uses: typed views of the read models.

Every function takes `db`, an asyncpg pool or connection whose search_path is the live
schema (see `projections.db.create_pool`). Visibility is the API's decision: the views
carry `owner` and `visibility`. Listings are newest first with keyset cursors (opaque
strings; pass `next_cursor` back as `cursor`).
"""

from __future__ import annotations

import base64
from collections.abc import Collection
from datetime import datetime
from typing import Any, Final

import msgspec

from events import ClinaiError, text_problem
from projections.apply import PROJECTION

__all__ = [
    "ApiKeyView",
    "BuildLogChunk",
    "InvalidCursorError",
    "JobPage",
    "JobView",
    "ModelPage",
    "ModelView",
    "VersionView",
    "build_log",
    "checkpoint",
    "find_api_key_by_hash",
    "find_ready_artifact",
    "get_job",
    "get_model",
    "get_version",
    "get_version_with_model",
    "job_seqs",
    "list_api_keys",
    "list_jobs",
    "list_models",
    "list_versions",
    "overdue_jobs",
]

MAX_LIMIT: Final = 500


class InvalidCursorError(ClinaiError, ValueError):
    """A listing cursor that this module did not produce (HTTP 400)."""


class ApiKeyView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    name: str
    prefix: str
    is_admin: bool  # the key's own flag
    user_is_admin: bool  # the user's flag (False when the user is unknown)
    created_at: datetime
    revoked_at: datetime | None


class ModelView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    owner: str
    name: str
    description: str
    visibility: str
    latest_version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    last_seq: int


class VersionView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    model_id: str
    owner: str
    number: int
    status: str  # uploaded | building | ready | failed
    package_key: str
    package_hash: str
    requirements_hash: str
    size_bytes: int
    filename: str
    runtime: str | None
    artifact: str | None
    artifact_details: dict[str, Any] | None
    build_attempt: int
    build_duration_s: float | None
    failure_reason: str | None
    log_tail: str | None
    log_key: str | None
    reused_from: str | None
    created_at: datetime
    updated_at: datetime
    built_at: datetime | None
    last_seq: int


class JobView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    owner: str
    model_id: str
    version_id: str
    status: str  # queued | running | succeeded | failed | canceled | aborted
    input_key: str
    input_filename: str
    input_size_bytes: int
    params: dict[str, Any]
    timeout_s: float
    webhook: dict[str, Any] | None
    cancel_requested: bool
    attempt: int
    result: dict[str, Any] | None
    outputs: list[dict[str, Any]]
    error_kind: str | None
    error_message: str | None
    traceback: str | None
    timings: dict[str, Any] | None
    log_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    last_seq: int
    # Claim checks ({key, size_bytes, sha256}) of a result / outputs list kept as a blob.
    result_blob: dict[str, Any] | None = None
    outputs_blob: dict[str, Any] | None = None
    # Set: the executor fetches the input from this URL, shown redacted (projections.urls).
    input_url: str | None = None
    # Set: past it a queued job is aborted, a running one canceled.
    deadline: datetime | None = None
    # A typed version's job: its inputs as resolved (defaults applied, files by name).
    inputs: dict[str, Any] | None = None


class BuildLogChunk(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    text: str
    seq: int


class ModelPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[ModelView]
    next_cursor: str | None


class JobPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[JobView]
    next_cursor: str | None


_Cursor = tuple[datetime, str]
_cursor_decoder: Final[msgspec.json.Decoder[tuple[datetime, str]]] = msgspec.json.Decoder(
    tuple[datetime, str]
)


def _encode_cursor(created_at: datetime, id_: str) -> str:
    raw = msgspec.json.encode((created_at, id_))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> _Cursor:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, id_ = _cursor_decoder.decode(raw)
    except (ValueError, msgspec.DecodeError) as err:
        raise InvalidCursorError(f"invalid cursor {cursor!r}: pass back a next_cursor") from err
    if text_problem(id_) is not None:  # Postgres would refuse it
        raise InvalidCursorError(f"invalid cursor {cursor!r}: pass back a next_cursor")
    return created_at, id_


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be in 1..{MAX_LIMIT}, got {limit}")


async def _newest_first(
    db: Any, table: str, where: list[str], args: list[Any], limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """One page of `limit` rows of `table` that match every condition in `where` (whose
    placeholders $1, $2... are `args`), newest first, from after `cursor`: (the rows,
    the next page's cursor or None)."""
    _check_limit(limit)
    params, conditions = list(args), list(where)
    if cursor is not None:
        created_at, id_ = _decode_cursor(cursor)
        params += [created_at, id_]
        conditions.append(f"(created_at, id) < (${len(params) - 1}, ${len(params)})")
    clause = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    params.append(limit + 1)  # one more than the page: is there a next one?
    rows = await db.fetch(
        f"SELECT * FROM {table} {clause}ORDER BY created_at DESC, id DESC LIMIT ${len(params)}",
        *params,
    )
    page = rows[:limit]
    more = len(rows) > limit
    return page, _encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None


async def find_api_key_by_hash(db: Any, key_hash: str) -> ApiKeyView | None:
    """The key with this SHA-256 (revoked ones included: check `revoked_at`)."""
    row = await db.fetchrow(
        "SELECT k.id, k.user_id, k.name, k.prefix, k.is_admin, "
        "coalesce(u.is_admin, false) AS user_is_admin, k.created_at, k.revoked_at "
        "FROM api_keys k LEFT JOIN users u ON u.id = k.user_id WHERE k.key_hash = $1",
        key_hash,
    )
    return None if row is None else ApiKeyView(**row)


async def get_model(db: Any, model_id: str) -> ModelView | None:
    """The model, deleted or not (check `deleted_at`)."""
    row = await db.fetchrow("SELECT * FROM models WHERE id = $1", model_id)
    return None if row is None else ModelView(**row)


async def list_models(
    db: Any, viewer: str, is_admin: bool, limit: int = 50, cursor: str | None = None
) -> ModelPage:
    """Models not deleted that `viewer` owns or that are public (all for an admin)."""
    args: list[Any] = []
    where = ["deleted_at IS NULL"]
    if not is_admin:
        args.append(viewer)
        where.append(f"(owner = ${len(args)} OR visibility = 'public')")
    rows, next_cursor = await _newest_first(db, "models", where, args, limit, cursor)
    return ModelPage(items=[ModelView(**r) for r in rows], next_cursor=next_cursor)


async def get_version(db: Any, version_id: str) -> VersionView | None:
    row = await db.fetchrow("SELECT * FROM versions WHERE id = $1", version_id)
    return None if row is None else VersionView(**row)


async def get_version_with_model(db: Any, version_id: str) -> tuple[VersionView, ModelView] | None:
    """The version and its model (deleted or not) in one round trip."""
    row = await db.fetchrow(
        "SELECT v, m FROM versions v JOIN models m ON m.id = v.model_id WHERE v.id = $1",
        version_id,
    )
    return None if row is None else (VersionView(**row["v"]), ModelView(**row["m"]))


async def list_versions(db: Any, model_id: str) -> list[VersionView]:
    """Every version of the model, by number."""
    rows = await db.fetch("SELECT * FROM versions WHERE model_id = $1 ORDER BY number", model_id)
    return [VersionView(**r) for r in rows]


async def find_ready_artifact(db: Any, package_hash: str, runtime: str) -> VersionView | None:
    """The earliest-built ready version of an identical package on `runtime`, whose
    artifact the builder may reuse."""
    row = await db.fetchrow(
        "SELECT * FROM versions WHERE status = 'ready' AND package_hash = $1 AND runtime = $2 "
        "ORDER BY built_at, id LIMIT 1",
        package_hash,
        runtime,
    )
    return None if row is None else VersionView(**row)


async def get_job(db: Any, job_id: str) -> JobView | None:
    row = await db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    return None if row is None else JobView(**row)


async def job_seqs(db: Any, job_ids: Collection[str]) -> dict[str, int]:
    """The projected `last_seq` of each of `job_ids` that exists (one query for many
    long polls)."""
    rows = await db.fetch("SELECT id, last_seq FROM jobs WHERE id = ANY($1::text[])", list(job_ids))
    return {row["id"]: row["last_seq"] for row in rows}


async def overdue_jobs(db: Any, after: datetime, now: datetime, limit: int = 500) -> list[str]:
    """The ids of queued jobs whose deadline passed after `after` and at or before `now`,
    earliest first, at most `limit` (the index holds every job with a deadline, so the
    window bounds what is read)."""
    rows = await db.fetch(
        "SELECT id FROM jobs WHERE deadline IS NOT NULL AND deadline > $1 AND deadline <= $2 "
        "AND status = 'queued' ORDER BY deadline LIMIT $3",
        after,
        now,
        limit,
    )
    return [row["id"] for row in rows]


async def list_jobs(
    db: Any,
    *,
    owner: str | None,
    status: str | None = None,
    model_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    since: datetime | None = None,
) -> JobPage:
    """Jobs of `owner` (every owner's when None), optionally of one status and model,
    and created at `since` or later."""
    args: list[Any] = []
    where: list[str] = []
    for column, value in (("owner", owner), ("status", status), ("model_id", model_id)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    if since is not None:
        args.append(since)
        where.append(f"created_at >= ${len(args)}")
    rows, next_cursor = await _newest_first(db, "jobs", where, args, limit, cursor)
    return JobPage(items=[JobView(**r) for r in rows], next_cursor=next_cursor)


async def build_log(
    db: Any, version_id: str, from_index: int = 0, limit: int = 1_000
) -> list[BuildLogChunk]:
    """The version's build log chunks with index >= `from_index`, in order."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    rows = await db.fetch(
        'SELECT "index", text, seq FROM build_log_chunks '
        'WHERE version_id = $1 AND "index" >= $2 ORDER BY "index" LIMIT $3',
        version_id,
        from_index,
        limit,
    )
    return [BuildLogChunk(index=r["index"], text=r["text"], seq=r["seq"]) for r in rows]


async def checkpoint(db: Any) -> int:
    """The last stream sequence the read models include (0 before the first batch)."""
    value = await db.fetchval("SELECT last_seq FROM checkpoint WHERE projection = $1", PROJECTION)
    return int(value or 0)


async def list_api_keys(db: Any, user_id: str) -> list[ApiKeyView]:
    """A user's keys, newest first (never their hashes)."""
    rows = await db.fetch(
        "SELECT k.id, k.user_id, k.name, k.prefix, k.is_admin, "
        "coalesce(u.is_admin, false) AS user_is_admin, k.created_at, k.revoked_at "
        "FROM api_keys k LEFT JOIN users u ON u.id = k.user_id WHERE k.user_id = $1 "
        "ORDER BY k.created_at DESC, k.id",
        user_id,
    )
    return [ApiKeyView(**row) for row in rows]
