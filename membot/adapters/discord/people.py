"""Who is talking, in the bot service's terms.

A Discord user id is the same in every guild and in DMs, and a person expects the bot to remember them
wherever they talk to it: so there is ONE agent per Discord user (the agent scope is all of Discord).
Data sources are shared differently: a guild's sources belong to the guild (members can attach what
others loaded there), while files sent in a DM stay private to the one who sent them.
"""

from __future__ import annotations

import discord

from membot.agent.place import Place
from membot.bot.access import Origin
from membot.bot.identity import UserRef

PLATFORM = "discord"
#: Empty: Discord ids are global, so no guild or workspace narrows them (also what
#: `membot memory show --platform discord --user ID` looks up when no --scope is given).
AGENT_SCOPE = ""


def source_scope(user_id: int, guild_id: int | None) -> str:
    return f"{PLATFORM}:{guild_id}" if guild_id is not None else f"{PLATFORM}:dm:{user_id}"


def person(user: discord.abc.User, guild_id: int | None = None) -> UserRef:
    """The user's agent identity, with the sources of the place they are talking in (a guild or a DM)."""
    # The global name, not a guild nickname: the agent is the same in every guild.
    name = user.global_name or user.name
    return UserRef(PLATFORM, AGENT_SCOPE, str(user.id), name, source_scope=source_scope(user.id, guild_id))


def origin(
    user: discord.abc.User, guild_id: int | None, channel: object | None, channel_id: int | None = None
) -> Origin:
    """Where a message or command came from, for the operator's allow-lists (bot/access.py)."""
    # A thread is its parent channel here: threads come and go, operators list channels.
    if isinstance(channel, discord.Thread) and channel.parent_id is not None:
        channel_id = channel.parent_id
    elif channel_id is None:
        channel_id = getattr(channel, "id", None)
    roles = frozenset(str(role.id) for role in user.roles) if isinstance(user, discord.Member) else frozenset()
    return Origin(
        PLATFORM, str(user.id), role_ids=roles, guild_id=None if guild_id is None else str(guild_id),
        channel_id=None if channel_id is None else str(channel_id), is_dm=guild_id is None,
    )


def said_in(message: discord.Message, thread: discord.Thread | None = None) -> Place:
    """Where a message was said, for the agent (agent/place.py): a DM is private; a guild channel or thread is
    shared, and named so the agent can tell conversations apart. `thread`: the one opened for the answer."""
    if message.guild is None:
        return Place.direct("a direct message on Discord")
    channel = thread or message.channel
    name = getattr(channel, "name", None) or "a channel"
    if isinstance(channel, discord.Thread):
        parent = channel.parent.name if channel.parent is not None else "a channel"
        label = f"the thread '{name}' in #{parent} on {message.guild.name}"
    else:
        label = f"#{name} on {message.guild.name}"
    return Place.shared(f"discord:{message.guild.id}/{channel.id}", label)
