"""Stopping a service whose loop swallowed a cancellation (a driver turned it into an error)."""

from __future__ import annotations

import asyncio
from typing import Any

from kgworker.runtime.supervisor import Supervisor


async def test_stop_repeats_a_swallowed_cancellation() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:  # as a Redis command cut short can surface
                if swallowed.is_set():
                    raise
                swallowed.set()

    ctx: Any = None  # stop() needs no node context
    supervisor = Supervisor(ctx)
    supervisor.start("stubborn", stubborn)
    await asyncio.sleep(0)
    await asyncio.wait_for(supervisor.stop("stubborn"), timeout=5)
    assert swallowed.is_set()
    assert "stubborn" not in supervisor.services
