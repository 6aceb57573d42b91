"""`clinai predict FOLDER name=value name=@file ... [-o DIR]`: one job of a model folder
run here, without a server, in the platform's own sandbox and runner (the `process`
runtime: bubblewrap, the same runner, limits and output checks): the edit, run, fix
loop, as `cog predict` is for Cog.

The folder is checked and unpacked as an upload is (`inspect_package`,
`unpack_package`), its environment built or reused (keyed by its requirements, kept in
`$XDG_CACHE_HOME/clinai/predict`), its inputs checked and resolved as the API does
(`CompiledInputs.resolve`), and a declared result checked as the executor does."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from services.cli._errors import CliError
from services.cli._inputs import GivenInputs, parse_inputs
from services.cli._ui import Ui
from services.cli.push import checked_zip
from services.embedded.sandbox_setup import check_bwrap
from services.infra.runtime_factory import make_runtime
from services.packages import PackageInfo, unpack_package
from services.packages.schema import CompiledInputs, InputsInvalidError
from services.runtimes.base import BuildFailedError, JobOutcome, JobSpec, Runtime
from services.settings import Settings

__all__ = ["cache_dir", "predict"]

_LEGACY = {"x-clinai-form": "legacy"}


def cache_dir(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "clinai" / "predict"


async def predict(
    ui: Ui, folder: Path, words: list[str], *, out_dir: Path, timeout_s: float | None
) -> int:
    settings = msgspec.structs.replace(Settings.from_env(data_dir=cache_dir()), runtime="process")
    if not settings.unsafe_no_sandbox and (reason := await asyncio.to_thread(check_bwrap)):
        raise CliError(
            f"clinai predict runs the model in the platform's sandbox, and {reason}: "
            "install bubblewrap (sudo apt-get install bubblewrap), or set "
            "CLINAI_UNSAFE_NO_SANDBOX=1 to run trusted code without it"
        )
    with tempfile.TemporaryDirectory(prefix="clinai-predict-") as tmp:
        work = Path(tmp)
        info = await asyncio.to_thread(checked_zip, folder, work / "package.zip")
        compiled = None if info.input_schema is None else CompiledInputs(info.input_schema)
        given = parse_inputs(_LEGACY if compiled is None else compiled.json_schema(), words)
        spec = _job(compiled, given, work, timeout_s or settings.job_timeout_s)
        await asyncio.to_thread(unpack_package, work / "package.zip", work / "package")
        runtime = await make_runtime(settings)
        try:
            outcome = await _build_and_run(ui, runtime, info, work / "package", spec)
        finally:
            await runtime.close()
        if outcome.ok and compiled is not None:
            names = frozenset(o.name for o in outcome.outputs)
            if (problem := compiled.check_output(outcome.result, names)) is not None:
                outcome = msgspec.structs.replace(
                    outcome, ok=False, kind="model_error", message=problem
                )
        saved = _keep_outputs(outcome, out_dir) if outcome.ok else []
    return _show(ui, outcome, saved)


async def _build_and_run(
    ui: Ui, runtime: Runtime, info: PackageInfo, package: Path, spec: JobSpec
) -> JobOutcome:
    lines: list[str] = []

    async def sink(text: str) -> None:
        lines.append(text)

    with ui.status(
        "building the environment (reused when requirements.txt is unchanged)"
    ) as update:
        try:
            artifact = await runtime.build(
                package_dir=package,
                package_hash=info.package_hash,
                requirements_hash=info.requirements_hash,
                log=sink,
            )
        except BuildFailedError as err:
            ui.err.print("".join(lines)[-4000:] + err.log_tail, markup=False, highlight=False)
            raise CliError(f"the build failed: {err.message}") from err
        update("running setup() and the job")
        return await runtime.run_job(artifact, spec)


def _job(
    compiled: CompiledInputs | None, given: GivenInputs, work: Path, timeout_s: float
) -> JobSpec:
    output_dir = work / "outputs"
    output_dir.mkdir()
    common: dict[str, Any] = {
        "job_id": "predict",
        "version_id": "local",
        "owner": "local",
        "output_dir": output_dir,
        "timeout_s": timeout_s,
    }
    if compiled is None:
        inputs = given.files.get("input") or []
        if len(inputs) != 1:
            raise CliError("this run(input_path, output_dir) takes one input file: input=@PATH")
        return JobSpec(input_path=inputs[0], params=given.values, **common)
    values: dict[str, Any] = dict(given.values)
    files: list[tuple[str, Path]] = []
    for param in compiled.file_params:  # named in the input folder as the API names them
        paths = given.files.get(param.name, [])
        names = [
            f"{param.name}-{i}-{p.name}" if param.many else f"{param.name}-{p.name}"
            for i, p in enumerate(paths)
        ]
        files.extend(zip(names, paths, strict=True))
        if names:
            values[param.name] = names if param.many else names[0]
    try:
        resolved = compiled.resolve(values)
    except InputsInvalidError as err:
        raise CliError(err.message) from err
    return JobSpec(
        inputs=resolved,
        file_params=tuple(p.name for p in compiled.file_params),
        files=tuple(files),
        **common,
    )


def _keep_outputs(outcome: JobOutcome, out_dir: Path) -> list[Path]:
    saved: list[Path] = []
    for output in outcome.outputs:
        dest = out_dir / output.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(output.path, dest)
        saved.append(dest)
    return saved


def _show(ui: Ui, outcome: JobOutcome, saved: list[Path]) -> int:
    if ui.json:
        ui.document(
            {
                "status": "succeeded" if outcome.ok else "failed",
                "result": outcome.result,
                "outputs": [str(p) for p in saved],
                "error_kind": outcome.kind,
                "error_message": outcome.message or None,
                "log": outcome.log,
            }
        )
    elif outcome.log:
        ui.note(outcome.log.rstrip("\n"))
    if outcome.ok:
        ui.say(f"succeeded in {outcome.run_s:.2f} s", style="bold green")
        if not ui.json:
            ui.document(outcome.result)
        for path in saved:
            ui.say(f"saved {path}")
        return 0
    if outcome.traceback:
        ui.err.print(outcome.traceback, markup=False, highlight=False)
    raise CliError(f"the job failed ({outcome.kind}): {outcome.message}")
