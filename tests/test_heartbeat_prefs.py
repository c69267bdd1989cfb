"""The rest of issue 22: /heartbeats on|off per user, quiet hours and the daily cap on unsolicited messages,
reflection at rest, and a wake-up whose process died mid-step fired once more. Time is driven through
`Scheduler.tick(now)` with fixed times; nothing sleeps."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from datetime import datetime, time, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from membot.adapters.terminal import HELP, Terminal
from membot.agent.events import AssistantMessage, ErrorMessage, Event, ReplyDraft
from membot.agent.store import wakeups
from membot.agent.store.schema import AgentRow, BlockRow, WakeupRow, utcnow
from membot.bot import heartbeats
from membot.bot.identity import UserRef
from membot.bot.scheduler import Scheduler
from membot.bot.service import BotService
from membot.bot.unsolicited import QuietHours, capped
from tests.conftest import collect, make_settings
from tests.fakes.openai_server import ScriptedModel, send, tool_call

pytestmark = pytest.mark.both_databases  # SQL-backed: run on SQLite and on PostgreSQL (see conftest)

HOUR, MINUTE = timedelta(hours=1), timedelta(minutes=1)
DAY0 = datetime(2030, 1, 15, 10, 0)  # naive UTC: the tests' clock, far from real time on purpose


class Inbox:
    """The delivery callback: what each fired wake-up's step yielded."""

    def __init__(self) -> None:
        self.got: list[list[Event]] = []

    async def __call__(self, agent_id: int, events: AsyncIterator[Event]) -> None:
        self.got.append([event async for event in events])

    def said(self) -> list[str]:
        return [e.text for events in self.got for e in events if isinstance(e, AssistantMessage)]


async def _open(home: Path, model: ScriptedModel, database_url: str, **env: Any) -> BotService:
    return await BotService.open(make_settings(home, model, MEMBOT_DATABASE_URL=database_url, **env))


async def _agent(service: BotService, user: Callable[[str], UserRef], name: str = "alice") -> int:
    return (await service.agent_id(user(name)))[0]


async def _pending(service: BotService, agent_id: int, kind: str) -> list[WakeupRow]:
    return list(await service.engine.db.read(lambda s: list(s.scalars(select(WakeupRow).where(
        WakeupRow.agent_id == agent_id, WakeupRow.kind == kind, WakeupRow.fired_at.is_(None)
    )))))


async def _heartbeat_at(service: BotService, agent_id: int, due: datetime) -> None:
    await service.engine.db.write(partial(wakeups.set_heartbeat, agent_id=agent_id, due_at=due, now=due - HOUR))


# ----- /heartbeats ---------------------------------------------------------------------------------------------


async def test_heartbeats_command_switches_them_per_user(home, model, user, database_url):
    service = await _open(home, model, database_url, MEMBOT_HEARTBEAT_MINUTES=30)
    try:
        err = io.StringIO()
        terminal = Terminal(service, user("alice"), io.StringIO(), err, io.StringIO())
        assert "/heartbeats" in HELP
        await terminal.command("/heartbeats")  # no agent yet: they start with the first talk
        assert "Timed heartbeats are on" in err.getvalue() and "None is due" in err.getvalue()

        model.script(send("Hi!"))
        await collect(service.chat(user("alice"), "hello"))
        alice = await _agent(service, user)
        [beat] = await _pending(service, alice, "heartbeat")
        state = await service.heartbeats_command(user("alice"))
        assert f"The next is due {wakeups.local_text(beat.due_at, ZoneInfo('UTC'))}" in state

        await terminal.command("/heartbeats off")
        assert err.getvalue().rstrip().endswith(heartbeats.OFF)
        assert await _pending(service, alice, "heartbeat") == []
        model.script(send("Hi again!"))
        await collect(service.chat(user("alice"), "still here"))
        assert await _pending(service, alice, "heartbeat") == []  # talk schedules none while off
        assert await Scheduler(service, Inbox()).tick(utcnow() + 2 * HOUR) == 0
        assert await service.heartbeats_command(user("alice")) == heartbeats.OFF
        # Bob's agent is not Alice's: his stay on.
        model.script(send("Hi Bob!"))
        await collect(service.chat(user("bob"), "hello"))
        assert len(await _pending(service, await _agent(service, user, "bob"), "heartbeat")) == 1

        before = utcnow()
        await terminal.command("/heartbeats ON")
        [again] = await _pending(service, alice, "heartbeat")
        assert before + 30 * MINUTE <= again.due_at <= utcnow() + 30 * MINUTE
        assert "Timed heartbeats are on" in err.getvalue().splitlines()[-1]

        await terminal.command("/heartbeats sometimes")
        assert "does not know 'sometimes'" in err.getvalue() and heartbeats.USAGE in err.getvalue()
    finally:
        await service.close()


