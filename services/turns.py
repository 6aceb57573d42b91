"""Waiting for a turn that another task grants: the one cancellation rule shared by the
API's per-key command slots and the executor's fair worker slots."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["wait_turn"]


async def wait_turn(
    waiter: asyncio.Future[None],
    *,
    hand_on: Callable[[], None],
    forget: Callable[[], None],
) -> None:
    """Wait until `waiter` is granted (its result set). Cancelled meanwhile: a turn
    granted at that very moment is handed on (`hand_on`, as if released), one not yet
    granted is withdrawn (`forget`); either way the cancellation goes on."""
    try:
        await waiter
    except asyncio.CancelledError:
        if waiter.done() and not waiter.cancelled():
            hand_on()
        else:
            forget()
        raise
