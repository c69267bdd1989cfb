"""The bolt app: Slack events and commands in, BotService calls out, replies back to Slack.

Ack first, work after, in bolt's own idiom: the app runs with `process_before_response=False`, so bolt
acks an Events API request as soon as a listener matches and runs the listener in a task of its own; slash
command listeners call `ack()` first and the HTTP response goes out at that moment. Agent steps, downloads
and PDF parsing all happen after Slack has its 200.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    async_default_handlers,
)
from slack_sdk.web.async_client import AsyncWebClient

from membot.adapters.slack.commands import Commands
from membot.adapters.slack.dedupe import Seen
from membot.adapters.slack.inflight import InFlight
from membot.adapters.slack.people import PLATFORM, People, origin
from membot.adapters.slack.posting import Place, Poster, open_im
from membot.adapters.slack.render import escape, plain_text
from membot.adapters.slack.uploads import Uploads
from membot.agent.events import Event
from membot.agent.place import Place as Said
from membot.bot.access import AccessPolicy, not_open_text
from membot.bot.errors import QuotaReached
from membot.bot.identity import UserRef
from membot.bot.service import BotService, CommandError, undelivered
from membot.bot.settings import Settings
from membot.bot.views import SORRY_ANSWERING

log = logging.getLogger(__name__)

#: Message subtypes that are a person talking (or sharing a file); edits, deletions, joins, bot posts and
#: the rest are not for the agent.
HANDLED_SUBTYPES = {None, "file_share", "thread_broadcast"}
#: How long a `file_shared` event waits before it handles the file itself, so that the `message/file_share`
#: delivery of the same upload (which knows the message to thread under) normally wins the claim.
FILE_SHARED_GRACE = 2.0


def _team(context: AsyncBoltContext, body: dict[str, Any]) -> str:
    return str(context.team_id or body.get("team_id") or "")


class SlackAdapter:
    def __init__(
        self, service: BotService, settings: Settings, *, file_shared_grace: float = FILE_SHARED_GRACE
    ) -> None:
        if settings.slack_bot_token is None:
            raise ValueError("the Slack adapter needs SLACK_BOT_TOKEN")
        self.service = service
        self.settings = settings
        self.file_shared_grace = file_shared_grace
        self.seen = Seen(shared=lambda key: service.claim_event(f"slack:{key}"))
        self.inflight = InFlight()
        self.people = People(settings.slack_admin_ids)
        self.access = AccessPolicy.from_settings(settings)
        self.poster = Poster(settings.slack_monologue_channel, stream=settings.stream)
        self.uploads = Uploads(service, self.poster, self.people, self.seen, settings.max_upload_mb)
        self.commands = Commands(service, self.poster, self.people, self.access)
        self.app = self._build()

    def _client(self) -> AsyncWebClient:
        assert self.settings.slack_bot_token is not None
        # Rate-limited calls (HTTP 429) wait for Retry-After and go again instead of losing a reply.
        retries = [*async_default_handlers(), AsyncRateLimitErrorRetryHandler(max_retry_count=2)]
        extra: dict[str, Any] = (
            {"base_url": self.settings.slack_api_url} if self.settings.slack_api_url else {}
        )
        return AsyncWebClient(
            token=self.settings.slack_bot_token.get_secret_value(), retry_handlers=retries, **extra
        )

    @asynccontextmanager
    async def connections(self) -> AsyncIterator[None]:
        """Inside, every Web API call goes over one pool of kept-alive connections.

        Without a session of its own, slack_sdk opens one per call: a new connection to slack.com, and a TLS
        handshake, for every post and edit. bolt hands the app client's session to each request's client."""
        client = self.app.client
        client.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=client.timeout))
        try:
            yield
        finally:
            await client.session.close()

    async def deliver_privately(self, user: UserRef, events: AsyncIterator[Event]) -> None:
        """A step its user did not start (a reminder, a timed heartbeat): what it sends goes to their IM with the
        bot. An IM that cannot be opened costs one refused call, logged; the step's memory edits stand."""
        client = self.app.client
        channel = await open_im(client, user.user_id)
        if channel is None:
            await undelivered(events, f"{user.user_id} (no IM)")
            return
        await self.poster.deliver(client, Place(channel), user.user_id, events)

    def _build(self) -> AsyncApp:
        secret = self.settings.slack_signing_secret
        app = AsyncApp(
            name="membot",
            client=self._client(),
            # Socket Mode needs no secret (bolt skips verification there); an empty one fails every HTTP
            # request rather than trusting them. Passing "" also keeps bolt from reading the environment.
            signing_secret=secret.get_secret_value() if secret else "",
            process_before_response=False,
        )
        app.middleware(self._drop_redeliveries)
        track = self.inflight.track
        app.event("message")(track(self.on_message))
        app.event("app_mention")(track(self.on_mention))
        app.event("file_shared")(track(self.on_file_shared))
        for name in ("/attach", "/detach", "/persona", "/memory", "/cancel", "/reminders"):
            app.command(name)(track(getattr(self.commands, name[1:])))
        app.command("/heartbeats")(track(self.commands.heartbeats))
        app.command("/forget")(track(self.commands.forget))
        return app

    async def _drop_redeliveries(
        self, body: dict[str, Any], next_: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse | None:
        """Slack redelivers an event it thinks we missed (X-Slack-Retry-Num, same event_id): ack it and
        do nothing, or the agent would answer twice."""
        event_id = body.get("event_id")
        if body.get("type") == "event_callback" and event_id and not await self.seen.claim(f"event:{event_id}"):
            log.info("dropped redelivered Slack event %s", event_id)
            return BoltResponse(status=200, body="")
        return await next_()

    # ----- listeners (bolt injects arguments by name) ----------------------------------------------------

    async def on_message(
        self, event: dict[str, Any], context: AsyncBoltContext, client: AsyncWebClient, body: dict[str, Any]
    ) -> None:
        subtype = event.get("subtype")
        user_id = event.get("user")
        if event.get("bot_id") or subtype not in HANDLED_SUBTYPES or not user_id:
            return
        channel, ts = str(event["channel"]), str(event["ts"])
        team_id = _team(context, body)
        # Elsewhere than a DM the agent answers mentions (the app_mention event), anything in an open channel
        # (MEMBOT_OPEN_CHANNELS), and its user's messages in a thread where they talk with it (bot/threads.py);
        # a mention there comes as both events, and _converse answers it once.
        thread = event.get("thread_ts")
        converse = event.get("channel_type") == "im" or self.access.is_open(channel) or bool(
            thread and not channel.startswith("D")
            and await self.service.threads.follows(PLATFORM, _thread_key(team_id, channel, str(thread)), str(user_id))
        )
        if not (converse or subtype == "file_share"):
            return
        place = Place(channel, event.get("thread_ts"))
        if not await self._admitted(client, team_id, str(user_id), place, f"{channel}:{ts}"):
            return
        if subtype == "file_share":
            # Upload answers go in a thread under the file, tying each confirmation to its file.
            place = Place(channel, event.get("thread_ts") or ts)
            for file in event.get("files") or []:
                await self.uploads.handle(client, team_id, str(user_id), file, place)
        if not converse:
            return
        text = plain_text(str(event.get("text") or ""), context.bot_user_id)
        await self._converse(client, team_id, str(user_id), text, place, f"{channel}:{ts}")

    async def on_mention(
        self, event: dict[str, Any], context: AsyncBoltContext, client: AsyncWebClient, body: dict[str, Any]
    ) -> None:
        user_id = event.get("user")
        if event.get("bot_id") or not user_id:
            return
        channel, ts = str(event["channel"]), str(event["ts"])
        team_id = _team(context, body)
        # In a channel the answer is threaded under the mention, so the channel is not flooded; in a DM or an
        # open channel it goes where the message was, as the `message` event of the same message would put it.
        threaded = not channel.startswith("D") and not self.access.is_open(channel)
        place = Place(channel, event.get("thread_ts") or (ts if threaded else None))
        if not await self._admitted(client, team_id, str(user_id), place, f"{channel}:{ts}"):
            return
        if place.thread_ts and not channel.startswith("D"):
            # Their next messages in this thread need no mention.
            await self.service.threads.follow(PLATFORM, _thread_key(team_id, channel, place.thread_ts), str(user_id))
        text = plain_text(str(event.get("text") or ""), context.bot_user_id)
        await self._converse(client, team_id, str(user_id), text, place, f"{channel}:{ts}")

    async def on_file_shared(
        self, event: dict[str, Any], context: AsyncBoltContext, client: AsyncWebClient, body: dict[str, Any]
    ) -> None:
        user_id, file_id = event.get("user_id"), event.get("file_id") or (event.get("file") or {}).get("id")
        channel = event.get("channel_id")
        if not (user_id and file_id and channel) or user_id == context.bot_user_id:
            return
        team_id = _team(context, body)
        if not self.access.allows(origin(team_id, str(user_id), str(channel))):
            # Silently: in a DM the `message/file_share` of the same upload already said why.
            log.info("Slack: not loading a file from user %s in %s: not on the allow-lists", user_id, channel)
            return
        await asyncio.sleep(self.file_shared_grace)
        await self.uploads.shared(client, team_id, str(user_id), str(channel), str(file_id))

    async def _admitted(
        self, client: AsyncWebClient, team_id: str, user_id: str, place: Place, message_key: str
    ) -> bool:
        """Whether the allow-lists admit the user here. If not, a shared channel hears nothing (the bot must not
        argue in public); a DM gets one short answer, claimed like a message so that the same message coming
        as `message` and `app_mention` is answered once."""
        where = origin(team_id, user_id, place.channel)
        if self.access.allows(where):
            return True
        log.info("Slack: not answering user %s in %s: not on the allow-lists", user_id, place.channel)
        if where.is_dm and await self.seen.claim(f"message:{message_key}"):
            await self.poster.say(client, place, not_open_text(PLATFORM))
        return False

    async def _converse(
        self, client: AsyncWebClient, team_id: str, user_id: str, text: str, place: Place, message_key: str
    ) -> None:
        # One message can come as both `message` and `app_mention` (a mention in a DM): answer it once.
        if not text or not await self.seen.claim(f"message:{message_key}"):
            return
        try:
            user = await self.people.user(client, team_id, user_id)
            said = said_in(team_id, place)
            await self.poster.deliver(client, place, user_id, self.service.chat(user, text, said), team_id,
                                      "DM" if said.private else f"<#{place.channel}>")
        except CommandError as exc:  # e.g. a first contact with a misconfigured default persona
            await self.poster.say(client, place, str(exc))
        except QuotaReached as exc:
            await self._tell_privately(client, place, user_id, str(exc))
        except Exception:
            log.exception("answering message %s from %s failed", message_key, user_id)
            await self.poster.say(client, place, SORRY_ANSWERING)

    async def _tell_privately(self, client: AsyncWebClient, place: Place, user_id: str, text: str) -> None:
        """A note for the user alone (their quota is nobody else's business): in their DM a plain message,
        in a channel an ephemeral one."""
        if place.channel.startswith("D"):
            await self.poster.say(client, place, text)
            return
        try:
            await client.chat_postEphemeral(
                channel=place.channel, user=user_id, text=escape(text), thread_ts=place.thread_ts
            )
        except SlackApiError as exc:
            log.warning("chat.postEphemeral to %s in %s failed: %s", user_id, place.channel,
                        exc.response.get("error", exc))


def build_app(
    service: BotService, settings: Settings, *, file_shared_grace: float = FILE_SHARED_GRACE
) -> AsyncApp:
    """The bolt app for these settings, ready to be served over HTTP or Socket Mode."""
    return SlackAdapter(service, settings, file_shared_grace=file_shared_grace).app


def _thread_key(team_id: str, channel: str, thread_ts: str) -> str:
    return f"{team_id}/{channel}/{thread_ts}"


def said_in(team_id: str, place: Place) -> Said:
    """Where a message was said, for the agent (agent/place.py): an IM is private; a channel (a group DM too:
    others read it) is shared, with its thread, so the agent can tell conversations apart."""
    if place.channel.startswith("D"):
        return Said.direct("a direct message on Slack")
    key = f"slack:{team_id}/{place.channel}" + (f"/{place.thread_ts}" if place.thread_ts else "")
    label = f"the Slack channel <#{place.channel}>" + (", in a thread" if place.thread_ts else "")
    return Said.shared(key, label)
