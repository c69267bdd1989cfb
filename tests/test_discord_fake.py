"""Self-test of the fake Discord: a real discord.py client must log in, connect and talk to it."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import discord
import discord.gateway
import discord.http
import pytest
from discord import app_commands

from tests.fakes.discord_fake import FakeDiscord, patch_discord_py

GUILD_ID = 500
CHANNEL_ID = 501
USER_ID = 42


@dataclass
class Bot:
    client: discord.Client
    tree: app_commands.CommandTree[discord.Client]
    task: asyncio.Task[None]
    ready: asyncio.Event
    messages: asyncio.Queue[discord.Message] = field(default_factory=asyncio.Queue)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        fake.add_user(USER_ID, "alice")
        fake.add_guild(
            GUILD_ID,
            "Test Guild",
            channels=[{"id": CHANNEL_ID, "name": "general"}],
            members=[{"id": USER_ID, "username": "alice"}],
        )
        # discord.py keeps the URLs in class attributes: always restore them for the next test.
        with patch_discord_py(fake):
            yield fake
    assert discord.http.Route.BASE == "https://discord.com/api/v10"


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[Bot]:
    intents = discord.Intents.default()
    intents.message_content = True
    # guild_ready_timeout: on_ready waits this long after the last GUILD_CREATE (default 2 s).
    client = discord.Client(intents=intents, guild_ready_timeout=0.1)
    tree = app_commands.CommandTree(client)
    ready = asyncio.Event()
    client.event(_set_on_ready(ready))
    task = asyncio.create_task(client.start("fake-token"))
    bot = Bot(client, tree, task, ready)
    try:
        await asyncio.wait_for(ready.wait(), 5)
        yield bot
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)


def _set_on_ready(ready: asyncio.Event):  # noqa: ANN202 - discord.py registers by the function name
    async def on_ready() -> None:
        ready.set()

    return on_ready


def _collect_messages(bot: Bot) -> None:
    async def on_message(message: discord.Message) -> None:
        if message.author != bot.client.user:
            await bot.messages.put(message)

    bot.client.event(on_message)


async def test_connect_ready_and_guild(fake: FakeDiscord, bot: Bot) -> None:
    client = bot.client
    assert client.user is not None and client.user.id == fake.bot_user_id
    assert client.application_id == fake.application_id
    guild = client.get_guild(GUILD_ID)
    assert guild is not None and guild.name == "Test Guild"
    channel = guild.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel) and channel.name == "general"
    assert guild.me is not None and guild.default_role.id == GUILD_ID
    assert fake.intents == client.intents.value
    assert fake.calls_to("GET", "/users/@me") and fake.calls_to("GET", "/oauth2/applications/@me")
    # discord.py asks for zlib-stream (zstd-stream if zstandard is installed); we compress zlib-stream
    # like Discord does, and the client evidently decoded READY/GUILD_CREATE from those frames.
    query = fake.gateway_connections[0]
    assert query["encoding"] == "json" and query["v"] == "10"
    assert query["compress"] == discord.utils._ActiveDecompressionContext.COMPRESSION_TYPE
    assert fake.connection is not None and fake.connection.compressed == (query["compress"] == "zlib-stream")
    assert not fake.unhandled_calls


async def test_dm_message_reply_and_typing(fake: FakeDiscord, bot: Bot) -> None:
    _collect_messages(bot)
    sent = await fake.send_dm(USER_ID, "hello bot")
    message = await asyncio.wait_for(bot.messages.get(), 5)
    assert message.content == "hello bot" and message.id == int(sent["id"])
    assert message.author.id == USER_ID and message.author.name == "alice"
    assert message.guild is None and isinstance(message.channel, discord.DMChannel)

    async with message.channel.typing():
        reply = await message.channel.send("hi")
    dm_channel = fake.dm_channel_id(USER_ID)
    assert reply.content == "hi" and reply.channel.id == dm_channel
    assert [m["content"] for m in fake.messages_in(dm_channel)] == ["hi"]
    assert fake.calls_to("POST", f"/channels/{dm_channel}/typing")
    post = await fake.wait_for_call("POST", "/channels/{id}/messages")
    assert post.json["content"] == "hi"

    # Editing goes through PATCH and updates the stored message.
    await reply.edit(content="hi again")
    assert fake.messages_in(dm_channel)[0]["content"] == "hi again"

    # Opening a DM from the bot side lands in the same deterministic channel.
    user = await bot.client.fetch_user(USER_ID)
    dm = await user.create_dm()
    assert dm.id == dm_channel
    assert not fake.unhandled_calls


async def test_guild_message_mention_and_reply(fake: FakeDiscord, bot: Bot) -> None:
    _collect_messages(bot)
    await fake.send_guild_message(GUILD_ID, CHANNEL_ID, USER_ID, "remember this", mentions_bot=True)
    message = await asyncio.wait_for(bot.messages.get(), 5)
    assert bot.client.user is not None and bot.client.user.mentioned_in(message)
    assert message.guild is not None and message.guild.id == GUILD_ID
    assert isinstance(message.author, discord.Member)
    await message.reply("noted")
    posted = await fake.wait_for_message(CHANNEL_ID)
    assert posted["content"] == "noted" and posted["message_reference"]["message_id"] == message.id


async def test_slash_command_defer_and_ephemeral_followup(fake: FakeDiscord, bot: Bot) -> None:
    seen: list[str] = []

    @bot.tree.command(name="ask", description="Ask the bot")
    async def ask(interaction: discord.Interaction, question: str) -> None:
        seen.append(question)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send("x", ephemeral=True)

    record = await fake.send_slash_command(
        USER_ID,
        "ask",
        [{"name": "question", "type": 3, "value": "why?"}],
        guild_id=GUILD_ID,
        channel_id=CHANNEL_ID,
    )
    callback = await record.wait_callback()
    assert callback == {"type": 5, "data": {"flags": 64}}
    followup = await record.wait_followup()
    assert followup["content"] == "x" and followup["flags"] & 64
    assert seen == ["why?"] and record.deferred and record.ephemeral
    webhook = fake.calls_to("POST", f"/webhooks/{fake.application_id}/{record.token}")
    assert webhook and webhook[0].json["flags"] == 64
    assert fake.messages_in(CHANNEL_ID)[-1]["content"] == "x"

    # A DM slash command answered directly (type 4), then the original edited.
    @bot.tree.command(name="ping", description="Ping")
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pong")
        await interaction.edit_original_response(content="pong!")

    record = await fake.send_slash_command(USER_ID, "ping")
    assert (await record.wait_callback())["data"]["content"] == "pong"
    await record.wait_original_edit()
    assert record.original_message is not None and record.original_message["content"] == "pong!"

    # A guild-scoped command: defer (public) and fill the "thinking" placeholder via @original.
    @bot.tree.command(name="slow", description="Slow", guild=discord.Object(GUILD_ID))
    async def slow(interaction: discord.Interaction) -> None:
        seen.append(str(interaction.permissions.manage_guild))
        await interaction.response.defer(thinking=True)
        await interaction.edit_original_response(content="done")

    record = await fake.send_slash_command(
        USER_ID, "slow", guild_id=GUILD_ID, command_guild_id=GUILD_ID, member_permissions=str(1 << 5)
    )
    assert (await record.wait_callback()) == {"type": 5}
    edit = await record.wait_original_edit()
    assert edit["content"] == "done" and not record.ephemeral and seen[-1] == "True"
    assert fake.messages_in(CHANNEL_ID)[-1]["content"] == "done"
    assert not fake.unhandled_calls


async def test_attachment_read_and_file_upload(fake: FakeDiscord, bot: Bot) -> None:
    _collect_messages(bot)
    attachment = fake.host_file("notes.txt", b"some notes", "text/plain")
    await fake.send_dm(USER_ID, "see file", attachments=[attachment])
    message = await asyncio.wait_for(bot.messages.get(), 5)
    assert message.attachments[0].filename == "notes.txt"
    assert message.attachments[0].content_type == "text/plain"
    assert await message.attachments[0].read() == b"some notes"

    await message.channel.send("here", file=discord.File(io.BytesIO(b"generated"), filename="out.txt"))
    posted = fake.messages_in(fake.dm_channel_id(USER_ID))[-1]
    assert posted["content"] == "here" and posted["attachments"][0]["filename"] == "out.txt"
    call = fake.calls_to("POST", "/channels/{id}/messages")[-1]
    assert call.json["content"] == "here" and call.files[0].data == b"generated"


async def test_autocomplete_round_trip(fake: FakeDiscord, bot: Bot) -> None:
    @bot.tree.command(name="fruit", description="Pick a fruit")
    async def fruit(interaction: discord.Interaction, name: str) -> None:
        await interaction.response.send_message(name)

    @fruit.autocomplete("name")
    async def fruit_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        options = ["apple", "apricot", "banana"]
        return [app_commands.Choice(name=o, value=o) for o in options if o.startswith(current)]

    choices = await fake.send_autocomplete(USER_ID, "fruit", [{"name": "name", "type": 3, "value": "ap"}])
    assert choices == [{"name": "apple", "value": "apple"}, {"name": "apricot", "value": "apricot"}]


async def test_tree_sync_hits_bulk_overwrite(fake: FakeDiscord, bot: Bot) -> None:
    @bot.tree.command(name="remember", description="Store a memory")
    async def remember(interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message("ok")

    synced = await bot.tree.sync()
    assert [c.name for c in synced] == ["remember"] and synced[0].id > 0
    call = await fake.wait_for_call("PUT", f"/applications/{fake.application_id}/commands")
    assert call.json[0]["name"] == "remember"
    assert [c["name"] for c in fake.global_commands] == ["remember"]

    guild = discord.Object(GUILD_ID)
    bot.tree.copy_global_to(guild=guild)
    await bot.tree.sync(guild=guild)
    assert fake.calls_to("PUT", "/applications/{app}/guilds/{guild}/commands")
    assert [c["name"] for c in fake.guild_commands[GUILD_ID]] == ["remember"]


async def test_unknown_route_is_visible(fake: FakeDiscord, bot: Bot) -> None:
    with pytest.raises(discord.NotFound):
        await bot.client.fetch_webhook(123)
    assert [c.path for c in fake.unhandled_calls] == ["/webhooks/123"]


async def test_resume_after_server_side_drop(fake: FakeDiscord, bot: Bot) -> None:
    resumed = asyncio.Event()

    async def on_resumed() -> None:
        resumed.set()

    bot.client.event(on_resumed)
    assert fake.connection is not None
    await fake.connection.close(code=4000)
    await asyncio.wait_for(resumed.wait(), 5)
    await fake.wait_connected()
    assert len(fake.gateway_connections) == 2
    resume = [p["d"] for p in fake.gateway_received if p["op"] == 6]
    assert len(resume) == 1 and resume[0]["session_id"] in fake.sessions
    assert len([p for p in fake.gateway_received if p["op"] == 2]) == 1  # resumed, not re-identified

    # Events after the resume still arrive, with continuing sequence numbers.
    _collect_messages(bot)
    await fake.send_dm(USER_ID, "still there?")
    assert (await asyncio.wait_for(bot.messages.get(), 5)).content == "still there?"
