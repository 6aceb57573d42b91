"""ClinAI's processes run under Linux's SCHED_BATCH policy (`CLINAI_SCHED_BATCH`).

A job crosses the services in small steps: a message in, a little Python, a message
out, each step waking another process. Under the default policy the woken process
preempts the one running, which then stops halfway through its batch, and a busy
machine spends its time switching. Under SCHED_BATCH a woken process waits until a CPU
is free or the running one blocks, so each works through more messages per turn. A
process woken while a CPU is idle runs at once: a job run on its own is not delayed.
Switching between the two policies needs no privilege.
"""

from __future__ import annotations

import logging
import os

__all__ = ["use_batch_scheduling"]

log = logging.getLogger("clinai.scheduling")


def use_batch_scheduling() -> bool:
    """Put the calling thread, and every thread and process it starts from now on,
    under SCHED_BATCH. False where the platform has no such policy or refuses it."""
    if not hasattr(os, "SCHED_BATCH"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as err:
        log.warning("SCHED_BATCH refused (%s); running under the default policy", err)
        return False
    return True
