"""The host directory of a container worker, bound at /job inside the container: its
worker.log (what the model prints outside jobs: import, setup()) and the job files
every job reuses (`_jobdir.JobFiles`: in/, out/, log). Blocking I/O: call in a thread.
"""

from __future__ import annotations

import os
from pathlib import Path

from services.runtimes._docker_build import JOB_DIR, WORKER_LOG
from services.runtimes._jobdir import JobFiles

__all__ = ["make_worker_dir"]


def make_worker_dir(path: Path, uid: int | None) -> JobFiles:
    """The directory bound at /job: not writable by the model itself, only its
    worker.log and the job files' out/ and log are. `uid` None: we cannot chown (not
    root), so those are made world-writable instead."""
    path.mkdir(parents=True, mode=0o755)
    path.chmod(0o755)
    log = path / Path(WORKER_LOG).name
    log.touch()
    if uid is not None:
        os.chown(log, uid, uid)
    else:
        log.chmod(0o666)
    return JobFiles.make(path.resolve(), JOB_DIR, uid)
