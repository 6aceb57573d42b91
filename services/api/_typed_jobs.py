"""A job's typed inputs (a version whose `run` declares them): what the client sent,
as multipart fields and file parts named after the inputs or as a JSON `inputs`
object, checked against the version's schema before anything is queued (422 naming
the input, what it takes and what came), defaults applied, each file given a name in
the job's input folder and a source (a part, an upload, a URL).

A form's file parts go to the store as they arrive (`part_key`), before the version,
and so whether its inputs are typed, is known; `store_parts` commits them once the
job is accepted, copying the few that must live elsewhere."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec
import orjson

from events import InputFile, InputParam, json_problem
from projections.urls import redacted_url
from services.api._input_sweep import input_key
from services.api.auth import Principal
from services.api.problems import ApiError
from services.api.routes_uploads import ClaimedUpload, claim_upload
from services.api.uploads import ReceivedFile, ReceivedForm, safe_filename
from services.api.wiring import ApiServices, unstorable_text
from services.blobstore import BlobStore, BlobWriter
from services.packages.schema import CompiledInputs, InputsInvalidError, describe

CommitPart = Callable[[BlobWriter], Awaitable[bool]]  # True: taken as stored, not committed

__all__ = [
    "URL_CONTENT_TYPE",
    "FileSource",
    "TypedInputs",
    "claimed",
    "file_key",
    "first_file",
    "from_form",
    "from_json",
    "has_urls",
    "invalid_inputs",
    "only_legacy_fields",
    "part_key",
    "seal_urls",
    "store_parts",
    "with_upload",
]

URL_CONTENT_TYPE = "text/uri-list"  # an input URL kept whole in the store
_PART = "\x00part:"  # a file part's placeholder while the inputs are checked


class FileSource(msgspec.Struct, frozen=True, kw_only=True):
    """Where one file of the job comes from: a part received, an upload id or a URL."""

    name: str  # its file name in the job's input folder
    part: ReceivedFile | None = None
    key: str = ""  # a part's key in the store, once `store_parts` committed it
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
            url = None if source.url is None else redacted_url(source.url)  # whole at `key`
            out.append(
                InputFile(name=source.name, key=key, url=url, filename=filename, size_bytes=size)
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
        raise unstorable_text("'inputs'", where)
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


def part_key(job_id: str, field: str, index: int) -> str:
    """Where a form's file part is streamed to: the legacy single input where it has
    always been (`inputs/<job>`), any other part in the job's folder."""
    if field == "input" and index == 0:
        return input_key(job_id)
    return input_key(job_id, f"part-{index}")


def only_legacy_fields(form: ReceivedForm, reserved: frozenset[str]) -> None:
    """A version in the form run(input_path, output_dir) reads the job's own fields
    and one file, 'input'."""
    fields = ", ".join(sorted(reserved))
    for name in [*form.fields, *(n for n, _ in form.all_files)]:
        if name not in reserved:
            raise ApiError(
                422,
                "Unknown form field",
                f"this endpoint reads the form fields {fields}, not {name[:100]!r} (this "
                "version's run() takes no typed inputs); remove that field or fix its name",
            )
    if len(form.all_files) > 1:
        raise ApiError(422, "Too many files", "send one file per request")


async def store_parts(
    blobs: BlobStore, typed: TypedInputs, job_id: str, commit: CommitPart
) -> tuple[TypedInputs, list[BlobWriter]]:
    """`typed` with its file parts committed to the store (each part's `key` set), and
    the parts `commit` took as they were stored instead (see `commit_keyed`). A part is
    copied into `job_id`'s folder when it was streamed elsewhere: under another id (the
    job's id derives from an upload the form names), or to `inputs/<job>` while the job
    has other files (that key cannot be a file and a folder at once); such a part is
    committed as it is, replacing."""
    parts = [f for f in typed.files if f.part is not None and f.part.blob is not None]
    taken: list[BlobWriter] = []
    folder = input_key(job_id) + "/"

    def moved(key: str) -> bool:
        return not key.startswith(folder) and (key != input_key(job_id) or len(parts) > 1)

    keys: dict[int, str] = {}
    # The ones to copy first: `inputs/<job>` must be gone before the folder is made.
    for source in sorted(parts, key=lambda f: not moved(_writer(f).key)):
        writer = _writer(source)
        key = writer.key
        if not moved(key):
            if await commit(writer):
                taken.append(writer)
        else:
            await writer.commit()
            new = input_key(job_id, source.name)
            path = (await blobs.spool_dir()) / f"part-{uuid.uuid4().hex}"
            try:
                await blobs.download_to(key, path)
                await blobs.delete(key)  # first: `inputs/<job>` may be in the folder's way
                await blobs.move_in(new, path, _part(source).content_type)
            finally:
                path.unlink(missing_ok=True)
            key = new
        keys[id(source)] = key
    files = tuple(
        msgspec.structs.replace(f, key=keys[id(f)]) if id(f) in keys else f for f in typed.files
    )
    return await seal_urls(blobs, msgspec.structs.replace(typed, files=files), job_id), taken


def _part(source: FileSource) -> ReceivedFile:
    if source.part is None:
        raise ValueError(f"{source.name} is not a file part")
    return source.part


def _writer(source: FileSource) -> BlobWriter:
    blob = _part(source).blob
    if blob is None:
        raise ValueError(f"{source.name} was not streamed to the store")
    return blob


def file_key(source: FileSource, uploaded: ClaimedUpload | None) -> tuple[str, str, int]:
    """A typed job's file: its key in the store, the client's name for it, its size."""
    if source.part is not None:
        return source.key, source.part.filename, source.part.size
    if source.upload_id is not None and uploaded is not None:
        return uploaded.key, uploaded.filename, uploaded.size
    return source.key, source.name, 0  # a URL: `key` holds it (`seal_urls`)


def has_urls(typed: TypedInputs) -> bool:
    return any(source.url is not None for source in typed.files)


async def seal_urls(blobs: BlobStore, typed: TypedInputs, job_id: str) -> TypedInputs:
    """`typed` with each URL stored whole in the job's folder (its source's `key` set):
    the event records the URL redacted, and the executor reads it from there."""
    if not has_urls(typed):
        return typed
    files = []
    for source in typed.files:
        if source.url is not None and not source.key:
            key = input_key(job_id, source.name)
            await blobs.put_bytes(key, source.url.encode(), URL_CONTENT_TYPE)
            source = msgspec.structs.replace(source, key=key)
        files.append(source)
    return msgspec.structs.replace(typed, files=tuple(files))


async def claimed(
    svc: ApiServices, caller: Principal, typed: TypedInputs
) -> tuple[TypedInputs, ClaimedUpload | None, str | None]:
    """The typed inputs with the upload they name (at most one) claimed: the job's id
    derives from it, as for a job on one upload."""
    source = next((f for f in typed.files if f.upload_id is not None), None)
    if source is None or source.upload_id is None:
        return typed, None, None
    uploaded = await claim_upload(svc, caller.user_id, source.upload_id)
    typed, _ = with_upload(typed, source, uploaded.filename)
    return typed, uploaded, source.upload_id


def first_file(compiled: CompiledInputs) -> str:
    return compiled.file_params[0].name if compiled.file_params else "name"
