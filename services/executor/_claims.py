"""Claim checks for what a job produced: a result or a list of outputs too large for an
event is stored as JSON in the blob store, and the event carries its key, size and
SHA-256 instead (`BlobRef`). Keys are `results/<job>/<what>-<sha256>.json`: content
addressed, so a late older attempt never overwrites what a newer one recorded."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine
from typing import Any

import msgspec

from events import BlobRef, ClinaiError, OutputFile
from services.blobstore import BlobStore

__all__ = [
    "Claimed",
    "ResultLimits",
    "ResultTooLargeError",
    "claim_check",
    "encode_result",
]

_JSON = "application/json"
_encoder = msgspec.json.Encoder()


class ResultLimits(msgspec.Struct, frozen=True, kw_only=True):
    """`inline_bytes`: larger results and outputs lists go to the blob store;
    `max_bytes`: a larger result fails the job (settings CLINAI_RESULT_*)."""

    inline_bytes: int = 64 * 1024
    max_bytes: int = 8 * 1024 * 1024


class ResultTooLargeError(ClinaiError):
    """The model's result is larger than `ResultLimits.max_bytes`."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the result run() returned is {size} bytes of JSON, more than the limit of "
            f"{limit} bytes (setting CLINAI_RESULT_MAX_BYTES); return a small summary and "
            "write large data as files into output_dir"
        )
        self.size = size
        self.limit = limit


class Claimed(msgspec.Struct, frozen=True, kw_only=True):
    """What the success event carries: each part inline, or its claim check."""

    result: dict[str, Any] = {}
    result_blob: BlobRef | None = None
    outputs: tuple[OutputFile, ...] = ()
    outputs_blob: BlobRef | None = None


def encode_result(result: dict[str, Any], limits: ResultLimits) -> bytes:
    """The result as JSON; ResultTooLargeError when it is above the limit."""
    data = _encoder.encode(result)
    if len(data) > limits.max_bytes:
        raise ResultTooLargeError(len(data), limits.max_bytes)
    return data


async def claim_check(
    blobs: BlobStore,
    job_id: str,
    *,
    result: dict[str, Any],
    result_json: bytes,
    outputs: tuple[OutputFile, ...],
    limits: ResultLimits,
) -> Claimed:
    """Store the parts larger than `limits.inline_bytes` (both at once) and return what
    the event carries. A small result costs nothing more than its encoding."""
    result_blob: BlobRef | None = None
    outputs_blob: BlobRef | None = None
    puts: list[Coroutine[Any, Any, None]] = []
    if len(result_json) > limits.inline_bytes:
        result_blob = _ref(job_id, "result", result_json)
        puts.append(blobs.put_bytes(result_blob.key, result_json, _JSON))
    if outputs:
        outputs_json = _encoder.encode(outputs)
        if len(outputs_json) > limits.inline_bytes:
            outputs_blob = _ref(job_id, "outputs", outputs_json)
            puts.append(blobs.put_bytes(outputs_blob.key, outputs_json, _JSON))
    if puts:
        await asyncio.gather(*puts)
    return Claimed(
        result={} if result_blob is not None else result,
        result_blob=result_blob,
        outputs=() if outputs_blob is not None else outputs,
        outputs_blob=outputs_blob,
    )


def _ref(job_id: str, what: str, data: bytes) -> BlobRef:
    digest = hashlib.sha256(data).hexdigest()
    return BlobRef(
        key=f"results/{job_id}/{what}-{digest}.json", size_bytes=len(data), sha256=digest
    )
