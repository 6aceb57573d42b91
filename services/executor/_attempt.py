"""One attempt at a job on this host: fetch the input, run it on the runtime (stopping
it when a cancel arrives), upload its outputs and log. Never raises for a failure of
the job or of the infrastructure: the result says what happened."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar, cast

import msgspec

from events import BlobRef, JobRequested, OutputFile
from events.text import json_problem
from projections.urls import redacted_urls_in
from services.blobstore import BlobError, BlobNotFoundError, BlobStore
from services.executor._claims import (
    ResultLimits,
    ResultTooLargeError,
    claim_check,
    encode_result,
)
from services.executor._files import (
    discard_outputs,
    job_log_key,
    local_input_name,
    unstorable_outputs,
    upload_outputs,
)
from services.executor._input_url import InputUnavailableError, UrlInputs
from services.packages.schema import CompiledInputs
from services.runtimes.base import (
    Artifact,
    FailureKind,
    JobOutcome,
    JobSpec,
    OutputLimits,
    Runtime,
)

__all__ = ["Attempt", "AttemptResult"]

log = logging.getLogger("clinai.executor")

_A = TypeVar("_A")
_B = TypeVar("_B")
_CANCEL_RETRY_S = 0.1  # a job still starting its worker cannot be killed yet


class AttemptResult(msgspec.Struct, frozen=True, kw_only=True):
    kind: FailureKind | None = None  # None: succeeded
    message: str = ""
    traceback: str | None = None
    permanent: bool = False  # an infrastructure failure that a retry cannot fix
    result: dict[str, Any] = {}
    outputs: tuple[OutputFile, ...] = ()
    result_blob: BlobRef | None = None  # set: the result is stored there, not in `result`
    outputs_blob: BlobRef | None = None  # set: the outputs list is stored there
    log_key: str | None = None
    setup_s: float = 0.0
    run_s: float = 0.0


class Attempt:
    def __init__(
        self,
        *,
        blobs: BlobStore,
        runtime: Runtime,
        requested: JobRequested,
        artifact: Artifact,
        directory: Path,
        timeout_s: float,
        limits: ResultLimits,
        output_limits: OutputLimits | None = None,
        url_inputs: UrlInputs | None = None,
        compiled: CompiledInputs | None = None,
    ) -> None:
        self._blobs = blobs
        self._compiled = compiled  # a typed version's schema (its declared result)
        self._url_inputs = url_inputs
        self._limits = limits
        self._runtime = runtime
        self._requested = requested
        self._artifact = artifact
        self._dir = directory
        self._timeout_s = timeout_s
        self._output_limits = output_limits or OutputLimits()
        self._made_dir = False

    @property
    def job_id(self) -> str:
        return self._requested.aggregate_id

    async def run(self, cancel: asyncio.Event) -> AttemptResult:
        requested = self._requested
        name = local_input_name(requested.input_filename)
        began = time.monotonic()
        files: list[tuple[str, Path]] = []
        input_path: Path | None = None
        key = requested.input_key
        try:
            if requested.inputs is None:
                input_path = await self._fetch_input(name, key, requested.input_url)
            for file in requested.input_files:
                key = file.key
                files.append((file.name, await self._fetch_input(file.name, key, file.url)))
        except InputUnavailableError as err:
            # The URL may be a presigned link: its signature stays out of the job's record.
            return AttemptResult(kind="input_unavailable", message=redacted_urls_in(str(err)))
        except BlobNotFoundError:
            return AttemptResult(
                kind="infrastructure",
                message=f"the job's input {key} is missing from the blob store; "
                "submit the job again",
                permanent=True,
            )
        except (BlobError, OSError) as err:
            return AttemptResult(kind="infrastructure", message=f"could not fetch the input: {err}")
        fetch_s = time.monotonic() - began
        if cancel.is_set():  # canceled while its input came in: no worker is taken
            return AttemptResult(kind="canceled", message="the job was canceled before it ran")
        try:
            output_dir = await self._blobs.spool_dir()  # the copies are moved in from there
        except OSError as err:
            return AttemptResult(kind="infrastructure", message=f"no room for the outputs: {err}")
        spec = JobSpec(
            job_id=self.job_id,
            version_id=requested.version_id,
            owner=requested.owner,
            input_path=input_path,
            input_name=name,
            output_dir=output_dir,
            params=requested.params,
            inputs=requested.inputs,
            file_params=()
            if self._compiled is None
            else tuple(p.name for p in self._compiled.file_params),
            files=tuple(files),
            timeout_s=self._timeout_s,
            output_limits=self._output_limits,
        )
        outcome = await self._run_cancellable(spec, cancel)
        try:
            return await self._collect(outcome, fetch_s)
        except (BlobError, OSError) as err:
            return AttemptResult(
                kind="infrastructure", message=f"could not store the job's outputs: {err}"
            )

    async def remove_scratch(self) -> None:
        """Remove the attempt's folder, if it made one (a store not on this host)."""
        if self._made_dir:
            await asyncio.to_thread(shutil.rmtree, self._dir, True)

    async def _fetch_input(self, name: str, key: str, url: str | None) -> Path:
        """An input on this host: the stored file itself when the store keeps it here
        (the runtime links it, read-only), else a download into the attempt's folder."""
        path = self._dir / "in" / name
        if url is not None:
            if key:  # the event holds the URL redacted; the store, the URL itself
                url = (await self._blobs.get_bytes(key)).decode()
            self._made_dir = True
            fetcher = self._url_inputs or UrlInputs.from_settings()
            await fetcher.fetch(url, path)
            return path
        try:
            local = await self._blobs.materialize(key, path)
        except BaseException:
            self._made_dir = True  # a download may have begun
            raise
        self._made_dir = self._made_dir or local == path
        return local

    async def _run_cancellable(self, spec: JobSpec, cancel: asyncio.Event) -> JobOutcome:
        run = asyncio.ensure_future(self._runtime.run_job(self._artifact, spec))
        canceled = asyncio.ensure_future(cancel.wait())
        try:
            await asyncio.wait({run, canceled}, return_when=asyncio.FIRST_COMPLETED)
            while not run.done():
                if await self._runtime.cancel_job(spec.job_id):
                    break
                await asyncio.wait({run}, timeout=_CANCEL_RETRY_S)
            return await run
        except Exception as err:  # the runtime's own bug or I/O error
            log.exception("job %s: the runtime failed", spec.job_id)
            return JobOutcome(ok=False, kind="infrastructure", message=f"runtime error: {err!r}")
        finally:
            canceled.cancel()
            if not run.done():  # we are being stopped: stop the job too
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._runtime.cancel_job(spec.job_id))
                run.cancel()
                with contextlib.suppress(BaseException):
                    await run

    async def _collect(self, outcome: JobOutcome, fetch_s: float) -> AttemptResult:
        if outcome.ok and outcome.outputs:
            # Checked before anything is stored: a job fails whole, never with outputs
            # silently left out.
            problem = unstorable_outputs(self.job_id, outcome.outputs)
            if problem is not None:
                await discard_outputs(outcome.outputs)
                outcome = msgspec.structs.replace(
                    outcome, ok=False, kind="output_limit", message=problem, outputs=()
                )
        log_key = job_log_key(self.job_id) if outcome.log else None
        put_log = self._store_log(log_key, outcome.log)
        setup_s = fetch_s + outcome.setup_s
        if outcome.ok and (problem := json_problem(outcome.result)) is not None:
            # The runner refuses these too, but the host does not trust the sandbox: an
            # event Postgres cannot store must not reach the log (nor its outputs the store).
            refused = outcome
            outcome = msgspec.structs.replace(
                refused,
                ok=False,
                kind="model_error",
                message=f"run() returned a result in which {problem}, which cannot be "
                "stored: remove it (or encode binary data, e.g. as base64; large integers "
                "as strings)",
                outputs=(),
            )
            await discard_outputs(refused.outputs)
        if outcome.ok and self._compiled is not None:
            names = frozenset(o.name for o in outcome.outputs)
            if (problem := self._compiled.check_output(outcome.result, names)) is not None:
                refused = outcome
                outcome = msgspec.structs.replace(
                    refused, ok=False, kind="model_error", message=problem, outputs=()
                )
                await discard_outputs(refused.outputs)
        kind, message = outcome.kind, outcome.message
        if outcome.ok:
            result = outcome.result or {}
            try:
                result_json = encode_result(result, self._limits)
            except ResultTooLargeError as err:  # checked first: then nothing is stored
                await discard_outputs(outcome.outputs)
                kind, message = "output_limit", str(err)
            else:
                # The log and the outputs are stored side by side, not one after the other.
                _, outputs = await _both(
                    put_log, upload_outputs(self._blobs, self.job_id, outcome.outputs)
                )
                claimed = await claim_check(
                    self._blobs,
                    self.job_id,
                    result=result,
                    result_json=result_json,
                    outputs=outputs,
                    limits=self._limits,
                )
                return AttemptResult(
                    result=claimed.result,
                    result_blob=claimed.result_blob,
                    outputs=claimed.outputs,
                    outputs_blob=claimed.outputs_blob,
                    log_key=log_key,
                    setup_s=setup_s,
                    run_s=outcome.run_s,
                )
        await put_log
        return AttemptResult(
            kind=kind or "infrastructure",
            message=message,
            traceback=outcome.traceback,
            log_key=log_key,
            setup_s=setup_s,
            run_s=outcome.run_s,
        )

    async def _store_log(self, key: str | None, text: str) -> None:
        """A model that printed nothing has no log to store (`key` None)."""
        if key is not None:
            await self._blobs.put_bytes(key, text.encode(), "text/plain; charset=utf-8")


async def _both(first: Awaitable[_A], second: Awaitable[_B]) -> tuple[_A, _B]:
    """Await both concurrently; the first error (if any) is raised once both are done,
    so neither is left running unobserved."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    for result in (a, b):
        if isinstance(result, BaseException):
            raise result
    return cast(_A, a), cast(_B, b)
