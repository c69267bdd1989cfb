"""An in-process fake of the Slack platform for tests.

One aiohttp server on 127.0.0.1 (random port) plays every Slack-side role the bot talks to:

* the Web API (``/api/<method>``) -- point ``AsyncWebClient(base_url=fake.api_url)`` at it;
* ``files.slack.com`` (``/files-pri/...``) -- ``url_private`` downloads that need the bot token;
* ``response_url`` endpoints (``/commands/...``) handed out in slash-command payloads.

It also builds and delivers *signed* Events API / slash-command requests to the app under
test, so a real slack-bolt ``AsyncApp`` (HTTP mode) can be exercised end to end without
network access. Response shapes follow Slack's documented ones (HTTP 200 with
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``) because slack_sdk raises
``SlackApiError`` from exactly those fields.

This module holds the server, its state and the ways to inspect it; the Web API methods are in
``slack_fake_api.py`` and the requests sent to the app in ``slack_fake_requests.py``, both mixed into FakeSlack;
the Web API's rate limits (on by default, as on Slack) are in ``slack_fake_limits.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import time
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self, TypeVar
from urllib.parse import quote

import aiohttp
from aiohttp import web

from tests.fakes.ratelimit import Clock, Limit
from tests.fakes.slack_fake_api import JsonDict, SlackWebApi
from tests.fakes.slack_fake_limits import SlackLimits
from tests.fakes.slack_fake_requests import SlackRequests
from tests.fakes.slack_fake_uploads import SlackUploads

__all__ = ["FakeSlack", "FileDownload", "RecordedCall", "ResponseUrlPost"]

_T = TypeVar("_T")

CallPredicate = Callable[["RecordedCall"], bool]

# Shown when url_private is fetched without valid credentials: real Slack answers such requests
# with a sign-in page (HTML), which is the classic way bots end up "downloading" HTML instead of
# the file. Tests can assert the bot notices that.
_LOGIN_PAGE = (
    '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
    "<title>Slack</title></head><body><h1>Sign in to Slack</h1>"
    '<form action="/signin" method="post"><input type="email" name="email"></form>'
    "</body></html>"
)

# Extension -> (Slack "filetype", "pretty_type"); anything unknown is "binary" as on Slack.
_FILETYPES: dict[str, tuple[str, str]] = {
    "txt": ("text", "Plain Text"),
    "md": ("markdown", "Markdown (raw)"),
    "pdf": ("pdf", "PDF"),
    "png": ("png", "PNG"),
    "jpg": ("jpg", "JPEG"),
    "jpeg": ("jpg", "JPEG"),
    "gif": ("gif", "GIF"),
    "json": ("json", "JSON"),
    "csv": ("csv", "CSV"),
    "py": ("python", "Python"),
    "html": ("html", "HTML"),
    "zip": ("zip", "Zip"),
}


@dataclass
class RecordedCall:
    """One Web API request as the fake received it (recorded even when it was rejected)."""

    method: str  # e.g. "chat.postMessage"
    params: JsonDict  # query string, form fields and JSON body merged
    headers: dict[str, str]
    http_method: str  # "GET" / "POST" -- e.g. files.info and users.info are GETs in slack_sdk
    content_type: str  # "application/json", "application/x-www-form-urlencoded", "" for GET...
    token: str | None  # bearer token (or legacy `token` form/query field) that was presented
    response: JsonDict = field(default_factory=dict)  # what the fake answered
    status: int = 200
    peer: str = ""  # the client's end of the connection it came over ("host:port")

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))


@dataclass
class FileDownload:
    """One fetch of a hosted file's url_private / url_private_download."""

    file_id: str | None
    path: str
    authorized: bool  # True only if `Authorization: Bearer <bot_token>` was sent
    had_auth_header: bool
    status: int


@dataclass
class ResponseUrlPost:
    """One POST the app made to a slash-command response_url."""

    url: str
    body: JsonDict


@dataclass
class _InjectedFailure:
    error: str
    status: int
    retry_after: int | None
    remaining: int


