"""Read models as the API returns them."""

from __future__ import annotations

from typing import Any

import msgspec

from projections import queries
from services.blobstore import BlobStore

__all__ = ["job_view", "model_view", "version_view"]

# Storage keys and host paths are the platform's business, not the API's.
_INTERNAL = frozenset(
    {"last_seq", "package_key", "input_key", "log_key", "artifact", "artifact_details"}
)
OUTPUT_URL_SECONDS = 3600


def _public(view: msgspec.Struct) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(view)
    return {k: v for k, v in data.items() if k not in _INTERNAL}


def model_view(model: queries.ModelView) -> dict[str, Any]:
    return _public(model)


def version_view(version: queries.VersionView) -> dict[str, Any]:
    return _public(version)


async def job_view(job: queries.JobView, blobs: BlobStore) -> dict[str, Any]:
    body = _public(job)
    outputs = []
    for output in job.outputs:
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
