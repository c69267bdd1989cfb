"""Wake-ups (issue 22): reminders the agent schedules and timed heartbeats, fired by the scheduler with a test
clock (`tick(now)`: nothing here sleeps for a wake-up to come due), once across restarts and processes."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from membot.adapters.terminal import HELP, Terminal
from membot.agent.events import AssistantMessage, Event, FunctionResult
from membot.agent.store import wakeups
from membot.agent.store.schema import AgentRow, WakeupRow, utcnow
from membot.bot.scheduler import Scheduler
from membot.bot.service import BotService
from tests.conftest import collect, make_settings
from tests.fakes.openai_server import send, tool_call

pytestmark = pytest.mark.both_databases  # SQL-backed: run on SQLite and on PostgreSQL (see conftest)

HOUR, MINUTE, SECOND = timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1)


class Inbox:
    """The delivery callback: what each fired wake-up's step yielded, by agent."""

    def __init__(self) -> None:
        self.got: list[tuple[int, list[Event]]] = []

    async def __call__(self, agent_id: int, events: AsyncIterator[Event]) -> None:
        self.got.append((agent_id, [event async for event in events]))

    def said(self) -> list[str]:
        return [e.text for _, events in self.got for e in events if isinstance(e, AssistantMessage)]


def _schedule(when: str, note: str = "stretch", **extra: object) -> object:
    return tool_call("schedule_wakeup", {"when": when, "note": note, "request_heartbeat": True, **extra})


def _last_event(model) -> dict:
    return json.loads(model.requests[-1]["messages"][-1]["content"])


async def _remind(service, model, user, name: str = "alice", when: str = "in 2 hours") -> list[Event]:
    model.script(_schedule(when), send("Sure, I'll remind you."))
    return await collect(service.chat(user(name), f"remind me {when} to stretch"))


async def _pending(service) -> list[WakeupRow]:
    return list(await service.engine.db.read(
        lambda s: list(s.scalars(select(WakeupRow).where(WakeupRow.fired_at.is_(None)).order_by(WakeupRow.id)))
    ))


async def test_a_reminder_set_in_chat_fires_at_its_time_and_not_before(service, model, user):
    before = utcnow()
    events = await _remind(service, model, user)
    after = utcnow()
    results = [e for e in events if isinstance(e, FunctionResult) and e.name == "schedule_wakeup"]
    assert results[0].ok and "Reminder" in results[0].result and "UTC" in results[0].result
    assert [e.text for e in events if isinstance(e, AssistantMessage)] == ["Sure, I'll remind you."]

    inbox = Inbox()
    scheduler = Scheduler(service, inbox)
    assert await scheduler.tick(before + 2 * HOUR - MINUTE) == 0
    assert inbox.got == [] and len(model.requests) == 2

    model.script(send("Time to stretch!"))
    assert await scheduler.tick(after + 2 * HOUR + SECOND) == 1
    agent_id, _ = await service.agent_id(user("alice"))
    assert inbox.got[0][0] == agent_id
    assert inbox.said() == ["Time to stretch!"]
    woken = _last_event(model)
    assert woken["type"] == "reminder"
    assert woken["message"].startswith("Reminder you scheduled for ") and woken["message"].endswith(": stretch")

    assert await scheduler.tick(after + 3 * HOUR) == 0  # once
    assert len(inbox.got) == 1 and await service.reminders(user("alice")) == []


async def test_a_timed_heartbeat_fires_after_quiet_and_a_pause_delays_it(home, model, user, database_url):
    settings = make_settings(home, model, MEMBOT_DATABASE_URL=database_url, MEMBOT_HEARTBEAT_MINUTES=30)
    service = await BotService.open(settings)
    try:
        inbox = Inbox()
        scheduler = Scheduler(service, inbox)
        model.script(send("Hi!"))
        await collect(service.chat(user("alice"), "hello"))
        talked = utcnow()
        assert await scheduler.tick(talked + 29 * MINUTE) == 0

        model.script(send("Still there? I was thinking about your cat."))
        fired_at = talked + 31 * MINUTE
        assert await scheduler.tick(fired_at) == 1
        assert inbox.said() == ["Still there? I was thinking about your cat."]
        woken = _last_event(model)
        assert woken["type"] == "heartbeat" and "30 minutes" in woken["message"]
        # The next one comes 30 minutes after that one.
        [next_beat] = await _pending(service)
        assert next_beat.kind == "heartbeat" and next_beat.due_at == fired_at + 30 * MINUTE

        # Bob's agent pauses timed heartbeats for two hours: his heartbeat waits for the end of the pause.
        model.script(tool_call("pause_heartbeats", {"minutes": 120}))
        events = await collect(service.chat(user("bob"), "leave me alone for two hours"))
        assert [e.ok for e in events if isinstance(e, FunctionResult)] == [True]
        bob, _ = await service.agent_id(user("bob"))
        paused = await service.engine.db.read(
            lambda s: s.scalar(select(AgentRow.heartbeats_paused_until).where(AgentRow.id == bob))
        )
        bob_scheduler = Scheduler(service, inbox, agents={bob})
        assert await bob_scheduler.tick(utcnow() + 31 * MINUTE) == 0
        assert await bob_scheduler.tick(paused - SECOND) == 0
        assert len(inbox.got) == 1
        model.script(send("Two hours passed: how did it go?"))
        assert await bob_scheduler.tick(paused + SECOND) == 1
        assert inbox.said()[-1] == "Two hours passed: how did it go?"
    finally:
        await service.close()


