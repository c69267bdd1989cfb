"""Slash commands: /attach, /detach, /persona, /memory, /cancel. Each defers at once (private, "thinking…") and answers with
ephemeral follow-ups, so a slow agent or a big file never meets Discord's 3-second limit and nobody else
sees the answer. Errors become a clear private follow-up. Someone the operator's allow-lists (bot/access.py)
do not admit gets one private refusal instead, before anything is deferred or read.

The commands reach the service through `interaction.client` (the MembotClient), so a tree can be built
without one: `membot discord sync` registers them without opening any storage.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal, cast

import discord
from discord import app_commands

from membot.adapters.discord.operators import operator
from membot.adapters.discord.people import PLATFORM, origin, person
from membot.adapters.discord.relay import relay
from membot.adapters.discord.render import memory_embed, split_message
from membot.adapters.discord.uploads import load_upload
from membot.bot.access import not_open_text
from membot.bot.errors import QuotaReached
from membot.bot.service import CommandError

if TYPE_CHECKING:
    from membot.adapters.discord.client import MembotClient

log = logging.getLogger(__name__)

SORRY = "Sorry, something went wrong on my side. Please try again."
MAX_CHOICES = 25  # Discord's limit for autocomplete answers


def _bot(interaction: discord.Interaction) -> MembotClient:
    return cast("MembotClient", interaction.client)


async def private(interaction: discord.Interaction, text: str) -> None:
    for part in split_message(text):
        await interaction.followup.send(part, ephemeral=True)


@asynccontextmanager
async def answering(interaction: discord.Interaction) -> AsyncIterator[None]:
    """Defer first; whatever goes wrong inside becomes a private, readable follow-up."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        yield
    except (CommandError, QuotaReached) as exc:
        await private(interaction, str(exc))
    except Exception:
        log.exception("/%s failed", getattr(interaction.command, "name", "?"))
        await private(interaction, SORRY)


class NotOpen(app_commands.CheckFailure):
    """The operator's allow-lists do not admit this user here."""


def admitted(interaction: discord.Interaction) -> bool:
    where = origin(interaction.user, interaction.guild_id, interaction.channel, interaction.channel_id)
    return _bot(interaction).access.allows(where)


async def _admit(interaction: discord.Interaction) -> bool:
    if admitted(interaction):
        return True
    log.info("Discord: refused /%s from user %s in channel %s: not on the allow-lists",
             getattr(interaction.command, "name", "?"), interaction.user.id, interaction.channel_id)
    raise NotOpen()  # answered privately by the tree's error handler


#: On every command: checks run before the command's own code, so a refused user reaches nothing.
open_to_them = app_commands.check(_admit)


def matching(names: Iterable[str], typed: str) -> list[app_commands.Choice[str]]:
    """Names starting with what was typed first, then names containing it; at most 25."""
    typed = typed.strip().lower()
    names = sorted(set(names), key=str.lower)
    first = [n for n in names if n.lower().startswith(typed)]
    then = [n for n in names if typed in n.lower() and n not in first]
    return [app_commands.Choice(name=n[:100], value=n) for n in (first + then)[:MAX_CHOICES]]


async def is_operator(interaction: discord.Interaction) -> bool:
    """One of the bot's operators (DISCORD_ADMIN_IDS, or a role of DISCORD_OPERATOR_ROLE_IDS in the guild
    DISCORD_OPERATOR_GUILD_ID): they see anyone's memory, and may add to a shared source of someone else's. A
    guild's Administrator runs a server, not this bot, and a member's agent holds what they said in DMs too."""
    bot = _bot(interaction)
    return await operator(bot, interaction.user, interaction.guild_id, bot.settings)


def guild_admin(interaction: discord.Interaction) -> bool:
    """A server's Administrator, asking in that server."""
    return interaction.guild_id is not None and interaction.permissions.administrator


