"""Host side of the worker protocol (see runner/protocol.py for the frame format).

Transport-agnostic: `WorkerChannel` reads from an ``asyncio.StreamReader`` and writes to
anything with ``write``/``drain`` -- a subprocess's pipes here, a container's attached
stdin/stdout in the Docker runtime.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any, Literal, Protocol

import msgspec

from events import ClinaiError

__all__ = ["MAX_FRAME", "JobRequest", "JobResponse", "ProtocolError", "Ready", "WorkerChannel"]

_HEADER = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024


class ProtocolError(ClinaiError):
    """The worker sent something that is not a valid frame, or the stream ended."""


class Ready(msgspec.Struct, frozen=True, kw_only=True):
    type: Literal["ready"]
    ok: bool
    python: str = ""
    setup_s: float = 0.0
    stage: str | None = None
    error_type: str | None = None
    message: str = ""
    traceback: str | None = None


class JobRequest(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    input_path: str
    output_dir: str
    log_path: str
    params: dict[str, Any] = {}
    # A typed run(): its values, and its files as paths in the sandbox (one or a list).
    inputs: dict[str, Any] | None = None
    files: dict[str, str | list[str]] = {}
    type: Literal["job"] = "job"


class JobResponse(msgspec.Struct, frozen=True, kw_only=True):
    type: Literal["result"]
    job_id: str | None
    ok: bool
    result: dict[str, Any] | None = None
    error_type: str | None = None
    message: str = ""
    traceback: str | None = None
    duration_s: float = 0.0
    threads: int = 0  # the worker's live threads after run(); 0: not reported (older runner)

    @property
    def left_running(self) -> bool:
        """Whether the model may have left a thread running (or cannot say)."""
        return self.threads != 1


class _Writer(Protocol):
    def write(self, data: bytes) -> Any: ...

    async def drain(self) -> None: ...


_ready_decoder = msgspec.json.Decoder(Ready)
_response_decoder = msgspec.json.Decoder(JobResponse)
_encoder = msgspec.json.Encoder()


class WorkerChannel:
    """One worker's framed stream; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: _Writer) -> None:
        self._reader = reader
        self._writer = writer

    async def _read(self) -> bytes:
        try:
            header = await self._reader.readexactly(_HEADER.size)
            (size,) = _HEADER.unpack(header)
            if size > MAX_FRAME:
                raise ProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME}")
            return await self._reader.readexactly(size)
        except asyncio.IncompleteReadError as err:
            raise ProtocolError("the worker's stream ended") from err

    async def ready(self) -> Ready:
        """The worker's first frame."""
        try:
            return _ready_decoder.decode(await self._read())
        except msgspec.DecodeError as err:
            raise ProtocolError(f"bad ready frame: {err}") from err

    async def request(self, request: JobRequest) -> JobResponse:
        body = _encoder.encode(request)
        try:
            self._writer.write(_HEADER.pack(len(body)) + body)
            await self._writer.drain()
        except (ConnectionError, BrokenPipeError) as err:
            raise ProtocolError("the worker's stream is closed") from err
        try:
            return _response_decoder.decode(await self._read())
        except msgspec.DecodeError as err:
            raise ProtocolError(f"bad response frame: {err}") from err
