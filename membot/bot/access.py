"""Who may talk to the bot, and where it answers without being mentioned: the operator's allow-lists.

A pure decision over platform ids, so adapters only describe where a message came from (`Origin`) and
ask; nothing here awaits or calls a platform. The rules (README, "Who may talk to the bot"):

- admins (DISCORD_ADMIN_IDS / SLACK_ADMIN_IDS, on their own platform) are always allowed;
- the person lists are alternatives: when MEMBOT_ALLOW_USERS or MEMBOT_ALLOW_ROLES is set, the user must be
  listed or hold a listed role. Roles exist on Discord only: on Slack the roles list is not consulted, and
  in a Discord DM (no guild, so no roles) only the users list can admit;
- MEMBOT_ALLOW_GUILDS must list the guild (Discord) or workspace (Slack team) the message came from,
  whenever there is one: a Discord DM has none, a Slack DM is still in a workspace;
- MEMBOT_ALLOW_CHANNELS must list the channel when the message is in a channel; DMs are not channels here.
  A channel in MEMBOT_OPEN_CHANNELS counts as listed: the operator asked the bot to talk there;
- an empty list restricts nothing; every list that is set must admit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from membot.bot.settings import Settings

#: What each platform calls the place whose admins decide who may use the bot.
_PLACE = {"discord": "server", "slack": "workspace"}


@dataclass(frozen=True)
class Origin:
    """Where a message or command came from, in platform ids."""

    platform: str
    user_id: str
    #: The user's role ids where the platform has roles (a Discord guild); empty in a Discord DM; None where
    #: the platform has no roles at all (Slack), so that a roles list does not apply there.
    role_ids: frozenset[str] | None = None
    #: A Discord guild id or a Slack team id; None in a Discord DM.
    guild_id: str | None = None
    #: The channel (a thread counts as its parent channel); ignored for DMs.
    channel_id: str | None = None
    is_dm: bool = False


def _ids(values: Iterable[object]) -> frozenset[str]:
    return frozenset(str(v).strip() for v in values if str(v).strip())


@dataclass(frozen=True)
class AccessPolicy:
    users: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    guilds: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()
    open_channels: frozenset[str] = frozenset()
    discord_admins: frozenset[str] = frozenset()
    slack_admins: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        return cls(
            users=_ids(settings.allow_users),
            roles=_ids(settings.allow_roles),
            guilds=_ids(settings.allow_guilds),
            channels=_ids(settings.allow_channels),
            open_channels=_ids(settings.open_channels),
            discord_admins=_ids(settings.discord_admin_ids),
            slack_admins=_ids(settings.slack_admin_ids),
        )

    @property
    def restricted(self) -> bool:
        """Whether any allow-list is set (with none, everyone may talk everywhere)."""
        return bool(self.users or self.roles or self.guilds or self.channels)

    def is_admin(self, origin: Origin) -> bool:
        admins = {"discord": self.discord_admins, "slack": self.slack_admins}.get(origin.platform, frozenset())
        return origin.user_id in admins

    def is_open(self, channel_id: str | None) -> bool:
        """Whether the bot answers every message in this channel, mentioned or not."""
        return channel_id is not None and channel_id in self.open_channels

    def allows(self, origin: Origin) -> bool:
        if self.is_admin(origin):
            return True
        return self._admits_person(origin) and self._admits_guild(origin) and self._admits_channel(origin)

    def _admits_person(self, origin: Origin) -> bool:
        by_roles = self.roles if origin.role_ids is not None else frozenset()  # no roles on this platform
        if not (self.users or by_roles):
            return True
        return origin.user_id in self.users or bool(by_roles & (origin.role_ids or frozenset()))

    def _admits_guild(self, origin: Origin) -> bool:
        return not self.guilds or origin.guild_id is None or origin.guild_id in self.guilds

    def _admits_channel(self, origin: Origin) -> bool:
        if not self.channels or origin.is_dm:
            return True
        return origin.channel_id is not None and (
            origin.channel_id in self.channels or origin.channel_id in self.open_channels
        )


def not_open_text(platform: str) -> str:
    """What a refused user is told, privately."""
    place = _PLACE.get(platform, "server")
    return f"Sorry, this bot is not open to you here. If you think it should be, ask this {place}'s admins."
