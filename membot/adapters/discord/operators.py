"""Who the bot's operators are on Discord: the user ids of DISCORD_ADMIN_IDS, and holders of the roles
DISCORD_OPERATOR_ROLE_IDS in the one guild DISCORD_OPERATOR_GUILD_ID. A role is named by id in one guild the
settings name: any server can make a role called "operator", none can copy another guild's role id."""

from __future__ import annotations

import logging

import discord

from membot.bot.settings import Settings

log = logging.getLogger(__name__)


async def operator(client: discord.Client, user: discord.abc.User, guild_id: int | None, settings: Settings) -> bool:
    """Whether `user` (asking in `guild_id`, or a DM) is one of the bot's operators. Outside the operator
    guild their roles there are looked up (the member cache, else one API call)."""
    if str(user.id) in settings.discord_admin_ids:
        return True
    roles, home = set(settings.discord_operator_role_ids), settings.discord_operator_guild_id
    if not roles or home is None:
        return False
    member = user if guild_id == home and isinstance(user, discord.Member) else None
    if member is None:
        guild = client.get_guild(home)
        if guild is None:
            log.warning("DISCORD_OPERATOR_GUILD_ID %s: the bot is not in that guild; operator roles are not seen",
                        home)
            return False
        member = guild.get_member(user.id)
        if member is None:
            try:
                member = await guild.fetch_member(user.id)
            except discord.NotFound:
                return False
            except discord.HTTPException as exc:  # not an operator until Discord says otherwise
                log.warning("could not look up member %s of the operator guild: %s", user.id, exc)
                return False
    return any(str(role.id) in roles for role in member.roles)
