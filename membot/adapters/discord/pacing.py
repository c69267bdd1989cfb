"""The bot's share of Discord's global limit (a number of requests a second for the whole bot; interaction
responses and follow-ups are apart), counted where requests really leave: discord.py's HTTP session announces
each one before sending it (aiohttp request tracing), and it waits here while the last second is full. So
many users' replies finishing at once go as fast as Discord allows, whatever else the bot is sending (the
monologue, typing indicators, draft edits), and none meets a global 429: its retry_after costs about a second,
and Discord bans bots that keep meeting them.

Requests that can be left out (typing indicators, draft edits; `OptionalBudget`) are skipped, and those that
can wait (the monologue; `spare`) wait, once a fifth of the second is spent: they would only delay the
replies behind them."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import aiohttp
import discord.http
import yarl

from membot.adapters.live_reply import Budget

#: Discord's global limit: requests a second for the whole bot.
GLOBAL_LIMIT = 50
#: The second it is counted over, plus a little for requests that reach Discord closer together than they left.
GLOBAL_WINDOW = 1.05
#: Paths Discord does not count in the global limit: interaction callbacks and the interaction webhooks.
_EXEMPT = ("/interactions/", "/webhooks/")


class GlobalPacer:
    """Every request to Discord's API that counts toward the global limit, at the moment it is sent; the
    sender waits while `limit` went in the last `window` seconds. Attach with `trace()` (discord.Client's
    `http_trace`)."""

    def __init__(self, limit: int = GLOBAL_LIMIT, window: float = GLOBAL_WINDOW) -> None:
        self.sent = Budget(limit, window)
        #: Requests kept free for those that must go: others wait or are skipped while fewer are. Four fifths, not
        #: half: when many replies finish at once, typing indicators and draft edits sent in the same second
        #: only delay the last of them (measured in bench/README.md, platform).
        self.keep = limit * 4 // 5

    @staticmethod
    def counts(url: yarl.URL) -> bool:
        """Whether a request to `url` is under the global limit: Discord's API (wherever MEMBOT_DISCORD_API_URL
        points it), not the CDN's files nor the gateway, and not interactions."""
        base = yarl.URL(discord.http.Route.BASE)
        path = url.path
        return (url.host, url.port) == (base.host, base.port) and path.startswith(base.path) and \
            not any(part in path for part in _EXEMPT)

    def room(self, now: float) -> int:
        """Requests that could go now without waiting."""
        return self.sent.room(now)

    def spare_now(self, now: float) -> bool:
        """Whether more than `keep` requests could go now: room for one that can be left out or can wait."""
        return self.room(now) > self.keep

    async def spare(self) -> None:
        """Wait until `spare_now`: for posts that can wait (the monologue), so that they leave the limit to
        those someone is waiting for."""
        while True:
            wait = self.sent.until(time.monotonic(), self.keep + 1)
            if wait <= 0:
                return
            await asyncio.sleep(max(wait, 0.001))

    def trace(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()

        async def starting(_: aiohttp.ClientSession, __: SimpleNamespace, params: aiohttp.TraceRequestStartParams,
                           ) -> None:
            if self.counts(params.url):
                await self.sent.take()

        config.on_request_start.append(starting)
        return config


class OptionalBudget(Budget):
    """Typing indicators and draft edits of the whole bot: at most `limit` in `window` seconds, and only while
    the pacer has some to spare (the rest is for replies, the monologue, commands). Spent when one is sent;
    the pacer counts it again as the request it is."""

    def __init__(self, limit: int, window: float, pacer: GlobalPacer) -> None:
        super().__init__(limit, window)
        self.pacer = pacer

    def free(self, now: float) -> bool:
        return super().free(now) and self.pacer.spare_now(now)

    def until(self, now: float, room: int = 1) -> float:
        return max(super().until(now, room), self.pacer.sent.until(now, self.pacer.keep + 1))
