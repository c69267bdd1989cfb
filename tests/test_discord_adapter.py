"""The Discord adapter at the protocol level: the real adapter (run_discord) against the fake Discord,
the real bot service and a scripted model. Assertions are on what the bot sent to Discord."""

# ruff: noqa: ASYNC109 - helpers take timeout= like the fake's waiting helpers

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import discord
import discord.http
import pytest
from aiohttp import web

from membot.adapters.discord import client as discord_client
from membot.adapters.discord.client import TYPING_DELAY
from membot.adapters.discord.render import split_message, strip_mentions, units
from membot.adapters.discord.runner import NO_INTENT, run_discord, sync_commands
from membot.agent.store.schema import utcnow
from membot.bot.access import not_open_text
from membot.bot.errors import ConfigurationError, QuotaReached
from membot.bot.identity import UserRef
from membot.bot.scheduler import Scheduler
from membot.bot.service import BotService
from membot.bot.settings import Settings
from tests.conftest import make_settings
from tests.fakes.discord_fake import FakeDiscord, FakeInteraction
from tests.fakes.openai_server import ChatReply, ScriptedModel, send, tool_call
from tests.fakes.ratelimit import Limit
from tests.fakes.scripted_replies import SCRIPTED_REASONING, reasoned

PAPER = Path(__file__).resolve().parents[2] / "shared" / "data" / "memgpt_paper.pdf"
DISCORD_API = discord.http.Route.BASE

GUILD, GENERAL, LOG = 500, 501, 502
CLUB, CLUB_TALK, CLUB_BOTS, MODS_ROLE = 600, 601, 602, 900  # a second guild, with a role and an open channel
ALICE, BOB, ADMIN, MOD = 42, 43, 7, 8
EPHEMERAL = 64
MESSAGE_CONTENT_INTENT = 1 << 15


def alice_ref() -> UserRef:
    """Alice as the adapter names her in her DMs (her agent, her private sources)."""
    return UserRef("discord", "", str(ALICE), "alice", source_scope=f"discord:dm:{ALICE}")


def last_user_text(request: dict[str, Any]) -> str:
    return json.loads(request["messages"][-1]["content"])["message"]


# ----- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        for user_id, name in ((ALICE, "alice"), (BOB, "bob"), (ADMIN, "root"), (MOD, "mod")):
            fake.add_user(user_id, name)
        fake.add_guild(
            GUILD,
            "Test Guild",
            channels=[{"id": GENERAL, "name": "general"}, {"id": LOG, "name": "membot-log"}],
            members=[{"id": uid} for uid in (ALICE, BOB, ADMIN, MOD)],
        )
        yield fake


@pytest.fixture
def settings(home: Path, model: ScriptedModel, fake: FakeDiscord) -> Settings:
    # Overrides conftest's: the `service` fixture is built over these.
    return make_settings(
        home,
        model,
        DISCORD_TOKEN="fake-token",
        DISCORD_MONOLOGUE_CHANNEL_ID=LOG,
        DISCORD_ADMIN_IDS=str(ADMIN),
        MEMBOT_DISCORD_API_URL=fake.api_url,
        MEMBOT_DISCORD_GATEWAY_URL=fake.gateway_url,
    )


@dataclass
class Running:
    task: asyncio.Task[None]
    stop: asyncio.Event


@pytest.fixture
async def bot(fake: FakeDiscord, service: BotService, settings: Settings) -> AsyncIterator[Running]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_discord(service, settings, stop, guild_ready_timeout=0.1))
    await fake.wait_connected()
    yield Running(task, stop)
    stop.set()
    await asyncio.wait_for(task, 10)
    # The endpoints were class attributes: they must be back for whatever runs next.
    assert discord.http.Route.BASE == DISCORD_API
    assert not fake.unhandled_calls


