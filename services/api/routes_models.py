"""Models and their versions: create, list, get, update, soft delete; upload a package."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from projections import queries
from services.api import replies
from services.api._keyed_commands import commit_keyed, keep_taken, open_keyed_writer
from services.api._request_digest import with_digest
from services.api._version_schemas import LEGACY_SCHEMA
from services.api.auth import Principal
from services.api.openapi_spec import LIMIT, FormField, Operation, Param, Reply, path_param
from services.api.problems import ApiError
from services.api.uploads import ReceivedFile, drain_small_body, receive_file
from services.api.wiring import (
    decode_body,
    json_response,
    page_limit,
    path_id,
    projected,
    services,
    visible_model,
    visible_version,
)
from services.domain import CommandError
from services.domain.views import model_view, version_view
from services.packages import PackageLimits, inspect_package

__all__ = ["operations", "routes"]

ModelName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
Description = Annotated[str, msgspec.Meta(max_length=10_000)]


class CreateModelBody(msgspec.Struct, forbid_unknown_fields=True):
    name: ModelName
    description: Description = ""
    visibility: Literal["private", "public"] = "private"


class UpdateModelBody(msgspec.Struct, forbid_unknown_fields=True):
    name: ModelName | None = None
    description: Description | None = None
    visibility: Literal["private", "public"] | None = None


async def create_model(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    body = await decode_body(request, CreateModelBody)
    ctx = with_digest(svc.context(request, caller), request, msgspec.to_builtins(body))
    model_id, seq = await svc.commands.create_model(
        ctx, name=body.name, description=body.description, visibility=body.visibility
    )
    return json_response(
        replies.CreatedModel(
            id=model_id,
            owner=caller.user_id,
            name=body.name,
            description=body.description,
            visibility=body.visibility,
            latest_version=0,
        ),
        201,
        seq=seq,
    )


async def list_models(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    limit = page_limit(request)
    page = await queries.list_models(
        svc.pool,
        viewer=caller.user_id,
        is_admin=caller.is_admin,
        limit=limit,
        cursor=request.query_params.get("cursor"),
    )
    return json_response(
        replies.ModelPage(items=[model_view(m) for m in page.items], next_cursor=page.next_cursor)
    )


async def get_model(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    model = await _visible_model(request, caller)
    return json_response(model_view(model))


async def update_model(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    body = await decode_body(request, UpdateModelBody)
    model_id = path_id(request, "model_id")
    seq = await svc.commands.update_model(
        svc.context(request, caller),
        model_id,
        name=body.name,
        description=body.description,
        visibility=body.visibility,
    )
    await projected(svc, seq)
    return json_response(model_view(await _visible_model(request, caller)), 202, seq=seq)


async def delete_model(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    model_id = path_id(request, "model_id")
    seq = await svc.commands.delete_model(svc.context(request, caller), model_id)
    return json_response(replies.Accepted(id=model_id, status="deleted"), 202, seq=seq)


async def upload_version(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    ctx = svc.context(request, caller)
    model_id = path_id(request, "model_id")
    try:
        await svc.commands.load_model(ctx, model_id, write=True)
    except CommandError:
        await drain_small_body(request)  # then answered by its exception handler
        raise
    limits = PackageLimits(max_zip_bytes=svc.settings.max_package_bytes)
    version_id = ctx.resource_id("ver")
    package_key = f"packages/{version_id}/package.zip"
    workdir = Path(tempfile.mkdtemp(prefix="clinai-upload-"))
    upload: ReceivedFile | None = None
    try:
        # To the store as it arrives, and to disk to be inspected (a zip is read from
        # its end); stored (committed) once it passed the inspection.
        upload = await receive_file(
            request,
            field="package",
            limit=svc.settings.max_package_bytes,
            dest_dir=workdir,
            open_blob=lambda _: open_keyed_writer(svc, ctx, package_key, "application/zip"),
        )
        if upload.path is None or upload.blob is None:  # pragma: no cover - both given
            raise RuntimeError("receive_file gave no file and no blob")
        info = await asyncio.to_thread(inspect_package, upload.path, limits)
        package = ("package", upload.filename, upload.size, info.package_hash)
        ctx = with_digest(ctx, request, {}, [package])
        taken = await commit_keyed(svc, ctx, upload.blob, "version", version_id)
        number, seq = await svc.commands.add_version(
            ctx,
            model_id,
            version_id=version_id,
            package_key=package_key,
            package_hash=info.package_hash,
            requirements_hash=info.requirements_hash,
            size_bytes=upload.size,
            filename=upload.filename,
            has_setup=info.has_setup,
            input_schema=info.input_schema,
        )
        if taken:
            await keep_taken(svc.blobs, upload.blob)
    finally:
        if upload is not None and upload.blob is not None:
            await asyncio.shield(upload.blob.abort())  # unless committed
        await asyncio.to_thread(shutil.rmtree, workdir, True)
    return json_response(
        replies.CreatedVersion(
            id=version_id,
            model_id=model_id,
            number=number,
            status="uploaded",
            package_hash=info.package_hash,
            size_bytes=upload.size,
        ),
        201,
        seq=seq,
    )


async def list_versions(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    model = await _visible_model(request, caller)
    versions = await queries.list_versions(svc.pool, model.id)
    return json_response(replies.VersionList(items=[version_view(v) for v in versions]))


async def get_version(request: Request) -> Response:
    svc = services(request)
    caller = await svc.caller(request)
    version = await visible_version(svc, path_id(request, "version_id"), caller)
    return json_response(version_view(version))


async def version_schema(request: Request) -> Response:
    """The version's inputs as JSON Schema (read from predict.py at upload); a
    declared result under `x-clinai-output`."""
    svc = services(request)
    caller = await svc.caller(request)
    version = await visible_version(svc, path_id(request, "version_id"), caller)
    compiled = await svc.version_schemas.get(version.id)
    return json_response(LEGACY_SCHEMA if compiled is None else compiled.json_schema())


async def version_log(request: Request) -> Response:
    """The build log so far, as chunks from `?from=N`; poll with the returned `next`."""
    svc = services(request)
    caller = await svc.caller(request)
    version = await visible_version(svc, path_id(request, "version_id"), caller)
    try:
        start = int(request.query_params.get("from", "0"))
    except ValueError:
        start = -1
    if not 0 <= start < 2**31:
        raise ApiError(422, "Invalid from", "`from` is a chunk index: 0, or `next` of a reply")
    chunks = await queries.build_log(svc.pool, version.id, start)
    next_index = chunks[-1].index + 1 if chunks else start
    return json_response(
        replies.VersionLog(
            version_id=version.id,
            status=version.status,
            chunks=[replies.LogChunk(index=c.index, text=c.text) for c in chunks],
            next=next_index,
        )
    )


async def _visible_model(request: Request, caller: Principal) -> queries.ModelView:
    model = await visible_model(services(request), path_id(request, "model_id"), caller)
    if model is None:
        raise ApiError(
            404,
            "Not found",
            "model not found: check the id with GET /v1/models "
            "(private models are visible to their owner only)",
        )
    return model


routes = [
    Route("/v1/models", create_model, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model_id}", get_model, methods=["GET"]),
    Route("/v1/models/{model_id}", update_model, methods=["PATCH"]),
    Route("/v1/models/{model_id}", delete_model, methods=["DELETE"]),
    Route("/v1/models/{model_id}/versions", upload_version, methods=["POST"]),
    Route("/v1/models/{model_id}/versions", list_versions, methods=["GET"]),
    Route("/v1/versions/{version_id}", get_version, methods=["GET"]),
    Route("/v1/versions/{version_id}/log", version_log, methods=["GET"]),
    Route("/v1/versions/{version_id}/schema", version_schema, methods=["GET"]),
]

_MODEL_ID = path_param("model_id", "model")
_VERSION_ID = path_param("version_id", "version")
_CURSOR = Param(name="cursor", description="`next_cursor` of the page before")
_TAG = "models"

operations = [
    Operation(
        method="POST",
        path="/v1/models",
        name="create_model",
        summary="Create a model",
        tag=_TAG,
        body=CreateModelBody,
        command=True,
        replies={201: Reply(description="Created", type=replies.CreatedModel)},
    ),
    Operation(
        method="GET",
        path="/v1/models",
        name="list_models",
        summary="List the models the caller may see",
        tag=_TAG,
        params=(LIMIT, _CURSOR),
        replies={200: Reply(description="A page of models", type=replies.ModelPage)},
    ),
    Operation(
        method="GET",
        path="/v1/models/{model_id}",
        name="get_model",
        summary="Get a model",
        tag=_TAG,
        params=(_MODEL_ID,),
        replies={200: Reply(description="The model", type=replies.Model)},
    ),
    Operation(
        method="PATCH",
        path="/v1/models/{model_id}",
        name="update_model",
        summary="Update a model's name, description or visibility",
        tag=_TAG,
        params=(_MODEL_ID,),
        body=UpdateModelBody,
        command=True,
        problems=(403, 409),
        replies={202: Reply(description="Updated", type=replies.Model)},
    ),
    Operation(
        method="DELETE",
        path="/v1/models/{model_id}",
        name="delete_model",
        summary="Delete a model (soft)",
        tag=_TAG,
        params=(_MODEL_ID,),
        command=True,
        problems=(403, 409),
        replies={202: Reply(description="Deleted", type=replies.Accepted)},
    ),
    Operation(
        method="POST",
        path="/v1/models/{model_id}/versions",
        name="upload_version",
        summary="Upload a model package: a new version, built in the background",
        tag=_TAG,
        params=(_MODEL_ID,),
        form=(
            FormField(
                name="package",
                description="the package as a .zip (predict.py, requirements.txt, ...)",
                file=True,
                required=True,
            ),
        ),
        command=True,
        problems=(403, 409, 415),
        replies={201: Reply(description="Uploaded; being built", type=replies.CreatedVersion)},
    ),
    Operation(
        method="GET",
        path="/v1/models/{model_id}/versions",
        name="list_versions",
        summary="List a model's versions",
        tag=_TAG,
        params=(_MODEL_ID,),
        replies={200: Reply(description="The versions", type=replies.VersionList)},
    ),
    Operation(
        method="GET",
        path="/v1/versions/{version_id}",
        name="get_version",
        summary="Get a version",
        tag=_TAG,
        params=(_VERSION_ID,),
        replies={200: Reply(description="The version", type=replies.Version)},
    ),
    Operation(
        method="GET",
        path="/v1/versions/{version_id}/log",
        name="version_log",
        summary="The version's build log, in chunks from `from`",
        tag=_TAG,
        params=(
            _VERSION_ID,
            Param(
                name="from",
                type=Annotated[int, msgspec.Meta(ge=0, lt=2**31)],
                description="the first chunk's index: 0, or `next` of a reply",
            ),
        ),
        replies={200: Reply(description="The chunks", type=replies.VersionLog)},
    ),
    Operation(
        method="GET",
        path="/v1/versions/{version_id}/schema",
        name="version_schema",
        summary="The version's inputs as JSON Schema (2020-12)",
        tag=_TAG,
        params=(_VERSION_ID,),
        replies={200: Reply(description="A JSON Schema", type=dict[str, Any])},
    ),
]
