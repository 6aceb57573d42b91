"""The API's OpenAPI 3.1 document, generated from the route modules' `operations` (see
`services.api.openapi_spec`) and the msgspec types they name: the schemas come from
`msgspec.json.schema_components`, so the document describes what the handlers decode and
encode. Built once per app; a ready version's own document (its typed inputs as the body
of `POST /v1/jobs`) is built from this one on request (`services.api.routes_docs`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from services.api.openapi_spec import AFTER_SEQ, COMMAND_HEADERS, Operation, Param, Reply
from services.api.replies import Problem

__all__ = ["REF_TEMPLATE", "openapi_document", "openapi_path"]

REF_TEMPLATE: Final = "#/components/schemas/{name}"
SECURITY_SCHEME: Final = "apiKey"
_PROBLEM_MEDIA: Final = "application/problem+json"
_CONVERTER: Final = re.compile(r"\{([A-Za-z_]+):[a-z]+\}")

# What a problem's status means, for every operation that can answer it.
_PROBLEM_TEXT: Final = {
    400: "Bad request: the body cannot be read (e.g. not UTF-8), or the command is refused",
    401: "No API key, or an unknown or revoked one",
    403: "Forbidden: the key may not do this",
    404: "Not found (or not visible to the caller)",
    409: "Conflict with the resource's state",
    410: "Gone: expired",
    413: "Too large",
    415: "Unsupported media type",
    422: "Invalid request: `detail` names the field and what to send",
    429: "Too many requests: the key's rate limit or concurrent commands (see Retry-After)",
    431: "Request headers too large (CLINAI_MAX_HEADER_BYTES, CLINAI_MAX_HEADERS)",
    500: "Internal error, with an incident id",
    503: "Unavailable for now (a dependency, or the read models behind): retry after Retry-After",
}
_ALWAYS: Final = (431, 500, 503)
_RETRY_AFTER: Final = frozenset({429, 503})
_RETRY_AFTER_HEADER: Final = {
    "description": "seconds to wait before retrying",
    "schema": {"type": "string"},
}
_SEQ_HEADER: Final = {
    "description": "a command's: the stream sequence of its events (as `seq`)",
    "schema": {"type": "string"},
}
_AUTHENTICATED: Final = (401, 422)
_COMMANDS: Final = (400, 403, 409, 413, 429)  # 409: a concurrent change, at least


def openapi_path(path: str) -> str:
    """A Starlette route path as an OpenAPI path: `{key:path}` is `{key}`."""
    return _CONVERTER.sub(r"{\1}", path)


def openapi_document(
    operations: Iterable[Operation], *, version: str, title: str = "ClinAI API"
) -> dict[str, Any]:
    ops = list(operations)
    types = _types(ops)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF_TEMPLATE)
    schema_of = {id(t): s for t, s in zip(types, schemas, strict=True)}
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(openapi_path(op.path), {})[op.method.lower()] = _operation(op, schema_of)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Upload a model package, get it built into a sandboxed runtime "
            "and run it on files. Errors are application/problem+json (RFC 9457) whose "
            "`detail` says what to do.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key: `Authorization: Bearer <key>` (`clinai up` "
                    "prints an admin key on first start; POST /v1/api-keys issues more)",
                }
            },
        },
        "security": [{SECURITY_SCHEME: []}],
    }


def _types(ops: list[Operation]) -> list[Any]:
    """Every type the operations name, once each (by identity), Problem first."""
    found: dict[int, Any] = {id(Problem): Problem}
    for op in ops:
        candidates = [op.body, *(p.type for p in _params(op))]
        for reply in op.replies.values():
            candidates += reply.type if isinstance(reply.type, tuple) else [reply.type]
        for t in candidates:
            if t is not None:
                found.setdefault(id(t), t)
    return list(found.values())


def _params(op: Operation) -> tuple[Param, ...]:
    if op.public:
        return op.params
    return (*op.params, *AFTER_SEQ, *(COMMAND_HEADERS if op.command else ()))


def _operation(op: Operation, schema_of: dict[int, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.name, "summary": op.summary, "tags": [op.tag]}
    if op.description:
        out["description"] = op.description
    params = _params(op)
    if params:
        out["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                **({"description": p.description} if p.description else {}),
                "schema": schema_of[id(p.type)],
            }
            for p in params
        ]
    content: dict[str, Any] = {}
    if op.body is not None:
        content["application/json"] = {"schema": schema_of[id(op.body)]}
    if op.form:
        content["multipart/form-data"] = {"schema": _form_schema(op)}
    if content:
        out["requestBody"] = {"required": op.body_required, "content": content}
    responses: dict[str, Any] = {
        str(status): _reply(reply, schema_of) for status, reply in sorted(op.replies.items())
    }
    problem = {_PROBLEM_MEDIA: {"schema": schema_of[id(Problem)]}}
    for status in sorted(_problems(op)):
        answer = {"description": _PROBLEM_TEXT.get(status, "Refused"), "content": problem}
        if status in _RETRY_AFTER:
            answer["headers"] = {"Retry-After": _RETRY_AFTER_HEADER}
        responses.setdefault(str(status), answer)
    out["responses"] = responses
    if op.public:
        out["security"] = []
    return out


def _problems(op: Operation) -> set[int]:
    statuses = {*_ALWAYS, *op.problems}
    if not op.public:
        statuses.update(_AUTHENTICATED)
    if op.command:
        statuses.update(_COMMANDS)
    if "{" in op.path:
        statuses.add(404)
    return statuses


def _reply(reply: Reply, schema_of: dict[int, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    types = reply.type if isinstance(reply.type, tuple) else (reply.type,)
    if any("seq" in getattr(t, "__struct_fields__", ()) for t in types):
        out["headers"] = {"X-Clinai-Seq": _SEQ_HEADER}
    if isinstance(reply.type, tuple):  # one of several types
        any_of = [schema_of[id(t)] for t in reply.type]
        out["content"] = {reply.media_type: {"schema": {"anyOf": any_of}}}
    elif reply.type is not None:
        out["content"] = {reply.media_type: {"schema": schema_of[id(reply.type)]}}
    elif reply.schema is not None:
        out["content"] = {reply.media_type: {"schema": reply.schema}}
    return out


def _form_schema(op: Operation) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for f in op.form:
        prop: dict[str, Any] = {"type": "string", "description": f.description}
        if f.file:
            prop.update(format="binary", contentMediaType="application/octet-stream")
        properties[f.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    required = [f.name for f in op.form if f.required]
    if required:
        schema["required"] = required
    return schema
