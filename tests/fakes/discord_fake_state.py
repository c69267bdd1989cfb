"""State and payload builders of the fake Discord (see ``discord_fake.py`` for the public test API).

Everything here is plain data shaped like Discord's JSON (snowflakes as strings), kept just complete
enough for discord.py's parsers, which index several keys directly and crash when they are missing.
"""

# The waiting helpers take ``timeout=`` on purpose: tests read better with one call than with a
# surrounding ``asyncio.timeout`` block, and the helpers turn timeouts into descriptive errors.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")

DISCORD_EPOCH_MS = 1420070400000
# DM channel ids are derived from the user id so tests can predict them without asking the fake.
DM_CHANNEL_OFFSET = 1 << 60
EPHEMERAL = 64
# What a fresh guild's @everyone typically may do; enough for a bot to read, post, attach and use commands.
DEFAULT_EVERYONE_PERMISSIONS = str(sum(1 << bit for bit in (6, 10, 11, 14, 15, 16, 31, 35, 38)))


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


#: A public thread's channel type.
THREAD = 11


@dataclass
class FakeGuild:
    id: int
    name: str
    owner_id: int
    channels: dict[int, dict[str, Any]]
    members: dict[int, dict[str, Any]]  # user id -> member payload without the "user" key
    roles: list[dict[str, Any]]


@dataclass(eq=False)
class FakeInteraction:
    """An interaction the fake sent, plus everything the bot answered to it."""

    fake: DiscordState = field(repr=False)
    id: int
    token: str
    type: int
    channel_id: int
    guild_id: int | None
    payload: dict[str, Any] = field(repr=False)
    callbacks: list[dict[str, Any]] = field(default_factory=list)  # bodies POSTed to .../callback
    followups: list[dict[str, Any]] = field(default_factory=list)  # messages created via the webhook
    original_edits: list[dict[str, Any]] = field(default_factory=list)  # bodies PATCHed onto @original
    original_message_id: int | None = None

    @property
    def callback(self) -> dict[str, Any] | None:
        return self.callbacks[0] if self.callbacks else None

    @property
    def deferred(self) -> bool:
        return self.callback is not None and self.callback["type"] in (5, 6)

    @property
    def ephemeral(self) -> bool:
        data = (self.callback or {}).get("data") or {}
        return bool(int(data.get("flags") or 0) & EPHEMERAL)

    @property
    def original_message(self) -> dict[str, Any] | None:
        if self.original_message_id is None:
            return None
        return self.fake.get_message(self.channel_id, self.original_message_id)

    async def wait_callback(self, timeout: float = 10) -> dict[str, Any]:
        return await self.fake.wait_until(
            lambda: self.callback, timeout, f"callback for interaction {self.id}"
        )

    async def wait_followup(self, count: int = 1, timeout: float = 10) -> dict[str, Any]:
        """Wait until ``count`` follow-ups exist and return the ``count``-th one."""

        def check() -> dict[str, Any] | None:
            return self.followups[count - 1] if len(self.followups) >= count else None

        return await self.fake.wait_until(check, timeout, f"follow-up #{count} for interaction {self.id}")

    async def wait_original_edit(self, count: int = 1, timeout: float = 10) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            return self.original_edits[count - 1] if len(self.original_edits) >= count else None

        return await self.fake.wait_until(
            check, timeout, f"edit #{count} of @original for interaction {self.id}"
        )