async def test_heartbeats_command_without_deployment_heartbeats_says_so(service, user):
    assert await service.heartbeats_command(user("alice")) == heartbeats.NOT_OFFERED
    answer = await service.heartbeats_command(user("alice"), "off")
    assert answer.startswith(heartbeats.NOT_OFFERED) and "(off) is kept" in answer
    alice = await _agent(service, user)
    assert await service.engine.db.read(lambda s: s.scalar(select(AgentRow.heartbeats_on).where(AgentRow.id == alice))) \
        is False


# ----- quiet hours and the daily cap ---------------------------------------------------------------------------


async def test_quiet_hours_put_a_heartbeat_off_but_never_a_reminder(home, model, user, database_url):
    service = await _open(home, model, database_url, MEMBOT_HEARTBEAT_MINUTES=60, MEMBOT_QUIET_HOURS="22-08")
    try:
        alice = await _agent(service, user)
        await service.engine.db.write(partial(wakeups.set_zone, agent_id=alice, name="Europe/Paris"))
        night = datetime(2030, 1, 15, 22, 30)  # 23:30 in Paris (UTC+1 in winter)
        await _heartbeat_at(service, alice, night)
        await service.engine.db.write(partial(wakeups.add_reminder, agent_id=alice, due_at=night,
                                              note="take the pills", now=night - HOUR))
        inbox = Inbox()
        scheduler = Scheduler(service, inbox)
        model.script(send("Pills now!"))
        assert await scheduler.tick(night) == 1  # the reminder; the heartbeat waits for 08:00 Paris time
        assert inbox.said() == ["Pills now!"]
        [beat] = await _pending(service, alice, "heartbeat")
        assert beat.due_at == datetime(2030, 1, 16, 7, 0)
        state = await service.heartbeats_command(user("alice"))
        assert "The next is due 2030-01-16 08:00 Europe/Paris" in state and "22:00-08:00" in state

        assert await scheduler.tick(datetime(2030, 1, 16, 6, 59)) == 0
        model.script(send("Good morning!"))
        assert await scheduler.tick(datetime(2030, 1, 16, 7, 0)) == 1
        assert inbox.said()[-1] == "Good morning!"
    finally:
        await service.close()


async def test_the_daily_cap_holds_back_heartbeat_messages_but_not_the_heartbeats(home, model, user, database_url):
    service = await _open(home, model, database_url, MEMBOT_HEARTBEAT_MINUTES=60, MEMBOT_UNSOLICITED_PER_DAY=2)
    try:
        alice = await _agent(service, user)
        await _heartbeat_at(service, alice, DAY0)
        inbox = Inbox()
        scheduler = Scheduler(service, inbox)
        for n in range(3):
            model.script(send(f"beat {n}"))
            assert await scheduler.tick(DAY0 + n * HOUR) == 1  # each reschedules the next an hour on
        assert inbox.said() == ["beat 0", "beat 1"]  # the third ran (the model was asked) but was not delivered
        assert len(model.requests) == 3
        # A reminder is not counted: the user asked for it.
        await service.engine.db.write(partial(wakeups.add_reminder, agent_id=alice, due_at=DAY0 + 3 * HOUR + MINUTE,
                                              note="stretch", now=DAY0))
        model.script(send("beat 3"), send("Stretch!"))
        assert await scheduler.tick(DAY0 + 3 * HOUR + MINUTE) == 2
        assert inbox.said()[-1] == "Stretch!" and "beat 3" not in inbox.said()
        # A new day (the user's) starts from zero.
        [beat] = await _pending(service, alice, "heartbeat")
        assert beat.due_at == DAY0 + 4 * HOUR + MINUTE  # an hour after the last one ran
        next_day = datetime(2030, 1, 16, 9, 0)
        await _heartbeat_at(service, alice, next_day)
        model.script(send("new day"))
        assert await scheduler.tick(next_day) == 1
        assert inbox.said()[-1] == "new day"
    finally:
        await service.close()


async def test_capped_drops_drafts_and_withheld_messages():
    async def step() -> AsyncIterator[Event]:
        yield ReplyDraft(1, "d1", "Hel")
        yield AssistantMessage(1, "Hello", draft="d1")
        yield ErrorMessage(1, "Sorry")

    grants = iter([True, False])

    async def allow() -> bool:
        return next(grants)

    assert await collect(capped(step(), allow, "agent 1")) == [AssistantMessage(1, "Hello")]


def test_quiet_hours_read_and_wrap_past_midnight():
    quiet = QuietHours.parse("22-08")
    assert (quiet.start, quiet.end, str(quiet)) == (time(22), time(8), "22:00-08:00")
    assert quiet.contains(time(23, 30)) and quiet.contains(time(3)) and not quiet.contains(time(8))
    utc = ZoneInfo("UTC")
    assert quiet.end_after(datetime(2030, 1, 15, 23, 0), utc) == datetime(2030, 1, 16, 8, 0)
    assert quiet.end_after(datetime(2030, 1, 15, 3, 0), utc) == datetime(2030, 1, 15, 8, 0)
    assert quiet.end_after(datetime(2030, 1, 15, 12, 0), utc) is None
    day = QuietHours.parse("13:30-14:15")
    assert day.contains(time(14)) and not day.contains(time(22))
    for bad in ("22", "25-08", "8-8", "nights"):
        with pytest.raises(ValueError):
            QuietHours.parse(bad)


