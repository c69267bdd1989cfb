"""The listeners still working after their ack, so shutdown can let them finish.

Bolt acks and then runs each listener in a task it does not keep; this tracker keeps a reference to every
running listener task (which also stops the garbage collector from collecting one mid-step) and can wait
for them, within a grace period, before the process exits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec

log = logging.getLogger(__name__)

P = ParamSpec("P")


class InFlight:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[object]] = set()

    def track(self, func: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
        """Wrap a listener. functools.wraps keeps its signature visible to bolt, which injects arguments
        by parameter name."""

        @functools.wraps(func)
        async def tracked(*args: P.args, **kwargs: P.kwargs) -> None:
            task = asyncio.current_task()
            if task is not None:
                self.tasks.add(task)
            try:
                await func(*args, **kwargs)
            finally:
                if task is not None:
                    self.tasks.discard(task)

        return tracked

    async def drain(self, grace: float) -> None:
        """Wait up to `grace` seconds for running listeners, then cancel what is left. A cancelled step
        loses nothing committed: the service commits each step atomically."""
        pending = {t for t in self.tasks if t is not asyncio.current_task()}
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()
        if late:
            log.warning("cancelled %d Slack handlers still running at shutdown", len(late))
            await asyncio.wait(late, timeout=5)
