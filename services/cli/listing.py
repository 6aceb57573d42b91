"""The usual: `clinai models`, `versions MODEL`, `jobs [--status S]`, `logs
JOB_OR_VERSION [--follow]`, `cancel JOB`. A table on a terminal, tab-separated lines
otherwise, the API's JSON with `--json`."""

from __future__ import annotations

from typing import Any

from services.cli._client import Api
from services.cli._errors import CliError
from services.cli._follow import resource_events
from services.cli._resolve import all_items, model_named
from services.cli._ui import Ui
from services.cli.run import follow_job

__all__ = ["cancel", "jobs", "logs", "models", "versions"]


def _when(value: Any) -> str:
    return str(value or "")[:16].replace("T", " ")


async def models(api: Api, ui: Ui) -> int:
    items = [m async for m in all_items(api, "/v1/models")]
    if ui.json:
        ui.document(items)
        return 0
    rows = [
        (m["id"], m["name"], m["latest_version"], m["visibility"], _when(m["updated_at"]))
        for m in items
    ]
    ui.table(["id", "name", "versions", "visibility", "updated"], rows, keep=2)
    return 0


async def versions(api: Api, ui: Ui, model_ref: str) -> int:
    model = await model_named(api, model_ref)
    items = (await api.get(f"/v1/models/{model['id']}/versions"))["items"]
    if ui.json:
        ui.document(items)
        return 0
    rows = [
        (v["id"], v["number"], v["status"], v.get("runtime"), _when(v["created_at"]),
         v.get("failure_reason") or "")
        for v in sorted(items, key=lambda v: v["number"])
    ]  # fmt: skip
    ui.table(["id", "number", "status", "runtime", "created", "failure"], rows)
    return 0


async def jobs(api: Api, ui: Ui, status: str | None, limit: int) -> int:
    params = {"limit": str(limit)} | ({"status": status} if status else {})
    items = (await api.get("/v1/jobs", **params))["items"]
    if ui.json:
        ui.document(items)
        return 0
    rows = [
        (j["id"], j["status"], j["version_id"], _when(j["created_at"]), j.get("error_kind") or "")
        for j in items
    ]
    ui.table(["id", "status", "version", "created", "failure"], rows)
    return 0


async def logs(api: Api, ui: Ui, ref: str, follow: bool) -> int:
    if ref.startswith("ver_"):
        return await _build_log(api, ui, ref, follow)
    if not ref.startswith("job_"):
        raise CliError(f"{ref!r} is neither a job (job_...) nor a version (ver_...)")
    if follow:  # a job's log is kept when it ends
        await follow_job(api, ui, ref)
    text = await api.text(f"/v1/jobs/{ref}/log")
    if ui.json:
        ui.document({"job_id": ref, "log": text})
    else:
        ui.write(text)
    return 0


async def _build_log(api: Api, ui: Ui, version_id: str, follow: bool) -> int:
    if follow:
        async for kind, event in resource_events(api, f"/v1/versions/{version_id}/events", ui.note):
            if kind == "BuildLogAppended":
                ui.write(event["text"])
            elif kind == "BuildFailed":
                ui.note(f"build failed: {event.get('reason', '')}")
        return 0
    chunks: list[str] = []
    start = 0
    while True:
        page = await api.get(f"/v1/versions/{version_id}/log", **{"from": str(start)})
        if not page["chunks"]:
            break
        chunks.extend(c["text"] for c in page["chunks"])
        start = page["next"]
    text = "".join(chunks)
    if ui.json:
        ui.document({"version_id": version_id, "status": page["status"], "log": text})
    else:
        ui.write(text)
    return 0


async def cancel(api: Api, ui: Ui, job_id: str) -> int:
    if not job_id.startswith("job_"):
        raise CliError(f"{job_id!r} is not a job id (job_...): list yours with `clinai jobs`")
    job = await api.post(f"/v1/jobs/{job_id}/cancel")
    if ui.json:
        ui.document(job)
    else:
        ui.say(
            f"{job_id} {job['status']}"
            + (" (cancel requested)" if job.get("cancel_requested") else "")
        )
    return 0
