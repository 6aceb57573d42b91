"""Read models as the API returns them."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from projections import queries
from services.blobstore import BlobNotFoundError, BlobStore

__all__ = [
    "Job",
    "Model",
    "Output",
    "ResultBlob",
    "Version",
    "job_view",
    "model_view",
    "projected_view",
    "version_view",
]

log = logging.getLogger("clinai.api")

OUTPUT_URL_SECONDS = 3600
_outputs_decoder = msgspec.json.Decoder(list[dict[str, Any]])

S = TypeVar("S", bound=msgspec.Struct)

# The views below leave out what is the platform's business, not the API's: storage
# keys and host paths (package_key, input_key, log_key, artifact, the blobs' claim
# checks) and the read models' last_seq. `seq`, when set, is the sequence a command's
# events were appended at.


class Model(msgspec.Struct, kw_only=True):
    id: str
    owner: str
    name: str
    description: str
    visibility: str
    latest_version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    seq: int | UnsetType = UNSET


class Version(msgspec.Struct, kw_only=True):
    id: str
    model_id: str
    owner: str
    number: int
    status: str  # uploaded | building | ready | failed
    package_hash: str
    requirements_hash: str
    size_bytes: int
    filename: str
    runtime: str | None
    build_attempt: int
    build_duration_s: float | None
    failure_reason: str | None
    log_tail: str | None
    reused_from: str | None
    created_at: datetime
    updated_at: datetime
    built_at: datetime | None


class ResultBlob(msgspec.Struct, kw_only=True):
    """A result too large for an event, kept as a blob: download it from `url`."""

    size_bytes: int
    sha256: str
    url: str


class Output(msgspec.Struct, kw_only=True):
    name: str
    size_bytes: int
    content_type: str
    url: str


class Job(msgspec.Struct, kw_only=True):
    id: str
    owner: str
    model_id: str
    version_id: str
    status: str
    input_filename: str
    input_size_bytes: int
    params: dict[str, Any]
    inputs: dict[str, Any] | None  # a typed version's job: as resolved at submission
    timeout_s: float
    webhook: dict[str, Any] | None
    cancel_requested: bool
    attempt: int
    result: Any
    outputs: list[Output]
    error_kind: str | None
    error_message: str | None
    traceback: str | None
    timings: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    deadline: datetime | None  # when a job not ended by then is aborted (queued) or canceled
    result_blob: ResultBlob | None
    input_url: str | None
    seq: int | UnsetType = UNSET


def projected_view(row: msgspec.Struct, kind: type[S], **given: Any) -> S:
    """A `kind` with the fields of the same name of `row` (a read model's row), those
    in `given` excepted; `seq` is left unset."""
    fields = {
        name: getattr(row, name)
        for name in kind.__struct_fields__
        if name != "seq" and name not in given
    }
    return kind(**fields, **given)


def model_view(model: queries.ModelView) -> Model:
    return projected_view(model, Model)


def version_view(version: queries.VersionView) -> Version:
    return projected_view(version, Version)


async def job_view(job: queries.JobView, blobs: BlobStore) -> Job:
    """The job as the API shows it. A result kept as a blob (too large for an event) is
    `null` here, and `result_blob` says its size, SHA-256 and a download URL; the
    routes that answer one job put it inline (see `services.api._job_result`)."""
    ref = job.result_blob
    result_blob = None
    if ref is not None:
        result_blob = ResultBlob(
            size_bytes=ref["size_bytes"],
            sha256=ref["sha256"],
            url=await blobs.signed_url(
                ref["key"], expires_in=OUTPUT_URL_SECONDS, filename=f"{job.id}-result.json"
            ),
        )
    outputs = []
    for output in await _outputs(job, blobs):
        outputs.append(
            Output(
                name=output["name"],
                size_bytes=output["size_bytes"],
                content_type=output.get("content_type", "application/octet-stream"),
                url=await blobs.signed_url(
                    output["key"], expires_in=OUTPUT_URL_SECONDS, filename=output["name"]
                ),
            )
        )
    return projected_view(job, Job, result_blob=result_blob, outputs=outputs)


async def _outputs(job: queries.JobView, blobs: BlobStore) -> list[dict[str, Any]]:
    """The job's outputs list: in its row, or in the blob its claim check names."""
    ref = job.outputs_blob
    if ref is None:
        return job.outputs
    try:
        return _outputs_decoder.decode(await blobs.get_bytes(ref["key"]))
    except BlobNotFoundError:
        log.warning("job %s: its outputs list %s is missing from the blob store", job.id, ref)
        return []
