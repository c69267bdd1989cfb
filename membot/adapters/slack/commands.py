"""Slash commands: /attach <source>, /detach <source>, /persona <name>, /memory [@user], /cancel.

Each listener acks first (Slack wants an answer within 3 seconds; the work may take longer), then answers
privately through the command's response_url (`respond`, ephemeral): unlike chat.postEphemeral it works in
any conversation, including ones the bot is not a member of. Someone the operator's allow-lists (bot/access.py)
do not admit gets one private refusal instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from membot.adapters.slack import memory_files
from membot.adapters.slack.people import PLATFORM, People, origin
from membot.adapters.slack.posting import Place, Poster, open_im
from membot.adapters.slack.render import escape, memory_blocks, plain_text
from membot.bot.access import AccessPolicy, not_open_text
from membot.bot.errors import QuotaReached
from membot.bot.identity import UserRef
from membot.bot.service import BotService, CommandError
from membot.bot.views import EXPORT_NOTE, forget_warning

log = logging.getLogger(__name__)

MEMORY_USAGE = "Usage: `/memory` for your agent's memory, or `/memory @someone` (the bot's operators only) for theirs."
NO_SOURCES = "none yet (share a PDF, text or Markdown file with me)"
FAILED = "Sorry, something went wrong running that command. Nothing was changed; please try again."


async def private(respond: AsyncRespond, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
    """An answer only the person who ran the command sees."""
    try:
        await respond(text=escape(text) if blocks is None else text, blocks=blocks, response_type="ephemeral")
    except Exception:  # a lost answer is logged; it must not look like the command failed
        log.exception("response_url post failed")


@asynccontextmanager
async def answering(respond: AsyncRespond, command: str) -> AsyncIterator[None]:
    """Whatever goes wrong inside (after the ack) becomes a private, readable answer."""
    try:
        yield
    except (CommandError, QuotaReached) as exc:
        await private(respond, str(exc))
    except Exception:
        log.exception("%s failed", command)
        await private(respond, FAILED)


class Commands:
    def __init__(
        self, service: BotService, poster: Poster, people: People, access: AccessPolicy | None = None
    ) -> None:
        self.service = service
        self.poster = poster
        self.people = people
        self.access = access or AccessPolicy()  # none given: no allow-lists, open to everyone

    async def _refused(self, command: dict[str, Any], respond: AsyncRespond) -> bool:
        """True (and the user told so, privately) when the allow-lists do not admit them where they typed it."""
        user_id = str(command["user_id"])
        channel = str(command.get("channel_id") or "")
        if self.access.allows(origin(str(command.get("team_id") or ""), user_id, channel)):
            return False
        log.info("Slack: refused %s from user %s in %s: not on the allow-lists", command.get("command"), user_id,
                 channel)
        await private(respond, not_open_text(PLATFORM))
        return True

    async def _requester(self, client: AsyncWebClient, command: dict[str, Any]) -> UserRef:
        return await self.people.user(client, str(command.get("team_id") or ""), str(command["user_id"]))

    async def attach(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        await ack()
        if await self._refused(command, respond):
            return
        async with answering(respond, "/attach"):
            user = await self._requester(client, command)
            name = plain_text(str(command.get("text") or ""))
            if not name:
                names = ", ".join(s.name for s in await self.service.sources(user)) or NO_SOURCES
                await private(respond, f"Usage: /attach <source>. Sources here: {names}.")
                return
            note, events = await self.service.attach(user, name)
            await private(respond, note)
            # The agent's reaction goes to the user's DM: it is conversation, and an ephemeral reply vanishes.
            await self.poster.deliver(client, Place(await self._dm(client, user.user_id)), user.user_id, events)

    async def detach(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        await ack()
        if await self._refused(command, respond):
            return
        name = plain_text(str(command.get("text") or ""))
        if not name:
            await private(respond, "Usage: /detach <source>, a source attached with /attach.")
            return
        async with answering(respond, "/detach"):
            await private(respond, await self.service.detach(await self._requester(client, command), name))

    async def persona(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        await ack()
        if await self._refused(command, respond):
            return
        name = plain_text(str(command.get("text") or ""))
        if not name:
            await private(respond, f"Usage: /persona <name>. Personas: {', '.join(self.service.personas())}.")
            return
        async with answering(respond, "/persona"):
            await private(respond, await self.service.set_persona(await self._requester(client, command), name))

    async def memory(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        await ack()
        if await self._refused(command, respond):
            return
        arg = str(command.get("text") or "").strip()
        if arg.split(maxsplit=1)[:1] == ["export"]:
            await self.export_memory(command, respond, client, arg[len("export"):].strip())
            return
        async with answering(respond, "/memory"):
            requester = await self._requester(client, command)
            # Only an operator may name someone else: checked before anything about them is read.
            target = await memory_files.target(self.people, client, requester, arg, MEMORY_USAGE, "see")
            report = await self.service.memory(requester, target, is_admin=target is not None)
            owner = (target or requester).display_name
            await private(respond, f"Memory of {escape(owner)}", memory_blocks(report, owner))

    async def cancel(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        await ack()
        if await self._refused(command, respond):
            return
        async with answering(respond, "/cancel"):
            await private(respond, await self.service.cancel(await self._requester(client, command)))

    async def reminders(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        """`/reminders [cancel N]`: the pending reminders, or one cancelled, privately."""
        await self._answer_text(ack, command, respond, client, "/reminders", self.service.reminders_command)

    async def heartbeats(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        """`/heartbeats [on|off]`: the user's timed heartbeats, switched or shown, privately."""
        await self._answer_text(ack, command, respond, client, "/heartbeats", self.service.heartbeats_command)

    async def _answer_text(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient, name: str,
        run: Callable[[UserRef, str], Awaitable[str]],
    ) -> None:
        """A command whose answer is the service's text for the user and the command's argument."""
        await ack()
        if await self._refused(command, respond):
            return
        arg = plain_text(str(command.get("text") or ""))
        async with answering(respond, name):
            await private(respond, await run(await self._requester(client, command), arg))

    async def _dm(self, client: AsyncWebClient, user_id: str) -> str:
        # Posting to a user id also lands in the bot's DM with them (the app's Messages tab).
        return await open_im(client, user_id) or user_id

    # ----- memory users own: /memory export, /forget (see memory_files.py) ----------------------------------

    async def export_memory(
        self, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient, arg: str
    ) -> None:
        """`/memory export [@user]`: the file goes to the requester's IM with the bot; the command says so."""
        async with answering(respond, "/memory export"):
            requester = await self._requester(client, command)
            target = await memory_files.target(self.people, client, requester, arg, memory_files.EXPORT_USAGE,
                                               "export")
            name, raw = await self.service.export_memory(requester, target, is_admin=target is not None)
            whose = "your agent holds" if target is None else f"the agent of {target.display_name} holds"
            channel = await self._dm(client, requester.user_id)
            await memory_files.upload(client, channel, name, raw, EXPORT_NOTE.format(whose=whose))
            await private(respond, f"I sent {name} to our direct messages; only you can see it there.")

    async def forget(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        """`/forget [@user]` says what it would delete; `/forget [@user] confirm` deletes it."""
        await ack()
        if await self._refused(command, respond):
            return
        arg, confirmed = memory_files.split_confirm(str(command.get("text") or ""))
        async with answering(respond, "/forget"):
            requester = await self._requester(client, command)
            target = await memory_files.target(self.people, client, requester, arg, memory_files.FORGET_USAGE,
                                               "delete")
            if not confirmed:
                whose = "your agent" if target is None else f"the agent of {target.display_name}"
                again = "/forget confirm" if target is None else f"/forget {target.user_id} confirm"
                await private(respond, forget_warning(whose, "`/memory export`", f"To go ahead: `{again}`"))
                return
            await private(respond, await self.service.forget(requester, target, is_admin=target is not None))
