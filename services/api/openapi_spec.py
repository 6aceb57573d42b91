"""What each route is, for the OpenAPI document (`services.api.openapi`): beside its
`routes` list, each route module gives an `operations` list of these, naming the
msgspec types its handlers decode and encode; the document's schemas are generated from
those types. `tests/api/test_openapi.py` checks that every route has its operation and
every operation its route."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "AFTER_SEQ",
    "COMMAND_HEADERS",
    "LIMIT",
    "FormField",
    "Operation",
    "Param",
    "Reply",
    "path_param",
]


class Param(msgspec.Struct, frozen=True, kw_only=True):
    """A path, query or header parameter; `type` is a Python type msgspec describes."""

    name: str
    where: Literal["path", "query", "header"] = "query"
    type: Any = str
    description: str = ""
    required: bool = False


class FormField(msgspec.Struct, frozen=True, kw_only=True):
    """A field of a multipart/form-data body: a file part, or a text field."""

    name: str
    description: str
    file: bool = False
    required: bool = False


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """One documented answer: `type` is the msgspec type of a JSON body (a tuple: one
    of these); `schema` a schema given as is (a body that is not JSON, or none)."""

    description: str
    type: Any = None
    media_type: str = "application/json"
    schema: dict[str, Any] | None = None


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    """One method on one path. `problems`: the statuses answered with a problem
    document beyond those every operation of its kind can answer (see
    `services.api.openapi`); `public`: no API key needed."""

    method: str
    path: str
    name: str
    summary: str
    tag: str
    description: str = ""
    params: tuple[Param, ...] = ()
    body: Any = None
    body_required: bool = True
    form: tuple[FormField, ...] = ()
    replies: dict[int, Reply] = {}
    problems: tuple[int, ...] = ()
    public: bool = False
    command: bool = False  # takes a token of the key's rate limit and one of its slots


def path_param(name: str, what: str) -> Param:
    return Param(name=name, where="path", required=True, description=f"the {what}'s id")


SeqNumber = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=200)]

AFTER_SEQ = (
    Param(
        name="after_seq",
        type=SeqNumber,
        description="read-your-writes: answer once the read models have applied this "
        "stream sequence (the `seq` a command answered); 503 past the server's deadline",
    ),
)
COMMAND_HEADERS = (
    Param(
        name="Idempotency-Key",
        where="header",
        type=Annotated[str, msgspec.Meta(min_length=1, max_length=200)],
        description="a retried command with the same key is applied once (the same "
        "request answers as the first time; a different request under the key is 422)",
    ),
    Param(name="X-Correlation-Id", where="header", description="carried into the events"),
)
LIMIT = Param(name="limit", type=PageLimit, description="items per page, 1 to 200 (50)")
