"""Where the agents' inner monologue goes: the private channel DISCORD_MONOLOGUE_CHANNEL_ID, each line
tagged with whose agent it was; without one (or when the bot may not post there) the log. Never the user.
Lines go through a background queue (membot.adapters.monologue_queue), so posting never slows a reply."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import discord

from membot.adapters.discord.pacing import GlobalPacer
from membot.adapters.discord.render import MESSAGE_LIMIT, monologue_tag, split_message, units
from membot.adapters.monologue_queue import DRAIN_SECONDS, Line, MonologueQueue, RateLimited, Refused
from membot.bot.identity import UserRef

log = logging.getLogger(__name__)

ADVICE = (
    "Set DISCORD_MONOLOGUE_CHANNEL_ID to a text channel the bot can see and post in (View Channel and Send "
    "Messages), or unset it to keep the monologue in the log."
)

#: Seconds between posts: Discord's 5 posts per 5 s in a channel, spread out. In a burst of 5 they would take 5
#: of the bot's global limit at once, just when many replies may need it.
POST_INTERVAL = 1.0


class Monologue:
    def __init__(self, client: discord.Client, channel_id: int | None, pacer: GlobalPacer | None = None) -> None:
        """`pacer`: the bot's global limit; each post waits until it has some to spare (replies go first)."""
        self.client = client
        self.channel_id = channel_id
        self.pacer = pacer
        self._channel: discord.abc.Messageable | None = None
        self.queue: MonologueQueue | None = None
        if channel_id is not None:
            self.queue = MonologueQueue(
                self._send, limit=MESSAGE_LIMIT, measure=units, name=f"DISCORD_MONOLOGUE_CHANNEL_ID {channel_id}",
                advice=ADVICE, logger=log, interval=POST_INTERVAL,
            )

    async def post(self, who: UserRef, lines: Sequence[str], where: str = "") -> None:
        """Queue one batch (a step's worth) of monologue lines for `who`'s agent; returns at once. `where`: the
        step's place (a DM's lines are tagged so, for operators who read both)."""
        tag = monologue_tag(who.display_name, who.user_id) + (f" [{where}]" if where else "")
        entries = [Line(f"{tag} {line}", f"{who.display_name} ({who.user_id}) {line}") for line in lines]
        if self.queue is not None:
            self.queue.put(entries)
            return
        for entry in entries:
            log.info("%s", entry.plain)

    async def close(self, timeout: float = DRAIN_SECONDS) -> None:  # noqa: ASYNC109 - a bound, not a deadline
        """Post what is queued (bounded), log the rest. Before the client's HTTP session closes."""
        if self.queue is not None:
            await self.queue.close(timeout)

    async def _resolve(self) -> discord.abc.Messageable:
        if self._channel is None:
            assert self.channel_id is not None
            channel = self.client.get_channel(self.channel_id)
            if channel is None:
                try:
                    channel = await self.client.fetch_channel(self.channel_id)
                except (discord.Forbidden, discord.NotFound, discord.InvalidData) as exc:
                    raise Refused(f"cannot open it ({exc})") from exc
            if not isinstance(channel, discord.abc.Messageable):
                raise Refused("it is not a text channel")
            self._channel = channel
        return self._channel

    async def _send(self, text: str) -> None:
        """One coalesced post (split only if a single line is over Discord's limit). discord.py already
        waits out 429s and per-channel buckets; what it gives up on comes back as RateLimited."""
        channel = await self._resolve()
        if self.pacer is not None:
            await self.pacer.spare()
        try:
            for part in split_message(text):
                await channel.send(part, allowed_mentions=discord.AllowedMentions.none())
        except discord.RateLimited as exc:
            raise RateLimited(exc.retry_after) from exc
        except (discord.Forbidden, discord.NotFound) as exc:
            self._channel = None  # gone or closed to us: look it up afresh next time
            raise Refused(f"posting was refused ({exc})") from exc
        except discord.HTTPException as exc:
            if exc.status == 429:
                raise RateLimited(_retry_after(exc)) from exc
            raise


def _retry_after(exc: discord.HTTPException) -> float:
    """Seconds to wait after a 429 discord.py did not handle itself (one without Discord's headers)."""
    headers = getattr(exc.response, "headers", None) or {}
    for name in ("Retry-After", "X-RateLimit-Reset-After"):
        try:
            return float(headers[name])
        except (KeyError, TypeError, ValueError):
            continue
    return 1.0
