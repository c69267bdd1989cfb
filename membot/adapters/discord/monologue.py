"""Where the agents' inner monologue goes: the private channel DISCORD_MONOLOGUE_CHANNEL_ID, each line
tagged with whose agent it was; without one (or when the bot cannot post there) the log. Never the user."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import discord

from membot.adapters.discord.render import monologue_tag, split_message
from membot.bot.identity import UserRef

log = logging.getLogger(__name__)

#: After the channel fails (gone, no permission), the monologue goes to the log for this long before the
#: channel is tried again, doubling up to RETRY_MAX: a wrong channel id must not cost a REST call per step.
RETRY_FIRST = 60.0
RETRY_MAX = 3600.0


class Monologue:
    def __init__(self, client: discord.Client, channel_id: int | None) -> None:
        self.client = client
        self.channel_id = channel_id
        self._channel: discord.abc.Messageable | None = None
        self._warned = False
        self._retry_at = 0.0
        self._retry_after = RETRY_FIRST

    async def _resolve(self) -> discord.abc.Messageable | None:
        if self.channel_id is None or time.monotonic() < self._retry_at:
            return None
        if self._channel is None:
            channel = self.client.get_channel(self.channel_id)
            if channel is None:
                try:
                    channel = await self.client.fetch_channel(self.channel_id)
                except (discord.HTTPException, discord.InvalidData) as exc:
                    self._warn(f"cannot open it ({exc})")
                    return None
            if not isinstance(channel, discord.abc.Messageable):
                self._warn("it is not a text channel")
                return None
            self._channel = channel
        return self._channel

    def _warn(self, why: str) -> None:
        """The channel failed: back off, and say so once (not for every message)."""
        self._retry_at = time.monotonic() + self._retry_after
        self._retry_after = min(self._retry_after * 2, RETRY_MAX)
        if not self._warned:
            self._warned = True
            log.warning("DISCORD_MONOLOGUE_CHANNEL_ID %s: %s; the monologue goes to the log", self.channel_id, why)

    async def post(self, who: UserRef, lines: Sequence[str]) -> None:
        """One batch (a step's worth) of monologue lines for `who`'s agent."""
        if not lines:
            return
        channel = await self._resolve()
        if channel is not None:
            tag = monologue_tag(who.display_name, who.user_id)
            try:
                for part in split_message("\n".join(f"{tag} {line}" for line in lines)):
                    await channel.send(part, allowed_mentions=discord.AllowedMentions.none())
                self._retry_after = RETRY_FIRST
                return
            except discord.HTTPException as exc:
                self._warn(f"posting failed ({exc})")
        for line in lines:
            log.info("%s (%s) %s", who.display_name, who.user_id, line)
