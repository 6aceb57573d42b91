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
from events.ids import ID_SHAPE, is_valid_id
from events.text import json_problem, may_be_unstorable, text_problem
from projections import queries
from projections.queries import ModelView, VersionView
from projections.watermark import ProjectionWatermark
from services.api._admission import JobAdmission
from services.api._job_waits import JobWaits
from services.api._key_slots import SLOT_STATE, KeySlots
from services.api._rate_limit import RATE_STATE, RateLimiter
from services.api._ready_versions import ReadyVersions
from services.api._version_schemas import VersionSchemas
from services.api.auth import KeyCache, Principal, authenticate
from services.api.problems import UNSTORABLE_HINT, ApiError
from services.api.request_body import check_json_depth, read_body
from services.api.sessions import SessionStore
from services.api.sign_in_throttle import SignInThrottle
from services.blobstore import BlobStore
from services.domain import (
    CommandContext,
    Commands,
)
from services.domain.access import can_read_model
from services.domain.passwords import limit_concurrency
from services.domain.webhooks import WebhookCommands
from services.settings import Settings

__all__ = [
    "ApiServices",
    "checked_id",
    "decode_body",
    "json_response",
    "page_limit",
    "path_id",
    "projected",
    "services",
    "text_param",
    "unstorable_text",
    "visible_model",
    "visible_version",
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
        self.version_schemas = VersionSchemas(store)
        self.admission = JobAdmission(pool, watermark, settings)
        self.command_slots = KeySlots(settings.max_concurrent_commands_per_key)
        self.rate_limiter = RateLimiter(
            pool, rate_per_s=settings.rate_limit_per_s, burst=settings.rate_limit_burst
        )
        self.webhooks = webhooks
        self.sessions = SessionStore(
            pool, idle_s=settings.session_idle_s, max_s=settings.session_max_s
        )
        self.sign_in_throttle = SignInThrottle(
            pool,
            per_account=settings.sign_in_failures_per_account,
            per_address=settings.sign_in_failures_per_address,
            window_s=settings.sign_in_window_s,
        )
        limit_concurrency(settings.argon2_concurrency)  # Argon2 hashes at once
        self.stopping = asyncio.Event()

    def begin_stop(self) -> None:
        self.stopping.set()
        self.watermark.release_waiters()

    def store_connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def caller(self, request: Request) -> Principal:
        """The authenticated caller (an API key, or a dashboard session: see `auth`),
        once the read models have the caller's `after_seq` (so a key, model or version
        created just before is seen by this request). A command (any method but
        GET/HEAD) takes a token from the key's rate limit, then one of the key's slots in
        this process (freed when it is answered)."""
        await wait_for_projection(request)
        principal = await authenticate(request, self.keys, self.sessions)
        if request.method not in _QUERY_METHODS:
            if self.rate_limiter.enabled:
                decision = await self.rate_limiter.check(principal.key_id)
                setattr(request.state, RATE_STATE, decision)  # see CommandEdge
            release = await self.command_slots.acquire(principal.key_id)
            setattr(request.state, SLOT_STATE, release)  # see CommandEdge
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
    elif seq is not None and getattr(body, "seq", None) is msgspec.UNSET:
        body = msgspec.structs.replace(body, seq=seq)
    return Response(
        orjson.dumps(body, default=msgspec.to_builtins),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


async def decode_body(request: Request, kind: type[T]) -> T:
    raw = await read_body(request, 1024 * 1024, "JSON bodies")
    check_json_depth(raw, "Invalid body", "the body")
    try:
        body = msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as err:
        raise ApiError(422, "Invalid body", f"{err}; fix that field and retry") from err
    except msgspec.DecodeError as err:
        raise ApiError(
            422, "Invalid body", f"the body is not valid JSON ({err}); send a JSON object"
        ) from err
    except UnicodeDecodeError as err:
        raise ApiError(
            400,
            "Invalid body",
            f"the body is not valid UTF-8 (byte {err.start}); send JSON encoded as UTF-8",
        ) from err

    # JSON writes U+0000 as an escape; lone surrogates do not decode at all.
    if may_be_unstorable(raw) and (where := json_problem(msgspec.json.decode(raw))) is not None:
        raise unstorable_text("the body", where)
    return body


def text_param(value: str | None, name: str) -> str | None:
    """A text query parameter or form field that reaches Postgres: 422 when it holds
    text Postgres cannot store (see `events.text`)."""
    if value is not None and (problem := text_problem(value)) is not None:
        raise unstorable_text(f"'{name}'", f"it {problem}")
    return value


def unstorable_text(what: str, where: str) -> ApiError:
    return ApiError(
        422, "Invalid text", f"{what}: {where}, which cannot be stored; {UNSTORABLE_HINT}"
    )


_ID_NAMES = {
    "job_id": "job",
    "model_id": "model",
    "version_id": "version",
    "key_id": "API key",
    "webhook_id": "webhook",
    "delivery_id": "delivery",
    "user_id": "user",
}


def checked_id(value: str, what: str, *, status: int = 422) -> str:
    """`value` if it has the shape of an id we issue (`events.ids.is_valid_id`, the one
    rule), else an ApiError (`status`) saying what an id looks like. Every id a request
    names passes here before it reaches the log or the read models."""
    if not is_valid_id(value):
        raise ApiError(
            status,
            "Not found" if status == 404 else f"Invalid {what} id",
            f"that is not a {what} id: ids are {ID_SHAPE}; use an id the API returned",
        )
    return value


def path_id(request: Request, name: str) -> str:
    """The id in the path parameter `name` (e.g. "job_id"); 404 when it is not an id."""
    value = str(request.path_params[name])
    return checked_id(value, _ID_NAMES.get(name, name.removesuffix("_id")), status=404)


async def visible_model(svc: ApiServices, model_id: str, caller: Principal) -> ModelView | None:
    """The model from the read models if the caller may see it (not deleted; theirs,
    public, or the caller is an admin), else None: the API answers 404 either way."""
    return readable_model(await queries.get_model(svc.pool, model_id) if model_id else None, caller)


async def visible_version(svc: ApiServices, version_id: str, caller: Principal) -> VersionView:
    """The version if the caller may see its model (see `visible_model`), else 404."""
    version = await queries.get_version(svc.pool, version_id)
    if version is None or await visible_model(svc, version.model_id, caller) is None:
        raise ApiError(404, "Not found", "version not found; list versions of a model you own")
    return version


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


async def projected(svc: ApiServices, seq: int) -> None:
    """Wait (up to CLINAI_READ_YOUR_WRITES_TIMEOUT_S) until the read models have applied
    sequence `seq`, so that a command can answer with the resource it changed."""
    await svc.watermark.wait_for(seq, svc.settings.read_your_writes_timeout_s)


async def wait_for_projection(request: Request) -> None:
    """Read-your-writes: with `?after_seq=N` (or header `X-Clinai-After-Seq`), answer only
    once the read models have applied sequence N; 503 with Retry-After past the deadline."""
    raw = request.query_params.get("after_seq") or request.headers.get("x-clinai-after-seq")
    if raw is None:
        return
    try:
        seq = int(raw)
    except ValueError:
        seq = -1
    if not 0 <= seq < 2**63:
        raise ApiError(
            422, "Invalid after_seq", "after_seq is a stream sequence: the `seq` a command answered"
        )
    svc = services(request)
    if not await svc.watermark.wait_for(seq, svc.settings.read_your_writes_timeout_s):
        raise ApiError(
            503,
            "Projection behind",
            f"the read models have not reached sequence {seq} yet; retry shortly",
            headers={"Retry-After": "1"},
        )