class DiscordState:
    """Users, guilds, channels, messages and interactions, plus the wake-up mechanism for waiters."""

    def __init__(self, *, bot_user_id: int, application_id: int, bot_name: str) -> None:
        self.bot_user_id = bot_user_id
        self.application_id = application_id
        self.base_url = ""  # set once the server listens; hosted file URLs need it
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.users: dict[int, dict[str, Any]] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.dm_channels: dict[int, int] = {}  # channel id -> user id
        self.interactions: dict[int, FakeInteraction] = {}
        self.files: dict[int, tuple[str, bytes, str]] = {}
        self.messages: dict[int, list[dict[str, Any]]] = {}  # channel id -> messages (any author)
        self._last_snowflake = 0
        self._changed = asyncio.Event()
        self.bot_user: dict[str, Any] = {
            "id": str(bot_user_id),
            "username": bot_name,
            "global_name": None,
            "discriminator": "0",
            "avatar": None,
            "bot": True,
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
            "public_flags": 0,
        }
        self.users[bot_user_id] = self.bot_user

    # ----------------------------------------------------------------- ids, waiting, recording

    def snowflake(self) -> int:
        """A fresh, increasing snowflake whose timestamp is now (so discord.py's created_at is sane)."""
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_snowflake = max(candidate, self._last_snowflake + 1)
        return self._last_snowflake

    @staticmethod
    def dm_channel_id(user_id: int) -> int:
        return DM_CHANNEL_OFFSET + user_id

    def notify(self) -> None:
        """Wake every waiter; they re-check their condition."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        """Poll ``check`` on every state change until it returns something other than None/False."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    result = check()
                    if result is not None and result is not False:
                        return result
                    await self._changed.wait()
        except TimeoutError:
            recent = [f"{c.method} {c.path} -> {c.status}" for c in self.calls[-10:]]
            raise TimeoutError(
                f"timed out after {timeout}s waiting for {what}; recent calls: {recent}"
            ) from None

    # ----------------------------------------------------------------- users, guilds, files

    def add_user(self, user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
        self.users[user_id] = {
            "id": str(user_id),
            "username": name,
            "global_name": name,
            "discriminator": "0",
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
        }
        return dict(self.users[user_id])

    def user(self, user_id: int) -> dict[str, Any]:
        """The user's payload; unknown users are created on the fly as ``user<id>``."""
        if user_id not in self.users:
            self.add_user(user_id, f"user{user_id}")
        return self.users[user_id]

    def add_guild(
        self,
        guild_id: int,
        name: str,
        channels: Sequence[dict[str, Any]] = (),
        members: Sequence[dict[str, Any]] = (),
        owner_id: int | None = None,
        roles: Sequence[dict[str, Any]] = (),
    ) -> FakeGuild:
        """Register a guild (sent as GUILD_CREATE after READY, so add it before the client connects).

        ``channels``: partial channel payloads, at least ``{"id": ...}`` (type defaults to 0 = text).
        ``members``: member payloads (``{"user": {...}, "roles": [...]}``) or bare users
        (``{"id": ..., "username"/"name": ...}``). The bot is always a member.
        ``roles``: extra roles; @everyone (id == guild id) is always present.
        """
        guild = FakeGuild(guild_id, name, owner_id or self.bot_user_id, {}, {}, [])
        guild.roles.append(role_payload(guild_id, "@everyone", 0, DEFAULT_EVERYONE_PERMISSIONS))
        for i, role in enumerate(roles, start=1):
            guild.roles.append(
                role_payload(
                    int(role["id"]), role.get("name", f"role{i}"), i, str(role.get("permissions", "0"))
                )
            )
        for position, raw in enumerate(channels):
            channel_id = int(raw["id"])
            guild.channels[channel_id] = {
                "type": 0,
                "name": f"channel-{channel_id}",
                "position": position,
                "permission_overwrites": [],
                "nsfw": False,
                "topic": None,
                "parent_id": None,
                "last_message_id": None,
                "rate_limit_per_user": 0,
                **raw,
                "id": str(channel_id),
                "guild_id": str(guild_id),
            }
        for raw in [{"user": self.bot_user}, *members]:
            user = raw.get("user") or raw
            user_id = int(user["id"])
            name = user.get("username") or user.get("name")
            # Keep an already registered user unless the entry renames it.
            if user_id not in self.users or (name and name != self.users[user_id]["username"]):
                self.add_user(user_id, name or f"user{user_id}", bot=bool(user.get("bot", False)))
            member = {k: v for k, v in raw.items() if k != "user"} if "user" in raw else {}
            guild.members[user_id] = {
                "roles": [],
                "nick": None,
                "joined_at": now_iso(),
                "deaf": False,
                "mute": False,
                "flags": 0,
                "pending": False,
                **member,
            }
        self.guilds[guild_id] = guild
        return guild

    def guild_payload(self, guild_id: int) -> dict[str, Any]:
        """Full GUILD_CREATE-style payload."""
        guild = self.guilds[guild_id]
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "owner_id": str(guild.owner_id),
            "unavailable": False,
            "large": False,
            "member_count": len(guild.members),
            "joined_at": now_iso(),
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "features": [],
            "roles": list(guild.roles),
            "emojis": [],
            "stickers": [],
            "channels": [c for c in guild.channels.values() if c["type"] != THREAD],
            "threads": [c for c in guild.channels.values() if c["type"] == THREAD],
            "members": [self.member_payload(guild_id, uid) for uid in guild.members],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def add_thread(self, guild_id: int, parent_id: int, name: str, owner_id: int | None = None) -> dict[str, Any]:
        """A public thread under a channel, kept with the guild's channels (type 11) and sent in GUILD_CREATE's
        `threads` (add it before the client connects, or dispatch THREAD_CREATE)."""
        thread_id = self.snowflake()
        thread = {
            "id": str(thread_id), "guild_id": str(guild_id), "parent_id": str(parent_id), "type": THREAD,
            "name": name, "owner_id": str(owner_id or self.bot_user_id), "last_message_id": None,
            "rate_limit_per_user": 0, "message_count": 0, "member_count": 1, "flags": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "locked": False,
                                "archive_timestamp": now_iso()},
        }
        self.guilds[guild_id].channels[thread_id] = thread
        return thread

    def member_payload(self, guild_id: int, user_id: int, *, with_user: bool = True) -> dict[str, Any]:
        member = dict(self.guilds[guild_id].members[user_id])
        if with_user:
            member["user"] = self.user(user_id)
        return member

    def channel_payload(self, channel_id: int) -> dict[str, Any] | None:
        """Guild channel or DM channel payload, or None if the fake does not know the channel."""
        for guild in self.guilds.values():
            if channel_id in guild.channels:
                return guild.channels[channel_id]
        if channel_id in self.dm_channels:
            return {
                "id": str(channel_id),
                "type": 1,
                "last_message_id": None,
                "recipients": [self.user(self.dm_channels[channel_id])],
            }
        return None

    def channel_guild_id(self, channel_id: int) -> int | None:
        return next((g.id for g in self.guilds.values() if channel_id in g.channels), None)

    def open_dm(self, user_id: int) -> int:
        channel_id = self.dm_channel_id(user_id)
        self.user(user_id)
        self.dm_channels[channel_id] = user_id
        return channel_id

    def host_file(self, filename: str, data: bytes, content_type: str) -> dict[str, Any]:
        """Serve ``data`` from the fake and return an attachment payload pointing at it."""
        if not self.base_url:
            raise RuntimeError("start the FakeDiscord before hosting files")
        attachment_id = self.snowflake()
        self.files[attachment_id] = (filename, data, content_type)
        url = f"{self.base_url}/attachments/{attachment_id}/{filename}"
        return {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }

    # ----------------------------------------------------------------- messages

    def store_message(self, message: dict[str, Any]) -> dict[str, Any]:
        self.messages.setdefault(int(message["channel_id"]), []).append(message)
        self.notify()
        return message

    def get_message(self, channel_id: int, message_id: int) -> dict[str, Any] | None:
        return next((m for m in self.messages.get(channel_id, []) if int(m["id"]) == message_id), None)

    def messages_in(self, channel_id: int) -> list[dict[str, Any]]:
        """Messages the bot posted to ``channel_id`` (incl. interaction replies), edits applied."""
        return [m for m in self.messages.get(channel_id, []) if int(m["author"]["id"]) == self.bot_user_id]

    def message_payload(
        self,
        channel_id: int,
        author_id: int,
        content: str,
        *,
        attachments: Sequence[dict[str, Any]] = (),
        mentions: Sequence[int] = (),
        flags: int = 0,
    ) -> dict[str, Any]:
        guild_id = self.channel_guild_id(channel_id)
        message: dict[str, Any] = {
            "id": str(self.snowflake()),
            "channel_id": str(channel_id),
            "author": self.user(author_id),
            "content": content,
            "timestamp": now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [self.user(uid) for uid in mentions],
            "mention_roles": [],
            "attachments": list(attachments),
            "embeds": [],
            "components": [],
            "pinned": False,
            "type": 0,
            "flags": flags,
        }
        if guild_id is not None:
            message["guild_id"] = str(guild_id)
            if author_id in self.guilds[guild_id].members:
                message["member"] = self.member_payload(guild_id, author_id, with_user=False)
        return message

    def _interaction_payload(
        self,
        kind: int,
        user_id: int,
        data: dict[str, Any],
        guild_id: int | None,
        channel_id: int | None,
        member_permissions: str,
    ) -> FakeInteraction:
        interaction_id = self.snowflake()
        token = secrets.token_urlsafe(24)
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "token": token,
            "version": 1,
            "locale": "en-US",
            "app_permissions": DEFAULT_EVERYONE_PERMISSIONS,
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if guild_id is not None:
            guild = self.guilds[guild_id]
            channel_id = channel_id or next(iter(guild.channels))
            if user_id not in guild.members:
                guild.members[user_id] = {"roles": [], "nick": None, "joined_at": now_iso(), "flags": 0}
            member = self.member_payload(guild_id, user_id)
            member["permissions"] = member_permissions
            payload.update(guild_id=str(guild_id), guild_locale="en-US", member=member, context=0)
            payload["authorizing_integration_owners"] = {"0": str(guild_id)}
        else:
            channel_id = channel_id or self.open_dm(user_id)
            payload.update(
                user=self.user(user_id), context=1, authorizing_integration_owners={"1": str(user_id)}
            )
        channel = self.channel_payload(channel_id)
        if channel is None:
            raise KeyError(f"unknown channel {channel_id}")
        payload["channel_id"] = str(channel_id)
        payload["channel"] = {**channel, "permissions": member_permissions}
        interaction = FakeInteraction(self, interaction_id, token, kind, channel_id, guild_id, payload)
        self.interactions[interaction_id] = interaction
        return interaction

    def _command_data(
        self,
        name: str,
        options: Sequence[dict[str, Any]],
        guild_id: int | None,
        command_guild_id: int | None,
    ) -> dict[str, Any]:
        """Interaction ``data`` for a chat-input command. Like Discord, ``data.guild_id`` is only set for
        a guild-scoped command: the one passed as ``command_guild_id``, or one synced to ``guild_id``."""
        guild_commands = self.guild_commands.get(guild_id or 0, [])
        if command_guild_id is None and any(c["name"] == name for c in guild_commands):
            command_guild_id = guild_id
        known = self.guild_commands.get(command_guild_id or 0, []) + self.global_commands
        command_id = next((c["id"] for c in known if c["name"] == name), str(self.snowflake()))
        data = {"id": command_id, "name": name, "type": 1, "options": [dict(o) for o in options]}
        if command_guild_id is not None:
            data["guild_id"] = str(command_guild_id)
        return data


def role_payload(role_id: int, name: str, position: int, permissions: str) -> dict[str, Any]:
    return {
        "id": str(role_id),
        "name": name,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "position": position,
        "permissions": permissions,
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }
