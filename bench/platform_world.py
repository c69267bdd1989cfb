"""The platform bench's world: a fake Discord or fake Slack, and the users writing to it, in a process of
their own.

The bot runs alone in the bench's process, as it does in production, where Discord, Slack and the people
typing cost it nothing but the wait. In the bot's own process and event loop the fakes would parse and
answer every request and keep every bucket on the bot's CPU, and we would measure them with the bot. Users' latencies are stamped here, where the messages are sent and the
replies arrive, on one clock.

The bench's process drives this one through a pipe (`World.call`): register users, let a group of them
write, read the fake's counters.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import traceback
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench import LONG_REPLY
from tests.fakes.discord_fake import FakeDiscord
from tests.fakes.ratelimit import Counters
from tests.fakes.slack_fake import FakeSlack

MESSAGES = 3
GUILD, LOG_CHANNEL = 500, 502  # Discord: the guild holding the monologue channel
#: One reply may take this long before the run is called broken.
REPLY_TIMEOUT = 120.0

Snapshot = dict[tuple[str, Hashable], tuple[int, int]]


@dataclass
class Written:
    """What one group of users saw, from the world's side."""

    latencies: list[float]  # seconds from a message sent to its reply's first post, every message
    finals: list[float]  # streamed: seconds to the whole reply, every message
    wall: float  # seconds from the first message sent to the last reply
    cpu: float  # CPU seconds the world (fake platform and users) spent meanwhile


class Stamped(list[Any]):
    """The fake's list of calls, calling `seen` with each call as the fake records it."""

    def __init__(self, seen: Callable[[Any], None]) -> None:
        super().__init__()
        self.seen = seen

    def append(self, item: Any) -> None:
        super().append(item)
        self.seen(item)


@dataclass
class Users:
    """One platform's fake and its users: send a user's message, wait for its reply."""

    info: dict[str, Any]  # what the bot needs to reach the fake (URLs, tokens)
    counters: Counters
    send: Callable[[Any, str, str], Any]  # (user, text, where the bot takes events) -> awaitable
    add: Callable[[int], tuple[Any, Hashable]]  # serial -> (user id, DM channel)
    channels: dict[Any, Hashable] = field(default_factory=dict)  # user id -> DM channel
    arrivals: dict[Hashable, asyncio.Queue[float]] = field(default_factory=lambda: defaultdict(asyncio.Queue))
    #: When a reply's whole text was there (a post or an edit carrying LONG_REPLY), per channel.
    finals: dict[Hashable, asyncio.Queue[float]] = field(default_factory=lambda: defaultdict(asyncio.Queue))
    connected: Callable[[float], Any] | None = None

    def arrived(self, channel: Hashable) -> None:
        if channel in self.arrivals:
            self.arrivals[channel].put_nowait(time.perf_counter())

    def whole(self, channel: Hashable, text: Any) -> None:
        if channel in self.finals and text == LONG_REPLY:
            self.finals[channel].put_nowait(time.perf_counter())

    # ----- the commands the bench's process sends -----

    async def wait_connected(self, seconds: float) -> None:
        if self.connected is not None:
            await self.connected(seconds)

    async def register(self, first_serial: int, users: int) -> list[Any]:
        ids = []
        for serial in range(first_serial, first_serial + users):
            user, channel = self.add(serial)
            self.channels[user] = channel
            ids.append(user)
        return ids

    async def snapshot(self) -> Snapshot:
        return {key: (t.allowed, t.limited) for key, t in self.counters.tallies.items()}

    async def write(self, users: list[Any], streamed: bool, events_url: str) -> Written:
        """Each user writes MESSAGES messages, the next when the reply to the last has arrived."""
        channels = [self.channels[u] for u in users]
        for channel in channels:
            self.arrivals[channel] = asyncio.Queue()
            self.finals[channel] = asyncio.Queue()
        finals: list[float] = []

        async def person(user: Any, channel: Hashable) -> list[float]:
            samples = []
            for index in range(MESSAGES):
                sent = time.perf_counter()
                await self.send(user, f"Message {index}: I like tea.", events_url)
                arrived = await asyncio.wait_for(self.arrivals[channel].get(), REPLY_TIMEOUT)
                samples.append(arrived - sent)
                if streamed:
                    finals.append(await asyncio.wait_for(self.finals[channel].get(), REPLY_TIMEOUT) - sent)
            return samples

        cpu = time.process_time()
        start = time.perf_counter()
        per_user = await asyncio.gather(*(person(u, c) for u, c in zip(users, channels, strict=True)))
        wall = time.perf_counter() - start
        for channel in channels:
            self.arrivals.pop(channel, None)
            self.finals.pop(channel, None)
        return Written([t for samples in per_user for t in samples], finals, wall, time.process_time() - cpu)