def test_wrong_quiet_hours_name_the_setting(home, model):
    with pytest.raises(ValidationError, match=r"MEMBOT_QUIET_HOURS\n.*'10pm-8am' is not a span of hours"):
        make_settings(home, model, MEMBOT_QUIET_HOURS="10pm-8am")
    assert make_settings(home, model, MEMBOT_QUIET_HOURS="22-08").quiet_hours == QuietHours(time(22), time(8))


# ----- reflection at rest --------------------------------------------------------------------------------------


async def test_a_rested_conversation_gets_one_reflection_that_edits_memory_silently(home, model, user, database_url):
    service = await _open(home, model, database_url, MEMBOT_REFLECT_AFTER_MINUTES=20)
    try:
        model.script(send("Nice, tea it is."))
        await collect(service.chat(user("alice"), "I only drink green tea"))
        talked = utcnow()
        alice = await _agent(service, user)
        inbox = Inbox()
        scheduler = Scheduler(service, inbox)
        assert await scheduler.tick(talked + 19 * MINUTE) == 0

        model.script(tool_call("core_memory_append", {"name": "human", "content": "Drinks only green tea."},
                               "She told me about tea; worth keeping."))
        assert await scheduler.tick(talked + 21 * MINUTE) == 1
        woken = model.requests[-1]["messages"][-1]["content"]
        assert '"type": "reflection"' in woken and "archival memory" in woken
        assert inbox.said() == []  # nothing posted to the user
        # A reflection is a private step (agent/place.py): what it learnt of the user lands in the private block.
        private = await service.engine.db.read(lambda s: s.scalar(
            select(BlockRow.value).where(BlockRow.agent_id == alice, BlockRow.label == "private")))
        assert "Drinks only green tea." in private
        # One per quiet spell: none until the user talks again.
        assert await scheduler.tick(talked + 5 * HOUR) == 0
        model.script(send("Hello again."))
        await collect(service.chat(user("alice"), "back"))
        assert len(await _pending(service, alice, "reflection")) == 1
    finally:
        await service.close()


async def test_reflection_is_off_by_default(service, model, user):
    model.script(send("Hi!"))
    await collect(service.chat(user("alice"), "hello"))
    assert await _pending(service, await _agent(service, user), "reflection") == []


# ----- a process that died mid-step ----------------------------------------------------------------------------


async def test_a_wake_up_whose_process_died_mid_step_fires_once_more(service, model, user):
    alice = await _agent(service, user)
    db = service.engine.db
    await db.write(partial(wakeups.add_reminder, agent_id=alice, due_at=DAY0, note="call the bank", now=DAY0 - HOUR))
    [reminder] = await db.read(partial(wakeups.due, now=DAY0))
    assert await db.write(partial(wakeups.claim, wakeup=reminder, now=DAY0, holder="dead-process"))
    # ... and that process died before the step finished.
    inbox = Inbox()
    scheduler = Scheduler(service, inbox)
    assert await scheduler.tick(DAY0 + 10 * MINUTE) == 0  # a claim this young may still be running
    model.script(send("Call the bank!"))
    assert await scheduler.tick(DAY0 + wakeups.STALE_CLAIM + MINUTE) == 1
    assert inbox.said() == ["Call the bank!"]
    # Finished now: never fired again.
    assert await scheduler.tick(DAY0 + 3 * wakeups.STALE_CLAIM) == 0
    assert len(inbox.got) == 1


async def test_a_wake_up_is_claimed_at_most_twice(service, user):
    alice = await _agent(service, user)
    db = service.engine.db
    await db.write(partial(wakeups.add_reminder, agent_id=alice, due_at=DAY0, note="call the bank", now=DAY0 - HOUR))
    [first] = await db.read(partial(wakeups.due, now=DAY0))
    assert await db.write(partial(wakeups.claim, wakeup=first, now=DAY0, holder="dead-1"))
    retry_at = DAY0 + wakeups.STALE_CLAIM + MINUTE
    [stale] = await db.read(partial(wakeups.due, now=retry_at))
    assert stale.attempts == 1
    assert await db.write(partial(wakeups.claim, wakeup=stale, now=retry_at, holder="dead-2"))
    assert not await db.write(partial(wakeups.claim, wakeup=stale, now=retry_at, holder="late"))  # one claimant
    # The retry died too: its step may be what kills processes, so it is not fired a third time.
    assert await db.read(partial(wakeups.due, now=retry_at + 3 * wakeups.STALE_CLAIM)) == []
    assert await Scheduler(service, Inbox()).tick(retry_at + 3 * wakeups.STALE_CLAIM) == 0