async def test_heartbeats_are_off_by_default(service, model, user):
    model.script(send("Hi!"))
    await collect(service.chat(user("alice"), "hello"))
    assert await _pending(service) == []


async def test_a_restart_between_scheduling_and_firing_still_fires_it_once(settings, model, user):
    first = await BotService.open(settings)
    try:
        await _remind(first, model, user)
        due = (await _pending(first))[0].due_at
    finally:
        await first.close()
    # Nothing ran when it fell due; the next start fires it, once.
    second = await BotService.open(settings)
    try:
        inbox = Inbox()
        model.script(send("Stretch now!"))
        assert await Scheduler(second, inbox).tick(due + HOUR) == 1
        assert inbox.said() == ["Stretch now!"]
        assert await Scheduler(second, inbox).tick(due + 2 * HOUR) == 0
    finally:
        await second.close()
    third = await BotService.open(settings)
    try:
        assert await Scheduler(third, inbox).tick(due + 3 * HOUR) == 0
        assert len(inbox.got) == 1
    finally:
        await third.close()


async def test_two_services_ticking_at_once_fire_it_once(service, settings, model, user):
    await _remind(service, model, user)
    due = (await _pending(service))[0].due_at
    other = await BotService.open(settings)
    try:
        inbox = Inbox()
        model.default = lambda body: send("Stretch!")
        fired = await asyncio.gather(Scheduler(service, inbox).tick(due), Scheduler(other, inbox).tick(due))
        assert sorted(fired) == [0, 1]
        assert inbox.said() == ["Stretch!"]
        assert len(model.requests) == 3  # the chat's two calls, and the one wake-up's
    finally:
        await other.close()


async def test_limits_refuse_clearly(service, model, user):
    model.script(
        _schedule("in 10 seconds"),
        _schedule("when the cows come home"),
        _schedule("in 2 hours", timezone="Mars/Olympus_Mons"),
        _schedule("in 2 hours", note="   "),
        _schedule("2020-01-01T09:00"),
        _schedule("in 400 days"),
        send("I could not set it."),
    )
    events = await collect(service.chat(user("alice"), "remind me"))
    results = [e for e in events if isinstance(e, FunctionResult) and e.name == "schedule_wakeup"]
    assert [r.ok for r in results] == [False] * 6
    assert "at least 1 minute ahead" in results[0].result
    assert "Could not read the time" in results[1].result and "in 2 hours" in results[1].result
    assert "Unknown time zone" in results[2].result and "Europe/Paris" in results[2].result
    assert "note is empty" in results[3].result
    assert "in the past" in results[4].result
    assert "more than a year ahead" in results[5].result
    assert await _pending(service) == []

    agent_id, _ = await service.agent_id(user("alice"))
    now = utcnow()
    for n in range(wakeups.MAX_PENDING):
        await service.engine.db.write(partial(wakeups.add_reminder, agent_id=agent_id, due_at=now + (n + 1) * HOUR,
                                              note=f"note {n}", now=now))
    model.script(_schedule("in 3 days"), send("You have too many."))
    events = await collect(service.chat(user("alice"), "remind me again"))
    [refused] = [e for e in events if isinstance(e, FunctionResult) and e.name == "schedule_wakeup"]
    assert not refused.ok and "20 pending reminders" in refused.result and "/reminders" in refused.result


async def test_the_user_time_zone_is_kept_and_used(service, model, user):
    model.script(_schedule("tomorrow 9:00", timezone="Europe/Paris"), send("Set."))
    await collect(service.chat(user("alice"), "remind me tomorrow at 9 to stretch, I'm in Paris"))
    paris = ZoneInfo("Europe/Paris")
    [row] = await _pending(service)
    local = row.due_at.replace(tzinfo=UTC).astimezone(paris)
    assert (local.hour, local.minute) == (9, 0)
    assert local.date() == (datetime.now(paris) + timedelta(days=1)).date()
    # Later times without a zone are read in the kept one.
    model.script(_schedule("tomorrow 10:00", note="sleep"), send("Set."))
    await collect(service.chat(user("alice"), "and to sleep"))
    [_, later] = await _pending(service)
    assert later.due_at.replace(tzinfo=UTC).astimezone(paris).strftime("%H:%M") == "10:00"
    listed = await service.reminders(user("alice"))
    assert listed[0].when.endswith("09:00 Europe/Paris") and listed[0].note == "stretch"


