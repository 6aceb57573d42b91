"""The host directory of a container worker, bound at /job inside the container: its
worker.log (what the model prints outside jobs: import, setup()), the job files every
job reuses (`_jobdir.JobFiles`: in/, out/, log) and the two FIFOs the protocol runs
over. Blocking I/O: call in a thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from services.runtimes._docker_build import JOB_DIR, WORKER_LOG
from services.runtimes._jobdir import JobFiles

__all__ = [
    "REQUESTS_FIFO",
    "RESPONSES_FIFO",
    "ChannelEnds",
    "make_channel_fifos",
    "make_worker_dir",
]

REQUESTS_FIFO = "requests.fifo"  # host -> runner
RESPONSES_FIFO = "responses.fifo"  # runner -> host


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


class ChannelEnds(NamedTuple):
    """The host's fds on the protocol's FIFOs."""

    requests: int  # write end
    responses: int  # read end
    keepers: tuple[int, int]  # the other end of each, held so neither ever ends


def make_channel_fifos(path: Path) -> ChannelEnds:
    """Make the protocol's FIFOs in the worker directory `path` and open the host's
    ends. The runner may read the one and write the other, nothing more. The host also
    holds the opposite end of each: no open blocks, the runner's opens find their other
    end at once, and neither side ever sees an end of file or a broken pipe (the
    container's end is seen on its attach stream instead). One fd per direction: an
    event loop's pipe transport opened read-write would read its own writes."""
    fds: list[int] = []
    try:
        for name, mode in ((REQUESTS_FIFO, 0o644), (RESPONSES_FIFO, 0o622)):
            fifo = path / name
            os.mkfifo(fifo)
            fifo.chmod(mode)  # mkfifo's mode is cut by the umask
            fds.append(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            fds.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    requests_keeper, requests, responses, responses_keeper = fds
    return ChannelEnds(requests, responses, (requests_keeper, responses_keeper))
