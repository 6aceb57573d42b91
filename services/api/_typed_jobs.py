"""A job's typed inputs (a version whose `run` declares them): what the client sent,
as multipart fields and file parts named after the inputs or as a JSON `inputs`
object, checked against the version's schema before anything is queued (422 naming
the input, what it takes and what came), defaults applied, each file given a name in
the job's input folder and a source (a part, an upload, a URL)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec
import orjson

from events import InputFile, InputParam, json_problem
from services.api.problems import ApiError
from services.api.uploads import ReceivedFile, ReceivedForm, safe_filename
from services.packages.schema import CompiledInputs, InputsInvalidError, describe

__all__ = [
    "FileSource",
    "TypedInputs",
    "from_form",
    "from_json",
    "invalid_inputs",
    "with_upload",
]

_PART = "\x00part:"  # a file part's placeholder while the inputs are checked


class FileSource(msgspec.Struct, frozen=True, kw_only=True):
    """Where one file of the job comes from: a part received, an upload id or a URL."""

    name: str  # its file name in the job's input folder
    part: ReceivedFile | None = None
    upload_id: str | None = None
    url: str | None = None


class TypedInputs(msgspec.Struct, frozen=True, kw_only=True):
    """The resolved inputs (files as their names in the input folder) and the files'
    sources, in the order of the inputs."""

    values: dict[str, Any]
    files: tuple[FileSource, ...]
    file_params: frozenset[str] = frozenset()

    def input_files(
        self, key_of: Callable[[FileSource], tuple[str, str, int]]
    ) -> tuple[InputFile, ...]:
        """The event's record of the files; `key_of` gives (key, client's name, size)."""
        out: list[InputFile] = []
        for source in self.files:
            key, filename, size = key_of(source)
            out.append(
                InputFile(
                    name=source.name, key=key, url=source.url, filename=filename, size_bytes=size
                )
            )
        return tuple(out)


def invalid_inputs(err: InputsInvalidError) -> ApiError:
    return ApiError(
        422,
        "Invalid inputs",
        f"{err.message}; GET /v1/versions/{{id}}/schema lists the inputs",
        extra={"field": err.field, "expected": err.expected, "got": err.got},
    )


def from_form(
    compiled: CompiledInputs,
    form: ReceivedForm,
    reserved: frozenset[str],
    check_url: Callable[[str], str],
) -> TypedInputs:
    """The inputs of a multipart submission: text fields (JSON for all but plain
    strings) and file parts, named after the inputs."""
    if form.fields.get("params", "").strip():
        raise _typed_not_params(compiled)
    for name in [*form.fields, *(n for n, _ in form.all_files)]:
        if name not in reserved and name not in compiled.params:
            raise ApiError(
                422,
                "Unknown form field",
                f"this endpoint reads the form fields {', '.join(sorted(reserved))} and this "
                f"version's inputs ({', '.join(compiled.params) or 'none'}), not "
                f"{name[:100]!r}; remove that field or fix its name",
                extra={"field": name, "expected": "no such input", "got": None},
            )
    given: dict[str, Any] = {}
    for name, raw in form.fields.items():
        if name in reserved:
            continue
        param = compiled.params.get(name)
        plain = param is not None and param.kind in ("str", "file") and not param.many
        given[name] = raw if plain else _json_or_text(raw)
    parts: list[ReceivedFile] = []
    for name, received in form.all_files:
        param = compiled.params.get(name)
        if param is not None and param.kind != "file":
            raise invalid_inputs(
                InputsInvalidError(
                    f"input {name!r} is not a file: expected {describe(param)}",
                    field=name,
                    expected=describe(param),
                    got="a file",
                )
            )
        placeholder = f"{_PART}{len(parts)}"
        parts.append(received)
        if param is not None and param.many:
            given.setdefault(name, []).append(placeholder)
        elif name in given:
            raise ApiError(
                422,
                "Form field repeated",
                f"the form field {name!r} was sent more than once; send it once "
                f"(input {name!r} takes one file)",
            )
        else:
            given[name] = placeholder
    return _resolved(compiled, given, parts, check_url)


def from_json(
    compiled: CompiledInputs,
    inputs: dict[str, Any],
    params: dict[str, Any],
    check_url: Callable[[str], str],
) -> TypedInputs:
    """The inputs of a JSON submission (`inputs`): files as upload ids or URLs."""
    if params:
        raise _typed_not_params(compiled)
    return _resolved(compiled, inputs, [], check_url)


def _resolved(
    compiled: CompiledInputs,
    given: dict[str, Any],
    parts: list[ReceivedFile],
    check_url: Callable[[str], str],
) -> TypedInputs:
    try:
        values = compiled.resolve(given)
    except InputsInvalidError as err:
        raise invalid_inputs(err) from err
    files: list[FileSource] = []
    for param in compiled.file_params:
        value = values[param.name]
        if value is None:
            continue
        refs = value if isinstance(value, list) else [value]
        names = [
            _source(param, n if param.many else None, ref, parts, check_url, files)
            for n, ref in enumerate(refs)
        ]
        values[param.name] = names if param.many else names[0]
    uploads = [f.upload_id for f in files if f.upload_id is not None]
    if len(uploads) > 1:
        raise ApiError(
            422,
            "One upload per job",
            "a job names at most one upload id; send its other files as multipart parts "
            "named after the inputs, or as URLs",
        )
    if (where := json_problem(values)) is not None:
        raise ApiError(422, "Invalid text", f"'inputs': {where}, which cannot be stored")
    return TypedInputs(
        values=values,
        files=tuple(files),
        file_params=frozenset(p.name for p in compiled.file_params),
    )


def _source(
    param: InputParam,
    index: int | None,
    ref: str,
    parts: list[ReceivedFile],
    check_url: Callable[[str], str],
    files: list[FileSource],
) -> str:
    """The file's name in the input folder, its source appended to `files`."""
    prefix = param.name if index is None else f"{param.name}-{index}"
    if ref.startswith(_PART):
        part = parts[int(ref[len(_PART) :])]
        source = FileSource(name=f"{prefix}-{part.filename}", part=part)
    elif ref.startswith(("http://", "https://")):
        url = check_url(ref)
        filename = safe_filename(unquote(urlsplit(url).path.rsplit("/", 1)[-1]), "input")
        source = FileSource(name=f"{prefix}-{filename}", url=url)
    else:
        source = FileSource(name=prefix, upload_id=ref)  # named once claimed
    files.append(source)
    return source.name


def _json_or_text(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def _typed_not_params(compiled: CompiledInputs) -> ApiError:
    names = ", ".join(compiled.params) or "(none)"
    return ApiError(
        422,
        "Typed inputs",
        f"this version's run() declares its inputs ({names}): send each as a form field or "
        "file part named after it, or in a JSON body as 'inputs', not 'params'",
    )


def with_upload(typed: TypedInputs, source: FileSource, filename: str) -> tuple[TypedInputs, str]:
    """`typed` with the upload's file named after the upload's file name (its
    extension kept), and that name."""
    new = f"{source.name}-{filename}"
    values = dict(typed.values)
    for param in typed.file_params:
        value = values[param]
        if isinstance(value, list):
            values[param] = [new if n == source.name else n for n in value]
        elif value == source.name:
            values[param] = new
    files = tuple(msgspec.structs.replace(f, name=new) if f is source else f for f in typed.files)
    return msgspec.structs.replace(typed, values=values, files=files), new
