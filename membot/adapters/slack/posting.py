"""Where a step's events go: visible ones to the place the user asked, the monologue to the private log
channel (or the process log when there is none), never the other way round."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from membot.adapters.slack.render import escape, monologue_text, split_message, tagged
from membot.agent.events import Event

log = logging.getLogger(__name__)
monologue_log = logging.getLogger("membot.adapters.slack.monologue")


@dataclass(frozen=True)
class Place:
    """A channel, and the thread in it when the conversation is threaded."""

    channel: str
    thread_ts: str | None = None


class Poster:
    def __init__(self, monologue_channel: str | None) -> None:
        self.monologue_channel = monologue_channel

    async def say(self, client: AsyncWebClient, place: Place, text: str) -> None:
        """Post text (escaped, split at Slack's length) to a place. A failed post is logged, not raised:
        the agent's step is committed already, and one lost post must not stop the rest."""
        for piece in split_message(escape(text)):
            await self._post(client, place, piece)

    async def _post(self, client: AsyncWebClient, place: Place, mrkdwn: str) -> None:
        try:
            await client.chat_postMessage(channel=place.channel, text=mrkdwn, thread_ts=place.thread_ts)
        except SlackApiError as exc:
            log.error("chat.postMessage to %s failed: %s", place.channel, exc.response.get("error", exc))

    async def deliver(
        self, client: AsyncWebClient, place: Place, user_id: str, events: AsyncIterator[Event]
    ) -> None:
        """Run a step's events through: each visible message is posted as it comes; the monologue is
        collected and posted once at the end of the step, so the log channel gets one post per step."""
        monologue: list[str] = []
        try:
            async for event in events:
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
        await self.log(client, user_id, monologue)

    async def log(self, client: AsyncWebClient, user_id: str, lines: list[str]) -> None:
        if not lines:
            return
        if not self.monologue_channel:
            for line in lines:
                monologue_log.info("%s: %s", user_id, line)
            return
        text = "\n".join(tagged(user_id, line) for line in lines)
        for piece in split_message(text):
            await self._post(client, Place(self.monologue_channel), piece)