class FakeSlack(SlackRequests, SlackWebApi, SlackUploads):
    """Fake Slack server; use as ``async with FakeSlack() as fake: ...``."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test",
        signing_secret: str = "test-secret",
        team_id: str = "T1",
        bot_user_id: str = "UBOT",
        bot_id: str = "B1",
        app_id: str = "A1",
        team_name: str = "Fake Team",
        team_domain: str = "fake-team",
        bot_name: str = "membot",
        rate_limits: bool | Mapping[str, Limit | None] = True,
        clock: Clock = time.time,
    ) -> None:
        """``rate_limits``: Slack's real limits by default (see slack_fake_limits.py); False turns them off,
        a mapping overrides single methods. ``clock`` is what the limits count time with (epoch seconds;
        a ``ratelimit.ManualClock`` lets a test skip the waits)."""
        self.limits = SlackLimits(rate_limits, clock=clock)
        self.bot_token = bot_token
        # Socket Mode: apps.connections.open takes only this token, and answers with socket_url (by default a
        # port nobody listens on, so a client that connects keeps retrying).
        self.app_token = "xapp-test"
        self.socket_url = "ws://127.0.0.1:9/link/?ticket=fake"
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.team_name = team_name
        self.team_domain = team_domain
        self.bot_name = bot_name
        # Sent back as the x-oauth-scopes header like real Slack; bolt stores it as bot_scopes.
        self.scopes = (
            "app_mentions:read,channels:history,chat:write,commands,files:read,"
            "im:history,im:read,im:write,reactions:write,users:read"
        )
        # Legacy verification token carried inside payloads (bolt ignores it; signatures matter).
        self.verification_token = "fake-verification-token"

        self.calls: list[RecordedCall] = []
        self.rate_limited_calls: list[RecordedCall] = []  # answered 429 by the limits (not in `calls`)
        self.file_downloads: list[FileDownload] = []
        self.response_url_posts: list[JsonDict] = []  # JSON bodies, in arrival order
        self.response_url_requests: list[ResponseUrlPost] = []  # same, plus which URL was hit
        self.users: dict[str, JsonDict] = {}
        self.files: dict[str, JsonDict] = {}
        self.file_contents: dict[str, bytes] = {}
        self._init_uploads()
        self.channels: dict[str, JsonDict] = {}
        # (channel, ts) -> message posted by the bot, so chat.update can find it.
        self.messages: dict[tuple[str, str], JsonDict] = {}
        self.reactions: list[tuple[str, str, str]] = []  # (channel, ts, name)

        self._dm_channels: dict[str, str] = {}  # user id -> DM channel id
        self._response_urls: set[str] = set()  # paths of response_urls we handed out
        self._failures: dict[str, list[_InjectedFailure]] = {}
        self._waiters: set[asyncio.Event] = set()
        self._ts_base = int(time.time())
        self._ts_counter = itertools.count(1)
        self._id_counter = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._port: int | None = None

        self.add_user(bot_user_id, bot_name, is_bot=True)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/files-pri/{team_file}/{rest:.*}", self._handle_file_download)
        app.router.add_get("/signin", self._handle_login_page)
        app.router.add_post("/commands/{rest:.*}", self._handle_response_url)
        app.router.add_post("/upload/v1/{file_id}", self._handle_upload)
        # access_log=None: the per-request log lines only add noise to test output.
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)  # port 0: let the OS pick a free one
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        # trust_env=False so a proxy in the environment can never divert loopback traffic.
        self._session = aiohttp.ClientSession(trust_env=False)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeSlack is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        # slack_sdk urljoin()s the method name onto base_url, so the trailing slash matters
        # (it appends one itself if missing, but we hand out the canonical form).
        return f"{self.base_url}/api/"

    # ------------------------------------------------------------------ state setup

    def next_ts(self) -> str:
        """A fresh Slack timestamp; strictly increasing (as strings and as floats)."""
        return f"{self._ts_base}.{next(self._ts_counter):06d}"

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._id_counter):08d}"

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        is_admin: bool = False,
        is_owner: bool = False,
        is_bot: bool = False,
        real_name: str | None = None,
        tz: str = "America/Los_Angeles",
    ) -> JsonDict:
        """Register a user for users.info. Owners are admins too, as on real Slack."""
        tz_label, tz_offset = _tz_info(tz)
        real = real_name or name
        user: JsonDict = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "color": "9f69e7",
            "real_name": real,
            "tz": tz,
            "tz_label": tz_label,
            "tz_offset": tz_offset,
            "profile": {
                "real_name": real,
                "real_name_normalized": real,
                "display_name": name,
                "display_name_normalized": name,
                "team": self.team_id,
            },
            "is_admin": is_admin or is_owner,
            "is_owner": is_owner,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": int(time.time()),
        }
        if is_bot:
            user["profile"]["bot_id"] = self.bot_id
        self.users[user_id] = user
        return user

    def add_channel(self, channel_id: str, name: str, *, is_private: bool = False) -> JsonDict:
        """Register a channel for conversations.info (unregistered C/G/D ids are synthesized)."""
        chan = self._channel_object(channel_id, name=name, is_private=is_private)
        self.channels[channel_id] = chan
        return chan

    def dm_channel_for(self, user_id: str) -> str:
        """The DM channel between the bot and ``user_id`` ("U1" -> "D1" unless set otherwise)."""
        if user_id not in self._dm_channels:
            self._dm_channels[user_id] = "D" + (user_id[1:] if user_id[:1] in ("U", "W") else user_id)
        return self._dm_channels[user_id]

    def host_file(
        self,
        name: str,
        data: bytes,
        mimetype: str,
        *,
        user: str,
        channels: list[str],
        title: str | None = None,
    ) -> JsonDict:
        """Host ``data`` as a Slack file; returns the file object (as files.info / file_share show it).

        ``channels`` are sorted into Slack's ``channels`` (C…), ``groups`` (G…) and ``ims`` (D…)
        lists. The bytes are served at url_private only to ``Authorization: Bearer <bot_token>``.
        """
        file_id = self._next_id("F")
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        filetype, pretty = _FILETYPES.get(ext, ("binary", "Binary"))
        now = int(time.time())
        quoted = quote(name)
        file_obj: JsonDict = {
            "id": file_id,
            "created": now,
            "timestamp": now,
            "name": name,
            "title": title or name,
            "mimetype": mimetype,
            "filetype": filetype,
            "pretty_type": pretty,
            "user": user,
            "user_team": self.team_id,
            "editable": False,
            "size": len(data),
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": any(c.startswith("C") for c in channels),
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": f"{self.base_url}/files-pri/{self.team_id}-{file_id}/{quoted}",
            "url_private_download": f"{self.base_url}/files-pri/{self.team_id}-{file_id}/download/{quoted}",
            "permalink": f"https://{self.team_domain}.slack.com/files/{user}/{file_id}/{quoted}",
            "channels": [c for c in channels if c.startswith("C")],
            "groups": [c for c in channels if c.startswith("G")],
            "ims": [c for c in channels if c.startswith("D")],
            "comments_count": 0,
        }
        self.files[file_id] = file_obj
        self.file_contents[file_id] = data
        return file_obj

    def fail_next(
        self,
        method: str,
        error: str = "internal_error",
        *,
        status: int = 200,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls to ``method`` fail with ``error``.

        For rate limiting use ``fail_next(m, "ratelimited", status=429, retry_after=1)``:
        Slack then sends HTTP 429 plus a Retry-After header. (The real limits in :attr:`limits` apply on
        their own; injected failures come first, are recorded in :attr:`calls` and are not counted there.)
        """
        self._failures.setdefault(method, []).append(_InjectedFailure(error, status, retry_after, times))

    # ------------------------------------------------------------------ inspection

    def calls_to(self, method: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method == method]

    async def wait_for_call(
        self,
        method: str,
        timeout: float = 10,  # noqa: ASYNC109 -- a plain deadline reads better in tests than asyncio.timeout blocks
        predicate: CallPredicate | None = None,
        *,
        since: int = 0,
    ) -> RecordedCall:
        """Return the first call to ``method`` in ``calls[since:]`` matching ``predicate``.

        Already-recorded calls count, so there is no race with a handler that was quicker than
        the test. Pass ``since=len(fake.calls)`` (taken beforehand) to only see newer calls.
        """

        def find() -> RecordedCall | None:
            for call in self.calls[since:]:
                if call.method == method and (predicate is None or predicate(call)):
                    return call
            return None

        def describe() -> str:
            return f"call to {method}; saw {sorted({c.method for c in self.calls})}"

        return await self._wait_until(find, timeout, describe)

    async def wait_for_response_url_post(
        self,
        timeout: float = 10,  # noqa: ASYNC109 -- same reasoning as wait_for_call
        predicate: Callable[[JsonDict], bool] | None = None,
        *,
        since: int = 0,
    ) -> JsonDict:
        def find() -> JsonDict | None:
            for body in self.response_url_posts[since:]:
                if predicate is None or predicate(body):
                    return body
            return None

        return await self._wait_until(
            find, timeout, lambda: f"response_url POST; saw {self.response_url_posts}"
        )

    async def _wait_until(
        self, find: Callable[[], _T | None], seconds: float, describe: Callable[[], str]
    ) -> _T:
        # Event-driven rather than polling: every recorded request wakes all waiters, which
        # re-check. Everything runs on the one test event loop, so no locking is needed.
        try:
            async with asyncio.timeout(seconds):
                while True:
                    found = find()
                    if found is not None:
                        return found
                    event = asyncio.Event()
                    self._waiters.add(event)
                    try:
                        await event.wait()
                    finally:
                        self._waiters.discard(event)
        except TimeoutError:
            raise AssertionError(f"FakeSlack: timed out after {seconds}s waiting for {describe()}") from None

    def _notify(self) -> None:
        for event in self._waiters:
            event.set()

    # ------------------------------------------------------------------ HTTP handlers

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: JsonDict = dict(request.query)
        token_from_fields: str | None = params.get("token")
        content_type = request.content_type if request.body_exists else ""
        if request.body_exists:
            if content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    # A `token` inside a JSON body is not honoured by Slack; only the header is.
                    params.update(body)
            else:
                form = await request.post()
                for key, value in form.items():
                    params[key] = value if isinstance(value, str) else value.file.read()
                if isinstance(form.get("token"), str):
                    token_from_fields = str(form["token"])

        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else token_from_fields
        call = RecordedCall(
            method=method,
            params=params,
            headers=dict(request.headers),
            http_method=request.method,
            content_type=content_type,
            token=token,
            peer=":".join(map(str, request.transport.get_extra_info("peername") or ())) if request.transport else "",
        )

        extra_headers = {"x-oauth-scopes": self.scopes}
        failure = self._take_failure(method)
        if failure is not None:
            call.status = failure.status
            call.response = {"ok": False, "error": failure.error}
            if failure.retry_after is not None:
                extra_headers["Retry-After"] = str(failure.retry_after)
        elif not token:
            call.response = {"ok": False, "error": "not_authed"}
        elif token != (self.app_token if method == "apps.connections.open" else self.bot_token):
            call.response = {"ok": False, "error": "invalid_auth"}
        else:
            handler = self._api_methods().get(method)
            channel = params.get("channel")
            refusal = (
                self.limits.check(method, self._resolve_channel(str(channel)) if channel else None)
                if handler
                else None
            )
            if refusal is not None:
                call.status = 429
                call.response = {"ok": False, "error": "ratelimited"}
                extra_headers["Retry-After"] = str(refusal.retry_after)
                self.rate_limited_calls.append(call)
                self._notify()
                return web.json_response(call.response, status=429, headers=extra_headers)
            call.response = handler(params) if handler else {"ok": False, "error": "unknown_method"}
        self.calls.append(call)
        self._notify()
        return web.json_response(call.response, status=call.status, headers=extra_headers)

    def _take_failure(self, method: str) -> _InjectedFailure | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        failure = queue[0]
        failure.remaining -= 1
        if failure.remaining <= 0:
            queue.pop(0)
        return failure

    def _api_methods(self) -> dict[str, Callable[[JsonDict], JsonDict]]:
        return {
            "api.test": lambda p: {"ok": True, "args": p},
            "auth.test": self._auth_test,
            "apps.connections.open": lambda p: {"ok": True, "url": self.socket_url},
            "chat.postMessage": self._chat_post_message,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "users.info": self._users_info,
            "files.info": self._files_info,
            "conversations.info": self._conversations_info,
            "conversations.open": self._conversations_open,
            "reactions.add": self._reactions_add,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
        }

    async def _handle_file_download(self, request: web.Request) -> web.StreamResponse:
        team_file = request.match_info["team_file"]
        file_id = team_file.split("-", 1)[1] if "-" in team_file else None
        auth = request.headers.get("Authorization")
        authorized = auth == f"Bearer {self.bot_token}"
        if file_id not in self.files:
            status = 404
            resp: web.StreamResponse = web.Response(status=404, text="File not found")
        elif authorized:
            status = 200
            resp = web.Response(
                body=self.file_contents[file_id], content_type=self.files[file_id]["mimetype"]
            )
        elif auth is None:
            # No credentials: Slack redirects to its sign-in page (a client that follows
            # redirects ends up with 200 + text/html instead of the file).
            status = 302
            resp = web.Response(
                status=302,
                text=_LOGIN_PAGE,
                content_type="text/html",
                headers={"Location": f"{self.base_url}/signin?redir={quote(request.path)}"},
            )
        else:
            # Credentials present but wrong: refuse, still with an HTML page rather than JSON.
            status = 403
            resp = web.Response(status=403, text=_LOGIN_PAGE, content_type="text/html")
        self.file_downloads.append(
            FileDownload(
                file_id=file_id,
                path=request.path,
                authorized=authorized,
                had_auth_header=auth is not None,
                status=status,
            )
        )
        self._notify()
        return resp

    async def _handle_login_page(self, request: web.Request) -> web.Response:
        return web.Response(text=_LOGIN_PAGE, content_type="text/html")

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        if request.path not in self._response_urls:
            return web.Response(status=404, text="no_service")
        raw = await request.text()
        try:
            body = json.loads(raw)
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not isinstance(body, dict):
            return web.Response(status=400, text="invalid_payload")
        self.response_url_posts.append(body)
        self.response_url_requests.append(ResponseUrlPost(url=str(request.url), body=body))
        self._notify()
        return web.Response(text="ok")


def _tz_info(tz: str) -> tuple[str, int]:
    """(tz_label, tz_offset seconds) for an IANA zone, like users.info reports them."""
    try:
        now = dt.datetime.now(zoneinfo.ZoneInfo(tz))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return tz, 0
    offset = now.utcoffset()
    return now.tzname() or tz, int(offset.total_seconds()) if offset else 0