async def test_reminders_command_lists_and_cancels(service, model, user):
    await _remind(service, model, user, when="in 2 hours")
    out, err = io.StringIO(), io.StringIO()
    terminal = Terminal(service, user("alice"), out, err, io.StringIO())
    assert "/reminders" in HELP

    await terminal.command("/reminders")
    [reminder] = await service.reminders(user("alice"))
    assert f"{reminder.id}  {reminder.when}  stretch" in err.getvalue()

    await terminal.command("/reminders cancel 999")
    assert "no pending reminder 999" in err.getvalue()
    await terminal.command(f"/reminders cancel {reminder.id}")
    assert f"Cancelled reminder {reminder.id}" in err.getvalue()
    assert await service.reminders(user("alice")) == []
    await terminal.command("/reminders")
    assert err.getvalue().rstrip().endswith("No pending reminders.")
    # Another user cannot cancel it: reminders are per agent.
    await _remind(service, model, user, name="alice")
    [again] = await service.reminders(user("alice"))
    assert "no pending reminder" in await service.cancel_reminder(user("mallory"), again.id)
    assert out.getvalue() == ""


async def test_the_terminal_fires_what_fell_due_while_it_was_closed(service, model, user):
    model.script(send("Welcome back."))
    await collect(service.login(user("alice")))
    agent_id, _ = await service.agent_id(user("alice"))
    past = utcnow() - HOUR
    await service.engine.db.write(lambda s: s.add(
        WakeupRow(agent_id=agent_id, kind="reminder", due_at=past, note="water the plants", created_at=past)
    ))
    fired = threading.Event()

    class Input(io.StringIO):
        def readline(self, *_: object) -> str:  # the user types nothing until the reminder has shown
            fired.wait(20)
            return ""

    out, err = io.StringIO(), io.StringIO()
    terminal = Terminal(service, user("alice"), out, err, Input())
    shown = terminal.deliver

    async def deliver(agent_id: int, events: AsyncIterator[Event]) -> None:
        await shown(agent_id, events)
        fired.set()

    terminal.deliver = deliver  # type: ignore[method-assign]
    model.script(send("Hello again!"), send("Don't forget to water the plants."))
    await asyncio.wait_for(terminal.run(None, None), 30)
    assert fired.is_set()
    assert out.getvalue().splitlines() == ["Hello again!", "Don't forget to water the plants."]
    assert "water the plants" in _last_event(model)["message"]


def test_times_are_read_in_the_user_zone():
    now = datetime(2025, 3, 10, 12, 0)  # naive UTC
    utc, paris = ZoneInfo("UTC"), ZoneInfo("Europe/Paris")
    assert wakeups.parse_when("in 2 hours", now, utc) == now + 2 * HOUR
    assert wakeups.parse_when("in 1 hour and 30 minutes", now, utc) == now + 90 * MINUTE
    assert wakeups.parse_when("in half an hour", now, utc) == now + 30 * MINUTE
    assert wakeups.parse_when("in an hour", now, utc) == now + HOUR
    assert wakeups.parse_when("in 2h, 5m", now, utc) == now + 125 * MINUTE
    assert wakeups.parse_when("In 3 days", now, utc) == now + timedelta(days=3)
    assert wakeups.parse_when("tomorrow 9:00", now, paris) == datetime(2025, 3, 11, 8, 0)
    assert wakeups.parse_when("tomorrow at 9am", now, utc) == datetime(2025, 3, 11, 9, 0)
    assert wakeups.parse_when("today 18:30", now, paris) == datetime(2025, 3, 10, 17, 30)
    assert wakeups.parse_when("9:00", now, utc) == datetime(2025, 3, 11, 9, 0)  # the next 9:00
    assert wakeups.parse_when("2025-03-12T10:00", now, paris) == datetime(2025, 3, 12, 9, 0)
    assert wakeups.parse_when("2025-03-12T10:00Z", now, paris) == datetime(2025, 3, 12, 10, 0)
    for bad in ("someday", "in 2 fortnights", "tomorrow 25:00", ""):
        with pytest.raises(wakeups.WakeupRefused, match="Could not read the time"):
            wakeups.parse_when(bad, now, utc)


async def test_the_run_loop_wakes_early_for_a_wake_up_scheduled_in_this_process(service, model, user):
    later = utcnow() + 3 * HOUR  # the loop's clock: by then the reminder is due
    delivered = asyncio.Event()
    inbox = Inbox()

    async def deliver(agent_id: int, events: AsyncIterator[Event]) -> None:
        await inbox(agent_id, events)
        delivered.set()

    # Polling only every hour: without the early wake the reminder would wait that long.
    scheduler = Scheduler(service, deliver, clock=lambda: later, poll_seconds=3600)
    scheduler.start()
    try:
        await asyncio.sleep(0)  # the loop's first tick: nothing is due yet
        model.script(_schedule("in 2 hours"), send("Sure."), send("Stretch time!"))  # the chat's, then the wake's
        await collect(service.chat(user("alice"), "remind me in 2 hours to stretch"))
        await asyncio.wait_for(delivered.wait(), 20)
        assert inbox.said() == ["Stretch time!"]
    finally:
        await scheduler.stop()

