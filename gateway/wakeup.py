"""Wait for a wake-up event, or a timeout, without ever losing a cancel.

``asyncio.wait_for(event.wait(), t)`` is wrong for a task that must stop when the
daemon stops: on Python 3.11, when the event is set in the same loop turn as the
task is cancelled, ``wait_for`` returns the event's result and the cancel is gone.
A publisher woken on every loop turn (a dead spool worker's pipe at end of file
said "new rows" on each one) then never ended, and the stopping daemon spun on.
``asyncio.timeout`` gives the cancel back (it tells its own expiry from one from
outside).
"""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """True once ``event`` is set, False after ``timeout`` seconds; a cancel is raised."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
