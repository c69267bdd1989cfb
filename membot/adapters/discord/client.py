"""The Discord client: messages in (a DM, or a mention in a guild channel) -> the sender's agent -> replies
out, plus the slash-command tree. It translates; the bot service does the rest."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import discord
from discord import app_commands

from membot.adapters.discord.commands import add_commands
from membot.adapters.discord.monologue import Monologue
from membot.adapters.discord.pacing import GLOBAL_LIMIT, GLOBAL_WINDOW, GlobalPacer, OptionalBudget
from membot.adapters.discord.people import PLATFORM, origin, person, said_in
from membot.adapters.discord.relay import Say, relay
from membot.adapters.discord.render import strip_mentions
from membot.adapters.discord.uploads import load_upload
from membot.adapters.live_reply import Budget, Budgets
from membot.agent.events import Event
from membot.bot.access import AccessPolicy, Origin, not_open_text
from membot.bot.errors import QuotaReached
from membot.bot.identity import UserRef
from membot.bot.service import BotService, CommandError, undelivered
from membot.bot.settings import Settings
from membot.bot.views import SORRY_ANSWERING

log = logging.getLogger(__name__)

GUILD_UPLOAD_HINT = "To load a file here, use /attach with the file (or send it to me in a DM)."
#: On shutdown, messages being answered get this long to finish before they are cancelled.
DRAIN_SECONDS = 10.0
DRAFT_EDITS, DRAFT_WINDOW = 3, 5.0
#: Typing indicators and draft edits the whole bot sends in a second: half of Discord's global limit, and
#: only while more than half of its second is free (pacing.py), leaving the rest to replies, the monologue and
#: commands, which must go.
OPTIONAL_PER_SECOND = 25
THREAD_NAME_CHARS = 80


def intents() -> discord.Intents:
    """Default intents (guilds, guild and DM messages) plus message content, which Discord counts as
    privileged: it must also be enabled for the bot in the Developer Portal."""
    wanted = discord.Intents.default()
    wanted.message_content = True
    return wanted


#: A reply quicker than this shows no typing indicator: each indicator is a request under Discord's global
#: limit (50 a second for the whole bot), and with many users at once they would delay the replies.
TYPING_DELAY = 1.0
#: Seconds between indicators while the agent works: Discord shows one for about 10 s, or until the bot posts.
TYPING_RENEW = 8.0


@asynccontextmanager
async def typing(
    channel: discord.abc.Messageable, budget: Budget, delay: float = TYPING_DELAY, renew: float = TYPING_RENEW
) -> AsyncIterator[None]:
    """The typing indicator while the agent works, once it has taken `delay`, sent again every `renew` seconds;
    each one only if the bot-wide `budget` of optional requests allows it then (else it is tried again a
    second later: it would only add to the wait for replies). discord.py's own `typing()` context renews
    without asking, so each indicator here is one request. A channel that refuses it does not stop the
    answer."""

    async def show() -> None:
        await asyncio.sleep(delay)
        while True:
            now = time.monotonic()
            if not budget.free(now):
                await asyncio.sleep(min(1.0, renew))
                continue
            budget.spend(now)
            try:
                await channel.typing()
            except discord.HTTPException as exc:
                log.debug("no typing indicator in %s: %s", channel, exc)
                return
            await asyncio.sleep(renew)

    indicator = asyncio.create_task(show())
    try:
        yield
    finally:
        indicator.cancel()
        await asyncio.gather(indicator, return_exceptions=True)


def global_share(limit: int, shards: tuple[list[int], int] | None) -> int:
    """This process's part of the bot's global `limit`: all of it unsharded, else its shards' share."""
    if shards is None:
        return limit
    ids, count = shards
    return max(1, limit * len(ids) // count)


class MembotClient(discord.Client):
    def __init__(
        self,
        service: BotService,
        settings: Settings,
        *,
        guild_ready_timeout: float = 2.0,
        drain_seconds: float = DRAIN_SECONDS,
        **options: Any,
    ) -> None:
        # `options`: more discord.Client options, such as a sharded client's shard_ids and shard_count.
        #: Every request under Discord's global limit waits its turn here, as it is sent. The limit is the bot's:
        #: a process running some of its shards takes their share of it.
        self.pacer = GlobalPacer(global_share(GLOBAL_LIMIT, settings.discord_shards()), GLOBAL_WINDOW)
        super().__init__(
            http_trace=self.pacer.trace(),
            intents=intents(),
            guild_ready_timeout=guild_ready_timeout,
            # An agent repeating "@everyone" or a role must not ping anyone; replying still notifies the
            # person the reply is for.
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=False, replied_user=True),
            **options,
        )
        self.service = service
        self.settings = settings
        self.max_upload_bytes = int(settings.max_upload_mb * 1024 * 1024)
        self.access = AccessPolicy.from_settings(settings)
        self.monologue = Monologue(self, settings.discord_monologue_channel_id, self.pacer)
        #: Draft edits per channel, within Discord's 5 posts per 5 s, with room left for other replies.
        self.drafts = Budgets(DRAFT_EDITS, DRAFT_WINDOW)
        #: Typing indicators and draft edits of the whole bot, when the global limit has room to spare.
        self.optional = OptionalBudget(OPTIONAL_PER_SECOND, 1.0, self.pacer)
        self.tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(self)
        add_commands(self.tree)
        self.drain_seconds = drain_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: dict[int, asyncio.Task[None]] = {}  # each user's latest message task
        self._closing = False

    async def on_ready(self) -> None:
        log.warning("Discord: connected as %s in %d guild(s)", self.user, len(self.guilds))

    # ----- messages --------------------------------------------------------------------------------------

    def _for_me(self, message: discord.Message) -> bool:
        me = self.user
        if self._closing or me is None or message.author.bot or message.author.id == me.id:
            return False
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return False  # joins, pins and other system messages
        if not (message.content.strip() or message.attachments):
            return False
        if message.guild is None:
            return isinstance(message.channel, discord.DMChannel)
        if self._mentions_me(message):
            return True
        if isinstance(message.channel, discord.Thread) and message.content.strip():
            return True  # answered if its author talks with the bot in this thread (checked in _answer)
        # In an open channel (MEMBOT_OPEN_CHANNELS) every message with words is; a file alone there (a picture
        # shared with the others) is not.
        return bool(message.content.strip()) and self.access.is_open(self._where(message).channel_id)

    async def _thread_for(self, message: discord.Message) -> discord.Thread | None | bool:
        """Threads (bot/threads.py): a mention in a thread makes its author's later messages there the bot's; a
        message there without one is answered only then (False: not for the bot). With MEMBOT_DISCORD_THREADS a
        mention in a channel opens a thread for the answer (returned); None: answer where the message is."""
        channel, author = message.channel, str(message.author.id)
        if message.guild is None or self.access.is_open(self._where(message).channel_id):
            return None
        if isinstance(channel, discord.Thread):
            if self._mentions_me(message):
                await self.service.threads.follow(PLATFORM, str(channel.id), author)
                return None
            return None if await self.service.threads.follows(PLATFORM, str(channel.id), author) else False
        if not self.settings.discord_threads:
            return None
        try:
            thread = await message.create_thread(name=_thread_name(message, self.user))
        except discord.HTTPException as exc:  # no permission to make threads here: answer in the channel
            log.warning("could not open a thread in channel %s: %s", channel.id, exc)
            return None
        await self.service.threads.follow(PLATFORM, str(thread.id), author)
        return thread

    def _mentions_me(self, message: discord.Message) -> bool:
        """A mention of the bot itself: @everyone and role pings are not addressed to it."""
        return self.user is not None and any(user.id == self.user.id for user in message.mentions)

    @staticmethod
    def _where(message: discord.Message) -> Origin:
        return origin(message.author, message.guild.id if message.guild else None, message.channel)

    def _refuse(self, message: discord.Message) -> None:
        """Not on the allow-lists: ignored in a shared channel (the bot must not argue in public); in a DM, one
        short private line saying so."""
        log.info("Discord: not answering user %s in channel %s: not on the allow-lists",
                 message.author.id, message.channel.id)
        if message.guild is None:
            task = asyncio.create_task(self._try(message.channel.send, not_open_text(PLATFORM)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def on_message(self, message: discord.Message) -> None:
        if not self._for_me(message):
            return
        if not self.access.allows(self._where(message)):
            if message.guild is None or self._mentions_me(message):  # a thread's chatter was not for the bot
                self._refuse(message)
            return
        # Each message in its own task, so a slow agent holds up only its own user. A user's messages are
        # answered one after the other in arrival order, uploads included (a question right after a file
        # must find the file loaded); nothing here awaits before the task is queued, so order holds.
        key = message.author.id
        task = asyncio.create_task(
            self._answer_after(self._last.get(key), message), name=f"discord-message-{message.id}"
        )
        self._last[key] = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(key, done))

    def _finished(self, key: int, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._last.get(key) is task:
            del self._last[key]

    async def _answer_after(self, previous: asyncio.Task[None] | None, message: discord.Message) -> None:
        if previous is not None:
            await asyncio.wait({previous})  # its outcome is its own; only its end matters here
        await self._answer(message)

    def _sayer(self, message: discord.Message) -> Say:
        """Replies in DMs are plain messages; in a channel the first part replies to the message."""
        replied = message.guild is None
        send = message.channel.send

        async def say(text: str) -> discord.Message:
            nonlocal replied
            if replied:
                return await send(text)
            replied = True
            return await send(text, reference=message.to_reference(fail_if_not_exists=False))

        return say

    async def _answer(self, message: discord.Message) -> None:
        assert self.user is not None
        user = person(message.author, message.guild.id if message.guild else None)
        names = {u.id: u.display_name for u in message.mentions}
        text = strip_mentions(message.content, self.user.id, names)
        say = self._sayer(message)
        try:
            thread = await self._thread_for(message)
        except Exception:  # the thread store failed: a mention is still answered where it was said
            log.exception("looking up the thread of message %s failed", message.id)
            thread = None if self._mentions_me(message) else False
        if thread is False:
            return
        if thread is not None:
            say = thread.send
        try:
            async with typing(thread or message.channel, self.optional):
                if message.guild is None:
                    for attachment in message.attachments:
                        await load_upload(
                            self.service, user, attachment, max_bytes=self.max_upload_bytes,
                            post=message.channel.send, after=lambda events: relay(events, say, self.monologue, user),
                        )
                elif message.attachments and self._mentions_me(message):
                    await say(GUILD_UPLOAD_HINT)
                if text:
                    channel = thread or message.channel
                    live = [self.drafts.of(str(channel.id)), self.optional] if self.settings.stream else None
                    said = said_in(message, thread)
                    await relay(self.service.chat(user, text, said), say, self.monologue, user, live,
                                "DM" if said.private else said.label)
        except CommandError as exc:
            await self._try(say, str(exc))
        except QuotaReached as exc:
            await self._tell_privately(message, str(exc))
        except Exception:
            log.exception("answering message %s from %s failed", message.id, message.author.id)
            await self._try(say, SORRY_ANSWERING)

    @staticmethod
    async def _try(say: Callable[[str], Awaitable[object]], text: str) -> None:
        try:
            await say(text)
        except discord.HTTPException as exc:
            log.warning("could not tell the user: %s", exc)

    async def _tell_privately(self, message: discord.Message, text: str) -> None:
        """A note for the sender alone (their quota is nobody else's business): in a DM, there; from a guild
        channel, in their DMs, or, when those are closed, a reply in the channel that pings only them."""
        if message.guild is None:
            await self._try(message.channel.send, text)
            return
        try:
            await message.author.send(text)
            return
        except discord.HTTPException as exc:
            log.info("could not DM user %s (%s); telling them in the channel", message.author.id, exc)
        only_them = discord.AllowedMentions(everyone=False, roles=False, users=[message.author], replied_user=True)

        async def reply(note: str) -> None:
            await message.channel.send(
                f"{message.author.mention} {note}", allowed_mentions=only_them,
                reference=message.to_reference(fail_if_not_exists=False),
            )

        await self._try(reply, text)

    async def deliver_privately(self, user: UserRef, events: AsyncIterator[Event]) -> None:
        """A step its user did not start (a reminder, a timed heartbeat): what it sends goes to their DMs. A user
        who closed their DMs costs one refused post, logged; the step's memory edits stand."""
        try:
            someone = self.get_user(int(user.user_id)) or await self.fetch_user(int(user.user_id))
            channel = someone.dm_channel or await someone.create_dm()
        except (discord.HTTPException, ValueError) as exc:
            log.warning("cannot open a DM with %s: %s", user.user_id, exc)
            await undelivered(events, f"{user.user_id} (no DM)")
            return
        await relay(events, channel.send, self.monologue, user)

    # ----- shutdown --------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop taking messages, let the ones in flight finish (bounded), then disconnect."""
        self._closing = True
        pending = {task for task in self._tasks if not task.done()}
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.drain_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.monologue.close()  # its queue drains (bounded) while the HTTP session is still open
        await super().close()


def _thread_name(message: discord.Message, me: discord.ClientUser | None) -> str:
    """The name of a thread opened for a conversation: its first words, without the mention."""
    names = {u.id: u.display_name for u in message.mentions}
    words = " ".join(strip_mentions(message.content, me.id if me else 0, names).split())
    return (words[:THREAD_NAME_CHARS] or f"Talk with {message.author.display_name}")[:100]
