"""The Web API methods of the fake Slack (see slack_fake.FakeSlack, which mixes this in): what each method
answers, in Slack's documented shapes, and what it records on the fake's state."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

JsonDict = dict[str, Any]


class SlackWebApi:
    """`chat.*`, `users.info`, `files.info`, `conversations.*`, `reactions.add`, `auth.test`: one method each,
    taking the request's parameters and returning its JSON answer. The state lives on FakeSlack."""

    team_domain: str
    team_name: str
    team_id: str
    bot_name: str
    bot_user_id: str
    bot_id: str
    users: dict[str, JsonDict]
    files: dict[str, JsonDict]
    channels: dict[str, JsonDict]
    messages: dict[tuple[str, str], JsonDict]
    reactions: list[tuple[str, str, str]]
    app_id: str
    _dm_channels: dict[str, str]
    next_ts: Callable[[], str]
    dm_channel_for: Callable[[str], str]


    def _auth_test(self, params: JsonDict) -> JsonDict:
        return {
            "ok": True,
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _resolve_channel(self, channel: str) -> str:
        # Posting to a user id delivers into the bot's DM with that user, as on Slack.
        if channel[:1] in ("U", "W"):
            return self.dm_channel_for(channel)
        return channel

    def _chat_post_message(self, params: JsonDict) -> JsonDict:
        channel = params.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not any(params.get(k) for k in ("text", "blocks", "attachments", "markdown_text")):
            return {"ok": False, "error": "no_text"}
        channel = self._resolve_channel(str(channel))
        ts = self.next_ts()
        message: JsonDict = {
            "type": "message",
            "subtype": "bot_message",
            "text": params.get("text") or params.get("markdown_text") or "",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "ts": ts,
        }
        if params.get("blocks"):
            message["blocks"] = _maybe_json(params["blocks"])
        if params.get("thread_ts"):
            message["thread_ts"] = str(params["thread_ts"])
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _chat_post_ephemeral(self, params: JsonDict) -> JsonDict:
        if not params.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("user"):
            return {"ok": False, "error": "user_not_found"}
        if not any(params.get(k) for k in ("text", "blocks", "attachments", "markdown_text")):
            return {"ok": False, "error": "no_text"}
        return {"ok": True, "message_ts": self.next_ts()}

    def _chat_update(self, params: JsonDict) -> JsonDict:
        channel, ts = str(params.get("channel") or ""), str(params.get("ts") or "")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        message = self.messages.get((channel, ts))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        if "text" in params:
            message["text"] = params["text"]
        if params.get("blocks"):
            message["blocks"] = _maybe_json(params["blocks"])
        message["edited"] = {"user": self.bot_user_id, "ts": self.next_ts()}
        return {"ok": True, "channel": channel, "ts": ts, "text": message["text"], "message": message}

    def _chat_delete(self, params: JsonDict) -> JsonDict:
        channel, ts = str(params.get("channel") or ""), str(params.get("ts") or "")
        if self.messages.pop((channel, ts), None) is None:
            return {"ok": False, "error": "message_not_found"}
        return {"ok": True, "channel": channel, "ts": ts}

    def _users_info(self, params: JsonDict) -> JsonDict:
        user = self.users.get(str(params.get("user") or ""))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": user}

    def _files_info(self, params: JsonDict) -> JsonDict:
        file_obj = self.files.get(str(params.get("file") or ""))
        if file_obj is None:
            return {"ok": False, "error": "file_not_found"}
        return {"ok": True, "file": file_obj, "comments": [], "response_metadata": {"next_cursor": ""}}

    def _channel_object(
        self, channel_id: str, *, name: str | None = None, is_private: bool = False
    ) -> JsonDict:
        now = int(time.time())
        if channel_id.startswith("D"):
            user = next((u for u, c in self._dm_channels.items() if c == channel_id), "U" + channel_id[1:])
            return {
                "id": channel_id,
                "created": now,
                "is_im": True,
                "is_org_shared": False,
                "user": user,
                "is_user_deleted": False,
                "priority": 0,
            }
        private = is_private or channel_id.startswith("G")
        return {
            "id": channel_id,
            "name": name or f"channel-{channel_id.lower()}",
            "is_channel": not private,
            "is_group": False,
            "is_im": False,
            "is_mpim": False,
            "is_private": private,
            "is_archived": False,
            "is_general": False,
            "is_member": True,
            "is_shared": False,
            "is_ext_shared": False,
            "is_org_shared": False,
            "created": now,
            "creator": self.bot_user_id,
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
        }

    def _conversations_info(self, params: JsonDict) -> JsonDict:
        channel_id = str(params.get("channel") or "")
        if channel_id in self.channels:
            return {"ok": True, "channel": self.channels[channel_id]}
        if channel_id[:1] not in ("C", "G", "D"):
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": self._channel_object(channel_id)}

    def _conversations_open(self, params: JsonDict) -> JsonDict:
        if params.get("channel"):
            return {
                "ok": True,
                "no_op": True,
                "already_open": True,
                "channel": {"id": str(params["channel"])},
            }
        users = [u for u in str(params.get("users") or "").split(",") if u]
        if not users:
            return {"ok": False, "error": "users_list_not_supplied"}
        if len(users) > 1:
            # Multi-person DMs are not needed by membot; keep the fake honest rather than guess.
            return {"ok": False, "error": "not_supported_by_fake"}
        if users[0] not in self.users:
            return {"ok": False, "error": "user_not_found"}
        return {
            "ok": True,
            "no_op": True,
            "already_open": True,
            "channel": {"id": self.dm_channel_for(users[0])},
        }

    def _reactions_add(self, params: JsonDict) -> JsonDict:
        channel, ts, name = (str(params.get(k) or "") for k in ("channel", "timestamp", "name"))
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not ts:
            return {"ok": False, "error": "message_not_found"}
        if not name:
            return {"ok": False, "error": "invalid_name"}
        if (channel, ts, name) in self.reactions:
            return {"ok": False, "error": "already_reacted"}
        self.reactions.append((channel, ts, name))
        return {"ok": True}


def _maybe_json(value: Any) -> Any:
    """Form-encoded requests carry blocks as a JSON string; JSON requests carry real lists."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
