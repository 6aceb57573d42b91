"""A job's result and outputs list never make an event larger than the log takes: large
ones are claim-checked into the blob store, too large ones fail the job once with a clear
kind (real NATS, file blob store, sandboxed process runtime)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec
import pytest

from events import encode_event
from tests.services._support import ModelPackage
from tests.services.conftest import Rig, failed_once, succeeded_at_once

MODEL = {
    "predict.py": """
import os


def run(input_path, output_dir, params):
    mode = params["mode"]
    size = int(params.get("size", 0))
    if mode == "big":
        return {"blob": "x" * size, "end": "here"}
    if mode == "raise":
        raise ValueError("y" * size)
    if mode == "many":
        # Long names: each one's folder path and key take about 1.7 KB in an event.
        for i in range(size):
            folder = os.path.join(output_dir, "d" * 200 + str(i % 10), "e" * 200, "f" * 200)
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "%04d-" % i + "g" * 200), "w") as f:
                f.write("x")
        return {"files": size}
    return {}
""",
    "requirements.txt": "",
}

MiB = 1024 * 1024


@pytest.fixture
async def version(tmp_path: Path, rig: Rig) -> tuple[str, str]:
    built = await rig.built(ModelPackage(tmp_path, MODEL))
    rig.services.executor()
    return built


async def test_a_2_mib_result_is_stored_as_a_blob_and_the_event_stays_small(
    rig: Rig, version: tuple[str, str]
) -> None:
    job_id = await rig.request_job(version, {"mode": "big", "size": 2 * MiB})
    events = await rig.ended(job_id)
    done = succeeded_at_once(events)
    assert len(encode_event(done)) < 4096  # the claim check, not the result
    assert done.result == {} and done.result_blob is not None
    ref = done.result_blob
    assert ref.key.startswith(f"results/{job_id}/")
    stored = await rig.blobs.get_bytes(ref.key)
    assert len(stored) == ref.size_bytes and hashlib.sha256(stored).hexdigest() == ref.sha256
    assert msgspec.json.decode(stored) == {"blob": "x" * 2 * MiB, "end": "here"}


async def test_a_small_result_stays_in_the_event(rig: Rig, version: tuple[str, str]) -> None:
    job_id = await rig.request_job(version, {"mode": "big", "size": 1000})
    events = await rig.ended(job_id)
    done = succeeded_at_once(events)
    assert done.result_blob is None and done.result["blob"] == "x" * 1000


async def test_a_result_above_the_maximum_fails_the_job_once_and_stores_nothing(
    rig: Rig, version: tuple[str, str]
) -> None:
    # The default maximum is 8 MiB (CLINAI_RESULT_MAX_BYTES).
    job_id = await rig.request_job(version, {"mode": "big", "size": 9 * MiB})
    events = await rig.ended(job_id)
    failed = failed_once(events, "output_limit")
    assert "CLINAI_RESULT_MAX_BYTES" in failed.message and str(8 * MiB) in failed.message
    assert await rig.blobs.list(f"results/{job_id}") == []
    assert await rig.blobs.list(f"outputs/{job_id}") == []


async def test_a_huge_error_message_is_cut_to_fit_the_event(
    rig: Rig, version: tuple[str, str]
) -> None:
    # ValueError("y" * 3 MiB): the message and the traceback each hold all of it.
    job_id = await rig.request_job(version, {"mode": "raise", "size": 3 * MiB})
    events = await rig.ended(job_id)
    failed = failed_once(events, "model_error")
    assert len(encode_event(failed)) < 128 * 1024
    assert failed.message.startswith("run() raised ValueError: yyy") and "characters cut" in (
        failed.message
    )
    assert failed.traceback is not None and failed.traceback.rstrip().endswith("y")


async def test_hundreds_of_outputs_with_long_names_are_listed_in_a_blob(
    rig: Rig, version: tuple[str, str]
) -> None:
    # 900 files in 30 folders: within CLINAI_MAX_OUTPUT_FILES (1000), which counts folders too.
    job_id = await rig.request_job(version, {"mode": "many", "size": 900})
    events = await rig.ended(job_id)
    done = succeeded_at_once(events)
    assert done.outputs == () and done.outputs_blob is not None
    assert len(encode_event(done)) < 4096
    stored = await rig.blobs.get_bytes(done.outputs_blob.key)
    assert hashlib.sha256(stored).hexdigest() == done.outputs_blob.sha256
    listed = msgspec.json.decode(stored)
    assert len(listed) == 900 and len(stored) > 1024 * 1024  # more than a NATS message
    assert all(o["key"] == f"outputs/{job_id}/{o['name']}" for o in listed)