@asynccontextmanager
async def serving(service: BotService, settings: Settings, fake: FakeDiscord) -> AsyncIterator[None]:
    """The adapter on settings of the test's own (the `bot` fixture's are fixed)."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_discord(service, settings, stop, guild_ready_timeout=0.1))
    try:
        await fake.wait_connected()
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def dm(user_id: int) -> int:
    return FakeDiscord.dm_channel_id(user_id)


async def slash(fake: FakeDiscord, user_id: int, name: str, options: list[dict[str, Any]] | None = None,
                **kwargs: Any) -> FakeInteraction:
    interaction = await fake.send_slash_command(user_id, name, options or [], **kwargs)
    # Always deferred first, privately, "thinking…".
    assert await interaction.wait_callback() == {"type": 5, "data": {"flags": EPHEMERAL}}
    return interaction


# ----- messages --------------------------------------------------------------------------------------------


async def test_dm_reply_goes_to_the_dm_and_monologue_to_the_log_channel(fake, bot, model):
    model.script(send("Hi Alice!", thought="SECRET-THOUGHT she greets me"))
    await fake.send_dm(ALICE, "hello there")
    reply = await fake.wait_for_message(dm(ALICE))
    assert reply["content"] == "Hi Alice!"
    log_line = await fake.wait_for_message(LOG, predicate=lambda m: "SECRET-THOUGHT" in m["content"])
    assert log_line["content"].startswith("**alice** (42) [DM] 💭")  # tagged with where the step was
    assert "send\\_message" in log_line["content"]  # the function call, markdown-escaped
    assert all("SECRET" not in m["content"] for m in fake.messages_in(dm(ALICE)))
    assert not fake.calls_to("POST", f"/channels/{dm(ALICE)}/typing")  # a quick reply needs no indicator
    assert fake.intents is not None and fake.intents & MESSAGE_CONTENT_INTENT
    assert last_user_text(model.requests[0]) == "hello there"


async def test_a_reminder_set_in_a_dm_arrives_in_the_dm_when_due(fake, bot, model, service):
    model.script(tool_call("schedule_wakeup", {"when": "in 2 hours", "note": "stretch", "request_heartbeat": True},
                           "She wants a nudge."), send("I'll remind you."))
    await fake.send_dm(ALICE, "remind me in 2 hours to stretch")
    assert (await fake.wait_for_message(dm(ALICE)))["content"] == "I'll remind you."
    scheduler = Scheduler(service, service.deliver_wakeup, platforms={"discord"})
    model.script(send("Time to stretch!"))
    assert await scheduler.tick(utcnow() + timedelta(hours=1)) == 0  # not before its time
    assert await scheduler.tick(utcnow() + timedelta(hours=2, minutes=1)) == 1
    reminder = await fake.wait_for_message(dm(ALICE), predicate=lambda m: m["content"] == "Time to stretch!")
    assert "Reminder you scheduled" in str(model.requests[-1]["messages"]) and "stretch" in reminder["content"]


async def test_reminders_lists_and_cancels_privately(fake, bot, model, service):
    model.script(tool_call("schedule_wakeup", {"when": "in 3 hours", "note": "call the bank", "request_heartbeat": True}),
                 send("Sure."))
    await fake.send_dm(ALICE, "remind me in 3 hours to call the bank")
    await fake.wait_for_message(dm(ALICE))
    [pending] = await service.reminders(alice_ref())
    listed = await (await slash(fake, ALICE, "reminders")).wait_followup()
    assert listed["flags"] & EPHEMERAL and "call the bank" in listed["content"]
    option = [{"name": "cancel", "type": 4, "value": pending.id}]
    cancelled = await (await slash(fake, ALICE, "reminders", option)).wait_followup()
    assert f"Cancelled reminder {pending.id}" in cancelled["content"] and cancelled["flags"] & EPHEMERAL
    assert await service.reminders(alice_ref()) == []


async def test_heartbeats_switches_and_shows_them_privately(fake, model, home):
    settings = make_settings(home, model, DISCORD_TOKEN="fake-token", MEMBOT_DISCORD_API_URL=fake.api_url,
                             MEMBOT_DISCORD_GATEWAY_URL=fake.gateway_url, MEMBOT_HEARTBEAT_MINUTES=30)
    service = await BotService.open(settings)
    try:
        async with serving(service, settings, fake):
            off = await (await slash(fake, ALICE, "heartbeats", [{"name": "state", "type": 3, "value": "off"}])) \
                .wait_followup()
            assert off["flags"] & EPHEMERAL and off["content"].startswith("Timed heartbeats are off for your agent")
            shown = await (await slash(fake, ALICE, "heartbeats")).wait_followup()
            assert shown["flags"] & EPHEMERAL and "/heartbeats on" in shown["content"]
            on = await (await slash(fake, ALICE, "heartbeats", [{"name": "state", "type": 3, "value": "on"}])) \
                .wait_followup()
            assert "Timed heartbeats are on" in on["content"] and "The next is due" in on["content"]
    finally:
        await service.close()


async def test_a_slow_reply_shows_the_typing_indicator(fake, bot, model):
    async def slow(body: dict[str, Any]) -> Any:
        await asyncio.sleep(TYPING_DELAY + 0.3)
        return send("Thought it over.")

    model.script(slow)
    await fake.send_dm(ALICE, "a hard question")
    await fake.wait_for_message(dm(ALICE))
    assert fake.calls_to("POST", f"/channels/{dm(ALICE)}/typing")


async def test_no_typing_indicator_while_the_bots_optional_requests_are_spent(fake, service, settings, model,
                                                                              monkeypatch):
    # Many users at once: the bot's requests near Discord's global limit; an indicator would only delay replies.
    monkeypatch.setattr(discord_client, "OPTIONAL_PER_SECOND", 0)

    async def slow(body: dict[str, Any]) -> Any:
        await asyncio.sleep(TYPING_DELAY + 0.3)
        return send("Thought it over.")

    model.script(slow)
    async with serving(service, settings, fake):
        await fake.send_dm(ALICE, "a hard question")
        assert (await fake.wait_for_message(dm(ALICE)))["content"] == "Thought it over."
    assert not fake.calls_to("POST", f"/channels/{dm(ALICE)}/typing")


async def test_replies_of_many_users_at_once_wait_their_turn_under_the_global_limit(fake, service, settings,
                                                                                     monkeypatch):
    # Every request of the bot (replies, the monologue, logging in) is counted as it is sent: past the global
    # limit a reply waits for the second to have room instead of meeting a 429.
    monkeypatch.setattr(discord_client, "GLOBAL_LIMIT", 3)
    fake.limits.global_limit = Limit(3, 1.0)
    users = [9000 + i for i in range(6)]
    for user_id in users:
        fake.add_user(user_id, f"user{user_id}")
    async with serving(service, settings, fake):
        await asyncio.gather(*(fake.send_dm(user_id, "hello") for user_id in users))
        for user_id in users:
            await fake.wait_for_message(dm(user_id), timeout=15)
        assert fake.limits.counters.tally("global").limited == 0


async def test_a_model_that_thinks_in_its_calls_and_calls_twice_is_answered_and_its_thoughts_logged(fake, bot, model):
    # OpenAI's current habit: no text beside the calls, several calls in one reply.
    model.script(ChatReply(None, tool_call(
        "core_memory_append", {"inner_thoughts": "SECRET-THOUGHT keep the dog", "name": "human", "content": "Dog: Rex."},
        extra_calls=[("send_message", {"inner_thoughts": "SECRET-THOUGHT now reply", "message": "Rex, noted!"})],
    ).tool_calls))
    await fake.send_dm(ALICE, "my dog is Rex")
    reply = await fake.wait_for_message(dm(ALICE))
    assert reply["content"] == "Rex, noted!"
    await fake.wait_for_message(LOG, predicate=lambda m: "keep the dog" in m["content"])
    await fake.wait_for_message(LOG, predicate=lambda m: "now reply" in m["content"])
    assert all("SECRET" not in m["content"] for m in fake.messages_in(dm(ALICE)))
    assert len(model.requests) == 1


async def test_a_reasoning_models_reasoning_goes_to_the_log_channel_never_the_dm(fake, bot, model):
    model.script(reasoned(send("Hello Alice."), how="reasoning_content"))
    await fake.send_dm(ALICE, "hi")
    reply = await fake.wait_for_message(dm(ALICE))
    assert reply["content"] == "Hello Alice."
    await fake.wait_for_message(LOG, predicate=lambda m: SCRIPTED_REASONING in m["content"])
    assert all(SCRIPTED_REASONING not in m["content"] for m in fake.messages_in(dm(ALICE)))


@pytest.mark.parametrize("habits", [{"text_only"}, {"no_tools", "think"}])
async def test_a_stubborn_or_toolless_model_still_answers_in_the_dm(fake, bot, model, habits):
    model.habits = habits
    model.script(tool_call("core_memory_append", {"name": "human", "content": "Cat: Miso.", "request_heartbeat": True},
                           "Worth keeping: the cat."), send("Miso, noted.", thought="Answer her."))
    await fake.send_dm(ALICE, "my cat is Miso")
    reply = await fake.wait_for_message(dm(ALICE))
    assert reply["content"] == "Miso, noted."
    await fake.wait_for_message(LOG, predicate=lambda m: "Answer her." in m["content"] or "Miso, noted." in m["content"])
    assert all(SCRIPTED_REASONING not in m["content"] and "Worth keeping" not in m["content"]
               for m in fake.messages_in(dm(ALICE)))


async def test_a_wrong_monologue_channel_costs_one_lookup_not_one_per_message(fake, service, home, model, caplog):
    settings = make_settings(home, model, DISCORD_TOKEN="fake-token", DISCORD_MONOLOGUE_CHANNEL_ID=777,
                             MEMBOT_DISCORD_API_URL=fake.api_url, MEMBOT_DISCORD_GATEWAY_URL=fake.gateway_url)
    stop = asyncio.Event()
    task = asyncio.create_task(run_discord(service, settings, stop, guild_ready_timeout=0.1))
    try:
        await fake.wait_connected()
        for i in range(3):
            model.script(send(f"Reply {i}", thought=f"thought {i}"))
            await fake.send_dm(ALICE, f"message {i}")
            await fake.wait_for_message(dm(ALICE), predicate=lambda m, i=i: m["content"] == f"Reply {i}")
        # The replies still come; the monologue went to the log, and the channel was looked up once.
        assert len(fake.calls_to("GET", "/channels/777")) == 1
        assert sum("DISCORD_MONOLOGUE_CHANNEL_ID 777" in r.message for r in caplog.records) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_long_reply_is_split_with_code_fences_balanced(fake, bot, model):
    code = "```python\n" + "\n".join(f"value_{i} = compute({i})  # step {i}" for i in range(90)) + "\n```"
    long = "Here is the script you asked for.\n\n" + code + "\n\n" + "It works like this. " * 80
    assert len(long) > 4000
    model.script(send(long))
    await fake.send_dm(ALICE, "write me a script")
    last = await fake.wait_for_message(dm(ALICE), predicate=lambda m: m["content"].rstrip().endswith("like this."))
    parts = [m["content"] for m in fake.messages_in(dm(ALICE))]
    assert last["content"] == parts[-1] and len(parts) >= 3
    assert all(len(p) <= 2000 and p.count("```") % 2 == 0 for p in parts)
    assert parts[1].startswith("```python")  # the block reopened where it was cut
    body = "\n".join(parts)
    assert all(f"value_{i} = compute({i})" in body for i in range(90))


async def test_guild_mention_is_answered_in_the_channel(fake, bot, model):
    model.script(send("Noted, milk it is."))
    await fake.send_guild_message(GUILD, GENERAL, BOB, "just chatting, not for the bot")
    sent = await fake.send_guild_message(GUILD, GENERAL, BOB, "remember the milk", mentions_bot=True)
    reply = await fake.wait_for_message(GENERAL)
    assert reply["content"] == "Noted, milk it is."
    assert int(reply["message_reference"]["message_id"]) == int(sent["id"])
    assert len(model.requests) == 1 and last_user_text(model.requests[0]) == "remember the milk"
    # One agent per person: bob's DM reaches the same agent as his guild mention.
    model.script(send("Yes: milk."))
    await fake.send_dm(BOB, "what did I ask you to remember?")
    await fake.wait_for_message(dm(BOB))
    assert "remember the milk" in json.dumps(model.requests[1])
    # Files in a channel are not loaded by a mention (they would become the guild's): the bot says how.
    notes = fake.host_file("notes.txt", b"guild notes", "text/plain")
    await fake.send_guild_message(GUILD, GENERAL, BOB, "", mentions_bot=True, attachments=[notes])
    hint = await fake.wait_for_message(GENERAL, 2)
    assert "/attach" in hint["content"] and len(model.requests) == 2


async def test_a_slow_reply_streams_into_one_message_edited_to_the_exact_text(fake, bot, model):
    text = "Streaming works." + " Every word arrives a little later than the one before it." * 8
    model.stream_delay = 0.02  # about 3 s for the whole call
    model.script(send(text))
    await fake.send_dm(ALICE, "talk to me slowly")
    await fake.wait_for_message(dm(ALICE))  # the first part shows while the model still writes
    assert model.pending == 0 and len(fake.calls_to("PATCH", "/channels/{id}/messages/{id}")) == 0
    await fake.wait_until(lambda: fake.messages_in(dm(ALICE))[0]["content"] == text or None, 10, "the final text")
    assert len(fake.messages_in(dm(ALICE))) == 1  # one message, edited in place
    edits = fake.calls_to("PATCH", "/channels/{id}/messages/{id}")
    assert 1 <= len(edits) <= 5 and not fake.rate_limited_calls


async def test_what_is_said_in_a_dm_never_reaches_a_guild_channel(fake, bot, model):
    model.script(tool_call("core_memory_append", {"name": "human", "content": "Diagnosis: ZEBRAPOX",
                                                  "request_heartbeat": True}), send("Kept private."))
    await fake.send_dm(ALICE, "my diagnosis is ZEBRAPOX")
    await fake.wait_for_message(dm(ALICE))
    since = len(model.requests)
    model.script(tool_call("conversation_search", {"query": "diagnosis", "request_heartbeat": True}),
                 send("I can't say here."))
    await fake.send_guild_message(GUILD, GENERAL, ALICE, "what is my diagnosis?", mentions_bot=True)
    assert (await fake.wait_for_message(GENERAL))["content"] == "I can't say here."
    public = json.dumps(model.requests[since:])
    assert "ZEBRAPOX" not in public and "#general on Test Guild" in public
    await fake.wait_for_message(LOG, predicate=lambda m: "[#general on Test Guild]" in m["content"])
    model.script(tool_call("conversation_search", {"query": "diagnosis", "request_heartbeat": True}),
                 send("ZEBRAPOX."))
    await fake.send_dm(ALICE, "what is my diagnosis?")
    assert (await fake.wait_for_message(dm(ALICE), 2))["content"] == "ZEBRAPOX."
    assert "a direct message on Discord" in json.dumps(model.requests[-1])


async def test_a_thread_started_with_a_mention_goes_on_without_one(fake, model, service, settings):
    thread = int(fake.add_thread(GUILD, GENERAL, "planning")["id"])
    async with serving(service, settings, fake):
        model.script(send("Here, in the thread."), send("Still following."))
        await fake.send_guild_message(GUILD, thread, ALICE, "help me plan", mentions_bot=True)
        assert (await fake.wait_for_message(thread))["content"] == "Here, in the thread."
        await fake.send_guild_message(GUILD, thread, BOB, "just us talking")  # not his conversation
        await fake.send_guild_message(GUILD, GENERAL, ALICE, "outside the thread")  # no mention, no thread
        await fake.send_guild_message(GUILD, thread, ALICE, "and the budget?")
        assert (await fake.wait_for_message(thread, 2))["content"] == "Still following."
        assert len(model.requests) == 2 and "the thread 'planning' in #general" in json.dumps(model.requests[1])


async def test_with_discord_threads_on_a_mention_opens_a_thread(fake, model, service, settings):
    settings = settings.model_copy(update={"discord_threads": True})
    async with serving(service, settings, fake):
        model.script(send("Let's talk here."), send("Go on."))
        await fake.send_guild_message(GUILD, GENERAL, ALICE, "shall we plan the trip?", mentions_bot=True)
        made = await fake.wait_until(
            lambda: next((c for i, c in fake.guilds[GUILD].channels.items() if c["type"] == 11), None), 10, "a thread")
        thread = int(made["id"])
        assert made["name"] == "shall we plan the trip?" and int(made["parent_id"]) == GENERAL
        assert (await fake.wait_for_message(thread))["content"] == "Let's talk here."
        assert not fake.messages_in(GENERAL)  # the channel itself stays quiet
        await fake.send_guild_message(GUILD, thread, ALICE, "two weeks in May")
        assert (await fake.wait_for_message(thread, 2))["content"] == "Go on."


async def test_two_users_stay_apart_and_a_slow_agent_blocks_no_one(fake, bot, model):
    asked, release = asyncio.Event(), asyncio.Event()

    async def answer(body: dict[str, Any]) -> Any:
        if "ALICE-WORDS" in json.dumps(body):
            asked.set()
            await release.wait()  # alice's model call hangs until bob has his answer
            return send("for alice")
        return send("for bob")

    model.script(answer, answer)
    await fake.send_dm(ALICE, "ALICE-WORDS my secret plan")
    await asyncio.wait_for(asked.wait(), 10)
    await fake.send_dm(BOB, "BOB-WORDS hello")
    assert (await fake.wait_for_message(dm(BOB)))["content"] == "for bob"
    release.set()
    assert (await fake.wait_for_message(dm(ALICE)))["content"] == "for alice"
    alice_request, bob_request = (json.dumps(r) for r in model.requests)
    assert "ALICE-WORDS" not in bob_request and "BOB-WORDS" not in alice_request


async def test_a_question_right_after_a_file_finds_it_loaded(fake, bot, model):
    notes = fake.host_file("notes.txt", b"The launch code word is PELICAN.", "text/plain")
    model.script(send("Got your notes."), send("It is PELICAN."))
    await fake.send_dm(ALICE, "", attachments=[notes])
    await fake.send_dm(ALICE, "what is the code word?")
    await fake.wait_for_message(dm(ALICE), predicate=lambda m: m["content"] == "It is PELICAN.")
    told, asked = model.requests
    assert "notes.txt" in told["messages"][-1]["content"] and last_user_text(asked) == "what is the code word?"
    contents = [m["content"] for m in fake.messages_in(dm(ALICE))]
    assert contents[-2:] == ["Got your notes.", "It is PELICAN."] and contents[0].startswith("Loaded notes.txt")


# ----- slash commands --------------------------------------------------------------------------------------


async def test_persona_command_defers_then_answers_privately(fake, bot, model):
    choices = await fake.send_autocomplete(ALICE, "persona", [{"name": "name", "type": 3, "value": "mem"}])
    assert [c["value"] for c in choices] == ["memgpt_doc"]
    interaction = await slash(fake, ALICE, "persona", [{"name": "name", "type": 3, "value": "memgpt_doc"}])
    followup = await interaction.wait_followup()
    assert followup["content"] == "Persona set to memgpt_doc." and followup["flags"] & EPHEMERAL
    webhook = fake.calls_to("POST", f"/webhooks/{fake.application_id}/{interaction.token}")
    assert webhook[0].json["flags"] == EPHEMERAL

    interaction = await slash(fake, ALICE, "persona", [{"name": "name", "type": 3, "value": "pirate"}])
    followup = await interaction.wait_followup()
    assert "pirate" in followup["content"] and followup["flags"] & EPHEMERAL
    assert not model.requests  # commands do not talk to the model


def _user_option(fake: FakeDiscord, user_id: int) -> dict[str, Any]:
    return {
        "users": {str(user_id): fake.user(user_id)},
        "members": {str(user_id): fake.member_payload(GUILD, user_id, with_user=False)},
    }


async def test_memory_is_private_and_only_operators_see_others(fake, bot, caplog):
    own = await slash(fake, ALICE, "memory")
    followup = await own.wait_followup()
    assert followup["flags"] & EPHEMERAL
    [embed] = followup["embeds"]
    names = [field["name"] for field in embed["fields"]]
    assert any(n.startswith("persona") for n in names) and any(n.startswith("human") for n in names)
    assert "Context window" in names and all(len(f["value"]) <= 1024 for f in embed["fields"])
    persona_text = next(f["value"] for f in embed["fields"] if f["name"].startswith("persona"))

    about_alice = [{"name": "user", "type": 6, "value": str(ALICE)}]
    refused = await slash(fake, BOB, "memory", about_alice, guild_id=GUILD, channel_id=GENERAL,
                          resolved=_user_option(fake, ALICE))
    followup = await refused.wait_followup()
    assert "operators" in followup["content"] and not followup["embeds"] and followup["flags"] & EPHEMERAL
    assert persona_text[:40] not in followup["content"]

    # A guild's Administrator runs the server, not the bot: refused like anyone else.
    administrator = await slash(fake, MOD, "memory", about_alice, guild_id=GUILD, channel_id=GENERAL,
                                resolved=_user_option(fake, ALICE), member_permissions=str(1 << 3))
    assert not (await administrator.wait_followup())["embeds"]

    with caplog.at_level(logging.WARNING, logger="membot.audit"):
        allowed = await slash(fake, ADMIN, "memory", about_alice, guild_id=GUILD, channel_id=GENERAL,
                              resolved=_user_option(fake, ALICE))  # DISCORD_ADMIN_IDS: the bot's operators
        followup = await allowed.wait_followup()
    assert followup["flags"] & EPHEMERAL and "alice" in followup["embeds"][0]["title"]
    assert f"memory of discord::{ALICE} viewed by discord::{ADMIN}" in caplog.text


async def test_an_operator_role_in_the_operator_guild_sees_memory_from_any_server(fake, service, settings):
    ops, role = 700, 901
    fake.add_guild(ops, "Operators", channels=[{"id": 701, "name": "ops"}], roles=[{"id": role, "name": "ops"}],
                   members=[{"user": {"id": MOD, "username": "mod"}, "roles": [str(role)]}, {"id": BOB}])
    settings = settings.model_copy(update={"discord_operator_guild_id": ops, "discord_operator_role_ids": [str(role)]})
    about_alice = [{"name": "user", "type": 6, "value": str(ALICE)}]
    async with serving(service, settings, fake):
        await (await slash(fake, ALICE, "memory")).wait_followup()  # alice has an agent
        seen = await slash(fake, MOD, "memory", about_alice, guild_id=GUILD, channel_id=GENERAL,
                           resolved=_user_option(fake, ALICE))
        assert "alice" in (await seen.wait_followup())["embeds"][0]["title"]
        refused = await slash(fake, BOB, "memory", about_alice, guild_id=GUILD, channel_id=GENERAL,
                              resolved=_user_option(fake, ALICE))  # in the guild, without the role
        assert not (await refused.wait_followup())["embeds"]


async def test_allowed_server_admins_see_only_what_a_member_said_in_their_server(fake, service, settings, model):
    settings = settings.model_copy(update={"guild_admins_see_guild": True})
    about_alice = [{"name": "user", "type": 6, "value": str(ALICE)}]
    async with serving(service, settings, fake):
        model.script(send("Noted."), send("Kept private."))
        await fake.send_guild_message(GUILD, GENERAL, ALICE, "the roadmap is due Friday", mentions_bot=True)
        await fake.wait_for_message(GENERAL)
        await fake.send_dm(ALICE, "my diagnosis is ZEBRAPOX")
        await fake.wait_for_message(dm(ALICE))
        shown = await slash(fake, MOD, "memory", about_alice, guild_id=GUILD, channel_id=GENERAL,
                            resolved=_user_option(fake, ALICE), member_permissions=str(1 << 3))
        followup = await shown.wait_followup()
        assert followup["flags"] & EPHEMERAL and not followup["embeds"]
        assert "the roadmap is due Friday" in followup["content"] and "ZEBRAPOX" not in followup["content"]
        assert "Test Guild" in followup["content"]


async def test_attach_command_loads_a_file_autocompletes_sources_and_detach_undoes_it(fake, bot, model, service):
    notes = fake.host_file("notes.txt", b"The launch code word is PELICAN.\n" * 20, "text/plain")
    model.script(send("I'll keep your notes in mind."))
    interaction = await slash(
        fake, ALICE, "attach",
        [{"name": "source", "type": 3, "value": "notes"}, {"name": "file", "type": 11, "value": notes["id"]}],
        resolved={"attachments": {notes["id"]: notes}},
    )
    status = await interaction.wait_followup()
    assert status["content"] == "Loading notes.txt…" and status["flags"] & EPHEMERAL
    await fake.wait_until(
        lambda: fake.get_message(dm(ALICE), int(status["id"]))["content"].startswith("Loaded"), 10, "loaded"
    )
    final = fake.get_message(dm(ALICE), int(status["id"]))["content"]
    assert final == "Loaded notes.txt into notes: 1 passage from 1 page, attached to your agent."
    reaction = await interaction.wait_followup(2)
    assert reaction["content"] == "I'll keep your notes in mind." and reaction["flags"] & EPHEMERAL
    assert "notes" in (await service.memory(alice_ref())).sources

    choices = await fake.send_autocomplete(ALICE, "attach", [{"name": "source", "type": 3, "value": "no"}])
    assert choices == [{"name": "notes", "value": "notes"}]
    # DM uploads are private: bob sees none of alice's sources, in his DM or in the guild.
    assert await fake.send_autocomplete(BOB, "attach", [{"name": "source", "type": 3, "value": ""}]) == []
    assert await fake.send_autocomplete(BOB, "attach", [{"name": "source", "type": 3, "value": ""}],
                                        guild_id=GUILD, channel_id=GENERAL) == []

    missing = await slash(fake, ALICE, "attach", [{"name": "source", "type": 3, "value": "nope"}])
    followup = await missing.wait_followup()
    assert "no source called 'nope'" in followup["content"] and "notes" in followup["content"]

    assert await fake.send_autocomplete(ALICE, "detach", [{"name": "source", "type": 3, "value": "no"}]) == [
        {"name": "notes", "value": "notes"}]
    detached = await slash(fake, ALICE, "detach", [{"name": "source", "type": 3, "value": "notes"}])
    answer = await detached.wait_followup()
    assert answer["content"].startswith("Detached notes") and answer["flags"] & EPHEMERAL
    assert (await service.memory(alice_ref())).sources == []


# ----- uploads ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not PAPER.exists(), reason="shared/data/memgpt_paper.pdf not present")
async def test_pdf_in_a_dm_is_loaded_and_attached(fake, bot, model, service):
    paper = fake.host_file(PAPER.name, PAPER.read_bytes(), "application/pdf")
    model.script(send("Thanks, I'll read the paper."))
    await fake.send_dm(ALICE, "", attachments=[paper])
    done = await fake.wait_for_message(dm(ALICE), predicate=lambda m: m["content"].startswith("Loaded"))
    assert done["content"].startswith("Loaded memgpt_paper.pdf: ")
    assert done["content"].endswith(" passages from 13 pages, attached to your agent.")
    assert fake.calls_to("PATCH", f"/channels/{dm(ALICE)}/messages/{done['id']}")  # one message, edited
    reaction = await fake.wait_for_message(dm(ALICE), 2)
    assert reaction["content"] == "Thanks, I'll read the paper."
    assert "memgpt_paper.pdf" in model.requests[-1]["messages"][-1]["content"]  # the agent was told
    assert (await service.memory(alice_ref())).sources == ["memgpt_paper.pdf"]


async def test_bad_uploads_get_a_clear_reply_and_change_nothing(fake, bot, model, service):
    broken = fake.host_file("broken.pdf", b"%PDF-1.4 this is not really a pdf", "application/pdf")
    await fake.send_dm(ALICE, "", attachments=[broken])
    reply = await fake.wait_for_message(dm(ALICE), predicate=lambda m: m["content"].startswith("Could not"))
    assert "broken.pdf" in reply["content"] and reply["content"].endswith("Nothing was changed.")

    huge = fake.host_file("huge.pdf", b"%PDF-1.4", "application/pdf")
    huge["size"] = 60 * 1024 * 1024  # Discord reports the size; the bot must not download it
    photo = fake.host_file("cat.png", b"\x89PNG\r\n\x1a\n....", "image/png")
    await fake.send_dm(ALICE, "", attachments=[huge, photo])
    too_big = await fake.wait_for_message(dm(ALICE), 2)
    assert too_big["content"].startswith("Could not load huge.pdf: 60.0 MB is over the 50.0 MB limit")
    unsupported = await fake.wait_for_message(dm(ALICE), predicate=lambda m: m["content"].startswith("Could not load cat.png"))
    assert "unsupported" in unsupported["content"]
    unreachable = fake.host_file("gone.pdf", b"%PDF-1.4", "application/pdf")
    unreachable["url"] = unreachable["proxy_url"] = "http://127.0.0.1:9/gone.pdf"  # the download's connection fails
    await fake.send_dm(ALICE, "", attachments=[unreachable])
    gone = await fake.wait_for_message(dm(ALICE), predicate=lambda m: "gone.pdf" in m["content"]
                                       and not m["content"].startswith("Loading"))
    assert gone["content"].startswith("Could not download gone.pdf from Discord")
    assert await service.sources(alice_ref()) == []
    assert not model.requests  # the agent heard of none of it


# ----- operator controls: allow-lists, open channels, /cancel, quotas ---------------------------------------


def _club(fake: FakeDiscord) -> None:
    """A second guild where bob holds the mods role and #bots is open (added before the client connects)."""
    fake.add_guild(
        CLUB, "Club", channels=[{"id": CLUB_TALK, "name": "talk"}, {"id": CLUB_BOTS, "name": "bots"}],
        members=[{"user": {"id": BOB, "username": "bob"}, "roles": [str(MODS_ROLE)]}, {"id": ALICE}, {"id": MOD}],
        roles=[{"id": MODS_ROLE, "name": "mods"}],
    )


