"""Gateway half of the fake Discord: one aiohttp WebSocket per client connection."""

from __future__ import annotations

import asyncio
import json
import secrets
import zlib
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from tests.fakes.discord_fake import FakeDiscord

GATEWAY_VERSION = 10
HEARTBEAT_INTERVAL_MS = 41250


class GatewayConnection:
    def __init__(self, fake: FakeDiscord, ws: web.WebSocketResponse, *, zlib_stream: bool) -> None:
        self.fake = fake
        self.ws = ws
        self.ready = False
        self.session_id: str | None = None
        self.shard: tuple[int, int] = (0, 1)  # [shard_id, num_shards] from IDENTIFY; unsharded is [0, 1]
        # zlib-stream: ONE compression context for the whole connection; every payload ends with a
        # sync flush (00 00 ff ff), which is how discord.py finds message boundaries.
        self._compressor = zlib.compressobj() if zlib_stream else None
        self.compressed = zlib_stream
        # Keeps sequence numbers and the shared zlib stream in send order when several tasks dispatch.
        self._lock = asyncio.Lock()

    async def _send_locked(self, payload: dict[str, Any]) -> None:
        text = json.dumps(payload)
        if self._compressor is None:
            # Text frames are never decompressed by discord.py, whatever compression it asked for.
            await self.ws.send_str(text)
        else:
            data = self._compressor.compress(text.encode()) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
            await self.ws.send_bytes(data)

    async def send(self, payload: dict[str, Any]) -> None:
        async with self._lock:
            await self._send_locked(payload)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        async with self._lock:
            if self.session_id is None:
                raise RuntimeError("no gateway session yet (client has not identified)")
            seq = self.fake.sessions[self.session_id] + 1
            self.fake.sessions[self.session_id] = seq
            await self._send_locked({"op": 0, "t": event, "s": seq, "d": data})

    async def close(self, code: int = 1001) -> None:
        """Close from the server side; a code other than 1000/4004/4010-4014 makes discord.py resume."""
        if not self.ws.closed:
            await self.ws.close(code=code)

    async def handle(self, payload: dict[str, Any]) -> None:
        self.fake.gateway_received.append(payload)
        op, data = payload.get("op"), payload.get("d")
        if op == 1:  # HEARTBEAT
            await self.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:  # IDENTIFY
            await self._identify(data)
        elif op == 6:  # RESUME
            await self._resume(data)
        elif op == 8:  # REQUEST_GUILD_MEMBERS (only with the members intent / chunking)
            await self._request_members(data)
        self.fake.notify()

    async def _identify(self, data: dict[str, Any]) -> None:
        fake = self.fake
        fake.identify = data
        self.session_id = secrets.token_hex(16)
        fake.sessions[self.session_id] = 0
        shard_id, num_shards = data.get("shard") or (0, 1)
        self.shard = (int(shard_id), int(num_shards))
        # As Discord shards: a guild is on shard (guild_id >> 22) % num_shards, and only that one hears of it.
        guilds = [gid for gid in fake.guilds if (gid >> 22) % self.shard[1] == self.shard[0]]
        ready = {
            "v": GATEWAY_VERSION,
            "user": fake.bot_user,
            "guilds": [{"id": str(gid), "unavailable": True} for gid in guilds],
            "session_id": self.session_id,
            # discord.py reconnects/resumes to this URL, so it must point back at the fake.
            "resume_gateway_url": fake.gateway_url,
            "shard": list(self.shard),
            "application": {"id": str(fake.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "user_settings": {},
            "presences": [],
            "geo_ordered_rtc_regions": [],
            "guild_join_requests": [],
        }
        await self.dispatch("READY", ready)
        for guild_id in guilds:
            await self.dispatch("GUILD_CREATE", fake.guild_payload(guild_id))
        self.ready = True

    async def _resume(self, data: dict[str, Any]) -> None:
        session_id = data.get("session_id")
        if session_id in self.fake.sessions:
            self.session_id = session_id
            await self.dispatch("RESUMED", {})
            self.ready = True
        else:
            await self.send({"op": 9, "d": False, "s": None, "t": None})  # not resumable: identify again

    async def _request_members(self, data: dict[str, Any]) -> None:
        guild_id = int(data["guild_id"])
        guild = self.fake.guilds.get(guild_id)
        user_ids = data.get("user_ids")
        wanted = {int(u) for u in ([user_ids] if isinstance(user_ids, int | str) else user_ids or [])}
        query = (data.get("query") or "").lower()
        members = []
        for user_id in guild.members if guild else {}:
            name = self.fake.user(user_id)["username"].lower()
            if (wanted and user_id in wanted) or (not wanted and name.startswith(query)):
                members.append(self.fake.member_payload(guild_id, user_id))
        limit = int(data.get("limit") or 0)
        chunk: dict[str, Any] = {
            "guild_id": str(guild_id),
            "members": members[:limit] if limit else members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk)


async def handle_gateway(fake: FakeDiscord, request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    fake.gateway_connections.append(dict(request.query))
    # discord.py asks for ?compress=zlib-stream (or zstd-stream when zstandard is installed); we
    # honour zlib-stream and answer anything else with plain text frames.
    connection = GatewayConnection(fake, ws, zlib_stream=request.query.get("compress") == "zlib-stream")
    fake.connection = connection
    await connection.send(
        {"op": 10, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}, "s": None, "t": None}
    )
    try:
        async for message in ws:
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await connection.handle(json.loads(message.data))
    finally:
        connection.ready = False
        if fake.connection is connection:
            fake.connection = None
        fake.notify()
    return ws
