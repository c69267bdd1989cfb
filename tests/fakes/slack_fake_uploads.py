"""File uploads to the fake Slack, as `files_upload_v2` makes them (see slack_fake.FakeSlack, which mixes this in):
`files.getUploadURLExternal` hands out an upload URL on the fake, the bytes are POSTed there, and
`files.completeUploadExternal` shares the file into a channel. Shared files are hosted like any other
(url_private) and listed in `uploads`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from tests.fakes.slack_fake_api import JsonDict


@dataclass
class Upload:
    """One file the app shared through files.completeUploadExternal."""

    file_id: str
    name: str
    title: str
    channel: str
    initial_comment: str
    data: bytes


class SlackUploads:
    """The state lives on FakeSlack; `_pending` holds what was announced and not yet completed."""

    base_url: str
    team_id: str
    bot_user_id: str
    files: dict[str, JsonDict]
    file_contents: dict[str, bytes]
    _next_id: Callable[[str], str]
    _notify: Callable[[], None]

    def _init_uploads(self) -> None:
        self.uploads: list[Upload] = []
        self._pending: dict[str, JsonDict] = {}

    def _get_upload_url(self, params: JsonDict) -> JsonDict:
        if not params.get("filename") or not str(params.get("length") or "").isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        file_id = self._next_id("F")
        self._pending[file_id] = {"name": str(params["filename"]), "length": int(params["length"]), "data": None}
        return {"ok": True, "upload_url": f"{self.base_url}/upload/v1/{file_id}", "file_id": file_id}

    async def _handle_upload(self, request: web.Request) -> web.Response:
        pending = self._pending.get(request.match_info["file_id"])
        if pending is None:
            return web.Response(status=404, text="not found")
        pending["data"] = await request.read()
        return web.Response(text=f"OK - {len(pending['data'])}")

    def _complete_upload(self, params: JsonDict) -> JsonDict:
        files = params.get("files")
        try:
            entries = json.loads(files) if isinstance(files, str) else files
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        channel = str(params.get("channel_id") or "")
        shared = []
        for entry in entries or []:
            pending = self._pending.pop(str(entry.get("id")), None)
            if pending is None or pending["data"] is None:
                return {"ok": False, "error": "file_not_found"}
            file_id, name = str(entry["id"]), pending["name"]
            title = str(entry.get("title") or name)
            now = int(time.time())
            file_obj: JsonDict = {"id": file_id, "created": now, "name": name, "title": title, "user": self.bot_user_id,
                                  "size": len(pending["data"]), "mimetype": "application/octet-stream",
                                  "url_private": f"{self.base_url}/files-pri/{self.team_id}-{file_id}/{name}",
                                  "ims": [channel] if channel.startswith("D") else [],
                                  "channels": [channel] if channel.startswith("C") else []}
            self.files[file_id] = file_obj
            self.file_contents[file_id] = pending["data"]
            self.uploads.append(Upload(file_id, name, title, channel, str(params.get("initial_comment") or ""),
                                       pending["data"]))
            shared.append({"id": file_id, "title": title})
        self._notify()
        return {"ok": True, "files": shared}
