"""`clinai run MODEL_OR_VERSION name=value name=@file ... [--wait] [-o DIR] [--json]`:
the inputs read by the version's schema, the files uploaded with a progress bar, the
job's status followed live (`--wait`, implied by `-o`), then its result printed and its
outputs downloaded into `-o`. Exit 0 when the job was accepted (without `--wait`) or
succeeded (with it)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp

from services.cli._client import Api, ProgressFile
from services.cli._errors import CliError
from services.cli._follow import resource_events
from services.cli._inputs import GivenInputs, form_value, parse_inputs
from services.cli._resolve import runnable_version
from services.cli._ui import Ui

__all__ = ["download_outputs", "follow_job", "run", "show_job"]

_WAIT_S = "60"  # each long poll for the ended job's read model


async def run(
    api: Api,
    ui: Ui,
    ref: str,
    words: list[str],
    *,
    wait: bool,
    out_dir: Path | None,
    timeout_s: float | None = None,
    deadline_s: float | None = None,
) -> int:
    version = await runnable_version(api, ref)
    schema = await api.get(f"/v1/versions/{version['id']}/schema")
    given = parse_inputs(schema, words)
    job = await _submit(api, ui, version["id"], given, timeout_s, deadline_s)
    if not wait and out_dir is None:
        if ui.json:
            ui.document(job)
        else:
            ui.say(f"{job['id']} {job['status']}")
            ui.note(f"follow it with `clinai logs {job['id']} --follow`")
        return 0
    try:
        ended = await follow_job(api, ui, job["id"])
    except asyncio.CancelledError:  # Ctrl-C: the job is not stopped by leaving
        ui.note(f"{job['id']} goes on: `clinai cancel {job['id']}` stops it")
        raise
    saved = await download_outputs(api, ui, ended, out_dir) if out_dir is not None else []
    return show_job(ui, ended, saved)


async def _submit(
    api: Api,
    ui: Ui,
    version_id: str,
    given: GivenInputs,
    timeout_s: float | None,
    deadline_s: float | None,
) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("version", version_id)
    for field, value in (("timeout_s", timeout_s), ("deadline_s", deadline_s)):
        if value is not None:
            form.add_field(field, repr(value))
    if given.legacy:
        if given.values:
            form.add_field("params", form_value(given.values))
    else:
        for name, value in given.values.items():
            form.add_field(name, form_value(value))
    paths = [(name, path) for name, files in given.files.items() for path in files]
    total = sum(path.stat().st_size for _, path in paths)
    with ui.progress("upload", total) as advance, contextlib.ExitStack() as files:
        for name, path in paths:
            body = files.enter_context(ProgressFile(path, advance))
            form.add_field(name, body, filename=path.name)
        job: dict[str, Any] = await api.post_form("/v1/jobs", form)
    return job


async def follow_job(api: Api, ui: Ui, job_id: str) -> dict[str, Any]:
    """The job's status live until it ends; then the job as the API shows it."""
    with ui.status(f"{job_id} queued") as update:
        async for kind, event in resource_events(api, f"/v1/jobs/{job_id}/events", ui.note):
            if isinstance(event.get("seq"), int):
                api.saw(event["seq"])  # the ended job's read below waits for it
            if kind == "JobStarted":
                attempt = event.get("attempt", 1)
                update(f"{job_id} running" + (f" (attempt {attempt})" if attempt > 1 else ""))
            elif kind == "JobCancelRequested":
                update(f"{job_id} canceling")
    job: dict[str, Any] = await api.get(f"/v1/jobs/{job_id}", wait=_WAIT_S)
    return job


async def download_outputs(api: Api, ui: Ui, job: dict[str, Any], out_dir: Path) -> list[Path]:
    outputs = job.get("outputs") or []
    saved: list[Path] = []
    total = sum(int(o.get("size_bytes", 0)) for o in outputs)
    with ui.progress("download", total) as advance:
        for output in outputs:
            dest = _destination(out_dir, output["name"])
            await api.download(output["url"], dest, advance)
            saved.append(dest)
    return saved


def _destination(out_dir: Path, name: str) -> Path:
    """Where an output goes: `name` (which may hold folders) inside `out_dir`."""
    root = out_dir.resolve()
    dest = (root / name).resolve()
    if not dest.is_relative_to(root) or dest == root:
        raise CliError(f"output {name!r} would be written outside {out_dir}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return out_dir / dest.relative_to(root)


def show_job(ui: Ui, job: dict[str, Any], saved: list[Path]) -> int:
    """The ended job: its result and outputs (or why it failed); the exit code."""
    ok = job["status"] == "succeeded"
    if ui.json:
        ui.document({**job, "downloaded": [str(p) for p in saved]})
    else:
        run_s = (job.get("timings") or {}).get("run_s")
        took = f" in {run_s:.2f} s" if isinstance(run_s, int | float) else ""
        ui.say(f"{job['id']} {job['status']}{took}", style="bold green" if ok else "bold red")
        if ok:
            ui.document(job.get("result"))
            for output in job.get("outputs") or []:
                ui.say(f"  {output['name']} ({output['size_bytes']} bytes)")
            for path in saved:
                ui.say(f"saved {path}")
    if ok:
        return 0
    if job.get("traceback"):
        ui.err.print(job["traceback"], markup=False, highlight=False)
    kind = job.get("error_kind") or job["status"]
    raise CliError(f"{job['id']} {job['status']} ({kind}): {job.get('error_message') or ''}")
