"""Scaling out: Discord shards split over processes (MEMBOT_DISCORD_SHARD_COUNT / MEMBOT_DISCORD_SHARD_IDS), and
two `membot serve` processes over one PostgreSQL database and one Milvus server taking Slack events between
them, redeliveries to the other process included: every message answered once, in order, stored once."""

# ruff: noqa: ASYNC109 - helpers take timeout= like the fakes' waiting helpers

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import discord.http
import pytest
from sqlalchemy import select

from membot.adapters.discord.runner import ShardedMembotClient, make_client, run_discord
from membot.agent.store.db import Database
from membot.agent.store.schema import MessageRow, SeenEventRow
from membot.bot.errors import ConfigurationError
from membot.bot.service import BotService
from membot.bot.settings import Settings
from tests.cli_helpers import start
from tests.conftest import make_settings
from tests.fakes.discord_fake import FakeDiscord
from tests.fakes.openai_server import ScriptedModel, send
from tests.fakes.slack_fake import FakeSlack
from tests.milvus_server import fresh_deployment

DISCORD_API = discord.http.Route.BASE
WAIT = 15.0


def env_settings(**env: str) -> Settings:
    return Settings(_env_file=None, **env)


# ----- Discord shard settings (pure) ---------------------------------------------------------------------------


def test_no_shard_settings_run_one_unsharded_connection():
    assert env_settings().discord_shards() is None


def test_shard_ids_are_parsed_and_kept_in_their_order():
    assert env_settings(MEMBOT_DISCORD_SHARD_COUNT="4", MEMBOT_DISCORD_SHARD_IDS="2, 0 3").discord_shards() == ([2, 0, 3], 4)


def test_a_count_alone_runs_every_shard_here():
    assert env_settings(MEMBOT_DISCORD_SHARD_COUNT="3").discord_shards() == ([0, 1, 2], 3)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"MEMBOT_DISCORD_SHARD_IDS": "0,1"}, "MEMBOT_DISCORD_SHARD_IDS needs MEMBOT_DISCORD_SHARD_COUNT"),
        ({"MEMBOT_DISCORD_SHARD_COUNT": "2", "MEMBOT_DISCORD_SHARD_IDS": "1,2"}, r"MEMBOT_DISCORD_SHARD_IDS .* 0 to 1.* not 2"),
        ({"MEMBOT_DISCORD_SHARD_COUNT": "2", "MEMBOT_DISCORD_SHARD_IDS": "-1"}, r"MEMBOT_DISCORD_SHARD_IDS .* not -1"),
        ({"MEMBOT_DISCORD_SHARD_COUNT": "3", "MEMBOT_DISCORD_SHARD_IDS": "1,1"}, r"MEMBOT_DISCORD_SHARD_IDS .* 1 more than once"),
        ({"MEMBOT_DISCORD_SHARD_COUNT": "0"}, "MEMBOT_DISCORD_SHARD_COUNT must be 1 or more"),
    ],
)
def test_shard_settings_that_cannot_work_name_the_variable(env: dict[str, str], says: str):
    with pytest.raises(ConfigurationError, match=says):
        env_settings(**env).discord_shards()


async def test_the_client_is_plain_without_shards_and_sharded_with_them(service: BotService, settings: Settings):
    # Built, never started: nothing to close.
    plain = make_client(service, settings)
    sharded = make_client(service, settings.model_copy(update={"discord_shard_count": 4, "discord_shard_ids": [1, 3]}))
    assert not isinstance(plain, discord.AutoShardedClient)
    assert isinstance(sharded, ShardedMembotClient)
    assert (sharded.shard_ids, sharded.shard_count) == ([1, 3], 4)


# ----- Discord shards against the fake gateway ---------------------------------------------------------------

# Guild ids whose shard of 2, (guild_id >> 22) % 2, is 0 and 1.
EVEN_GUILD, ODD_GUILD = 2 << 22, 3 << 22
ALICE = 42


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        fake.add_user(ALICE, "alice")
        for guild_id in (EVEN_GUILD, ODD_GUILD):
            fake.add_guild(guild_id, f"guild {guild_id}", channels=[{"id": guild_id + 1, "name": "general"}],
                           members=[{"id": ALICE}])
        yield fake