async def test_allow_lists_decide_who_is_answered_and_refusals_are_quiet_in_public(
    fake, service, home, model, caplog
):
    caplog.set_level(logging.INFO, logger="membot.adapters.discord")
    _club(fake)
    settings = make_settings(
        home, model, DISCORD_TOKEN="fake-token", DISCORD_ADMIN_IDS=str(ADMIN), MEMBOT_ALLOW_USERS=str(ALICE),
        MEMBOT_ALLOW_ROLES=str(MODS_ROLE), MEMBOT_OPEN_CHANNELS=str(CLUB_BOTS),
        MEMBOT_DISCORD_API_URL=fake.api_url, MEMBOT_DISCORD_GATEWAY_URL=fake.gateway_url,
    )
    async with serving(service, settings, fake):
        # Not listed, no role: a mention in a channel is ignored (logged), a DM gets one short private answer.
        await fake.send_guild_message(GUILD, GENERAL, MOD, "hello bot", mentions_bot=True)
        await fake.send_dm(MOD, "hello bot")
        refusal = await fake.wait_for_message(dm(MOD))
        assert refusal["content"] == not_open_text("discord") and "admins" in refusal["content"]
        assert "not on the allow-lists" in caplog.text

        # Listed by id; by role (in the guild that gives it); an admin, always.
        model.script(send("Hi Alice."), send("Hi mod Bob."), send("Hi admin."))
        await fake.send_dm(ALICE, "hi")
        assert (await fake.wait_for_message(dm(ALICE)))["content"] == "Hi Alice."
        await fake.send_guild_message(CLUB, CLUB_TALK, BOB, "hi", mentions_bot=True)
        assert (await fake.wait_for_message(CLUB_TALK))["content"] == "Hi mod Bob."
        await fake.send_dm(ADMIN, "hi")
        assert (await fake.wait_for_message(dm(ADMIN)))["content"] == "Hi admin."
        # Bob's role is the club's: in a DM (no roles there) he is not listed.
        await fake.send_dm(BOB, "hi from my DM")
        assert (await fake.wait_for_message(dm(BOB)))["content"] == not_open_text("discord")

        # The open channel: every message is answered, no mention needed, but only to those admitted.
        await fake.send_guild_message(CLUB, CLUB_BOTS, MOD, "anyone there?")
        await fake.send_guild_message(CLUB, CLUB_TALK, ALICE, "chatting, no mention")  # not an open channel
        picture = fake.host_file("cat.png", b"\x89PNG\r\n\x1a\n", "image/png")
        await fake.send_guild_message(CLUB, CLUB_BOTS, ALICE, "", attachments=[picture])  # a file alone: not for it
        model.script(send("Open channel answer."))
        sent = await fake.send_guild_message(CLUB, CLUB_BOTS, ALICE, "no mention needed here")
        answer = await fake.wait_for_message(CLUB_BOTS)
        assert answer["content"] == "Open channel answer."
        assert int(answer["message_reference"]["message_id"]) == int(sent["id"])
        assert last_user_text(model.requests[-1]) == "no mention needed here"
    assert len(model.requests) == 4  # nobody refused reached the model
    assert fake.messages_in(GENERAL) == [] and len(fake.messages_in(CLUB_BOTS)) == 1
    assert len(fake.messages_in(dm(MOD))) == 1


