"""The one posting path for an agent's events: visible messages to the user (split to Discord's limit),
everything else to the monologue, batched per step."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing

import discord

from membot.adapters.discord.monologue import Monologue
from membot.adapters.discord.render import monologue_line, split_message
from membot.agent.events import Event
from membot.bot.identity import UserRef

log = logging.getLogger(__name__)

#: Posts one message (at most 2,000 characters) where the user reads: a DM, a channel, an ephemeral
#: follow-up.
Say = Callable[[str], Awaitable[object]]


async def relay(events: AsyncIterator[Event], say: Say, monologue: Monologue, who: UserRef) -> None:
    lines: list[str] = []
    # aclosing: the service holds the agent's lock inside this generator; it must be closed even when
    # we stop early, or the agent would stay locked until garbage collection.
    async with aclosing(events) as stream:
        try:
            async for event in stream:
                if event.visible:
                    for part in split_message(getattr(event, "text", "")):
                        try:
                            await say(part)
                        except discord.HTTPException as exc:
                            # The step goes on (its memory edits are committed) even if Discord refused one post.
                            log.warning("could not post a reply for %s: %s", who.user_id, exc)
                elif (line := monologue_line(event)) is not None:
                    lines.append(line)
        finally:
            await monologue.post(who, lines)
