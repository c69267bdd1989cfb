"""REST half of the fake Discord: aiohttp routes under ``/api/v10`` plus hosted attachment files."""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from tests.fakes.discord_fake_state import now_iso

if TYPE_CHECKING:
    from tests.fakes.discord_fake import FakeDiscord
    from tests.fakes.discord_fake_state import FakeInteraction

API_PREFIX = "/api/v10"


@dataclass
class RecordedFile:
    """One file part of a multipart REST request."""

    field_name: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class RecordedCall:
    """One REST call the client made; ``path`` is relative to ``/api/v10``."""

    method: str
    path: str
    json: Any
    query: dict[str, str]
    files: list[RecordedFile] = field(default_factory=list)
    status: int = 0
    unhandled: bool = False  # hit no known route


# The RecordedCall of the current request, parsed once by the middleware and read by the handlers.
CALL_KEY = web.RequestKey("call", RecordedCall)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    # discord.py only decodes a body whose Content-Type is exactly "application/json";
    # web.json_response would append "; charset=utf-8" and the client would see a plain string.
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def error(status: int, code: int, message: str) -> web.Response:
    return json_response({"message": message, "code": code}, status)


def no_content() -> web.Response:
    return web.Response(status=204)


async def _read_body(request: web.Request) -> tuple[Any, list[RecordedFile]]:
    """JSON body, or for multipart the parsed ``payload_json`` plus the file parts."""
    files: list[RecordedFile] = []
    if request.content_type == "multipart/form-data":
        body: Any = None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "payload_json":
                body = json.loads(await part.text())
            else:
                data = bytes(await part.read())
                files.append(
                    RecordedFile(part.name or "", part.filename or "", part.headers.get("Content-Type"), data)
                )
        return body, files
    raw = await request.read() if request.can_read_body else b""
    return (json.loads(raw) if raw else None), files


def record_middleware(fake: FakeDiscord) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/"):
            return await handler(request)
        body, files = await _read_body(request)
        call = RecordedCall(request.method, request.path[len(API_PREFIX) :], body, dict(request.query), files)
        request[CALL_KEY] = call
        resource = request.match_info.route.resource
        template = resource.canonical[len(API_PREFIX) :] if resource is not None else call.path
        route = f"{request.method} {template}"
        verdict = fake.limits.check(route, request.match_info)
        if verdict.refused is not None:
            # Refused requests are kept apart: `calls` stays "what the fake acted on", as tests expect.
            call.status = 429
            fake.record_rate_limited(call)
            response_429 = json_response(verdict.refused, 429)
            response_429.headers.update(verdict.headers)
            return response_429
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        except Exception as exc:
            # A bug in the fake becomes a 400 the client raises at once; a 500 would make discord.py
            # retry with sleeps for several seconds before failing.
            traceback.print_exc()
            response = error(400, 50035, f"fake discord crashed: {exc!r}")
        call.status = response.status
        response.headers.update(verdict.headers)
        fake.record(call)
        return response

    return middleware


def _new_attachments(
    fake: FakeDiscord, body: dict[str, Any], files: list[RecordedFile]
) -> list[dict[str, Any]]:
    """Host uploaded files so tests can download what the bot sent; names come from payload attachments."""
    meta = {str(a.get("id")): a for a in body.get("attachments") or []}
    result = []
    for position, upload in enumerate(files):
        match = re.fullmatch(r"files\[(\d+)\]", upload.field_name)
        info = meta.get(match.group(1) if match else str(position), {})
        attachment = fake.host_file(
            info.get("filename") or upload.filename,
            upload.data,
            upload.content_type or "application/octet-stream",
        )
        if info.get("description"):
            attachment["description"] = info["description"]
        result.append(attachment)
    return result


def create_bot_message(
    fake: FakeDiscord,
    channel_id: int,
    body: dict[str, Any],
    files: list[RecordedFile],
    *,
    webhook: bool = False,
) -> dict[str, Any]:
    message = fake.message_payload(
        channel_id,
        fake.bot_user_id,
        str(body.get("content") or ""),
        attachments=_new_attachments(fake, body, files),
        flags=int(body.get("flags") or 0),
    )
    message.update(
        embeds=body.get("embeds") or [], components=body.get("components") or [], tts=bool(body.get("tts"))
    )
    reference = body.get("message_reference")
    if reference:
        message["type"] = 19  # reply
        message["message_reference"] = {"channel_id": str(channel_id), **reference}
    if webhook:
        message["webhook_id"] = str(fake.application_id)
        message["application_id"] = str(fake.application_id)
    return fake.store_message(message)


