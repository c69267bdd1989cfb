"""What is said in a DM never reaches a step in a shared channel (agent/place.py). Asserted on what the scripted
model server received: the queue, the summary, core memory and every search result of a channel's step."""

from __future__ import annotations

import json
import re

import pytest

from membot.agent.events import AssistantMessage, FunctionResult
from membot.agent.memory.core import NOT_HERE, REDIRECTED
from membot.agent.place import Place
from membot.bot.identity import UserRef
from tests.conftest import collect, small_window
from tests.fakes.openai_server import ScriptedModel, send, text, tool_call

pytestmark = pytest.mark.both_databases  # the searches filter in SQL: both databases

DM = Place.direct("a direct message on Discord")
GENERAL = Place.shared("discord:500/501", "#general on Test Guild")
SECRET = "ZEBRAPOX"


def _seen(model: ScriptedModel, since: int) -> str:
    """Everything the model was sent from request `since` on."""
    return json.dumps(model.requests[since:])


def _results(events: list) -> dict[str, str]:
    return {e.name: e.result for e in events if isinstance(e, FunctionResult)}


async def test_a_dm_fact_is_in_nothing_a_channel_step_is_shown_and_a_dm_finds_it(service, model, user):
    alice = user("alice")
    model.script(
        tool_call("core_memory_append", {"name": "human", "content": f"Diagnosis: {SECRET}",
                                         "request_heartbeat": True}, "Private health news."),
        tool_call("archival_memory_insert", {"content": f"Her diagnosis is {SECRET}.", "request_heartbeat": True}),
        send("I'll keep that between us."),
    )
    events = await collect(service.chat(alice, f"the diagnosis is {SECRET}", DM))
    assert _results(events)["core_memory_append"] == REDIRECTED  # human is shown in channels: it went to private
    report = await service.memory(alice)
    assert SECRET in report.blocks["private"][0] and SECRET not in report.blocks["human"][0]

    # In a channel, the model reaches for it every way it can.
    since = len(model.requests)
    model.script(
        tool_call("conversation_search", {"query": f"diagnosis {SECRET}", "request_heartbeat": True}),
        tool_call("archival_memory_search", {"query": f"diagnosis {SECRET}", "request_heartbeat": True}),
        tool_call("conversation_search_date", {"start_date": "2000-01-01", "end_date": "2100-01-01",
                                               "request_heartbeat": True}),
        tool_call("core_memory_append", {"name": "private", "content": "x", "request_heartbeat": True}),
        send("I don't know that."),
    )
    events = await collect(service.chat(alice, "what's my diagnosis?", GENERAL))
    assert [e.text for e in events if isinstance(e, AssistantMessage)] == ["I don't know that."]
    assert _results(events)["core_memory_append"].endswith(NOT_HERE)
    shown = _seen(model, since)
    # The search terms the model wrote are its own; nothing else may carry the word: strip the calls.
    for request in model.requests[since:]:
        for message in request["messages"]:
            said = json.dumps({k: v for k, v in message.items() if k != "tool_calls"})
            assert SECRET not in said, message
    assert "#general on Test Guild" in shown  # the agent is told where it is
    assert "<private characters" not in model.requests[since]["messages"][0]["content"]

    # Back in the DM, all of it is there again.
    since = len(model.requests)
    model.script(
        tool_call("conversation_search", {"query": "diagnosis", "request_heartbeat": True}),
        tool_call("archival_memory_search", {"query": "diagnosis", "request_heartbeat": True}),
        send(f"It is {SECRET}."),
    )
    events = await collect(service.chat(alice, "what's my diagnosis?", DM))
    found = _results(events)
    assert SECRET in found["conversation_search"] and SECRET in found["archival_memory_search"]
    assert SECRET in model.requests[since]["messages"][0]["content"]  # the private block


async def test_a_channel_step_edits_human_and_the_dm_sees_it_too(service, model, user):
    alice = user("alice")
    model.script(tool_call("core_memory_append", {"name": "human", "content": "Likes chess."}))
    await collect(service.chat(alice, "I like chess", GENERAL))
    model.script(send("You like chess."))
    await collect(service.chat(alice, "what do I like?", DM))
    assert "Likes chess." in model.requests[-1]["messages"][0]["content"]
    assert "Likes chess." in (await service.memory(alice)).blocks["human"][0]


