"""A worker's job files: staging never writes through a stored file; removing many never
holds up a job's end."""

from __future__ import annotations

import os
import time
from pathlib import Path

from services.runtimes._jobdir import JobFiles, remove_tree
from services.runtimes.base import JobSpec
from tests._infra import wait_until


async def test_staging_over_a_leftover_link_leaves_the_stored_file_alone(tmp_path: Path) -> None:
    stored = tmp_path / "stored.png"
    stored.write_bytes(b"someone's input")
    root = tmp_path / "worker"
    root.mkdir()
    files = JobFiles.make(root, "/job", uid=None)  # copies inputs (no other uid)
    os.link(stored, files.in_dir / "in.png")  # left by an interrupted job
    new_input = tmp_path / "new.png"
    new_input.write_bytes(b"this job's input")
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    job = JobSpec(
        job_id="job_1", version_id="v", input_path=new_input, input_name="in.png",
        output_dir=outputs,
    )  # fmt: skip

    request = await files.prepare(job)

    assert request.input_path == "/job/in/in.png"
    assert (files.in_dir / "in.png").read_bytes() == b"this job's input"
    assert stored.read_bytes() == b"someone's input"


async def test_a_folder_of_many_files_is_removed_without_holding_up_the_caller(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "worker"
    (folder / "out").mkdir(parents=True)
    for i in range(2000):
        os.close(os.open(folder / "out" / f"e{i}", os.O_CREAT | os.O_WRONLY, 0o644))
    began = time.monotonic()
    await remove_tree(folder, wait_s=0.01)
    assert time.monotonic() - began < 0.5  # not 2,000 unlinks
    await wait_until(lambda: not folder.exists(), what="the folder to be removed")
