"""Who a Slack user is: display name for their agent, and whether they are an admin.

users.info is asked once per user and remembered for a while, so a conversation does not cost a Web API
call per message; the entry expires so renames and admin changes are picked up.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from membot.bot.access import Origin
from membot.bot.identity import UserRef

log = logging.getLogger(__name__)

PLATFORM = "slack"
TTL_SECONDS = 600.0
CAPACITY = 5_000


@dataclass(frozen=True)
class Person:
    user_id: str
    name: str
    is_admin: bool


class People:
    def __init__(self, admin_ids: list[str], *, ttl: float = TTL_SECONDS, capacity: int = CAPACITY) -> None:
        self.admin_ids = set(admin_ids)
        self.ttl = ttl
        self.capacity = capacity
        self._cache: OrderedDict[str, tuple[float, Person]] = OrderedDict()

    async def lookup(self, client: AsyncWebClient, user_id: str) -> Person:
        """The user as users.info describes them; an unknown or unreadable user (missing users:read
        scope, Slack down) is still a person: named by id, not an admin."""
        now = time.monotonic()
        cached = self._cache.get(user_id)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        try:
            info = (await client.users_info(user=user_id))["user"]
        except (SlackApiError, KeyError, TypeError) as exc:
            log.warning("users.info failed for %s: %s", user_id, exc)
            return Person(user_id, user_id, False)
        profile = info.get("profile") or {}
        name = profile.get("display_name") or info.get("real_name") or info.get("name") or user_id
        person = Person(user_id, str(name), bool(info.get("is_admin") or info.get("is_owner")))
        self._cache[user_id] = (now, person)
        self._cache.move_to_end(user_id)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return person

    async def user(self, client: AsyncWebClient, team_id: str, user_id: str, *, in_dm: bool = False) -> UserRef:
        """The bot-service identity of a Slack user: one agent per user per workspace. `in_dm`: for a file sent
        in a DM, whose source is then the sender's alone (see `source_scope`)."""
        person = await self.lookup(client, user_id)
        return UserRef(PLATFORM, team_id, user_id, person.name, source_scope=source_scope(team_id, user_id, in_dm))

    def is_admin(self, user_id: str) -> bool:
        """The bot's operators: SLACK_ADMIN_IDS only. A workspace admin runs the workspace, not this bot, and a
        member's agent holds what they said in DMs too."""
        return user_id in self.admin_ids


def source_scope(team_id: str, user_id: str, in_dm: bool = False) -> str:
    """Where a user's uploads become sources: the workspace's, shared with its members; a file sent in a DM is
    private to its sender, as on Discord. Commands use the workspace's, and the service adds the user's own
    private sources to what they may attach."""
    return f"{PLATFORM}:{team_id}:dm:{user_id}" if in_dm else f"{PLATFORM}:{team_id}"


def origin(team_id: str, user_id: str, channel: str) -> Origin:
    """Where a message or command came from, for the operator's allow-lists (bot/access.py). Slack has no
    roles; a DM (a D… conversation) is still in a workspace, so the workspace list applies there too."""
    return Origin(PLATFORM, user_id, role_ids=None, guild_id=team_id or None, channel_id=channel or None,
                  is_dm=channel.startswith("D"))
