"""What the parts of the bot service kept in modules of their own (source_commands.py, ownership.py) use of
BotService: its state and a few of its methods, declared here once and defined by BotService itself."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator

from membot.agent.engine import Engine
from membot.agent.events import Event
from membot.bot.identity import UserRef
from membot.bot.settings import Settings
from membot.bot.slots import KeyedSlots
from membot.bot.threads import Threads


class ServiceParts:
    engine: Engine
    settings: Settings
    threads: Threads
    _uploads: KeyedSlots
    _linked: OrderedDict[tuple[str, str, str], int]

    async def agent_id(self, user: UserRef, persona: str | None = None, human: str | None = None) -> tuple[int, bool]:
        """The user's agent, made on first contact: (agent id, created)."""
        raise NotImplementedError

    def _lock(self, agent_id: int) -> asyncio.Lock:
        raise NotImplementedError

    def _drop(self, agent_id: int) -> None:
        raise NotImplementedError

    def _remember(self, user: UserRef, agent_id: int) -> int:
        raise NotImplementedError

    def notify(self, agent_id: int, text: str) -> AsyncIterator[Event]:
        raise NotImplementedError
