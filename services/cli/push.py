"""`clinai push FOLDER [--model NAME]`: check the folder as the server will (the same
`inspect_package`, so a broken package fails here, before any upload, with the server's
own message), zip it, upload it with a progress bar, follow the build log live and end
with the version's id and status. Exit 0 only if the version is ready. The model is made
when the user has none of that name."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from services.api.problems import joined_detail
from services.cli._client import Api, ProgressFile
from services.cli._errors import CliError
from services.cli._follow import resource_events
from services.cli._resolve import find_model
from services.cli._ui import Ui
from services.packages import (
    PackageInfo,
    PackageInvalidError,
    PackageLimits,
    inspect_package,
    zip_folder,
)

__all__ = ["checked_zip", "push"]


async def push(api: Api, ui: Ui, folder: Path, name: str) -> int:
    with tempfile.TemporaryDirectory(prefix="clinai-push-") as tmp:
        package = Path(tmp) / f"{name}.zip"
        info = await asyncio.to_thread(checked_zip, folder, package)
        ui.say(f"{folder}: {len(info.files)} files, {_interface(info)}")
        model = await find_model(api, name, own=True)  # another's public one is not ours
        if model is None:
            model = await api.post("/v1/models", {"name": name})
            ui.say(f"created model {name} ({model['id']})")
        size = package.stat().st_size
        with ui.progress("upload", size) as advance:
            form = aiohttp.FormData()
            with ProgressFile(package, advance) as body:
                form.add_field(
                    "package", body, filename=package.name, content_type="application/zip"
                )
                version = await api.post_form(f"/v1/models/{model['id']}/versions", form)
    version_id = version["id"]
    ui.say(f"uploaded {name} version {version['number']} ({version_id}, {size} bytes); building")
    try:
        failure = await _follow_build(api, ui, version_id)
    except asyncio.CancelledError:  # Ctrl-C: the build is not stopped by leaving
        ui.note(f"the build goes on: `clinai logs {version_id} --follow` follows it")
        raise
    final = await api.get(f"/v1/versions/{version_id}")
    if ui.json:
        ui.document(final)
    if final["status"] == "ready":
        reused = f", reused from {final['reused_from']}" if final.get("reused_from") else ""
        ui.say(f"{version_id} ready{reused}", style="bold green")
        return 0
    reason = final.get("failure_reason") or failure or "the build did not finish"
    ui.say(f"{version_id} {final['status']}", style="bold red")
    raise CliError(f"the build of {version_id} failed: {reason}")


def checked_zip(folder: Path, package: Path) -> PackageInfo:
    """`folder` zipped into `package`, checked as the server checks an upload."""
    if not folder.is_dir():
        raise CliError(f"{folder} is not a folder: give the folder that holds predict.py")
    package.write_bytes(zip_folder(folder))
    try:
        return inspect_package(package, PackageLimits())  # the server's defaults
    except PackageInvalidError as err:  # the same detail the server would answer
        detail = joined_detail(err.message, err.hint)
        raise CliError(f"{folder} is not a valid package: {detail}") from err


def _interface(info: PackageInfo) -> str:
    schema = info.input_schema
    if schema is None:
        return "run(input_path, output_dir)"
    return "inputs: " + ", ".join(f"{p.name} ({p.kind})" for p in schema.params)


async def _follow_build(api: Api, ui: Ui, version_id: str) -> str:
    """Print the build log as it comes; the failure's reason and last lines, if any."""
    failure = ""
    with ui.status("waiting for a builder") as update:
        async for kind, event in resource_events(api, f"/v1/versions/{version_id}/events", ui.note):
            _seen(api, event)
            if kind == "BuildStarted":
                update(f"building on the {event.get('runtime', '')} runtime")
            elif kind == "BuildLogAppended":
                ui.write(event["text"])
            elif kind == "BuildFailed":
                failure = event.get("reason", "")
                tail = event.get("log_tail", "")
                if tail:
                    ui.write(tail if tail.endswith("\n") else tail + "\n")
    return failure


def _seen(api: Api, event: dict[str, Any]) -> None:
    if isinstance(event.get("seq"), int):
        api.saw(event["seq"])