async def test_a_refused_user_gets_a_private_refusal_from_every_command(fake, service, home, model):
    settings = make_settings(
        home, model, DISCORD_TOKEN="fake-token", MEMBOT_ALLOW_GUILDS=str(CLUB), MEMBOT_ALLOW_CHANNELS="1",
        MEMBOT_DISCORD_API_URL=fake.api_url, MEMBOT_DISCORD_GATEWAY_URL=fake.gateway_url,
    )
    async with serving(service, settings, fake):
        for name, options in (("persona", [{"name": "name", "type": 3, "value": "memgpt_doc"}]), ("memory", []),
                              ("cancel", []), ("detach", [{"name": "source", "type": 3, "value": "x"}])):
            interaction = await fake.send_slash_command(ALICE, name, options, guild_id=GUILD, channel_id=GENERAL)
            callback = await interaction.wait_callback()
            assert callback["type"] == 4 and callback["data"]["flags"] & EPHEMERAL, name
            assert callback["data"]["content"] == not_open_text("discord")
        assert await fake.send_autocomplete(ALICE, "attach", [{"name": "source", "type": 3, "value": ""}],
                                            guild_id=GUILD, channel_id=GENERAL) == []
        # In a DM neither the guild nor the channel list applies: the command runs.
        allowed = await slash(fake, ALICE, "persona", [{"name": "name", "type": 3, "value": "memgpt_doc"}])
        assert (await allowed.wait_followup())["content"] == "Persona set to memgpt_doc."
    assert (await service.memory(alice_ref())).persona_name == "memgpt_doc"


