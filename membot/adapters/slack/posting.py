"""Where a step's events go: visible ones to the place the user asked, the monologue to the private log
channel (or the process log when there is none), never the other way round. The monologue goes through
a background queue (membot.adapters.monologue_queue): posting it never slows a reply."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from membot.adapters.live_reply import Budgets, LiveReplies, LiveReply
from membot.adapters.monologue_queue import DRAIN_SECONDS, Line, MonologueQueue, RateLimited, Refused
from membot.adapters.slack.render import MESSAGE_LIMIT, escape, monologue_text, split_message, tagged
from membot.agent.events import Event

log = logging.getLogger(__name__)
monologue_log = logging.getLogger("membot.adapters.slack.monologue")

#: Errors that mean the monologue channel itself is wrong for us (not a passing failure).
REFUSALS = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "missing_scope", "restricted_action",
    "not_allowed_token_type", "ekm_access_denied", "team_access_not_granted",
})
#: Monologue posts are spaced this far apart: chat.postMessage allows about one a second per channel, and
#: the client learns it only from a 429.
POST_INTERVAL = 1.0
#: How long a user's reply may wait out rate limits in all (beyond the client's own retries) before it is
#: given up and logged.
REPLY_PATIENCE = 120.0
#: Draft posts and edits a second per channel; edits a minute per workspace (chat.update is Tier 3: 50 and
#: more a minute, per workspace; a draft's first post is the post its reply makes anyway).
CHANNEL_DRAFTS, WORKSPACE_EDITS = 1, 40
ADVICE = (
    "Set SLACK_MONOLOGUE_CHANNEL to the id of a channel the bot is in (/invite it there; it needs the "
    "chat:write scope), or unset it to keep the monologue in the log."
)


@dataclass(frozen=True)
class Place:
    """A channel, and the thread in it when the conversation is threaded."""

    channel: str
    thread_ts: str | None = None


class Poster:
    def __init__(self, monologue_channel: str | None, *, stream: bool = False) -> None:
        self.monologue_channel = monologue_channel
        #: Show replies while they are written (adapters/live_reply.py): draft edits within about one post a
        #: second per channel, and within chat.update's per-workspace limit (Tier 3), with room left.
        self.stream = stream
        self.channel_drafts = Budgets(CHANNEL_DRAFTS, 1.0)
        self.workspace_drafts = Budgets(WORKSPACE_EDITS, 60.0, edits_only=True)
        self._client: AsyncWebClient | None = None  # the latest one handed to us; the queue posts with it
        self.monologue: MonologueQueue | None = None
        if monologue_channel:
            self.monologue = MonologueQueue(
                self._send_monologue, limit=MESSAGE_LIMIT, name=f"SLACK_MONOLOGUE_CHANNEL {monologue_channel}",
                advice=ADVICE, logger=monologue_log, interval=POST_INTERVAL,
            )

    async def say(self, client: AsyncWebClient, place: Place, text: str) -> None:
        """Post text (escaped, split at Slack's length) to a place. A failed post is logged, not raised:
        the agent's step is committed already, and one lost post must not stop the rest."""
        for piece in split_message(escape(text)):
            await self._post(client, place, piece)

    async def _post(
        self, client: AsyncWebClient, place: Place, mrkdwn: str, patience: float = REPLY_PATIENCE
    ) -> str | None:
        """One post of a reply; its ts, or None if it was not posted. Past the client's own retries, a rate limit
        is waited out here too (a user's reply is sent when Slack allows, never dropped for it), up to
        `patience` in all (none for a draft: a later draft or the final text goes instead)."""
        waited = 0.0
        while True:
            try:
                posted = await client.chat_postMessage(channel=place.channel, text=mrkdwn, thread_ts=place.thread_ts)
                return str(posted.get("ts") or "") or None
            except SlackApiError as exc:
                wait = retry_after(exc)
                if wait is None or waited + wait > patience:
                    log.error("chat.postMessage to %s failed: %s", place.channel, exc.response.get("error", exc))
                    return None
            await asyncio.sleep(wait)
            waited += wait

    def _live(self, client: AsyncWebClient, place: Place, workspace: str) -> LiveReply:
        """A reply shown while it is written, in `place`."""

        async def post(mrkdwn: str, final: bool) -> str | None:
            return await self._post(client, place, mrkdwn, REPLY_PATIENCE if final else 0.0)

        async def edit(ts: str | None, mrkdwn: str) -> None:
            if ts is not None:
                await client.chat_update(channel=place.channel, ts=ts, text=mrkdwn)

        async def delete(ts: str | None) -> None:
            if ts is not None:
                await client.chat_delete(channel=place.channel, ts=ts)

        budgets = [self.channel_drafts.of(place.channel), self.workspace_drafts.of(workspace)]
        return LiveReply(post, edit, delete, lambda text: split_message(escape(text)), budgets)

    async def deliver(
        self, client: AsyncWebClient, place: Place, user_id: str, events: AsyncIterator[Event], workspace: str = "",
        where: str = "",
    ) -> None:
        """Run a step's events through: each visible message is posted as it comes (shown while it is written,
        when streaming); the monologue is collected and queued once at the end of the step (the queue posts it
        in the background)."""
        monologue: list[str] = []
        drafts = LiveReplies(lambda: self._live(client, place, workspace)) if self.stream else None
        try:
            async for event in events:
                if drafts is not None and await drafts.handle(event):
                    continue
                if event.visible:
                    await self.say(client, place, getattr(event, "text", ""))
                    continue
                line = monologue_text(event)
                if line is not None:
                    monologue.append(line)
        finally:
            # The service's generator holds the agent's lock while it runs: if posting fails (or shutdown
            # cancels us) it must be closed now, not whenever the garbage collector gets to it.
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()
            if drafts is not None:
                await drafts.close()
        await self.log(client, user_id, monologue, where)

    async def log(self, client: AsyncWebClient, user_id: str, lines: list[str], where: str = "") -> None:
        """Queue a step's monologue for the log channel, tagged with the step's place; returns at once."""
        entries = [Line(tagged(user_id, line, where), f"{user_id}: {f'[{where}] ' if where else ''}{line}")
                   for line in lines]
        if self.monologue is None:
            for entry in entries:
                monologue_log.info("%s", entry.plain)
            return
        self._client = client
        self.monologue.put(entries)

    async def close(self, timeout: float = DRAIN_SECONDS) -> None:  # noqa: ASYNC109 - a bound, not a deadline
        """Post the queued monologue (bounded), log the rest."""
        if self.monologue is not None:
            await self.monologue.close(timeout)

    async def _send_monologue(self, text: str) -> None:
        """One coalesced post (split only if one line is over the limit). The app's client already waits
        out a 429 a couple of times; past that it comes back here as RateLimited, to wait and go again."""
        assert self._client is not None and self.monologue_channel is not None
        for piece in split_message(text):
            try:
                await self._client.chat_postMessage(channel=self.monologue_channel, text=piece)
            except SlackApiError as exc:
                error = str(exc.response.get("error", ""))
                wait = retry_after(exc)
                if wait is not None:
                    raise RateLimited(wait) from exc
                if error in REFUSALS:
                    raise Refused(f"Slack said {error}") from exc
                raise


async def open_im(client: AsyncWebClient, user_id: str) -> str | None:
    """The bot's IM with the user (conversations.open), or None when Slack refuses it (logged)."""
    try:
        return str((await client.conversations_open(users=user_id))["channel"]["id"]) or None
    except (SlackApiError, KeyError, TypeError) as exc:
        log.warning("conversations.open for %s failed: %s", user_id, exc)
        return None


def retry_after(exc: SlackApiError) -> float | None:
    """Seconds Slack asked to wait, for a rate-limited call; None for any other failure."""
    if exc.response.status_code != 429 and exc.response.get("error") != "ratelimited":
        return None
    return _retry_after(exc.response.headers)


def _retry_after(headers: dict[str, Any]) -> float:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return float(value[0] if isinstance(value, list) else value)
            except (TypeError, ValueError, IndexError):
                break
    return 1.0
