"""Files shared with the bot: fetched from Slack with the bot token, loaded as a data source attached to the
uploader's agent, confirmed in a thread under the upload; then the agent's reaction is posted there too.

A file can arrive twice (`message/file_share` and `file_shared`); it is handled once, claimed by file id.
"""

from __future__ import annotations

import logging
from pathlib import PurePath
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from membot.adapters.slack.dedupe import Seen
from membot.adapters.slack.people import People
from membot.adapters.slack.posting import Place, Poster
from membot.adapters.slack.render import upload_summary
from membot.agent.sources.documents import SUPPORTED_EXTENSIONS
from membot.bot.service import BotService, CommandError

log = logging.getLogger(__name__)

MB = 1024 * 1024
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=15)


class UploadError(Exception):
    """Why a file could not be fetched; the message is for the user."""


def supported(name: str) -> bool:
    return PurePath(name).suffix.lower() in SUPPORTED_EXTENSIONS


def _share_place(file: dict[str, Any], channel: str) -> Place:
    """Where a file was shared, from files.info's `shares` (a thread under that message when Slack says);
    the bare channel when it does not."""
    shares = file.get("shares") or {}
    for kind in ("public", "private"):
        found = (shares.get(kind) or {}).get(channel) or []
        if found:
            return Place(channel, found[0].get("thread_ts") or found[0].get("ts"))
    return Place(channel)


class Uploads:
    def __init__(
        self, service: BotService, poster: Poster, people: People, seen: Seen, max_mb: float
    ) -> None:
        self.service = service
        self.poster = poster
        self.people = people
        self.seen = seen
        self.max_mb = max_mb

    async def shared(
        self, client: AsyncWebClient, team_id: str, user_id: str, channel: str, file_id: str
    ) -> None:
        """A `file_shared` event: only ids; files.info fills in the rest, including where to answer."""
        if f"file:{file_id}" in self.seen:
            return
        try:
            file = (await client.files_info(file=file_id))["file"]
        except SlackApiError as exc:
            log.warning("files.info %s failed: %s", file_id, exc.response.get("error", exc))
            return
        await self.handle(client, team_id, user_id, file, _share_place(file, channel))

    async def handle(
        self, client: AsyncWebClient, team_id: str, user_id: str, file: dict[str, Any], place: Place
    ) -> None:
        """Load one shared file for `user_id` and answer at `place`."""
        file_id = str(file.get("id") or "")
        if not file_id or not await self.seen.claim(f"file:{file_id}"):
            return
        if not file.get("url_private") and not file.get("url_private_download"):
            # Slack Connect and some share events carry only the id ("check_file_info").
            try:
                file = (await client.files_info(file=file_id))["file"]
            except SlackApiError as exc:
                log.warning("files.info %s failed: %s", file_id, exc.response.get("error", exc))
                return
        name = str(file.get("name") or file.get("title") or file_id)
        in_dm = place.channel.startswith("D")
        if not supported(name):
            if in_dm:  # in a channel, an image or a zip was not meant for the bot: stay quiet
                kinds = ", ".join(SUPPORTED_EXTENSIONS)
                await self.poster.say(
                    client, place, f"{name}: I can only load {kinds} files. Nothing was loaded."
                )
            return
        size = int(file.get("size") or 0)
        if size > self.max_mb * MB:
            too_big = f"{name} is {size / MB:.1f} MB; uploads are limited to {self.max_mb:g} MB."
            await self.poster.say(client, place, too_big + " Nothing was loaded.")
            return
        try:
            data = await self._download(file, client.token or "")
        except UploadError as exc:
            await self.poster.say(client, place, f"{name}: {exc} Nothing was loaded.")
            return
        user = await self.people.user(client, team_id, user_id, in_dm=in_dm)
        try:
            outcome, events = await self.service.load_file(user, name, data, is_admin=self.people.is_admin(user_id))
        except CommandError as exc:
            await self.poster.say(client, place, str(exc))
            return
        except Exception:  # the loader is all-or-nothing, so the answer can say exactly what happened
            log.exception("loading %s for %s failed", name, user_id)
            await self.poster.say(
                client, place, f"{name}: something went wrong on my side. Nothing was loaded."
            )
            return
        await self.poster.say(client, place, upload_summary(outcome, name))
        await self.poster.deliver(client, place, user_id, events)

    async def _download(self, file: dict[str, Any], token: str) -> bytes:
        url = file.get("url_private_download") or file.get("url_private")
        limit = int(self.max_mb * MB)
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with (
                aiohttp.ClientSession(timeout=DOWNLOAD_TIMEOUT) as session,
                session.get(str(url), headers=headers) as resp,
            ):
                if resp.status != 200:
                    raise UploadError(f"Slack refused the download (HTTP {resp.status}).")
                if resp.content_type == "text/html" and file.get("filetype") != "html":
                    # Slack answers a download it will not authorise with its sign-in page.
                    raise UploadError(
                        "Slack sent a sign-in page instead of the file (does the app have files:read?)."
                    )
                data = bytearray()
                async for chunk in resp.content.iter_chunked(256 * 1024):
                    data += chunk
                    if len(data) > limit:  # the size Slack reported was wrong; the limit still holds
                        raise UploadError(f"the file is over the {self.max_mb:g} MB limit.")
                return bytes(data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("download of %s failed: %r", file.get("id"), exc)
            raise UploadError("the download from Slack failed; please try again.") from None