def discord_settings(home: Path, model: ScriptedModel, fake: FakeDiscord, **extra: str) -> Settings:
    return make_settings(home, model, DISCORD_TOKEN="fake-token", MEMBOT_DISCORD_API_URL=fake.api_url,
                         MEMBOT_DISCORD_GATEWAY_URL=fake.gateway_url, **extra)


def identified_shards(fake: FakeDiscord) -> list[Any]:
    return [payload["d"].get("shard") for payload in fake.gateway_received if payload.get("op") == 2]


async def test_each_process_identifies_only_its_own_shard_and_shard_0_answers_dms(
    fake: FakeDiscord, service: BotService, home: Path, model: ScriptedModel
):
    # The process running shard 1 of 2: IDENTIFY says so, and Discord tells it of its own guilds only.
    one = discord_settings(home, model, fake, MEMBOT_DISCORD_SHARD_COUNT="2", MEMBOT_DISCORD_SHARD_IDS="1")
    stop = asyncio.Event()
    task = asyncio.create_task(run_discord(service, one, stop, guild_ready_timeout=0.1))
    await fake.wait_connected()
    assert identified_shards(fake) == [[1, 2]]
    assert fake.connection is not None and fake.connection.shard == (1, 2)
    stop.set()
    await asyncio.wait_for(task, 10)

    # The process running shard 0 of 2, where Discord sends every DM: a DM is answered there.
    zero = discord_settings(home, model, fake, MEMBOT_DISCORD_SHARD_COUNT="2", MEMBOT_DISCORD_SHARD_IDS="0")
    model.script(send("hello from shard 0"))
    stop = asyncio.Event()
    task = asyncio.create_task(run_discord(service, zero, stop, guild_ready_timeout=0.1))
    try:
        await fake.wait_connected()
        assert identified_shards(fake) == [[1, 2], [0, 2]]
        await fake.send_dm(ALICE, "hi")
        reply = await fake.wait_for_message(FakeDiscord.dm_channel_id(ALICE))
        assert reply["content"] == "hello from shard 0"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert discord.http.Route.BASE == DISCORD_API
    assert not fake.unhandled_calls


async def test_wrong_shard_ids_stop_the_adapter_before_it_connects(
    fake: FakeDiscord, service: BotService, home: Path, model: ScriptedModel
):
    wrong = discord_settings(home, model, fake, MEMBOT_DISCORD_SHARD_COUNT="2", MEMBOT_DISCORD_SHARD_IDS="2")
    with pytest.raises(ConfigurationError, match="MEMBOT_DISCORD_SHARD_IDS"):
        await asyncio.wait_for(run_discord(service, wrong, asyncio.Event()), 10)
    assert fake.gateway_received == [] and fake.calls == []


async def test_without_shard_settings_the_client_identifies_unsharded(
    fake: FakeDiscord, service: BotService, home: Path, model: ScriptedModel
):
    stop = asyncio.Event()
    task = asyncio.create_task(run_discord(service, discord_settings(home, model, fake), stop, guild_ready_timeout=0.1))
    try:
        await fake.wait_connected()
        assert identified_shards(fake) == [None]  # a plain Client sends no shard at all
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


# ----- two `membot serve` processes, one database, one Milvus ----------------------------------------------

USERS = ("U1", "U2", "U3", "U4")
PER_USER = 3


def _last_words(body: dict[str, Any]) -> str:
    """What the user said last, in a request to the model."""
    said = [json.loads(m["content"]) for m in body["messages"] if m["role"] == "user"]
    return str(next(event for event in reversed(said) if event.get("type") == "user_message")["message"])