async def test_cancel_command_answers_privately_with_the_services_words(fake, bot, service, monkeypatch):
    asked: list[UserRef] = []

    async def cancel(user: UserRef) -> str:
        asked.append(user)
        return "Stopping your agent's current reply after its current model call."

    monkeypatch.setattr(service, "cancel", cancel)
    interaction = await slash(fake, ALICE, "cancel", guild_id=GUILD, channel_id=GENERAL)
    followup = await interaction.wait_followup()
    assert followup["content"] == "Stopping your agent's current reply after its current model call."
    assert followup["flags"] & EPHEMERAL
    assert [(u.platform, u.user_id) for u in asked] == [("discord", str(ALICE))]


QUOTA = "You have used today's 1,000 tokens; more at 00:00 UTC."


def _over_quota(service: BotService, monkeypatch: pytest.MonkeyPatch) -> None:
    async def chat(user: UserRef, text: str, place: Any = None) -> AsyncIterator[Any]:
        raise QuotaReached(QUOTA)
        yield  # an async generator, as the service's own

    monkeypatch.setattr(service, "chat", chat)


async def test_a_reached_quota_is_told_privately_in_the_dm_or_by_dm_from_a_channel(
    fake, bot, service, model, monkeypatch
):
    _over_quota(service, monkeypatch)
    await fake.send_dm(ALICE, "hello")
    assert (await fake.wait_for_message(dm(ALICE)))["content"] == QUOTA
    await fake.send_guild_message(GUILD, GENERAL, BOB, "hello", mentions_bot=True)
    assert (await fake.wait_for_message(dm(BOB)))["content"] == QUOTA
    assert fake.messages_in(GENERAL) == [] and not model.requests


