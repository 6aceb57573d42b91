"""A background step an API process repeats (the sweeps)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

__all__ = ["repeat"]

log = logging.getLogger("clinai.api")


async def repeat(
    step: Callable[[], Awaitable[object]],
    *,
    interval_s: float,
    what: str,
    errors: tuple[type[BaseException], ...],
) -> None:
    """Run `step` every `interval_s` (the first after a random part of it, so that API
    processes started together do not run it together) until cancelled; a failure in
    `errors` (a dependency away) is logged, and the next run comes as planned."""
    delay = random.uniform(0.5, 1.0) * interval_s
    while True:
        await asyncio.sleep(delay)  # a period, not a synchronisation
        delay = interval_s
        try:
            await step()
        except errors as err:
            log.warning("%s skipped (%r); next in %.1f s", what, err, interval_s)