def add_commands(tree: app_commands.CommandTree[discord.Client]) -> None:
    """Build the commands afresh for this tree (a command object belongs to one tree)."""
    # Here, not at the top: the module builds on this one's helpers.
    from membot.adapters.discord.memory_files import add_forget, export_memory, target_of

    add_forget(tree)

    @tree.command(name="attach", description="Attach a data source to your agent, or load a file into one")
    @open_to_them
    @app_commands.describe(
        source="The data source to attach (with a file: the source to load it into, created if new)",
        file="A PDF, text or Markdown file to load",
    )
    async def attach(
        interaction: discord.Interaction, source: app_commands.Range[str, 1, 100], file: discord.Attachment | None = None
    ) -> None:
        bot = _bot(interaction)
        user = person(interaction.user, interaction.guild_id)

        async def say(text: str) -> None:
            await interaction.followup.send(text, ephemeral=True)

        async with answering(interaction):
            if file is None:
                note, events = await bot.service.attach(user, source)
                await private(interaction, note)
                await relay(events, say, bot.monologue, user)
                return

            async def post(text: str) -> discord.WebhookMessage:
                return await interaction.followup.send(text, ephemeral=True, wait=True)

            await load_upload(
                bot.service, user, file, max_bytes=bot.max_upload_bytes, source_name=source, post=post,
                after=lambda events: relay(events, say, bot.monologue, user), is_admin=await is_operator(interaction),
            )

    @attach.autocomplete("source")
    async def source_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        if not admitted(interaction):
            return []  # the names of a guild's sources are for those the bot is open to
        try:
            infos = await _bot(interaction).service.sources(person(interaction.user, interaction.guild_id))
        except Exception:  # an autocomplete error only shows as "loading failed": log it, offer nothing
            log.exception("autocomplete of a source name failed")
            return []
        return matching((info.name for info in infos), current)

    @tree.command(name="detach", description="Detach a data source from your agent")
    @open_to_them
    @app_commands.describe(source="The data source to stop searching")
    async def detach(interaction: discord.Interaction, source: app_commands.Range[str, 1, 100]) -> None:
        bot = _bot(interaction)
        async with answering(interaction):
            await private(interaction, await bot.service.detach(person(interaction.user, interaction.guild_id), source))

    detach.autocomplete("source")(source_names)

    @tree.command(name="persona", description="Switch your agent's persona")
    @open_to_them
    @app_commands.describe(name="One of the personas this bot knows")
    async def persona(interaction: discord.Interaction, name: app_commands.Range[str, 1, 100]) -> None:
        bot = _bot(interaction)
        async with answering(interaction):
            await private(interaction, await bot.service.set_persona(person(interaction.user, interaction.guild_id), name))

    @persona.autocomplete("name")
    async def persona_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return matching(_bot(interaction).service.personas(), current)

    @tree.command(name="memory", description="Show your agent's memory, privately (admins: anyone's)")
    @open_to_them
    @app_commands.describe(user="Whose agent (admins only; default: yours)",
                           action="show (the default), or export: everything it holds, as a file for you")
    async def memory(interaction: discord.Interaction, user: discord.User | None = None,
                     action: Literal["show", "export"] = "show") -> None:
        if action == "export":
            await export_memory(interaction, user)
            return
        bot = _bot(interaction)
        requester = person(interaction.user, interaction.guild_id)
        async with answering(interaction):
            # The service refuses non-admins another's memory (CommandError) before it reads any of it.
            target, is_admin = await target_of(interaction, user)
            whose = (user or interaction.user).display_name
            if target is not None and not is_admin and bot.settings.guild_admins_see_guild and guild_admin(interaction):
                # What the member said in this server only: never DMs, never their agent's memory.
                assert interaction.guild is not None
                lines = await bot.service.said_in(requester, target, f"{PLATFORM}:{interaction.guild.id}/",
                                                  interaction.guild.name)
                await private(interaction, lines)
                return
            report = await bot.service.memory(requester, target, is_admin=is_admin)
            await interaction.followup.send(embed=memory_embed(report, whose), ephemeral=True)

    @tree.command(name="cancel", description="Stop your agent's current reply")
    @open_to_them
    async def cancel(interaction: discord.Interaction) -> None:
        bot = _bot(interaction)
        async with answering(interaction):
            await private(interaction, await bot.service.cancel(person(interaction.user, interaction.guild_id)))

    @tree.command(name="reminders", description="List the reminders your agent set, or cancel one")
    @open_to_them
    @app_commands.describe(cancel="The number of a reminder to cancel (as the list shows it)")
    async def reminders(interaction: discord.Interaction, cancel: int | None = None) -> None:
        bot = _bot(interaction)
        async with answering(interaction):
            user = person(interaction.user, interaction.guild_id)
            said = await (bot.service.reminders_command(user) if cancel is None
                          else bot.service.cancel_reminder(user, cancel))
            await private(interaction, said)

    @tree.command(name="heartbeats", description="Turn your agent's timed heartbeats on or off, or see them")
    @open_to_them
    @app_commands.describe(state="on or off; leave it out to see whether they run and when the next one comes")
    async def heartbeats(interaction: discord.Interaction, state: Literal["on", "off"] | None = None) -> None:
        bot = _bot(interaction)
        async with answering(interaction):
            await private(interaction, await bot.service.heartbeats_command(
                person(interaction.user, interaction.guild_id), state or ""))

    @tree.error
    async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        # Only what failed before a command's own handling (a refusal, bad option values, unknown commands)
        # gets here.
        if isinstance(error, NotOpen):
            text = not_open_text(PLATFORM)
        else:
            log.warning("slash command failed: %s", error)
            text = "That did not work: check the command's options and try again."
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            pass