def _answer(body: dict[str, Any]) -> Any:
    """The model's reply to the latest user message: "re <its words>"."""
    return send(f"re {_last_words(body)}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _listening(proc: asyncio.subprocess.Process, port: int, timeout: float = 30.0) -> None:
    """Wait until `membot serve` accepts connections on its Slack port (or has died)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.returncode is not None:
            raise AssertionError(f"membot serve exited with {proc.returncode}: {(await proc.stderr.read()).decode()}")  # type: ignore[union-attr]
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"membot serve did not listen on {port} within {timeout} s") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return


async def test_two_serve_processes_share_slack_events_and_answer_each_message_once_in_order(
    tmp_path: Path, model: ScriptedModel, postgres_database: str, milvus_server: str
):
    # The PostgreSQL database alone (not `database_url`): the point is two processes over a server database.
    await fresh_deployment(postgres_database)  # Milvus collections of its own on the session's shared server
    model.default = _answer
    model.latency = 0.05  # a step takes a moment, so a redelivery can arrive while the first is answered
    async with FakeSlack() as fake:
        for user in USERS:
            fake.add_user(user, user.lower())
        ports = [_free_port(), _free_port()]
        procs = []
        for node, port in enumerate(ports):
            home = tmp_path / f"node-{node}"  # each process on a machine of its own, as far as files go
            home.mkdir()
            env = {
                "SLACK_BOT_TOKEN": fake.bot_token, "SLACK_SIGNING_SECRET": fake.signing_secret,
                "MEMBOT_SLACK_API_URL": fake.api_url, "MEMBOT_SLACK_PORT": str(port),
                "MEMBOT_DATABASE_URL": postgres_database, "MEMBOT_MILVUS_URI": milvus_server,
                "MEMBOT_CONTEXT_WINDOW": "16000",
            }
            procs.append(await start(model, home, "serve", env=env))
        try:
            await asyncio.gather(*(_listening(proc, port) for proc, port in zip(procs, ports, strict=True)))
            urls = [f"http://127.0.0.1:{port}/slack/events" for port in ports]
            deliveries = itertools.count()
            redelivered: list[str] = []

            async def converse(user: str) -> None:
                """One person's DMs, each sent once the previous one is answered, as people talk."""
                channel = fake.dm_channel_for(user)
                for i in range(PER_USER):
                    words = f"{user}-m{i}"
                    payload = fake.event_payload(fake.dm_event(user, words))
                    n = next(deliveries)
                    here, there = urls[n % 2], urls[(n + 1) % 2]  # alternate the process that gets it first
                    assert (await fake.post_event(here, payload))[0] == 200
                    if n % 3 == 0:  # redelivered to the other process while it is being answered
                        assert (await fake.post_event(there, payload, retry_num=1))[0] == 200
                        redelivered.append(words)
                    await fake.wait_for_call(
                        "chat.postMessage", WAIT,
                        lambda c, channel=channel, words=words: c.params.get("channel") == channel
                        and c.params.get("text") == f"re {words}",
                    )
                    if n % 3 == 1:  # redelivered to the other process after it was answered
                        assert (await fake.post_event(there, payload, retry_num=2))[0] == 200
                        redelivered.append(words)

            await asyncio.wait_for(asyncio.gather(*(converse(user) for user in USERS)), 30)
            await asyncio.sleep(1.0)  # room for a wrongly handled redelivery to show up as a second answer
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.terminate()
            outputs = [await asyncio.wait_for(proc.communicate(), 20) for proc in procs]

    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        assert "Traceback" not in err.decode(), err.decode()
    assert len(redelivered) == 8  # deliveries 0, 1, 3, 4, 6, 7, 9, 10 of 12

    # Every message answered exactly once, in order, in its user's DM; nothing else said there.
    for user in USERS:
        said = [c.params.get("text") for c in fake.calls_to("chat.postMessage")
                if c.params.get("channel") == fake.dm_channel_for(user)]
        assert said == [f"re {user}-m{i}" for i in range(PER_USER)], said

    # The model was asked about each message once: no process stepped an agent for a redelivery.
    assert sorted(_last_words(request) for request in model.requests) == sorted(
        f"{user}-m{i}" for user in USERS for i in range(PER_USER))

    # Recall memory holds each user message once, in its own user's agent, in order; and each event was
    # claimed once, in the database both processes share.
    db = await Database.open(postgres_database)
    try:
        rows = await db.rows(select(MessageRow.agent_id, MessageRow.content)
                             .where(MessageRow.kind == "user_message").order_by(MessageRow.id))
        claims = await db.rows(select(SeenEventRow.key).where(SeenEventRow.key.like("slack:event:%")))
    finally:
        await db.close()
    assert len(claims) == len(USERS) * PER_USER
    by_agent: dict[int, list[str]] = {}
    for agent_id, content in rows:
        by_agent.setdefault(agent_id, []).append(json.loads(content or "{}").get("message", ""))
    assert sorted(by_agent.values()) == [[f"{user}-m{i}" for i in range(PER_USER)] for user in USERS]