def edit_message(
    fake: FakeDiscord, message: dict[str, Any], body: dict[str, Any], files: list[RecordedFile]
) -> None:
    defaults: dict[str, Any] = {"content": "", "embeds": [], "components": [], "flags": 0}
    for key, default in defaults.items():
        if key in body:
            message[key] = body[key] if body[key] is not None else default
    if "attachments" in body or files:
        keep = {str(a.get("id")) for a in body.get("attachments") or []}
        kept = [a for a in message["attachments"] if a["id"] in keep]
        message["attachments"] = kept + _new_attachments(fake, body, files)
    message["edited_timestamp"] = now_iso()
    fake.notify()


class _Routes:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _body(request: web.Request) -> Any:
        return request[CALL_KEY].json

    @staticmethod
    def _files(request: web.Request) -> list[RecordedFile]:
        return request[CALL_KEY].files

    def _known_channel(self, request: web.Request) -> int | None:
        channel_id = int(request.match_info["channel_id"])
        return channel_id if self.fake.channel_payload(channel_id) is not None else None

    def _interaction_by_token(self, request: web.Request) -> FakeInteraction | None:
        if int(request.match_info["app_id"]) != self.fake.application_id:
            return None
        token = request.match_info["token"]
        return next((i for i in self.fake.interactions.values() if i.token == token), None)

    def _app_matches(self, request: web.Request) -> bool:
        return int(request.match_info["app_id"]) == self.fake.application_id

    # ------------------------------------------------------------ users, app, gateway

    async def get_me(self, request: web.Request) -> web.Response:
        if self.fake.refuse_token:
            return error(401, 0, "401: Unauthorized")
        return json_response(self.fake.bot_user)

    async def get_user(self, request: web.Request) -> web.Response:
        user = self.fake.users.get(int(request.match_info["user_id"]))
        return json_response(user) if user else error(404, 10013, "Unknown User")

    async def create_dm(self, request: web.Request) -> web.Response:
        channel_id = self.fake.open_dm(int(self._body(request)["recipient_id"]))
        return json_response(self.fake.channel_payload(channel_id))

    async def app_info(self, request: web.Request) -> web.Response:
        # Client.login() fetches this right after /users/@me to learn the application id.
        return json_response(
            {
                "id": str(self.fake.application_id),
                "name": self.fake.bot_user["username"],
                "icon": None,
                "description": "",
                "summary": "",
                "rpc_origins": [],
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self.fake.user(1),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "bot": self.fake.bot_user,
                "interactions_endpoint_url": None,  # non-null makes discord.py warn that it gets no interactions
            }
        )

    async def gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.fake.gateway_url})

    async def gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return json_response({"url": self.fake.gateway_url, "shards": 1, "session_start_limit": limit})

    # ------------------------------------------------------------ channels and messages

    async def get_channel(self, request: web.Request) -> web.Response:
        channel = self.fake.channel_payload(int(request.match_info["channel_id"]))
        return json_response(channel) if channel else error(404, 10003, "Unknown Channel")

    async def list_messages(self, request: web.Request) -> web.Response:
        channel_id = self._known_channel(request)
        if channel_id is None:
            return error(404, 10003, "Unknown Channel")
        limit = int(request.query.get("limit", 50))
        return json_response(list(reversed(self.fake.messages.get(channel_id, [])))[:limit])  # newest first

    async def post_message(self, request: web.Request) -> web.Response:
        channel_id = self._known_channel(request)
        if channel_id is None:
            return error(404, 10003, "Unknown Channel")
        body = self._body(request) or {}
        files = self._files(request)
        if not (
            body.get("content")
            or body.get("embeds")
            or files
            or body.get("components")
            or body.get("sticker_ids")
        ):
            return error(400, 50006, "Cannot send an empty message")
        return json_response(create_bot_message(self.fake, channel_id, body, files))

    def _message(self, request: web.Request) -> dict[str, Any] | None:
        channel_id = int(request.match_info["channel_id"])
        return self.fake.get_message(channel_id, int(request.match_info["message_id"]))

    async def start_thread(self, request: web.Request) -> web.Response:
        """A public thread from a message (Start Thread from Message): made, announced by THREAD_CREATE."""
        message = self._message(request)
        if message is None:
            return error(404, 10008, "Unknown Message")
        channel_id = int(message["channel_id"])
        guild_id = self.fake.channel_guild_id(channel_id)
        if guild_id is None:
            return error(400, 50024, "Cannot execute action on this channel type")
        name = str((self._body(request) or {}).get("name") or "thread")[:100]
        thread = self.fake.add_thread(guild_id, channel_id, name)
        await self.fake.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return json_response(thread)

    async def get_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        return json_response(message) if message else error(404, 10008, "Unknown Message")

    async def edit_channel_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message is None:
            return error(404, 10008, "Unknown Message")
        if int(message["author"]["id"]) != self.fake.bot_user_id:
            return error(403, 50005, "Cannot edit a message authored by another user")
        edit_message(self.fake, message, self._body(request) or {}, self._files(request))
        return json_response(message)

    async def delete_channel_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message is None:
            return error(404, 10008, "Unknown Message")
        self.fake.messages[int(message["channel_id"])].remove(message)
        self.fake.notify()
        return no_content()

    async def typing(self, request: web.Request) -> web.Response:
        return (
            no_content() if self._known_channel(request) is not None else error(404, 10003, "Unknown Channel")
        )

    async def reaction(self, request: web.Request) -> web.Response:
        return no_content() if self._message(request) is not None else error(404, 10008, "Unknown Message")

    # ------------------------------------------------------------ guilds

    async def get_guild(self, request: web.Request) -> web.Response:
        guild_id = int(request.match_info["guild_id"])
        if guild_id not in self.fake.guilds:
            return error(404, 10004, "Unknown Guild")
        payload = self.fake.guild_payload(guild_id)
        for key in (
            "channels",
            "members",
            "threads",
            "presences",
            "voice_states",
            "joined_at",
            "large",
            "unavailable",
        ):
            payload.pop(key)  # REST guild objects do not carry the gateway-only fields
        return json_response(payload)

    async def guild_channels(self, request: web.Request) -> web.Response:
        guild = self.fake.guilds.get(int(request.match_info["guild_id"]))
        return json_response(list(guild.channels.values())) if guild else error(404, 10004, "Unknown Guild")

    async def guild_roles(self, request: web.Request) -> web.Response:
        guild = self.fake.guilds.get(int(request.match_info["guild_id"]))
        return json_response(guild.roles) if guild else error(404, 10004, "Unknown Guild")

    async def guild_member(self, request: web.Request) -> web.Response:
        guild_id, user_id = int(request.match_info["guild_id"]), int(request.match_info["user_id"])
        guild = self.fake.guilds.get(guild_id)
        if guild is None:
            return error(404, 10004, "Unknown Guild")
        if user_id not in guild.members:
            return error(404, 10007, "Unknown Member")
        return json_response(self.fake.member_payload(guild_id, user_id))

    # ------------------------------------------------------------ interactions

    async def interaction_callback(self, request: web.Request) -> web.Response:
        interaction = self.fake.interactions.get(int(request.match_info["interaction_id"]))
        if interaction is None or interaction.token != request.match_info["token"]:
            return error(404, 10062, "Unknown interaction")
        if interaction.callbacks:
            return error(400, 40060, "Interaction has already been acknowledged.")
        body = self._body(request) or {}
        interaction.callbacks.append(body)
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        resource: dict[str, Any] = {"type": kind}
        if kind == 4:  # CHANNEL_MESSAGE_WITH_SOURCE: the reply becomes the @original message
            message = create_bot_message(
                self.fake, interaction.channel_id, data, self._files(request), webhook=True
            )
            interaction.original_message_id = int(message["id"])
            resource["message"] = message
        self.fake.notify()
        if request.query.get("with_response") not in ("1", "true", "True"):
            return no_content()
        # discord.py >= 2.5 asks for ?with_response=1 and parses this InteractionCallback object.
        info: dict[str, Any] = {
            "id": str(interaction.id),
            "type": interaction.type,
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(int(data.get("flags") or 0) & 64),
        }
        if interaction.original_message_id is not None:
            info["response_message_id"] = str(interaction.original_message_id)
        return json_response({"interaction": info, "resource": resource})

    async def webhook_execute(self, request: web.Request) -> web.Response:
        interaction = self._interaction_by_token(request)
        if interaction is None or not interaction.callbacks:
            # Discord rejects follow-ups before the interaction was acknowledged.
            return error(404, 10015, "Unknown Webhook")
        message = create_bot_message(
            self.fake, interaction.channel_id, self._body(request) or {}, self._files(request), webhook=True
        )
        interaction.followups.append(message)
        if interaction.deferred and interaction.original_message_id is None:
            # After a deferral, Discord turns the first follow-up into the original response.
            interaction.original_message_id = int(message["id"])
        self.fake.notify()
        return json_response(message) if request.query.get("wait") in ("1", "true", "True") else no_content()

    def _webhook_message(self, request: web.Request) -> tuple[FakeInteraction | None, dict[str, Any] | None]:
        interaction = self._interaction_by_token(request)
        if interaction is None:
            return None, None
        raw_id = request.match_info["message_id"]
        message_id = interaction.original_message_id if raw_id == "@original" else int(raw_id)
        if message_id is None:
            return interaction, None
        return interaction, self.fake.get_message(interaction.channel_id, message_id)

    async def webhook_get_message(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        return json_response(message) if message else error(404, 10008, "Unknown Message")

    async def webhook_edit_message(self, request: web.Request) -> web.Response:
        interaction, message = self._webhook_message(request)
        if interaction is None or not interaction.callbacks:
            return error(404, 10015, "Unknown Webhook")
        body = self._body(request) or {}
        is_original = request.match_info["message_id"] == "@original"
        if is_original:
            interaction.original_edits.append(body)
        if message is None and is_original and interaction.deferred:
            # Editing @original after a deferral fills in the "thinking..." placeholder.
            message = create_bot_message(
                self.fake, interaction.channel_id, body, self._files(request), webhook=True
            )
            message["flags"] = int(message["flags"]) | (64 if interaction.ephemeral else 0)
            interaction.original_message_id = int(message["id"])
            self.fake.notify()
            return json_response(message)
        if message is None:
            return error(404, 10008, "Unknown Message")
        edit_message(self.fake, message, body, self._files(request))
        return json_response(message)

    async def webhook_delete_message(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        if message is None:
            return error(404, 10008, "Unknown Message")
        self.fake.messages[int(message["channel_id"])].remove(message)
        self.fake.notify()
        return no_content()

    # ------------------------------------------------------------ application commands

    def _command_list(self, request: web.Request) -> tuple[list[dict[str, Any]], int | None]:
        guild_id = int(request.match_info["guild_id"]) if "guild_id" in request.match_info else None
        if guild_id is None:
            return self.fake.global_commands, None
        return self.fake.guild_commands.setdefault(guild_id, []), guild_id

    def _normalize_command(
        self, raw: dict[str, Any], existing: list[dict[str, Any]], guild_id: int | None
    ) -> dict[str, Any]:
        old = next(
            (c for c in existing if c["name"] == raw["name"] and c.get("type", 1) == raw.get("type", 1)), None
        )
        command = {
            "type": 1,
            "description": "",
            "options": [],
            "default_member_permissions": None,
            "nsfw": False,
            **raw,
            "id": old["id"] if old else str(self.fake.snowflake()),
            "application_id": str(self.fake.application_id),
            "version": str(self.fake.snowflake()),
        }
        if guild_id is not None:
            command["guild_id"] = str(guild_id)
        return command

    async def get_commands(self, request: web.Request) -> web.Response:
        if not self._app_matches(request):
            return error(404, 10002, "Unknown Application")
        return json_response(self._command_list(request)[0])

    async def put_commands(self, request: web.Request) -> web.Response:
        """Bulk overwrite (what CommandTree.sync uses): the body replaces the whole list."""
        if not self._app_matches(request):
            return error(404, 10002, "Unknown Application")
        existing, guild_id = self._command_list(request)
        new = [self._normalize_command(raw, existing, guild_id) for raw in self._body(request) or []]
        existing[:] = new
        return json_response(new)

    async def post_command(self, request: web.Request) -> web.Response:
        if not self._app_matches(request):
            return error(404, 10002, "Unknown Application")
        existing, guild_id = self._command_list(request)
        command = self._normalize_command(self._body(request), existing, guild_id)
        existing[:] = [c for c in existing if c["id"] != command["id"]] + [command]
        return json_response(command)

    # ------------------------------------------------------------ misc

    async def unknown(self, request: web.Request) -> web.Response:
        request[CALL_KEY].unhandled = True
        return error(
            404, 0, f"404: Not Found (fake discord has no route for {request.method} {request.path})"
        )

    async def attachment(self, request: web.Request) -> web.Response:
        hosted = self.fake.files.get(int(request.match_info["attachment_id"]))
        if hosted is None:
            return web.Response(status=404)
        _, data, content_type = hosted
        return web.Response(body=data, headers={"Content-Type": content_type})


def build_routes(fake: FakeDiscord, app: web.Application) -> None:
    r = _Routes(fake)
    add = app.router.add_route
    table: list[tuple[str, str, Handler]] = [
        ("GET", "/users/@me", r.get_me),
        ("POST", "/users/@me/channels", r.create_dm),
        ("GET", "/users/{user_id:\\d+}", r.get_user),
        ("GET", "/oauth2/applications/@me", r.app_info),
        ("GET", "/applications/@me", r.app_info),
        ("GET", "/gateway", r.gateway),
        ("GET", "/gateway/bot", r.gateway_bot),
        ("GET", "/channels/{channel_id:\\d+}", r.get_channel),
        ("GET", "/channels/{channel_id:\\d+}/messages", r.list_messages),
        ("POST", "/channels/{channel_id:\\d+}/messages", r.post_message),
        ("GET", "/channels/{channel_id:\\d+}/messages/{message_id:\\d+}", r.get_message),
        ("PATCH", "/channels/{channel_id:\\d+}/messages/{message_id:\\d+}", r.edit_channel_message),
        ("DELETE", "/channels/{channel_id:\\d+}/messages/{message_id:\\d+}", r.delete_channel_message),
        ("PUT", "/channels/{channel_id:\\d+}/messages/{message_id:\\d+}/reactions/{emoji}/@me", r.reaction),
        ("POST", "/channels/{channel_id:\\d+}/messages/{message_id:\\d+}/threads", r.start_thread),
        (
            "DELETE",
            "/channels/{channel_id:\\d+}/messages/{message_id:\\d+}/reactions/{emoji}/@me",
            r.reaction,
        ),
        ("POST", "/channels/{channel_id:\\d+}/typing", r.typing),
        ("GET", "/guilds/{guild_id:\\d+}", r.get_guild),
        ("GET", "/guilds/{guild_id:\\d+}/channels", r.guild_channels),
        ("GET", "/guilds/{guild_id:\\d+}/roles", r.guild_roles),
        ("GET", "/guilds/{guild_id:\\d+}/members/{user_id:\\d+}", r.guild_member),
        ("POST", "/interactions/{interaction_id:\\d+}/{token}/callback", r.interaction_callback),
        ("POST", "/webhooks/{app_id:\\d+}/{token}", r.webhook_execute),
        ("GET", "/webhooks/{app_id:\\d+}/{token}/messages/{message_id}", r.webhook_get_message),
        ("PATCH", "/webhooks/{app_id:\\d+}/{token}/messages/{message_id}", r.webhook_edit_message),
        ("DELETE", "/webhooks/{app_id:\\d+}/{token}/messages/{message_id}", r.webhook_delete_message),
    ]
    for prefix in ("/applications/{app_id:\\d+}", "/applications/{app_id:\\d+}/guilds/{guild_id:\\d+}"):
        table += [
            ("GET", prefix + "/commands", r.get_commands),
            ("PUT", prefix + "/commands", r.put_commands),
            ("POST", prefix + "/commands", r.post_command),
        ]
    for method, path, handler in table:
        add(method, API_PREFIX + path, handler)
    add("*", API_PREFIX + "/{tail:.*}", r.unknown)
    app.router.add_get("/attachments/{attachment_id:\\d+}/{filename}", r.attachment)
