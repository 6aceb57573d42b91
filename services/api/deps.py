"""What every handler needs: the wired services, the caller, bodies, responses and
read-your-writes waits."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, TypeVar

import asyncpg
import msgspec
import orjson
from nats.aio.client import Client as NATS
from starlette.requests import Request
from starlette.responses import Response

from events import EventStore
from projections import queries
from projections.queries import ModelView
from projections.watermark import ProjectionWatermark
from services.access import can_read_model
from services.api._admission import JobAdmission
from services.api._job_waits import JobWaits
from services.api._key_slots import SLOT_STATE, KeySlots
from services.api._rate_limit import RATE_STATE, RateLimiter
from services.api._ready_versions import ReadyVersions
from services.api.auth import KeyCache, Principal, authenticate
from services.api.bodies import read_body
from services.api.problems import ApiError
from services.blobstore import BlobStore
from services.commands import (
    CommandContext,
    CommandError,
    Commands,
    ConflictError,
    ForbiddenError,
    NotFoundError,
)
from services.notifier.commands import WebhookCommands
from services.settings import Settings

__all__ = [
    "ApiServices",
    "command_error",
    "decode_body",
    "json_response",
    "page_limit",
    "services",
    "visible_model",
    "wait_for_projection",
]

T = TypeVar("T")

SEQ_HEADER = "X-Clinai-Seq"
_QUERY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ApiServices:
    """Everything the handlers use, opened in the app's lifespan."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: EventStore,
        pool: asyncpg.Pool,
        blobs: BlobStore,
        watermark: ProjectionWatermark,
        nc: NATS,
        webhooks: WebhookCommands,
    ) -> None:
        self._nc = nc
        self.settings = settings
        self.store = store
        self.pool = pool
        self.blobs = blobs
        self.watermark = watermark
        self.commands = Commands(store)
        self.keys = KeyCache(pool)
        self.job_waits = JobWaits(pool, watermark)
        self.ready_versions = ReadyVersions(pool, watermark)
        self.admission = JobAdmission(pool, watermark, settings)
        self.command_slots = KeySlots(settings.max_concurrent_commands_per_key)
        self.rate_limiter = RateLimiter(
            pool, rate_per_s=settings.rate_limit_per_s, burst=settings.rate_limit_burst
        )
        self.webhooks = webhooks
        self.stopping = asyncio.Event()

    def begin_stop(self) -> None:
        self.stopping.set()
        self.watermark.release_waiters()

    def store_connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def caller(self, request: Request) -> Principal:
        """The authenticated caller, once the read models have the caller's `after_seq`
        (so a key, model or version created just before is seen by this request). A
        command (any method but GET/HEAD) takes a token from the key's rate limit, then
        one of the key's slots in this process (freed when it is answered)."""
        await wait_for_projection(request)
        principal = await authenticate(request, self.keys)
        if request.method not in _QUERY_METHODS:
            if self.rate_limiter.enabled:
                decision = await self.rate_limiter.check(principal.key_id)
                setattr(request.state, RATE_STATE, decision)  # see RateLimitHeaders
            release = await self.command_slots.acquire(principal.key_id)
            setattr(request.state, SLOT_STATE, release)  # see ReleaseKeySlot
        return principal

    def command_done(self, request: Request) -> None:
        """The command's work is done (what follows is waiting): free its key's slot."""
        release = getattr(request.state, SLOT_STATE, None)
        if release is not None:
            release()

    def context(self, request: Request, principal: Principal) -> CommandContext:
        correlation = request.headers.get("x-correlation-id") or str(uuid.uuid4())
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 200:
            raise ApiError(422, "Invalid Idempotency-Key", "Idempotency-Key must be 1-200 chars")
        return CommandContext(
            actor=principal.user_id,
            is_admin=principal.is_admin,
            correlation_id=correlation[:200],
            idempotency_key=key,
        )


def services(request: Request) -> ApiServices:
    svc: ApiServices = request.app.state.services
    return svc


def json_response(body: Any, status: int = 200, *, seq: int | None = None) -> Response:
    headers = {SEQ_HEADER: str(seq)} if seq is not None else None
    if seq is not None and isinstance(body, dict):
        body = {**body, "seq": seq}
    return Response(
        orjson.dumps(body, default=msgspec.to_builtins),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


async def decode_body(request: Request, kind: type[T]) -> T:
    raw = await read_body(request, 1024 * 1024, "JSON bodies")
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as err:
        raise ApiError(422, "Invalid body", f"{err}; fix that field and retry") from err
    except msgspec.DecodeError as err:
        raise ApiError(
            422, "Invalid body", f"the body is not valid JSON ({err}); send a JSON object"
        ) from err


async def visible_model(svc: ApiServices, model_id: str, caller: Principal) -> ModelView | None:
    """The model from the read models if the caller may see it (not deleted; theirs,
    public, or the caller is an admin), else None: the API answers 404 either way."""
    return readable_model(await queries.get_model(svc.pool, model_id) if model_id else None, caller)


def readable_model(model: ModelView | None, caller: Principal) -> ModelView | None:
    """`model` if the caller may see it (see `visible_model`), else None."""
    if model is None or model.deleted_at is not None:
        return None
    if not can_read_model(model.owner, model.visibility, caller.user_id, caller.is_admin):
        return None
    return model


def page_limit(request: Request) -> int:
    """`?limit=` of a list endpoint: 1 to 200, default 50."""
    try:
        limit = int(request.query_params.get("limit", "50"))
    except ValueError as err:
        raise ApiError(422, "Invalid limit", "limit must be an integer from 1 to 200") from err
    if not 1 <= limit <= 200:
        raise ApiError(422, "Invalid limit", "limit must be an integer from 1 to 200")
    return limit


def command_error(err: CommandError) -> ApiError:
    status = {NotFoundError: 404, ConflictError: 409, ForbiddenError: 403}.get(type(err), 400)
    title = {404: "Not found", 409: "Conflict", 403: "Forbidden"}.get(status, "Bad request")
    detail = f"{err.message}: {err.hint}" if err.hint else err.message
    return ApiError(status, title, detail)


async def wait_for_projection(request: Request) -> None:
    """Read-your-writes: with `?after_seq=N` (or header `X-Clinai-After-Seq`), answer only
    once the read models have applied sequence N; 503 with Retry-After past the deadline."""
    raw = request.query_params.get("after_seq") or request.headers.get("x-clinai-after-seq")
    if raw is None:
        return
    try:
        seq = int(raw)
    except ValueError as err:
        raise ApiError(422, "Invalid after_seq", "after_seq must be an integer") from err
    svc = services(request)
    if not await svc.watermark.wait_for(seq, svc.settings.read_your_writes_timeout_s):
        raise ApiError(
            503,
            "Projection behind",
            f"the read models have not reached sequence {seq} yet; retry shortly",
            headers={"Retry-After": "1"},
        )
