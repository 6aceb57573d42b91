"""Read models as the API returns them."""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from projections import queries
from services.blobstore import BlobNotFoundError, BlobStore

__all__ = ["job_view", "model_view", "version_view"]

log = logging.getLogger("clinai.api")

# Storage keys and host paths are the platform's business, not the API's.
_INTERNAL = frozenset(
    {
        "last_seq",
        "package_key",
        "input_key",
        "log_key",
        "artifact",
        "artifact_details",
        "result_blob",
        "outputs_blob",
    }
)
OUTPUT_URL_SECONDS = 3600
_outputs_decoder = msgspec.json.Decoder(list[dict[str, Any]])


def _public(view: msgspec.Struct) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(view)
    return {k: v for k, v in data.items() if k not in _INTERNAL}


def model_view(model: queries.ModelView) -> dict[str, Any]:
    return _public(model)


def version_view(version: queries.VersionView) -> dict[str, Any]:
    return _public(version)


async def job_view(job: queries.JobView, blobs: BlobStore) -> dict[str, Any]:
    """The job as the API shows it. A result kept as a blob (too large for an event) is
    `null` here, and `result_blob` says its size, SHA-256 and a download URL; the
    routes that answer one job put it inline (see `services.api._job_result`)."""
    body = _public(job)
    ref = job.result_blob
    body["result_blob"] = None
    if ref is not None:
        body["result_blob"] = {
            "size_bytes": ref["size_bytes"],
            "sha256": ref["sha256"],
            "url": await blobs.signed_url(
                ref["key"], expires_in=OUTPUT_URL_SECONDS, filename=f"{job.id}-result.json"
            ),
        }
    outputs = []
    for output in await _outputs(job, blobs):
        outputs.append(
            {
                "name": output["name"],
                "size_bytes": output["size_bytes"],
                "content_type": output.get("content_type", "application/octet-stream"),
                "url": await blobs.signed_url(
                    output["key"], expires_in=OUTPUT_URL_SECONDS, filename=output["name"]
                ),
            }
        )
    body["outputs"] = outputs
    return body


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
