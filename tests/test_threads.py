"""Conversation threads in SQL (bot/threads.py): known to every process, forgotten with the user's agent."""

from __future__ import annotations

import pytest

from membot.agent.store.db import Database
from membot.bot.threads import Threads

pytestmark = pytest.mark.both_databases


async def test_a_followed_thread_is_known_to_every_process_and_forgotten_with_its_user(database_url):
    one, two = await Database.open(database_url), await Database.open(database_url)
    try:
        here, there = Threads(one), Threads(two)
        await here.follow("slack", "T1/C1/111.1", "U1")
        await here.follow("slack", "T1/C1/111.1", "U1")  # again: no error, no second row
        assert await there.follows("slack", "T1/C1/111.1", "U1")
        assert not await there.follows("slack", "T1/C1/111.1", "U2")  # others in the thread still mention
        assert not await there.follows("discord", "T1/C1/111.1", "U1")
        await there.forget_user("slack", "U1")
        assert not await Threads(one).follows("slack", "T1/C1/111.1", "U1")
    finally:
        await one.close()
        await two.close()
