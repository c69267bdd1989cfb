"""The requests the fake Slack sends to the app under test (see slack_fake.FakeSlack, which mixes this in):
Events API payloads and slash-command bodies built as Slack builds them, signed with the app's signing secret,
and posted to the app."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp

JsonDict = dict[str, Any]


class SlackRequests:
    """Builds and delivers signed requests to the app; the state they name (team, users, DMs) lives on
    FakeSlack."""

    signing_secret: str
    verification_token: str
    team_id: str
    team_domain: str
    app_id: str
    bot_user_id: str
    users: dict[str, JsonDict]
    _session: aiohttp.ClientSession | None
    _id_counter: itertools.count[int]
    _response_urls: set[str]
    _dm_channels: dict[str, str]
    base_url: str
    next_ts: Callable[[], str]
    dm_channel_for: Callable[[str], str]
    _next_id: Callable[[str], str]

    # ------------------------------------------------------------------ building requests for the app

    def sign(self, body: bytes, timestamp: int | None = None, secret: str | None = None) -> dict[str, str]:
        """Slack v0 request-signing headers for ``body``."""
        ts = int(time.time()) if timestamp is None else timestamp
        key = (secret if secret is not None else self.signing_secret).encode()
        base = b"v0:" + str(ts).encode() + b":" + body
        digest = hmac.new(key, base, hashlib.sha256).hexdigest()
        return {"X-Slack-Signature": f"v0={digest}", "X-Slack-Request-Timestamp": str(ts)}

    def event_payload(self, event: JsonDict, *, event_id: str | None = None) -> JsonDict:
        """Wrap ``event`` in an Events API ``event_callback`` envelope."""
        now = int(time.time())
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or self._next_id("Ev"),
            "event_time": now,
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": secrets.token_hex(16),
        }

    def dm_event(
        self,
        user: str,
        text: str,
        *,
        channel: str | None = None,
        ts: str | None = None,
        files: list[JsonDict] | None = None,
        thread_ts: str | None = None,
    ) -> JsonDict:
        """A ``message.im`` event (``channel_type: im``); with ``files`` it is a ``file_share``.

        ``channel`` defaults to :meth:`dm_channel_for` (``"D1"`` for user ``"U1"``); passing one
        also makes conversations.open return it for this user.
        """
        if channel is None:
            channel = self.dm_channel_for(user)
        else:
            self._dm_channels[user] = channel
        ts = ts or self.next_ts()
        event: JsonDict = {
            "type": "message",
            "channel": channel,
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "channel_type": "im",
            "team": self.team_id,
            "client_msg_id": secrets.token_hex(16),
        }
        if files:
            event.update(subtype="file_share", files=files, upload=False, display_as_bot=False)
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        return event

    def file_shared_event(self, file: JsonDict, user: str, channel: str) -> JsonDict:
        """A ``file_shared`` event: Slack sends only the file's id and where it was shared."""
        return {
            "type": "file_shared",
            "file_id": file["id"],
            "user_id": user,
            "channel_id": channel,
            "file": {"id": file["id"]},
            "event_ts": self.next_ts(),
        }

    def mention_event(
        self,
        user: str,
        text: str,
        *,
        channel: str = "C1",
        ts: str | None = None,
        thread_ts: str | None = None,
    ) -> JsonDict:
        """An ``app_mention`` event; ``<@BOT>`` is prepended to ``text`` if it is not in it."""
        mention = f"<@{self.bot_user_id}>"
        if mention not in text:
            text = f"{mention} {text}"
        ts = ts or self.next_ts()
        event: JsonDict = {
            "type": "app_mention",
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "channel": channel,
            "team": self.team_id,
            "client_msg_id": secrets.token_hex(16),
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        return event

    def command_body(
        self,
        command: str,
        text: str,
        *,
        user_id: str,
        channel_id: str = "C1",
        team_id: str | None = None,
    ) -> bytes:
        """A form-encoded slash-command body whose response_url points at this fake."""
        team = team_id or self.team_id
        path = f"/commands/{team}/{next(self._id_counter)}/{secrets.token_urlsafe(12)}"
        self._response_urls.add(path)
        user = self.users.get(user_id)
        fields = {
            "token": self.verification_token,
            "team_id": team,
            "team_domain": self.team_domain,
            "channel_id": channel_id,
            "channel_name": "directmessage"
            if channel_id.startswith("D")
            else f"channel-{channel_id.lower()}",
            "user_id": user_id,
            "user_name": user["name"] if user else user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": self.app_id,
            "is_enterprise_install": "false",
            "response_url": self.base_url + path,
            "trigger_id": f"{next(self._id_counter)}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}",
        }
        return urlencode(fields).encode()

    # ------------------------------------------------------------------ delivering requests to the app

    async def post_raw(
        self,
        app_url: str,
        body: bytes,
        *,
        content_type: str = "application/json",
        sign: bool = True,
        sign_with: str | None = None,
        timestamp: int | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, float]:
        """POST any body to the app; returns (status, body text, elapsed seconds)."""
        if self._session is None:
            raise RuntimeError("FakeSlack is not started")
        hdrs = {"Content-Type": content_type, "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}
        if sign:
            hdrs.update(self.sign(body, timestamp=timestamp, secret=sign_with))
        if retry_num is not None:
            # Slack's redelivery markers; apps commonly ack these without reprocessing.
            hdrs["X-Slack-Retry-Num"] = str(retry_num)
            hdrs["X-Slack-Retry-Reason"] = retry_reason
        hdrs.update(headers or {})
        started = time.perf_counter()
        async with self._session.post(app_url, data=body, headers=hdrs, allow_redirects=False) as resp:
            text = await resp.text()
            status = resp.status
        return status, text, time.perf_counter() - started

    async def post_event(
        self,
        app_url: str,
        payload: JsonDict,
        *,
        retry_num: int | None = None,
        sign_with: str | None = None,
        timestamp: int | None = None,
    ) -> tuple[int, str, float]:
        """POST a signed JSON Events API payload (e.g. from :meth:`event_payload`) to the app."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        return await self.post_raw(
            app_url, body, retry_num=retry_num, sign_with=sign_with, timestamp=timestamp
        )

    async def post_command(
        self,
        app_url: str,
        body: bytes,
        *,
        retry_num: int | None = None,
        sign_with: str | None = None,
        timestamp: int | None = None,
    ) -> tuple[int, str, float]:
        """POST a signed slash-command body (from :meth:`command_body`) to the app."""
        return await self.post_raw(
            app_url,
            body,
            content_type="application/x-www-form-urlencoded",
            retry_num=retry_num,
            sign_with=sign_with,
            timestamp=timestamp,
        )
