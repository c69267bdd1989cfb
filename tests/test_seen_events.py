"""A platform event is taken by one process of the bot only, even when its redelivery reaches another."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from membot.adapters.slack.dedupe import Seen
from membot.agent.store.schema import SeenEventRow, utcnow
from membot.agent.store.seen import KEEP, claim, forget_old
from membot.bot.service import BotService

pytestmark = pytest.mark.both_databases


async def test_two_processes_take_an_event_once(settings, service):
    other = await BotService.open(settings)
    try:
        assert await service.claim_event("slack:Ev1")
        assert not await other.claim_event("slack:Ev1")
        assert not await service.claim_event("slack:Ev1")
        assert await other.claim_event("slack:Ev2")
    finally:
        await other.close()


async def test_keys_older_than_redeliveries_are_forgotten(db):
    now = utcnow()
    await db.write(lambda s: claim(s, "old", now - KEEP - timedelta(minutes=1)))
    await db.write(lambda s: claim(s, "recent", now - timedelta(minutes=5)))
    assert await db.write(lambda s: forget_old(s, now)) == 1
    assert await db.read(lambda s: s.scalar(select(func.count()).select_from(SeenEventRow))) == 1
    assert await db.write(lambda s: claim(s, "old", now))  # forgotten: a (very late) redelivery is new again


async def test_a_slack_redelivery_that_reaches_another_process_is_dropped_there(settings, service):
    other = await BotService.open(settings)
    try:
        here = Seen(shared=lambda key: service.claim_event(f"slack:{key}"))
        there = Seen(shared=lambda key: other.claim_event(f"slack:{key}"))
        assert await here.claim("event:Ev9")
        assert not await there.claim("event:Ev9")  # never seen by that process, taken by this one
        assert await there.claim("event:Ev10") and not await here.claim("event:Ev10")
    finally:
        await other.close()


async def test_a_failed_shared_claim_handles_the_event_rather_than_losing_it():
    async def broken(key: str) -> bool:
        raise ConnectionError("database down")

    seen = Seen(shared=broken)
    assert await seen.claim("event:Ev1")
    assert not await seen.claim("event:Ev1")  # this process still remembers it
