"""SIGINT and SIGTERM always stop `membot serve`, whatever it is waiting on.

The first signal asks for a clean stop (the adapters drain what runs); if that takes longer than the grace
period, or a second signal comes, or the process is still starting (opening the database, migrating), the
main task is cancelled at once: a waiting loop of a library can then hold nothing up."""

from __future__ import annotations

import asyncio
import logging
import signal

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalStop:
    def __init__(self, stop: asyncio.Event, grace: float) -> None:
        self.stop = stop
        self.grace = grace
        self.starting = True  # until the adapters run, there is nothing to drain: a signal cancels at once
        self.forced = False
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._deadline: asyncio.TimerHandle | None = None
        self._installed: list[signal.Signals] = []

    def install(self) -> None:
        for sig in SIGNALS:
            try:
                self._loop.add_signal_handler(sig, self.received, sig)
                self._installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not on the main thread, or not here
                pass

    def remove(self) -> None:
        for sig in self._installed:
            self._loop.remove_signal_handler(sig)
        if self._deadline is not None:
            self._deadline.cancel()

    def received(self, sig: signal.Signals | None = None) -> None:
        """What a signal does (also callable by tests)."""
        name = sig.name if sig is not None else "a signal"
        if self.starting or self.stop.is_set():
            log.info("%s: stopping now", name)
            self._cancel()
            return
        log.info("%s: stopping (the replies in progress get up to %.0f s to finish)", name, self.grace)
        self.stop.set()
        self._deadline = self._loop.call_later(self.grace, self._cancel)

    def _cancel(self) -> None:
        self.forced = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
