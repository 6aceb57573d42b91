"""Part of the runtime contract: a job's outputs are harvested safely and within its
limits (collected for the Docker runtime in test_docker_runtime.py)."""

from __future__ import annotations

import os
from pathlib import Path

from services.runtimes.base import Runtime
from tests.runtimes.conftest import build, make_job

SECRET = b"the platform's admin key"


def _secret_dir(tmp_path: Path) -> Path:
    """A host folder the model cannot read, outside every job's folder."""
    folder = tmp_path / "host-secrets"
    folder.mkdir()
    (folder / "admin.key").write_bytes(SECRET)
    os.chmod(folder / "admin.key", 0o600)
    os.chmod(folder, 0o700)
    return folder


async def test_a_model_swapping_an_output_folder_for_a_symlink_never_gets_a_host_file(
    runtime: Runtime, tmp_path: Path
) -> None:
    secret = _secret_dir(tmp_path)
    artifact = await build(runtime, "swap_outputs")
    for _ in range(3):
        job = make_job(tmp_path, secret_dir=str(secret), seconds=10)
        outcome = await runtime.run_job(artifact, job)
        assert outcome.ok, outcome
        assert outcome.outputs  # the decoy and the other files came back
        for output in outcome.outputs:
            assert SECRET not in output.path.read_bytes(), output.name
