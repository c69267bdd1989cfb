"""The monologue's way to its channel, for any platform: callers put lines in a bounded queue and return at
once; one background task per channel packs as many lines as fit into each post and sends them, paced by
the platform's rate limits. The monologue is for following along: it must never slow a user's reply.

The platform adapts this with an async `send(text)` that raises RateLimited (wait, then the same post
again) or Refused (the channel itself is wrong: the monologue goes to the log for a while).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

#: Lines waiting at most; past it the oldest go (a stuck channel must not grow memory without end).
CAP = 1_000
#: Shutdown waits this long for the queue to empty; what is left goes to the log.
DRAIN_SECONDS = 5.0
#: After a refusal the monologue goes to the log this long before the channel is tried again, doubling
#: up to RETRY_MAX: a wrong channel must not cost a request per step.
RETRY_FIRST = 60.0
RETRY_MAX = 3600.0
#: Other failures (a network blip, a server error the SDK gave up on): tries per post, and the pause
#: before the next try (times the tries so far).
ATTEMPTS = 3
RETRY_DELAY = 1.0

Send = Callable[[str], Awaitable[None]]


class RateLimited(Exception):
    """The platform said "too many": wait `retry_after` seconds and post again."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited for {retry_after:.1f}s")
        self.retry_after = retry_after


