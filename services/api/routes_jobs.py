"""Jobs: submit with an input file, get (long poll with `?wait=`), list, cancel, outputs."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

import msgspec
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from events import JOB_STATUSES, TERMINAL_JOB_STATUSES, JobStatus, JobWebhook, json_problem
from projections import queries
from projections.urls import redacted_url
from services.api import replies
from services.api._deadline import CANCEL_AFTER, job_deadline
from services.api._input_sweep import UNSETTLED, InputSweep, input_key
from services.api._job_result import job_response, result_response
from services.api._key_lock import one_request_per_job
from services.api._keyed_commands import (
    commit_keyed,
    form_fields,
    form_files,
    keep_taken,
    open_keyed_writer,
)
from services.api._request_digest import with_digest
from services.api._typed_jobs import (
    URL_CONTENT_TYPE,
    TypedInputs,
    claimed,
    file_key,
    first_file,
    from_form,
    from_json,
    has_urls,
    only_legacy_fields,
    part_key,
    seal_urls,
    store_parts,
)
from services.api.auth import Principal
from services.api.openapi_spec import LIMIT, FormField, Operation, Param, Reply, path_param
from services.api.problems import ApiError
from services.api.request_body import check_json_depth
from services.api.routes_uploads import ClaimedUpload, claim_upload, upload_used
from services.api.uploads import receive_form, safe_filename
from services.api.wiring import (
    ApiServices,
    checked_id,
    decode_body,
    json_response,
    page_limit,
    path_id,
    projected,
    readable_model,
    services,
    text_param,
    unstorable_text,
    visible_model,
)
from services.blobstore import BlobNotFoundError, BlobWriter
from services.domain.access import can_see_job, listed_owner
from services.domain.context import CommandContext, ConflictError
from services.domain.destinations import DestinationPolicy, DestinationRefused, InvalidDestination
from services.domain.views import job_view

__all__ = ["operations", "routes"]

_WEBHOOK_EVENTS = frozenset({"start", "output", "completed"})
_MAX_URL_CHARS = 4096
_JOB_FIELDS = frozenset(
    {"input", "version", "model", "params", "timeout_s", "deadline_s", "webhook", "webhook_events"}
)
_TEXT_FIELDS = _JOB_FIELDS - {"input"}


async def create_job(request: Request) -> Response:
    """The input as a multipart file, or (a JSON body) a direct upload's id or a URL.
    `?wait=S` (or `Prefer: wait=S`): answer once the job has ended (200), or after S
    seconds with the job as it is then (202), saving a client the long poll that would
    follow."""
    svc = services(request)
    caller = await svc.caller(request)
    wait = _wait_s(svc, request)
    await svc.admission.check(caller.user_id)
    started = time.monotonic()
    media_type = _media_type(request)
    if media_type == "application/json":
        return await _create_from_json(request, svc, caller, wait, started)
    if media_type != "multipart/form-data":  # a JSON body without its Content-Type, say
        raise ApiError(
            415,
            "Unsupported media type",
            "send the job as multipart/form-data (curl -F version=... -F input=@file), or "
            "as JSON with the header Content-Type: application/json",
        )
    ctx = svc.context(request, caller)
    stream_id = ctx.resource_id("job")  # the job's id, unless it names an upload

    async def open_part(field: str, index: int, content_type: str) -> BlobWriter:
        if field in _TEXT_FIELDS:  # refused before anything is stored
            raise ApiError(
                422,
                "Not a file field",
                f"the form field {field!r} is text: send it without a file name",
            )
        return await open_keyed_writer(svc, ctx, part_key(stream_id, field, index), content_type)

    # Each file goes to the store as it arrives; it appears there once committed below.
    form = await receive_form(
        request,
        file_limit=svc.settings.max_input_bytes,
        fields=_JOB_FIELDS,
        open_blob=open_part,
        open_names=True,
    )
    try:
        job = await _checked(svc, caller, form.fields, request.headers.get(CANCEL_AFTER))
        if ctx.idempotency_key is not None:
            ctx = with_digest(ctx, request, form_fields(request, form), form_files(form))
        compiled = await svc.version_schemas.get(job.version.id)
        if compiled is not None:
            typed = from_form(compiled, form, _JOB_FIELDS, lambda url: _input_url(svc, url))
            typed, uploaded, upload_id = await claimed(svc, caller, typed)
            job_id = stream_id if uploaded is None else uploaded.job_id
            async with one_request_per_job(svc.pool, _shared(ctx, job_id, uploaded)):
                replay = await svc.commands.replays(ctx, "job", job_id)  # before any commit
                try:
                    created = await _append_guarded(
                        request, svc, ctx, caller, job, (job_id, stream_id), typed, uploaded,
                        replay,
                    )  # fmt: skip
                except ConflictError as err:
                    if upload_id is not None:  # the upload's one job exists
                        raise upload_used(upload_id) from err
                    raise
        else:
            only_legacy_fields(form, _JOB_FIELDS)
            received = form.files.get("input")
            if received is None or received.blob is None:
                raise ApiError(
                    422,
                    "Input missing",
                    "send the input file in the multipart field 'input' "
                    "(or a JSON body naming an upload or a URL)",
                )
            taken = await commit_keyed(svc, ctx, received.blob, "job", stream_id)  # inputs/<job>
            given = _JobInput(key=received.blob.key, filename=received.filename, size=received.size)
            try:
                created = await _append(svc, ctx, caller, job, stream_id, given)
            except BaseException as err:
                await _discard_input(request, svc, (stream_id,), err)
                raise
            if taken:
                await keep_taken(svc.blobs, received.blob)
    finally:
        await form.discard()  # unless it was committed
        svc.command_done(request)  # ?wait= below waits without holding the key's slot
    return await _created_response(svc, caller, created, started + wait)


def _shared(ctx: CommandContext, job_id: str, uploaded: ClaimedUpload | None) -> str | None:
    """The job's id when another request can make the same one (see `_key_lock`)."""
    return job_id if ctx.idempotency_key is not None or uploaded is not None else None