# ----- the summary of evicted messages ----------------------------------------------------------------------

WINDOW = 3200
_WORD = re.compile(r"(?:dm|ch)word\d+")


def _echoing_summariser(body: dict) -> object:
    """A summariser that keeps every marked word it was given: whatever reaches a summary shows."""
    if "tools" in body:
        return send("ok")
    return text("Earlier: " + " ".join(sorted(set(_WORD.findall(json.dumps(body["messages"]))))))


@pytest.fixture
async def small(home, database_url):
    async with small_window(home, database_url, WINDOW, _echoing_summariser) as running:
        yield running


async def test_a_channel_sees_a_summary_of_channel_messages_only(small, user):
    service, model = small
    alice = user("alice")
    for i in range(12):
        await collect(service.chat(alice, f"Private note {i}: dmword{i} is between us, padding padding.", DM))
    since = len(model.requests)
    for i in range(30):
        await collect(service.chat(alice, f"Public note {i}: chword{i} is for everyone, padding padding.", GENERAL))
    report = await service.memory(alice)
    assert report.summary_hidden > 12  # the DM notes and some channel notes were evicted
    channel_steps = [r for r in model.requests[since:] if "tools" in r]
    assert model.max_prompt_tokens <= WINDOW
    assert not any("dmword" in json.dumps(r["messages"]) for r in channel_steps)
    assert any("system_summary" in json.dumps(r["messages"]) and "chword" in json.dumps(r["messages"])
               for r in channel_steps)  # the channel's own summary is shown
    # The DM's summary holds both.
    await collect(service.chat(alice, "anything else?", DM))
    assert "dmword" in json.dumps(model.requests[-1]["messages"])


async def test_a_private_source_is_not_named_in_a_channel(service, model):
    alice = UserRef("discord", "", "42", "alice", source_scope="discord:dm:42")  # a file sent in her DM
    _, events = await service.load_file(alice, "biopsy_results.md", b"# Results\n\nAll clear, says the lab.\n")
    model.script(send("Loaded."))
    await collect(events)
    since = len(model.requests)
    model.script(send("Hello, channel."))
    await collect(service.chat(alice, "hi all", GENERAL))
    assert "biopsy_results" not in json.dumps(model.requests[since:])
    model.script(send("Hello."))
    await collect(service.chat(alice, "hi", DM))
    assert "biopsy_results" in model.requests[-1]["messages"][0]["content"]


async def test_a_channel_message_is_not_found_by_the_dm_said_before_it(service, model, user):
    # The search index gives each message the words of its agent's previous message of the same role (its
    # context): a channel message must not carry a DM's words that way.
    alice = user("alice")
    model.script(send("Noted."), send("Sure."), tool_call("conversation_search", {"query": "zanzibar"}),
                 tool_call("conversation_search", {"query": "zanzibar"}))
    await collect(service.chat(alice, "the password is zanzibar", DM))
    await collect(service.chat(alice, "let us plan the picnic", GENERAL))
    found = _results(await collect(service.chat(alice, "what was it?", GENERAL)))["conversation_search"]
    assert "picnic" not in found  # found only through the DM before it, it would betray the DM
    found = _results(await collect(service.chat(alice, "what was it?", DM)))["conversation_search"]
    assert "the password is zanzibar" in found


async def test_forgetting_an_agent_that_talked_in_dms_and_channels_empties_its_search_index(service, model, user):
    from sqlalchemy import text as sql

    alice = user("alice")
    for i, place in enumerate((DM, GENERAL, DM, GENERAL, GENERAL)):
        model.script(send(f"reply {i}"))
        await collect(service.chat(alice, f"message number {i} about zanzibar", place))
    agent_id, _ = await service.agent_id(alice)
    await service.forget(alice)
    if service.engine.db.is_sqlite:  # a contentless FTS5 row goes only when deleted with its exact values
        left = await service.engine.db.read(lambda s: s.execute(sql(
            "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH :q"), {"q": "zanzibar OR reply"}).scalar())
        assert left == 0  # nobody else said these words: any hit is a row of hers the delete missed