class Refused(Exception):
    """The channel refused us for good (missing, no access, archived): say why in words."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class Line:
    """One monologue line: `post` as it goes into the channel (tagged, escaped), `plain` for the log."""

    post: str
    plain: str


@dataclass
class Counters:
    """Every line produced is, in the end, delivered to the channel, logged instead, or dropped (or still
    waiting): a benchmark can check that nothing went missing silently."""

    produced: int = 0
    delivered: int = 0
    logged: int = 0
    dropped: int = 0


def drop_notice(count: int) -> str:
    return f"⚠ {count} monologue line{'s' if count != 1 else ''} dropped here: the channel could not keep up."


def pack(
    queue: deque[Line], limit: int, measure: Callable[[str], int] = len, notice: str | None = None
) -> tuple[str, list[Line]]:
    """Take lines off the front of `queue` while they fit in one post of `limit` (joined by newlines,
    after `notice` if any). The first line is always taken, even when too long alone: the platform's
    send splits it."""
    parts = [notice] if notice else []
    size = measure(notice) if notice else 0
    taken: list[Line] = []
    while queue:
        added = measure(queue[0].post) + (1 if parts else 0)
        if taken and size + added > limit:
            break
        line = queue.popleft()
        parts.append(line.post)
        taken.append(line)
        size += added
    return "\n".join(parts), taken


class MonologueQueue:
    def __init__(
        self,
        send: Send,
        *,
        limit: int,
        name: str,
        advice: str,
        logger: logging.Logger,
        measure: Callable[[str], int] = len,
        cap: int = CAP,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
        attempts: int = ATTEMPTS,
        retry_delay: float = RETRY_DELAY,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.0,
    ) -> None:
        """`name` is the setting and its value ("DISCORD_MONOLOGUE_CHANNEL_ID 502") and `advice` what to do
        about a refusal; both go into the one warning a failing channel gets. `interval` spaces the posts, for
        a platform whose client learns its limit only from a 429 (lines wait and go together in the next post)."""
        self._send = send
        self.limit = limit
        self.name = name
        self.advice = advice
        self.log = logger
        self._measure = measure
        self.cap = cap
        self._retry_first = self._backoff = retry_first
        self._retry_max = retry_max
        self._attempts = attempts
        self._retry_delay = retry_delay
        self._clock = clock
        self._interval = interval
        self._next_post = 0.0
        self.counters = Counters()
        self._queue: deque[Line] = deque()
        self._unnoticed = 0  # dropped lines the next post has yet to mention
        self._inflight: list[Line] = []
        self._retry_at = 0.0
        self._warned = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    @property
    def pending(self) -> int:
        """Lines produced and not yet delivered, logged or dropped."""
        return len(self._queue) + len(self._inflight)

    def put(self, lines: Iterable[Line]) -> None:
        """Queue lines for the channel and return at once; never waits for a post."""
        lines = list(lines)
        if not lines:
            return
        self.counters.produced += len(lines)
        if self._closed:
            self._to_log(lines)
            return
        self._queue.extend(lines)
        excess = len(self._queue) - self.cap
        for _ in range(max(excess, 0)):
            self._queue.popleft()
        if excess > 0:
            self.counters.dropped += excess
            self._unnoticed += excess
        self._start()

    def _start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): nothing can post, so the log it is
            self._to_log(list(self._queue))
            self._queue.clear()
            return
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            # Started lazily, on the loop that is running: the adapter is built before its loop runs.
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name=f"monologue {self.name}")
            self._task.add_done_callback(self._ended)
        assert self._wake is not None
        self._wake.set()

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("the monologue queue for %s stopped", self.name, exc_info=task.exception())

    async def _run(self) -> None:
        assert self._wake is not None
        while self._queue or not self._closed:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if (wait := self._next_post - self._clock()) > 0 and not self._closed:
                await asyncio.sleep(wait)
            notice = drop_notice(self._unnoticed) if self._unnoticed else None
            self._unnoticed = 0
            text, self._inflight = pack(self._queue, self.limit, self._measure, notice)
            # Spaced from when this post began, so that the time it takes (a round trip, a wait under the global
            # limit) does not slow the channel below its rate.
            began = self._clock()
            await self._deliver(text, self._inflight, notice)
            self._inflight = []
            self._next_post = began + self._interval

    async def _deliver(self, text: str, batch: list[Line], notice: str | None) -> None:
        failures = 0
        while True:
            if self._clock() < self._retry_at:
                self._to_log(batch, notice)
                return
            try:
                await self._send(text)
            except RateLimited as exc:
                # Not a broken channel, just a busy one: wait as told and post the same text again.
                await asyncio.sleep(max(exc.retry_after, 0.05))
                continue
            except Refused as exc:
                self._refused(exc.why)
                self._to_log(batch, notice)
                return
            except Exception as exc:  # noqa: BLE001 - anything else is worth a few tries, then the log
                failures += 1
                if failures >= self._attempts:
                    self.log.warning("monologue post to %s failed (%s); %d lines go to the log",
                                     self.name, exc, len(batch))
                    self._to_log(batch, notice)
                    return
                await asyncio.sleep(self._retry_delay * failures)
                continue
            self.counters.delivered += len(batch)
            self._backoff = self._retry_first
            if self._warned:
                self._warned = False
                self.log.warning("%s works again; the monologue goes there", self.name)
            return

    def _refused(self, why: str) -> None:
        """Back off, and say so once per failing stretch (not once per post)."""
        wait = self._backoff
        self._retry_at = self._clock() + wait
        self._backoff = min(self._backoff * 2, self._retry_max)
        if not self._warned:
            self._warned = True
            self.log.warning("%s: %s; the monologue goes to the log (the channel is tried again in %.0f s). %s",
                             self.name, why, wait, self.advice)

    def _to_log(self, lines: list[Line], notice: str | None = None) -> None:
        if notice:
            self.log.warning("%s", notice)
        for line in lines:
            self.log.info("%s", line.plain)
        self.counters.logged += len(lines)

    async def close(self, timeout: float = DRAIN_SECONDS) -> None:  # noqa: ASYNC109 - a bound, not a deadline
        """Post what is queued, for at most `timeout` seconds; log whatever is left. Lines put after this
        go straight to the log."""
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            if task.get_loop() is asyncio.get_running_loop():
                assert self._wake is not None
                self._wake.set()
                done, _ = await asyncio.wait({task}, timeout=timeout)
                if not done:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            else:
                try:
                    task.cancel()  # a task of an earlier loop (tests run one per test)
                except RuntimeError:  # that loop is closed: the task will never run again anyway
                    pass
        left = [*self._inflight, *self._queue]
        self._inflight, self._queue = [], deque()
        if left or self._unnoticed:
            self.log.warning("%d monologue lines for %s were not posted before shutdown; here they are",
                             len(left), self.name)
            self._to_log(left, drop_notice(self._unnoticed) if self._unnoticed else None)
            self._unnoticed = 0
