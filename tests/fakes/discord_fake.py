"""In-process fake of Discord (REST API + gateway WebSocket) for tests.

A real ``discord.Client`` can log in, connect and talk to it once ``discord.http.Route.BASE`` and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` point at :attr:`FakeDiscord.api_url` /
:attr:`FakeDiscord.gateway_url` (see :func:`patch_discord_py`). The fake keeps just enough state
(users, guilds, channels, messages, interactions, application commands) to answer like Discord does,
and records every REST call so tests can assert on what the bot sent.

Layout: this module is the test-facing API; state and payload builders live in
``discord_fake_state.py``, the REST routes in ``discord_fake_rest.py``, their rate limits (on by default,
as on Discord) in ``discord_fake_limits.py`` and the gateway in ``discord_fake_gateway.py``.
"""

# ruff: noqa: ASYNC109 - the waiting helpers take ``timeout=`` on purpose (see discord_fake_state.py)

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from tests.fakes.discord_fake_gateway import GatewayConnection, handle_gateway
from tests.fakes.discord_fake_limits import GLOBAL_LIMIT, DiscordLimits
from tests.fakes.discord_fake_rest import (
    API_PREFIX,
    RecordedCall,
    RecordedFile,
    build_routes,
    record_middleware,
)
from tests.fakes.discord_fake_state import DiscordState, FakeGuild, FakeInteraction
from tests.fakes.ratelimit import Clock, Limit

__all__ = ["FakeDiscord", "FakeGuild", "FakeInteraction", "RecordedCall", "RecordedFile", "patch_discord_py"]