async def test_a_reached_quota_with_dms_closed_is_a_reply_that_pings_only_the_user(
    fake, bot, service, model, monkeypatch
):
    _over_quota(service, monkeypatch)

    async def closed(self: Any, *args: Any, **kwargs: Any) -> None:
        raise discord.Forbidden(SimpleNamespace(status=403, reason="Forbidden"),
                                {"code": 50007, "message": "Cannot send messages to this user"})

    monkeypatch.setattr(discord.Member, "send", closed)
    sent = await fake.send_guild_message(GUILD, GENERAL, BOB, "hello", mentions_bot=True)
    reply = await fake.wait_for_message(GENERAL)
    assert reply["content"] == f"<@{BOB}> {QUOTA}"
    assert int(reply["message_reference"]["message_id"]) == int(sent["id"])
    [post] = fake.calls_to("POST", f"/channels/{GENERAL}/messages")
    assert [int(u) for u in post.json["allowed_mentions"]["users"]] == [BOB] and not post.json["allowed_mentions"]["parse"]
    assert fake.messages_in(dm(BOB)) == []


# ----- running and syncing ---------------------------------------------------------------------------------


async def test_missing_message_content_intent_stops_with_what_to_enable(fake, service, settings):
    stop = asyncio.Event()
    task = asyncio.create_task(run_discord(service, settings, stop, guild_ready_timeout=0.1))
    await fake.wait_connected()
    assert fake.connection is not None
    await fake.connection.close(code=4014)  # Discord's "disallowed intents"
    with pytest.raises(ConfigurationError) as raised:
        await asyncio.wait_for(task, 10)
    assert str(raised.value) == NO_INTENT and "Message Content Intent" in NO_INTENT
    assert discord.http.Route.BASE == DISCORD_API