async def _append_guarded(
    request: Request,
    svc: ApiServices,
    ctx: CommandContext,
    caller: Principal,
    job: _Job,
    ids: tuple[str, str],
    typed: TypedInputs,
    uploaded: ClaimedUpload | None,
    replay: bool,
) -> _Created:
    """A typed job's parts committed to the store (not for a `replay`, which keeps the
    stored ones), then its append; the parts go again unless the log has the job.
    `ids`: the job's, and the one its parts were streamed under (another when the
    job's id derives from an upload)."""
    job_id = ids[0]

    async def commit(writer: BlobWriter) -> bool:
        return await commit_keyed(svc, ctx, writer, "job", job_id)

    try:
        taken: list[BlobWriter] = []
        if not replay:
            typed, taken = await store_parts(svc.blobs, typed, job_id, commit)
        given = _JobInput(key="", filename="", size=0)
        created = await _append(svc, ctx, caller, job, job_id, given, typed, uploaded)
        for writer in taken:
            await keep_taken(svc.blobs, writer)
        return created
    except BaseException as err:
        await _discard_input(request, svc, tuple(dict.fromkeys(ids)), err)
        raise


async def _discard_input(
    request: Request, svc: ApiServices, job_ids: tuple[str, ...], err: BaseException
) -> None:
    """Not appended (or not known to be): the inputs go unless the log has the job."""
    sweep: InputSweep = request.app.state.input_sweep
    unsettled = isinstance(err, UNSETTLED)
    for job_id in job_ids:
        await asyncio.shield(
            sweep.discard(job_id, connected=svc.store_connected, unsettled=unsettled)
        )


class JobBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/jobs` as JSON: the form's fields, with `input` an upload id, or
    `input_url` instead."""

    input: str | None = None
    input_url: str | None = None
    inputs: dict[str, Any] | None = None  # a typed version's inputs
    version: str = ""
    model: str = ""
    params: dict[str, Any] = {}
    timeout_s: float | None = None
    deadline_s: float | str | None = None  # seconds from submission (see `_deadline`)
    webhook: str | None = None
    webhook_events: list[str] | str | None = None

    def fields(self) -> dict[str, str]:
        """As the form's text fields, which the form's checks read."""
        fields = {"version": self.version, "model": self.model}
        fields["params"] = orjson.dumps(self.params).decode() if self.params else ""
        if self.timeout_s is not None:
            fields["timeout_s"] = repr(self.timeout_s)
        if self.deadline_s is not None:
            fields["deadline_s"] = str(self.deadline_s)
        if self.webhook is not None:
            fields["webhook"] = self.webhook
        if self.webhook_events is not None:
            events = self.webhook_events
            fields["webhook_events"] = events if isinstance(events, str) else ",".join(events)
        return fields


class _Job(msgspec.Struct, frozen=True):
    """What a submission asks for, checked: the same from a form or a JSON body."""

    version: queries.VersionView
    params: dict[str, Any]
    timeout_s: float
    webhook: JobWebhook | None
    deadline: datetime | None = None


class _JobInput(msgspec.Struct, frozen=True, kw_only=True):
    key: str  # empty for an input by URL
    filename: str
    size: int
    url: str | None = None


class _Created(msgspec.Struct, frozen=True):
    job_id: str
    seq: int
    seen: int
    job: _Job
    input_filename: str
    inputs: dict[str, Any] | None = None


async def _checked(
    svc: ApiServices, caller: Principal, fields: dict[str, str], cancel_after: str | None
) -> _Job:
    params = _params(fields)  # before any lookup: a bad form is refused at once
    cap_s = svc.settings.max_job_deadline_s
    deadline = job_deadline(fields.get("deadline_s"), cancel_after, cap_s)
    version = await _runnable_version(svc, caller, fields)
    return _Job(version, params, _timeout(svc, fields), _webhook(svc, fields), deadline)


async def _append(
    svc: ApiServices,
    ctx: CommandContext,
    caller: Principal,
    job: _Job,
    job_id: str,
    given: _JobInput,
    typed: TypedInputs | None = None,
    uploaded: ClaimedUpload | None = None,
) -> _Created:
    # Read before the append: the commit notices after it tell the job's whole life.
    seen = svc.watermark.checkpoint
    files = () if typed is None else typed.input_files(lambda f: file_key(f, uploaded))
    seq = await svc.commands.request_job(
        ctx,
        job_id=job_id,
        owner=caller.user_id,
        model_id=job.version.model_id,
        version_id=job.version.id,
        input_key=given.key,
        input_filename=files[0].filename if files else given.filename,
        input_size_bytes=sum(f.size_bytes for f in files) if files else given.size,
        params=job.params,
        timeout_s=job.timeout_s,
        webhook=job.webhook,
        input_url=None if given.url is None else redacted_url(given.url),
        inputs=None if typed is None else typed.values,
        input_files=files,
        deadline=job.deadline,
    )
    svc.admission.submitted(caller.user_id, seq)
    inputs = None if typed is None else typed.values
    return _Created(job_id, seq, seen, job, files[0].filename if files else given.filename, inputs)


async def _create_from_json(
    request: Request, svc: ApiServices, caller: Principal, wait: float, started: float
) -> Response:
    """A job on a direct upload (`input`) or a URL (`input_url`), or a typed version's
    `inputs` (files as upload ids or URLs): no bytes in the body."""
    sealed: BlobWriter | None = None  # an input URL, stored whole for the executor
    try:
        body = await decode_body(request, JobBody)
        job = await _checked(svc, caller, body.fields(), request.headers.get(CANCEL_AFTER))
        ctx = svc.context(request, caller)
        if ctx.idempotency_key is not None:
            fields = {**msgspec.to_builtins(body), CANCEL_AFTER: request.headers.get(CANCEL_AFTER)}
            ctx = with_digest(ctx, request, fields)
        compiled = await svc.version_schemas.get(job.version.id)
        uploaded: ClaimedUpload | None = None
        typed: TypedInputs | None = None
        upload_id: str | None = None
        if compiled is not None:
            if body.input is not None or body.input_url is not None:
                raise ApiError(
                    422,
                    "Typed inputs",
                    "this version's run() declares its inputs: name each file (an upload id "
                    f'or a URL) in \'inputs\', e.g. {{"inputs": {{"{first_file(compiled)}": '
                    '"upload_..."}}',
                )
            typed = from_json(
                compiled, body.inputs or {}, body.params, lambda u: _input_url(svc, u)
            )
            typed, uploaded, upload_id = await claimed(svc, caller, typed)
            job_id = ctx.resource_id("job") if uploaded is None else uploaded.job_id
            given = _JobInput(key="", filename="", size=0)
        else:
            if body.inputs is not None:
                raise ApiError(
                    422,
                    "No typed inputs",
                    "this version's run() takes (input_path, output_dir): send 'input' (an "
                    "upload id) or 'input_url', and 'params', not 'inputs'",
                )
            if (body.input is None) == (body.input_url is None):
                raise ApiError(
                    422,
                    "Input missing",
                    "name the input: 'input' (an upload id from POST /v1/uploads) or "
                    "'input_url' (an http(s) URL the executor fetches), one of the two",
                )
            if body.input is not None:
                upload_id = body.input
                uploaded = await claim_upload(svc, caller.user_id, upload_id)
                job_id = uploaded.job_id
                given = _JobInput(key=uploaded.key, filename=uploaded.filename, size=uploaded.size)
            else:
                url = _input_url(svc, body.input_url or "")
                job_id = ctx.resource_id("job")
                name = safe_filename(unquote(urlsplit(url).path.rsplit("/", 1)[-1]), "input")
                given = _JobInput(key=input_key(job_id), filename=name, size=0, url=url)
        # An input URL is often a presigned link: the event holds it redacted, the
        # store (`inputs/<job>...`) holds it whole for the executor.
        # A retry of the same keyed request keeps what is sealed; another one is refused.
        taken = False
        async with one_request_per_job(svc.pool, _shared(ctx, job_id, uploaded)):
            replay = await svc.commands.replays(ctx, "job", job_id)
            sealing = not replay and (
                given.url is not None or (typed is not None and has_urls(typed))
            )
            try:
                if given.url is not None and not replay:
                    sealed = await open_keyed_writer(svc, ctx, given.key, URL_CONTENT_TYPE)
                    await sealed.write(given.url.encode())
                    taken = await commit_keyed(svc, ctx, sealed, "job", job_id)
                if typed is not None and not replay:
                    typed = await seal_urls(svc.blobs, typed, job_id)
                created = await _append(svc, ctx, caller, job, job_id, given, typed, uploaded)
            except BaseException as err:
                if sealing:
                    await _discard_input(request, svc, (job_id,), err)
                if isinstance(err, ConflictError) and upload_id is not None:
                    raise upload_used(upload_id) from err  # the upload's one job exists
                raise
        if taken and sealed is not None:
            await keep_taken(svc.blobs, sealed)
    finally:
        if sealed is not None and not sealed.done:
            await asyncio.shield(sealed.abort())
        svc.command_done(request)
    return await _created_response(svc, caller, created, started + wait)


def _input_url(svc: ApiServices, url: str) -> str:
    """An http(s) URL, not to a guarded literal address (the executor checks the
    addresses DNS gives when it fetches)."""
    url = (text_param(url, "input_url") or "").strip()
    if len(url) > _MAX_URL_CHARS:
        raise ApiError(422, "Invalid input_url", f"input_url is at most {_MAX_URL_CHARS} chars")
    policy = DestinationPolicy.from_setting(
        svc.settings.input_url_allow_networks, "CLINAI_INPUT_URL_ALLOW_NETWORKS"
    )
    try:
        policy.check_url(url, "an input URL")
    except InvalidDestination as err:
        raise ApiError(422, "Invalid input_url", str(err)) from err
    except DestinationRefused as err:
        raise ApiError(
            422,
            "Input URL refused",
            f"{err}: inputs by URL come from public addresses only; "
            "upload the file instead (POST /v1/uploads)",
        ) from err
    return url


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _created_response(
    svc: ApiServices, caller: Principal, created: _Created, deadline: float
) -> Response:
    """202 with the queued job, or with `?wait=` the job once ended (or at `deadline`)."""
    job_id, seq = created.job_id, created.seq
    if deadline > time.monotonic():
        # No read of the job before it has ended: it is queued until the notices say.
        await svc.job_waits.wait_moved(
            job_id, seq, created.seen, deadline - time.monotonic(), ended=True
        )
        if svc.watermark.checkpoint >= seq:  # else its row may not exist yet
            job = await _settled_job(svc, caller, job_id, deadline)
            ended = job.status in TERMINAL_JOB_STATUSES
            return await job_response(job, svc.blobs, 200 if ended else 202, seq=seq)
    queued = replies.QueuedJob(
        id=job_id,
        status="queued",
        model_id=created.job.version.model_id,
        version_id=created.job.version.id,
        input_filename=created.input_filename,
        params=created.job.params,
        timeout_s=created.job.timeout_s,
        deadline=created.job.deadline,  # as the read model shows it
        inputs=msgspec.UNSET if created.inputs is None else created.inputs,
        seq=seq,
    )
    return json_response(queued, 202, seq=seq)


async def _runnable_version(
    svc: ApiServices, caller: Principal, fields: dict[str, str]
) -> queries.VersionView:
    version_id = text_param(fields.get("version", ""), "version") or ""
    model_id = text_param(fields.get("model", ""), "model") or ""
    version_id, model_id = version_id.strip(), model_id.strip()
    if not version_id and not model_id:
        raise ApiError(
            422,
            "Version missing",
            "say what to run: a field 'version' (version id) or 'model' (its latest ready version)",
        )
    if version_id and model_id:
        raise ApiError(
            422,
            "Version or model",
            "send either 'version' (a version id) or 'model' (its latest ready version), not both",
        )
    if version_id:
        checked_id(version_id, "version")
    else:
        checked_id(model_id, "model")
    version: queries.VersionView | None = None
    model: queries.ModelView | None = None
    if version_id:
        found = await svc.ready_versions.get(version_id)
        if found is not None:
            version, model = found[0], readable_model(found[1], caller)
    else:
        model = await visible_model(svc, model_id, caller)
    if model is None:
        raise ApiError(404, "Not found", "model or version not found; check the id")
    if not version_id:
        ready = [v for v in await queries.list_versions(svc.pool, model.id) if v.status == "ready"]
        if not ready:
            raise ApiError(
                409,
                "No ready version",
                "this model has no built version yet: upload a package and wait for READY",
            )
        return max(ready, key=lambda v: v.number)
    if version is None:
        raise ApiError(404, "Not found", "version not found; check the id")
    if version.status == "failed":
        raise ApiError(409, "Version failed to build", "fix the package and upload a new version")
    if version.status != "ready":
        raise ApiError(
            409,
            "Version not ready",
            f"version is {version.status}: wait until GET /v1/versions/{version.id} says ready",
            headers={"Retry-After": "2"},
        )
    return version


def _params(fields: dict[str, str]) -> dict[str, Any]:
    raw = fields.get("params")
    if raw is None or not raw.strip():
        return {}
    check_json_depth(raw.encode(), "Invalid params", "'params'")
    try:
        params = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise ApiError(422, "Invalid params", f"'params' must be a JSON object: {err}") from err
    if not isinstance(params, dict):
        raise ApiError(422, "Invalid params", "'params' must be a JSON object")
    if (where := json_problem(params)) is not None:
        raise unstorable_text("'params'", where)
    return params


def _timeout(svc: ApiServices, fields: dict[str, str]) -> float:
    raw = fields.get("timeout_s")
    if raw is None or not raw.strip():
        return svc.settings.job_timeout_s
    try:
        value = float(raw)
    except ValueError as err:
        raise ApiError(422, "Invalid timeout_s", "timeout_s must be a number of seconds") from err
    limit = svc.settings.job_timeout_max_s
    if not 0 < value <= limit:
        raise ApiError(422, "Invalid timeout_s", f"timeout_s must be above 0 and at most {limit}")
    return value


def _webhook(svc: ApiServices, fields: dict[str, str]) -> JobWebhook | None:
    url = (text_param(fields.get("webhook"), "webhook") or "").strip()
    if not url:
        return None
    svc.webhooks.check_url(url)  # InvalidWebhookError: 422
    raw_events = fields.get("webhook_events", "completed")
    wanted = tuple(e.strip() for e in raw_events.split(",") if e.strip())
    unknown = set(wanted) - _WEBHOOK_EVENTS
    if unknown or not wanted:
        raise ApiError(
            422,
            "Invalid webhook_events",
            f"webhook_events is a comma-separated subset of {sorted(_WEBHOOK_EVENTS)}",
        )
    return JobWebhook(url=url, events=wanted)


async def get_job(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    deadline = time.monotonic() + _wait_s(svc, request)
    job = await _settled_job(svc, caller, path_id(request, "job_id"), deadline)
    return await job_response(job, svc.blobs)


async def job_result(request: Request) -> Response:
    """The result alone, streamed when it is large (see `_job_result`)."""
    svc = services(request)
    caller = await svc.caller(request)
    job = await _visible_job(svc, caller, path_id(request, "job_id"))
    return await result_response(job, svc.blobs)


def _wait_s(svc: ApiServices, request: Request) -> float:
    """`?wait=`, else the `Prefer: wait=S` header (RFC 7240, as Replicate's API takes
    it; a bare `wait` is the longest): how long a request may wait for its job to end,
    capped by the setting."""
    cap = svc.settings.max_long_poll_s
    given = request.query_params.get("wait")
    if given is None:
        given = _preferred_wait(request.headers.get("prefer", ""), cap)
    try:
        wait = float(given)
    except ValueError:
        wait = math.nan
    if not math.isfinite(wait) or wait < 0:
        raise ApiError(
            422, "Invalid wait", f"wait is a number of seconds from 0 (longer waits count as {cap})"
        )
    return min(wait, cap)


def _preferred_wait(prefer: str, cap: float) -> str:
    if not prefer:  # most requests: no header to parse
        return "0"
    for preference in prefer.split(","):
        name, equals, value = preference.split(";")[0].strip().partition("=")
        if name.strip().lower() == "wait":
            return value.strip().strip('"') if equals else str(cap)
    return "0"


async def _settled_job(
    svc: ApiServices, caller: Principal, job_id: str, deadline: float
) -> queries.JobView:
    """The job once it has ended, or as it is at `deadline` (or when the server stops)."""
    while True:
        seen = svc.watermark.checkpoint
        job = await _visible_job(svc, caller, job_id)
        remaining = deadline - time.monotonic()
        if job.status in TERMINAL_JOB_STATUSES or remaining <= 0 or svc.stopping.is_set():
            return job
        # Only an ended job answers: a start does not need a re-read.
        await svc.job_waits.wait_moved(job.id, job.last_seq, seen, remaining, ended=True)


async def list_jobs(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    limit = page_limit(request)
    owner = listed_owner(caller.user_id, caller.is_admin, request.query_params.get("all") == "true")
    page = await queries.list_jobs(
        svc.pool,
        owner=owner,
        status=_status_param(request),
        model_id=_optional_id(request, "model_id", "model"),
        limit=limit,
        cursor=request.query_params.get("cursor"),
    )
    items = [await job_view(job, svc.blobs) for job in page.items]
    return json_response(replies.JobPage(items=items, next_cursor=page.next_cursor))


def _status_param(request: Request) -> str | None:
    status = request.query_params.get("status")
    if status is not None and status not in JOB_STATUSES:
        raise ApiError(
            422,
            "Invalid status",
            f"status is a job status: one of {', '.join(sorted(JOB_STATUSES))}",
        )
    return status


def _optional_id(request: Request, param: str, what: str) -> str | None:
    value = request.query_params.get(param)
    return None if value is None else checked_id(value, what)


async def cancel_job(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    job_id = path_id(request, "job_id")
    seq = await svc.commands.cancel_job(svc.context(request, caller), job_id)
    await projected(svc, seq)
    job = await _visible_job(svc, caller, job_id)
    return json_response(await job_view(job, svc.blobs), 202, seq=seq)


async def job_outputs(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    job = await _visible_job(svc, caller, path_id(request, "job_id"))
    view = await job_view(job, svc.blobs)
    return json_response(replies.JobOutputs(job_id=job.id, status=job.status, items=view.outputs))


async def job_log(request: Request) -> Response:
    """What the model printed during the job (its last part when it printed a lot), as
    plain text; empty while the job has not ended or when it printed nothing."""
    svc = services(request)
    caller = await svc.caller(request)
    job = await _visible_job(svc, caller, path_id(request, "job_id"))
    text = b""
    if job.log_key is not None:
        try:
            text = await svc.blobs.get_bytes(job.log_key)
        except BlobNotFoundError as err:
            raise ApiError(
                404, "Log missing", f"the log of job {job.id} is missing from the blob store"
            ) from err
    return Response(
        text,
        media_type="text/plain; charset=utf-8",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"},
    )


async def _visible_job(svc: ApiServices, caller: Principal, job_id: str) -> queries.JobView:
    job = await queries.get_job(svc.pool, job_id)
    if job is None or not can_see_job(job.owner, caller.user_id, caller.is_admin):
        raise ApiError(
            404, "Not found", f"job {job_id} not found; list your jobs with GET /v1/jobs"
        )
    return job


routes = [
    Route("/v1/jobs", create_job, methods=["POST"]),
    Route("/v1/jobs", list_jobs, methods=["GET"]),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
    Route("/v1/jobs/{job_id}/result", job_result, methods=["GET"]),
    Route("/v1/jobs/{job_id}/outputs", job_outputs, methods=["GET"]),
    Route("/v1/jobs/{job_id}/log", job_log, methods=["GET"]),
]

_JOB_ID = path_param("job_id", "job")
_WAIT = Param(
    name="wait",
    type=Annotated[float, msgspec.Meta(ge=0)],
    description="seconds to wait for the job to end (capped by the server)",
)
_TAG = "jobs"
_JOB_FORM = (
    FormField(
        name="input",
        description="the input file (a version whose run() takes input_path); a typed "
        "version's inputs are parts and fields named after its inputs instead: see "
        "GET /v1/versions/{id}/openapi.json",
        file=True,
    ),
    FormField(name="version", description="the version to run (its id), or:"),
    FormField(name="model", description="a model id: its latest ready version"),
    FormField(name="params", description="a JSON object passed to run() as `params`"),
    FormField(name="timeout_s", description="seconds the job may run"),
    FormField(
        name="deadline_s",
        description="seconds from now: a job not ended by then is aborted (queued) or "
        "canceled (running)",
    ),
    FormField(name="webhook", description="an https URL told of the job's progress"),
    FormField(name="webhook_events", description="comma-separated: start, output, completed"),
)

operations = [
    Operation(
        method="POST",
        path="/v1/jobs",
        name="create_job",
        summary="Submit a job",
        description="The input as a multipart file (or a typed version's inputs as parts "
        "and fields), or a JSON body naming a direct upload's id (`input`), an http(s) "
        "URL (`input_url`) or a typed version's `inputs`. With `?wait=S` or `Prefer: "
        "wait=S` the answer comes once the job has ended (200) or after S seconds (202).",
        tag=_TAG,
        params=(
            _WAIT,
            Param(name="Prefer", where="header", description="`wait=S`: as `?wait=S`"),
            Param(
                name="Cancel-After",
                where="header",
                description="as `deadline_s`: seconds, or a duration such as `90s`, `5m`, `1h30m`",
            ),
        ),
        body=JobBody,
        form=_JOB_FORM,
        command=True,
        problems=(404, 409, 410, 415),
        replies={
            200: Reply(description="The job, ended within the wait", type=replies.Job),
            202: Reply(
                description="Queued (or still running when the wait ended)",
                type=(replies.QueuedJob, replies.Job),
            ),
        },
    ),
    Operation(
        method="GET",
        path="/v1/jobs",
        name="list_jobs",
        summary="List the caller's jobs, newest first",
        tag=_TAG,
        params=(
            LIMIT,
            Param(name="cursor", description="`next_cursor` of the page before"),
            Param(
                name="status",
                type=JobStatus,
                description="only jobs with this status",
            ),
            Param(name="model_id", description="only jobs of this model"),
            Param(name="all", description="`true`: everyone's jobs (admins)"),
        ),
        replies={200: Reply(description="A page of jobs", type=replies.JobPage)},
    ),
    Operation(
        method="GET",
        path="/v1/jobs/{job_id}",
        name="get_job",
        summary="Get a job, its result inline; long poll with `?wait=`",
        tag=_TAG,
        params=(_JOB_ID, _WAIT),
        replies={200: Reply(description="The job", type=replies.Job)},
    ),
    Operation(
        method="POST",
        path="/v1/jobs/{job_id}/cancel",
        name="cancel_job",
        summary="Cancel a job",
        tag=_TAG,
        params=(_JOB_ID,),
        command=True,
        problems=(403, 409),
        replies={202: Reply(description="Cancel requested", type=replies.Job)},
    ),
    Operation(
        method="GET",
        path="/v1/jobs/{job_id}/result",
        name="job_result",
        summary="The result of a succeeded job, alone",
        tag=_TAG,
        params=(_JOB_ID,),
        problems=(409,),
        replies={200: Reply(description="The result run() returned", type=Any)},
    ),
    Operation(
        method="GET",
        path="/v1/jobs/{job_id}/outputs",
        name="job_outputs",
        summary="The job's output files, with download URLs",
        tag=_TAG,
        params=(_JOB_ID,),
        replies={200: Reply(description="The outputs", type=replies.JobOutputs)},
    ),
    Operation(
        method="GET",
        path="/v1/jobs/{job_id}/log",
        name="job_log",
        summary="What the model printed during the job, as text",
        tag=_TAG,
        params=(_JOB_ID,),
        replies={
            200: Reply(
                description="The log (empty until the job has ended)",
                media_type="text/plain",
                schema={"type": "string"},
            )
        },
    ),
]
