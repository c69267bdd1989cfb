"""`/memory action:export` and `/forget` on Discord: a user's memory sent to them as a file, privately, and
their agent deleted after a second, confirmed `/forget confirm:yes`. Operators (DISCORD_ADMIN_IDS) may name
another user; the service refuses anyone else before it reads anything."""

from __future__ import annotations

import io
from typing import Literal

import discord
from discord import app_commands

from membot.adapters.discord.commands import _bot, answering, is_operator, open_to_them, private
from membot.adapters.discord.people import person
from membot.bot.identity import UserRef
from membot.bot.views import EXPORT_NOTE, forget_warning

#: What Discord lets a bot attach to one message without a boosted server (10 MiB), with room for the rest.
MAX_FILE_BYTES = 10 * 1024 * 1024 - 64 * 1024


async def target_of(
    interaction: discord.Interaction, user: discord.User | discord.Member | None
) -> tuple[UserRef | None, bool]:
    """(whose agent, if not the requester's own; whether the requester is one of the bot's operators)."""
    if user is None or user.id == interaction.user.id:
        return None, False
    return person(user), await is_operator(interaction)


async def export_memory(interaction: discord.Interaction, user: discord.User | discord.Member | None) -> None:
    """The agent's export as an ephemeral follow-up with the file attached: nobody else sees it."""
    bot = _bot(interaction)
    async with answering(interaction):
        target, is_admin = await target_of(interaction, user)
        name, raw = await bot.service.export_memory(person(interaction.user, interaction.guild_id), target,
                                                    is_admin=is_admin)
        if len(raw) > MAX_FILE_BYTES:
            await private(interaction, f"The export is {len(raw) / 1_048_576:.1f} MB, more than Discord lets me "
                          "send; ask the bot's operator to run `membot memory export` for you.")
            return
        whose = "your agent holds" if target is None else f"the agent of {target.display_name} holds"
        await interaction.followup.send(
            EXPORT_NOTE.format(whose=whose),
            file=discord.File(io.BytesIO(raw), filename=name), ephemeral=True,
        )


def add_forget(tree: app_commands.CommandTree[discord.Client]) -> None:
    """/forget: asks first; `confirm:yes` deletes."""

    @tree.command(name="forget", description="Delete your agent and everything it holds (asks you to confirm)")
    @open_to_them
    @app_commands.describe(confirm="yes, to delete it for good", user="Whose agent (operators only; default: yours)")
    async def forget(interaction: discord.Interaction, confirm: Literal["yes"] | None = None,
                     user: discord.User | None = None) -> None:
        bot = _bot(interaction)
        async with answering(interaction):
            target, is_admin = await target_of(interaction, user)
            requester = person(interaction.user, interaction.guild_id)
            if confirm != "yes":
                if target is not None and not is_admin:
                    await private(interaction, "Only the bot's operators can delete another user's memory.")
                    return
                whose = "your agent" if target is None else f"the agent of {target.display_name}"
                again = "/forget confirm:yes" + ("" if user is None or target is None else f" user:@{user.name}")
                await private(interaction, forget_warning(whose, "`/memory action:export`", f"To go ahead: {again}"))
                return
            await private(interaction, await bot.service.forget(requester, target, is_admin=is_admin))