async def test_rejected_token_stops_with_what_to_set(model, home, service):
    async def unauthorized(request: web.Request) -> web.Response:
        return web.Response(status=401, body=b'{"message": "401: Unauthorized", "code": 0}',
                            headers={"Content-Type": "application/json"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", unauthorized)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v10"
        settings = make_settings(home, model, DISCORD_TOKEN="wrong", MEMBOT_DISCORD_API_URL=url)
        with pytest.raises(ConfigurationError, match="DISCORD_TOKEN"):
            await asyncio.wait_for(run_discord(service, settings, asyncio.Event()), 10)
        with pytest.raises(ConfigurationError, match="DISCORD_TOKEN"):
            await sync_commands(settings)
    finally:
        await runner.cleanup()


async def test_sync_registers_the_commands_globally_or_in_one_guild(fake, settings):
    commands = ["attach", "cancel", "detach", "forget", "heartbeats", "memory", "persona", "reminders"]
    assert await sync_commands(settings) == commands
    assert sorted(c["name"] for c in fake.global_commands) == commands
    assert await sync_commands(settings, GUILD) == commands
    assert sorted(c["name"] for c in fake.guild_commands[GUILD]) == commands
    attach = next(c for c in fake.global_commands if c["name"] == "attach")
    assert [o["name"] for o in attach["options"]] == ["source", "file"] and attach["options"][0]["autocomplete"]
    assert discord.http.Route.BASE == DISCORD_API


async def test_cli_discord_sync(fake, model, home):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MEMBOT_", "DISCORD_", "SLACK_"))}
    env.update(DISCORD_TOKEN="fake-token", MEMBOT_HOME=str(home), MEMBOT_DISCORD_API_URL=fake.api_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "membot", "discord", "sync", "--guild", str(GUILD), env=env, cwd=str(home.parent),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == (
        f"Synced 8 commands in guild {GUILD}: /attach, /cancel, /detach, /forget, /heartbeats, /memory, /persona, /reminders"
    )
    assert sorted(c["name"] for c in fake.guild_commands[GUILD]) == [
        "attach", "cancel", "detach", "forget", "heartbeats", "memory", "persona", "reminders"]


# ----- pure helpers ----------------------------------------------------------------------------------------


def test_split_leaves_short_text_alone_and_drops_blank_text():
    assert split_message("hello") == ["hello"]
    assert split_message("  \n\n ") == []
    assert split_message("x" * 2000) == ["x" * 2000]


def test_split_cuts_at_line_ends_and_long_lines_at_spaces():
    text = "\n".join(f"line {i} " + "word " * 30 for i in range(40))
    parts = split_message(text, 500)
    assert all(len(p) <= 500 for p in parts) and "\n".join(parts) == text
    one_line = "word " * 1000
    parts = split_message(one_line.strip(), 300)
    assert all(len(p) <= 300 for p in parts) and "".join(parts) == one_line.strip()
    assert all(not p.startswith(" ") for p in parts[1:])  # the cut falls after a space


def test_split_reopens_code_blocks_with_their_language():
    code = "```js\n" + "\n".join(f"let a{i} = {i};" for i in range(200)) + "\n```"
    parts = split_message("Before.\n" + code + "\nAfter.", 400)
    assert all(len(p) <= 400 and p.count("```") % 2 == 0 for p in parts)
    assert all(p.startswith("```js\n") for p in parts[1:-1]) and parts[-1].endswith("```\nAfter.")
    lines = [line for p in parts for line in p.split("\n") if line.startswith("let")]
    assert lines == [f"let a{i} = {i};" for i in range(200)]
    # A block that never closes is closed in every part.
    assert all(p.count("```") % 2 == 0 for p in split_message("```\n" + "y\n" * 600, 300))


def test_split_counts_emoji_as_discord_does():
    parts = split_message("😀" * 1500)
    assert all(units(p) <= 2000 for p in parts) and "".join(parts) == "😀" * 1500


def test_mentions_are_cleaned_for_the_agent():
    assert strip_mentions("<@1000> hi <@!42>, meet <@7>", 1000, {42: "alice"}) == "hi @alice, meet <@7>"
    assert strip_mentions("<@!1000>", 1000, {}) == ""