@asynccontextmanager
async def _discord() -> AsyncIterator[Users]:
    async with FakeDiscord() as fake:
        fake.add_guild(GUILD, "Guild", channels=[{"id": LOG_CHANNEL, "name": "membot-log"}], members=[])

        def add(serial: int) -> tuple[Any, Hashable]:
            user_id = 10_000 + serial
            fake.add_user(user_id, f"user{serial}")
            return user_id, FakeDiscord.dm_channel_id(user_id)

        async def send(user_id: int, text: str, _events_url: str) -> None:
            await fake.send_dm(user_id, text)

        users = Users({"api_url": fake.api_url, "gateway_url": fake.gateway_url}, fake.limits.counters, send, add,
                      connected=fake.wait_connected)

        def seen(call: Any) -> None:
            if call.status != 200 or "/messages" not in call.path:
                return
            channel = int(call.path.split("/")[2])
            if call.method == "POST" and call.path.endswith("/messages"):
                users.arrived(channel)
            if call.method in ("POST", "PATCH"):
                users.whole(channel, (call.json or {}).get("content"))

        fake.calls = Stamped(seen)
        yield users


@asynccontextmanager
async def _slack() -> AsyncIterator[Users]:
    async with FakeSlack() as fake:

        def add(serial: int) -> tuple[Any, Hashable]:
            user_id = f"U{10_000 + serial}"
            fake.add_user(user_id, f"user{serial}")
            return user_id, fake.dm_channel_for(user_id)

        async def send(user_id: str, text: str, events_url: str) -> None:
            status, _, _ = await fake.post_event(events_url, fake.event_payload(fake.dm_event(user_id, text)))
            if status != 200:
                raise RuntimeError(f"the Slack app answered {status} to an event")

        users = Users({"api_url": fake.api_url, "bot_token": fake.bot_token, "signing_secret": fake.signing_secret,
                       "team_id": fake.team_id}, fake.limits.counters, send, add)

        def seen(call: Any) -> None:
            if call.status != 200 or call.method not in ("chat.postMessage", "chat.update"):
                return
            if call.method == "chat.postMessage":
                users.arrived(call.params.get("channel"))
            users.whole(call.params.get("channel"), call.params.get("text"))

        fake.calls = Stamped(seen)
        yield users


def _serve(conn: Connection, platform: str) -> None:
    """Body of the world's process: answer the bench's commands until it closes its end of the pipe."""

    async def main() -> None:
        async with (_discord() if platform == "discord" else _slack()) as users:
            conn.send(users.info)
            while True:
                try:
                    # Blocking on the pipe in a thread keeps the fake's event loop free to answer the bot.
                    command, args = await asyncio.to_thread(conn.recv)
                except EOFError:
                    return
                try:
                    conn.send(("ok", await getattr(users, command)(*args)))
                except Exception:  # noqa: BLE001 - the bench's process raises it with the world's traceback
                    conn.send(("error", traceback.format_exc()))

    asyncio.run(main())


@dataclass
class World:
    """The bench's end of the pipe to the world's process."""

    conn: Connection
    info: dict[str, Any]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def call(self, command: str, *args: Any) -> Any:
        async with self.lock:
            self.conn.send((command, args))
            status, value = await asyncio.to_thread(self.conn.recv)
        if status != "ok":
            raise RuntimeError(f"the platform's world process failed at {command}:\n{value}")
        return value


@asynccontextmanager
async def world_process(platform: str) -> AsyncIterator[World]:
    """A fake `platform` ("discord" or "slack") and its users in a process of their own."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, platform), daemon=True)
    proc.start()
    child.close()
    try:
        try:
            if not await asyncio.to_thread(parent.poll, 60):
                raise EOFError
            info = parent.recv()
        except EOFError:
            raise RuntimeError(f"the fake {platform} process did not start") from None
        yield World(parent, info)
    finally:
        parent.close()  # the child sees EOF and shuts its fake down
        await asyncio.to_thread(proc.join, 10)
        if proc.is_alive():
            proc.terminate()
            await asyncio.to_thread(proc.join, 5)
