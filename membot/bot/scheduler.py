"""The scheduler: fires agents' wake-ups (store/wakeups.py) when they fall due: reminders the agents set, timed
heartbeats (MEMBOT_HEARTBEAT_MINUTES, unless the user turned them off) and reflections once a conversation rests
(MEMBOT_REFLECT_AFTER_MINUTES).

A fired wake-up is an event for the agent through a normal step (`BotService.wake`): bounded like any step, its
tokens counted against the user's daily quota. The step's events go to the `deliver(agent_id, events)` callback
the scheduler is given: the adapter that can reach the user (the terminal prints what the agent sends). Each
wake-up fires once across every process of the bot (see `wakeups.claim`); one that fell due while nothing ran
fires at the next start; one whose process died mid-step is fired once more (marked finished only when its step
ended). Heartbeats and reflections are unsolicited: held back in quiet hours and capped per day
(bot/unsolicited.py); reminders never are.

The clock is a parameter: `tick(now)` fires what is due at `now` (tests drive it with their own times, never
sleeping); `run()` is the production loop, which ticks, then sleeps until the next due time or POLL_SECONDS (other
processes may schedule wake-ups too), woken early when this process schedules one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from datetime import UTC, datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from membot.agent.events import ErrorMessage, Event
from membot.agent.notices import HEARTBEAT_TEXT, REFLECTION_TEXT, REMINDER_TEXT
from membot.agent.store import wakeups
from membot.agent.store.db import Database
from membot.agent.store.schema import utcnow
from membot.agent.store.usage import today, tokens_on
from membot.bot.service import BotService
from membot.bot.unsolicited import capped

log = logging.getLogger(__name__)

#: Gets the events of a fired wake-up's step, and must iterate them (the step runs as they are read).
Deliver = Callable[[int, AsyncIterator[Event]], Awaitable[None]]

POLL_SECONDS = 30.0
#: Agents woken at once by one tick; each agent's own wake-ups run one after the other, in due order.
CONCURRENCY = 8
BATCH = 100
PRUNE_EVERY = timedelta(hours=1)
OVER_QUOTA = "Reminder ({when}): {note}\n(Your agent did not wake for it: today's token quota is used up.)"


class Scheduler:
    def __init__(
        self,
        service: BotService,
        deliver: Deliver,
        *,
        agents: Collection[int] | None = None,
        platforms: Collection[str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        """`agents`: fire only these agents' wake-ups (the terminal fires its own user's), None for all.
        `clock`: naive UTC now, for `run`."""
        self.service = service
        self.deliver = deliver
        self.agents = None if agents is None else frozenset(agents)
        #: Only the wake-ups of these platforms' users (membot serve: the adapters it runs), if given: a terminal
        #: user's reminder waits for their next `membot chat` rather than being fired where nobody sees it.
        self.platforms = None if platforms is None else frozenset(platforms)
        self.clock = clock
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pruned: datetime | None = None

    @property
    def db(self) -> Database:
        return self.service.engine.db

    @property
    def holder(self) -> str:
        """Who claims wake-ups: this process, named as its leases name it."""
        return self.service.engine.leases.holder

    # ----- firing ------------------------------------------------------------------------------------------

    async def tick(self, now: datetime | None = None) -> int:
        """Fire every wake-up due at `now` (naive UTC; the clock's now by default); how many fired."""
        now = now or self.clock()
        await self._prune(now)
        due = await self.db.read(partial(wakeups.due, now=now, agents=self.agents, limit=BATCH, platforms=self.platforms))
        by_agent: dict[int, list[wakeups.Wakeup]] = {}
        for wakeup in due:
            by_agent.setdefault(wakeup.agent_id, []).append(wakeup)
        slots = asyncio.Semaphore(CONCURRENCY)

        async def fire_all(items: list[wakeups.Wakeup]) -> int:
            async with slots:
                return sum([await self._fire(wakeup, now) for wakeup in items])

        return sum(await asyncio.gather(*(fire_all(items) for items in by_agent.values())))

    async def _fire(self, wakeup: wakeups.Wakeup, now: datetime) -> bool:
        """Claim and run one wake-up; whether it was claimed here."""
        zone = None  # the user's, read once and only when needed
        quiet = self.service.settings.quiet_hours
        if wakeup.kind in wakeups.UNSOLICITED and wakeup.attempts == 0 and quiet is not None:
            zone = await self.db.read(partial(wakeups.user_zone, agent_id=wakeup.agent_id))
            if (end := quiet.end_after(now, zone)) is not None:  # the user's quiet hours: wait for their end
                await self.db.write(partial(wakeups.move, wakeup_id=wakeup.id, due_at=end))
                return False
        if not await self.db.write(partial(wakeups.claim, wakeup=wakeup, now=now, holder=self.holder)):
            return False  # another process has it, or a pause moved it
        try:
            zone = zone or await self.db.read(partial(wakeups.user_zone, agent_id=wakeup.agent_id))
            await self._run(wakeup, now, zone)
        except Exception:  # one failed wake-up never stops the others
            log.exception("agent %s: wake-up %s failed", wakeup.agent_id, wakeup.id)
        # Not reached when cancelled mid-step (shutdown): left unfinished, the wake-up is fired again later.
        try:
            await self.db.write(partial(wakeups.finish, wakeup_id=wakeup.id, now=now))
        except Exception:  # it may be fired once more: better than lost
            log.warning("agent %s: wake-up %s not marked finished", wakeup.agent_id, wakeup.id, exc_info=True)
        if wakeup.kind == wakeups.HEARTBEAT:
            with contextlib.suppress(Exception):
                await self.service.schedule_heartbeat(wakeup.agent_id, now)
        return True

    async def _run(self, wakeup: wakeups.Wakeup, now: datetime, zone: ZoneInfo) -> None:
        settings = self.service.settings
        minutes = {wakeups.HEARTBEAT: settings.heartbeat_minutes,
                   wakeups.REFLECTION: settings.reflect_after_minutes}.get(wakeup.kind)
        if wakeup.kind in wakeups.UNSOLICITED and minutes is None:
            return  # switched off since it was scheduled
        when = wakeups.local_text(wakeup.due_at, zone)
        if await self._over_quota(wakeup.agent_id, now):
            if wakeup.kind == wakeups.REMINDER:
                notice = OVER_QUOTA.format(when=when, note=wakeup.note)
                await self._deliver(wakeup.agent_id, _events(ErrorMessage(wakeup.agent_id, notice)))
            else:
                log.info("agent %s: %s skipped, daily token quota used up", wakeup.agent_id, wakeup.kind)
            return
        if wakeup.kind == wakeups.HEARTBEAT:
            text = HEARTBEAT_TEXT.format(minutes=minutes)
        elif wakeup.kind == wakeups.REFLECTION:
            text = REFLECTION_TEXT.format(minutes=minutes)
        else:
            text = REMINDER_TEXT.format(when=when, note=wakeup.note)
        events = self.service.wake(wakeup.agent_id, text, wakeup.kind)
        if wakeup.kind in wakeups.UNSOLICITED:
            day = now.replace(tzinfo=UTC).astimezone(zone).strftime("%Y-%m-%d")  # the user's day
            take = partial(wakeups.take_unsolicited, agent_id=wakeup.agent_id, day=day, cap=settings.unsolicited_per_day)

            async def allow() -> bool:
                return await self.db.write(take)

            events = capped(events, allow, f"agent {wakeup.agent_id}")
        await self._deliver(wakeup.agent_id, events)

    async def _deliver(self, agent_id: int, events: AsyncIterator[Event]) -> None:
        try:
            await self.deliver(agent_id, events)
            async for _ in events:  # what the callback left unread still runs: the step must finish
                pass
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _over_quota(self, agent_id: int, now: datetime) -> bool:
        limit = self.service.settings.user_tokens_per_day
        if limit is None:
            return False

        def spent(session: Session) -> int:
            return tokens_on(session, agent_id, today(now))

        return await self.db.read(spent) >= limit

    async def _prune(self, now: datetime) -> None:
        if self._pruned is not None and now - self._pruned < PRUNE_EVERY:
            return
        self._pruned = now
        try:
            await self.db.write(partial(wakeups.forget_fired, now=now))
        except Exception:
            log.warning("could not drop old fired wake-ups", exc_info=True)

    # ----- the production loop -----------------------------------------------------------------------------

    def poke(self) -> None:
        """Look again now: a wake-up was scheduled in this process."""
        self._wake.set()

    async def run(self) -> None:
        """Tick, then sleep until the next due time (at most `poll_seconds`), until cancelled."""
        stop_listening = self.service.engine.wakeups.listen(self.poke)
        try:
            while True:
                self._wake.clear()
                delay = self.poll_seconds
                try:
                    await self.tick()
                    next_at = await self.db.read(partial(wakeups.next_due, agents=self.agents, platforms=self.platforms))
                    if next_at is not None:
                        delay = min(delay, max(0.05, (next_at - self.clock()).total_seconds()))
                except Exception:  # the database is down: try again after a poll interval
                    log.exception("the wake-up scheduler could not tick")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
        finally:
            stop_listening()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="membot-scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _events(*events: Event) -> AsyncIterator[Event]:
    for event in events:
        yield event
