"""The framed protocol between the host and a worker, over the worker's stdin/stdout.

Frame format: a 4-byte big-endian unsigned length N, then N bytes of UTF-8 JSON holding
one object. Frames larger than ``MAX_FRAME`` are a protocol error.

Worker -> host, once, first::

    {"type": "ready", "ok": true, "setup_s": 0.12, "python": "3.11.2"}
    {"type": "ready", "ok": false, "stage": "import" | "setup" | "check",
     "error_type": "ImportError", "message": "...", "traceback": "...", "setup_s": 0.0}

Host -> worker, one per job (the worker serves one job at a time)::

    {"type": "job", "job_id": "...", "input_path": "...", "output_dir": "...",
     "log_path": "...", "params": {...}}
    {"type": "job", ..., "inputs": {"threshold": 0.5}, "files": {"image": "/job/in/x.png"}}

The second form calls a typed run: run(**inputs, **files, [output_dir=]), each file a
`runner.File` (a list of them for a list input).

Worker -> host, one per job::

    {"type": "result", "job_id": "...", "ok": true, "result": {...}, "duration_s": 0.5,
     "threads": 1}
    {"type": "result", "job_id": "...", "ok": false, "result": null,
     "error_type": "ValueError", "message": "...", "traceback": "...", "duration_s": 0.5,
     "threads": 1}

``threads`` counts the worker's OS threads once ``run`` returned, the runner's own
included: more than 1 means the model left something running that may still touch its
output folder. In a sandbox every other process is killed after that count.

``error_type`` is the exception class name, or ``InvalidResult`` when ``run`` returned
something that is not a JSON-serialisable dict, or ``ResultTooLarge`` when the response
does not fit in one frame. The host closes stdin to stop a worker.
Everything the user's code prints goes to ``log_path`` (fd level), never to this stream.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, BinaryIO

__all__ = [
    "HEADER",
    "INVALID_RESULT",
    "MAX_FRAME",
    "RESULT_TOO_LARGE",
    "ProtocolError",
    "encode",
    "read_frame",
    "write_frame",
]

HEADER = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024
INVALID_RESULT = "InvalidResult"
RESULT_TOO_LARGE = "ResultTooLarge"


class ProtocolError(Exception):
    """A malformed or oversized frame."""


def encode(obj: dict[str, Any]) -> bytes:
    body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


def write_frame(fd: int, frame: bytes) -> None:
    """Write a frame made by `encode`, whole."""
    data = memoryview(frame)
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    chunks: list[bytes] = []
    remaining = n
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            if chunks:
                raise ProtocolError("stream ended inside a frame")
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO) -> dict[str, Any] | None:
    """The next frame, or None at a clean end of stream."""
    header = _read_exactly(stream, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    body = _read_exactly(stream, size)
    if body is None:
        raise ProtocolError("stream ended inside a frame")
    obj = json.loads(body)
    if not isinstance(obj, dict):
        raise ProtocolError("a frame must hold a JSON object")
    return obj
