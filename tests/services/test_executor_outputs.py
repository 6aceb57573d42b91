"""The executor and a job's outputs: over a limit, or with a name that cannot be stored,
the job fails once with kind `output_limit` and nothing of its outputs is stored."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from services.settings import Settings
from tests.services._support import ModelPackage
from tests.services.conftest import Rig, failed_once, succeeded_at_once

MODEL = {
    "predict.py": """
import os


def run(input_path, output_dir, params):
    for name_hex in params.get("names_hex", []):
        with open(os.path.join(os.fsencode(output_dir), bytes.fromhex(name_hex)), "wb") as f:
            f.write(b"output")
    print("wrote", len(params.get("names_hex", [])))
    return {"wrote": len(params.get("names_hex", []))}
""",
    "requirements.txt": "",
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, max_output_files=3)


@pytest.fixture
async def version(tmp_path: Path, rig: Rig) -> tuple[str, str]:
    built = await rig.built(ModelPackage(tmp_path, MODEL))
    rig.services.executor()
    return built


def _naming(names: list[bytes]) -> dict[str, object]:
    """The model's params: write one output file by each of `names`."""
    return {"names_hex": [name.hex() for name in names]}


async def test_outputs_over_the_count_limit_fail_the_job_once_and_store_nothing(
    rig: Rig, version: tuple[str, str]
) -> None:
    names = [b"a.txt", b"b.txt", b"c.txt", b"d.txt"]
    job_id = await rig.request_job(version, _naming(names))
    events = await rig.ended(job_id)
    failed = failed_once(events, "output_limit")
    assert "more than 3 files and folders" in failed.message
    assert "CLINAI_MAX_OUTPUT_FILES" in failed.message
    assert await rig.blobs.list(f"outputs/{job_id}/") == []
    assert failed.log_key is not None and b"wrote 4" in await rig.blobs.get_bytes(failed.log_key)


async def test_outputs_whose_names_cannot_be_stored_fail_the_job_naming_them(
    rig: Rig, version: tuple[str, str]
) -> None:
    names = [b"new\nline.txt", b"bad-\xff.txt", b"fine.txt"]
    job_id = await rig.request_job(version, _naming(names))
    events = await rig.ended(job_id)
    failed = failed_once(events, "output_limit")
    assert "'new\\nline.txt' (it holds a backslash or a control character)" in failed.message
    assert "'bad-\\udcff.txt' (it is not valid UTF-8)" in failed.message
    assert "fine.txt" not in failed.message
    assert failed.message.isascii()  # the names are escaped: safe for any store
    assert await rig.blobs.list(f"outputs/{job_id}/") == []


async def test_outputs_within_the_limits_are_stored(rig: Rig, version: tuple[str, str]) -> None:
    job_id = await rig.request_job(version, _naming([b"x.txt", b"y.txt"]))
    events = await rig.ended(job_id)
    done = succeeded_at_once(events)
    assert sorted(o.name for o in done.outputs) == ["x.txt", "y.txt"]
    assert sorted(await rig.blobs.list(f"outputs/{job_id}/")) == [
        f"outputs/{job_id}/x.txt",
        f"outputs/{job_id}/y.txt",
    ]