class FakeDiscord(DiscordState):
    def __init__(
        self,
        *,
        bot_user_id: int = 1000,
        application_id: int = 1000,
        bot_name: str = "membot",
        rate_limits: bool | Mapping[str, Limit | None] = True,
        global_limit: Limit | None = GLOBAL_LIMIT,
        clock: Clock = time.time,
        port: int = 0,
    ) -> None:
        """``port``: where to listen (0: any free port; a fixed one lets a test start Discord late).
        ``rate_limits``/``global_limit``: Discord's real limits by default (see discord_fake_limits.py);
        False turns every limit off, a mapping overrides single routes. ``clock`` is what the limits
        count time with (epoch seconds; a ``ratelimit.ManualClock`` lets a test skip the waits)."""
        super().__init__(bot_user_id=bot_user_id, application_id=application_id, bot_name=bot_name)
        self.limits = DiscordLimits(rate_limits, global_limit=global_limit, clock=clock)
        self.rate_limited_calls: list[RecordedCall] = []  # requests answered 429 (not in `calls`)
        self.api_url = ""
        self.gateway_url = ""
        self.calls: list[RecordedCall] = []
        self.gateway_received: list[dict[str, Any]] = []  # every payload the client sent over the gateway
        self.gateway_connections: list[dict[str, str]] = []  # query params of each WebSocket connection
        self.identify: dict[str, Any] | None = None
        self.sessions: dict[str, int] = {}  # gateway session id -> last sequence number
        self.connection: GatewayConnection | None = None
        self.port = port
        self.refuse_token = False  # True: GET /users/@me answers 401, as Discord does for a wrong bot token
        self._runner: web.AppRunner | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        app = web.Application(middlewares=[record_middleware(self)])
        build_routes(self, app)
        app.router.add_get("/ws", lambda request: handle_gateway(self, request))
        # Short shutdown timeout: a client that is still connected must not stall teardown for a minute.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.api_url = self.base_url + API_PREFIX
        self.gateway_url = f"ws://127.0.0.1:{port}/ws"

    async def stop(self) -> None:
        if self.connection is not None:
            await self.connection.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- recording and waiting

    def record(self, call: RecordedCall) -> None:
        self.calls.append(call)
        self.notify()

    def record_rate_limited(self, call: RecordedCall) -> None:
        self.rate_limited_calls.append(call)
        self.notify()

    def calls_to(self, method: str, path_pattern: str) -> list[RecordedCall]:
        """Calls matching ``method`` ("*" = any) and ``path_pattern``, where ``{name}`` matches one path
        segment and ``*`` anything; e.g. ``("POST", "/channels/{id}/messages")``."""
        regex = _pattern_regex(path_pattern)
        return [c for c in self.calls if method in ("*", c.method) and regex.fullmatch(c.path)]

    @property
    def unhandled_calls(self) -> list[RecordedCall]:
        """Calls that hit no known route (answered 404 "unknown route"): usually a bug in the bot or fake."""
        return [c for c in self.calls if c.unhandled]

    async def wait_for_call(
        self,
        method: str,
        path_pattern: str,
        timeout: float = 10,
        predicate: Callable[[RecordedCall], bool] | None = None,
        *,
        start: int = 0,
    ) -> RecordedCall:
        """First matching call at index >= ``start`` in :attr:`calls` (pass ``len(fake.calls)`` to only
        see calls made from now on), waiting for it if needed."""
        regex = _pattern_regex(path_pattern)

        def check() -> RecordedCall | None:
            for c in self.calls[start:]:
                if (
                    method in ("*", c.method)
                    and regex.fullmatch(c.path)
                    and (predicate is None or predicate(c))
                ):
                    return c
            return None

        return await self.wait_until(check, timeout, f"{method} {path_pattern}")

    async def wait_connected(self, timeout: float = 10) -> None:
        """Wait until a client has identified (or resumed) and got READY plus all GUILD_CREATEs."""
        await self.wait_until(
            lambda: self.connection is not None and self.connection.ready, timeout, "gateway READY"
        )

    @property
    def intents(self) -> int | None:
        return None if self.identify is None else self.identify.get("intents")

    async def wait_for_message(
        self,
        channel_id: int,
        count: int = 1,
        timeout: float = 10,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """Wait until the bot has posted ``count`` (matching) messages in the channel; return the last."""

        def check() -> dict[str, Any] | None:
            found = [m for m in self.messages_in(channel_id) if predicate is None or predicate(m)]
            return found[count - 1] if len(found) >= count else None

        return await self.wait_until(check, timeout, f"bot message #{count} in channel {channel_id}")

    # ----------------------------------------------------------------- gateway events

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a DISPATCH (op 0) to the connected client (waits for the connection first)."""
        await self.wait_connected()
        assert self.connection is not None
        await self.connection.dispatch(event, data)

    async def send_dm(
        self, user_id: int, content: str, attachments: Sequence[dict[str, Any]] = ()
    ) -> dict[str, Any]:
        channel_id = self.open_dm(user_id)
        message = self.store_message(
            self.message_payload(channel_id, user_id, content, attachments=attachments)
        )
        await self.dispatch("MESSAGE_CREATE", message)
        return message

    async def send_guild_message(
        self,
        guild_id: int,
        channel_id: int,
        user_id: int,
        content: str,
        mentions_bot: bool = False,
        attachments: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        """With ``mentions_bot`` the bot is in ``mentions`` and ``<@bot>`` is prepended unless present."""
        if channel_id not in self.guilds[guild_id].channels:
            raise KeyError(f"channel {channel_id} is not in guild {guild_id}")
        mentions: list[int] = []
        if mentions_bot:
            mentions.append(self.bot_user_id)
            tag = f"<@{self.bot_user_id}>"
            if tag not in content and f"<@!{self.bot_user_id}>" not in content:
                content = f"{tag} {content}"
        message = self.message_payload(
            channel_id, user_id, content, attachments=attachments, mentions=mentions
        )
        await self.dispatch("MESSAGE_CREATE", self.store_message(message))
        return message

    async def send_slash_command(
        self,
        user_id: int,
        name: str,
        options: Sequence[dict[str, Any]] = (),
        *,
        guild_id: int | None = None,
        channel_id: int | None = None,
        resolved: dict[str, Any] | None = None,
        member_permissions: str = "0",
        command_guild_id: int | None = None,
    ) -> FakeInteraction:
        """Dispatch INTERACTION_CREATE type 2 (in the user's DM unless ``guild_id``); await the returned
        record's ``wait_callback``/``wait_followup`` for the bot's answers.

        ``member_permissions`` is the invoking member's permission bitfield (guild only);
        ``command_guild_id`` marks the command as guild-scoped (tree commands added with ``guild=``)."""
        data = self._command_data(name, options, guild_id, command_guild_id)
        if resolved is not None:
            data["resolved"] = resolved
        interaction = self._interaction_payload(2, user_id, data, guild_id, channel_id, member_permissions)
        await self.dispatch("INTERACTION_CREATE", interaction.payload)
        return interaction

    async def send_autocomplete(
        self,
        user_id: int,
        name: str,
        options: Sequence[dict[str, Any]],
        *,
        guild_id: int | None = None,
        channel_id: int | None = None,
        member_permissions: str = "0",
        command_guild_id: int | None = None,
        timeout: float = 10,
    ) -> list[dict[str, Any]]:
        """Dispatch INTERACTION_CREATE type 4 and return the choices of the bot's type 8 answer.
        The option with ``"focused": True`` is the one being typed (default: the last one)."""
        options = [dict(o) for o in options]
        if options and not any(o.get("focused") for o in options):
            options[-1]["focused"] = True
        data = self._command_data(name, options, guild_id, command_guild_id)
        interaction = self._interaction_payload(4, user_id, data, guild_id, channel_id, member_permissions)
        await self.dispatch("INTERACTION_CREATE", interaction.payload)
        callback = await interaction.wait_callback(timeout)
        if callback["type"] != 8:
            raise AssertionError(f"expected an autocomplete result (type 8), got {callback}")
        return list((callback.get("data") or {}).get("choices", []))


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """``{name}`` -> one path segment, ``*`` -> anything, the rest literal."""
    parts = re.split(r"(\{[^}]*\}|\*)", pattern)
    out = "".join("[^/]+" if p.startswith("{") else ".*" if p == "*" else re.escape(p) for p in parts)
    return re.compile(out)


@contextmanager
def patch_discord_py(fake: FakeDiscord) -> Iterator[None]:
    """Point discord.py's process-wide REST base and gateway URL at the fake; restore them afterwards
    (they are class attributes, so leaking them would redirect every later test)."""
    import discord.gateway
    import discord.http
    import yarl

    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway
