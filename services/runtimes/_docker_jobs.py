"""Per-job files of a container worker (the process runtime's `_jobdir` layout, bound at
/job inside the container).

Layout of a worker directory (host) = /job (container):
  worker.log            what the model prints outside jobs (import, setup())
  <job_id>/in/<input>   read-only copy of the job's input
  <job_id>/out/         the model's outputs, copied to the job's output_dir on success
  <job_id>/log          what the model prints during the job
Blocking I/O: call these in a thread.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from services.runtimes._docker_build import JOB_DIR, WORKER_LOG
from services.runtimes._jobdir import prepare_job_dir

__all__ = ["JobPaths", "make_worker_dir", "prepare_job"]


class JobPaths:
    def __init__(self, host_dir: Path, out: Path, log: Path, inside: str, input_name: str):
        self.host_dir = host_dir
        self.out = out
        self.log = log
        self.container_input = f"{inside}/in/{input_name}"
        self.container_output = f"{inside}/out"
        self.container_log = f"{inside}/log"


def make_worker_dir(path: Path, uid: int | None) -> Path:
    """The directory bound at /job: not writable by the model itself, only its
    worker.log and each job's out/ and log are. `uid` None: we cannot chown (not
    root), so those are made world-writable instead."""
    path.mkdir(parents=True, mode=0o755)
    path.chmod(0o755)
    log = path / Path(WORKER_LOG).name
    log.touch()
    _give(log, uid, 0o666)
    return path.resolve()


def prepare_job(worker_dir: Path, job_id: str, input_path: Path, uid: int | None) -> JobPaths:
    job_dir = worker_dir / job_id
    shutil.rmtree(job_dir, ignore_errors=True)
    target, out, log = prepare_job_dir(job_dir, input_path, uid)
    if uid is None:
        out.chmod(0o777)
        log.chmod(0o666)
    return JobPaths(job_dir, out, log, f"{JOB_DIR}/{job_id}", target.name)


def _give(path: Path, uid: int | None, mode: int) -> None:
    if uid is not None:
        os.chown(path, uid, uid)
    else:
        path.chmod(mode)
