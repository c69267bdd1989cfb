"""The habits of real models, through the step loop: no text beside calls (the monologue in the arguments),
several calls in one reply, plain-text answers, reasoning, models without tool support."""

from __future__ import annotations

import json

import pytest

from membot.agent.events import AssistantMessage, ErrorMessage, FunctionCall, SystemNote, Thought
from membot.agent.tools.registry import THOUGHTS
from membot.bot.service import BotService
from tests.conftest import collect, make_settings
from tests.fakes.openai_server import ChatReply, error, send, text, tool_call


def _thoughts(events: list) -> list[str]:
    return [e.text for e in events if isinstance(e, Thought)]


def _replies(events: list) -> list[str]:
    return [e.text for e in events if isinstance(e, (AssistantMessage, ErrorMessage))]


@pytest.fixture
async def thinking_in_text(home, model):
    service = await BotService.open(make_settings(home, model, MEMBOT_INNER_THOUGHTS="content"))
    try:
        yield service
    finally:
        await service.close()


async def test_every_function_offers_the_monologue_first_and_it_is_taken_out_before_the_call(service, model, user):
    model.script(tool_call("send_message", {THOUGHTS: "They said hello. Be warm.", "message": "Hello!"}))
    events = await collect(service.chat(user("ann"), "hi"))
    assert _replies(events) == ["Hello!"]
    assert _thoughts(events) == ["They said hello. Be warm."]
    shown = next(e for e in events if isinstance(e, FunctionCall))
    assert THOUGHTS not in shown.arguments and "Hello!" in shown.arguments
    for schema in model.requests[0]["tools"]:
        parameters = schema["function"]["parameters"]
        assert next(iter(parameters["properties"])) == THOUGHTS and parameters["required"][0] == THOUGHTS
    assert "inner_thoughts" in model.requests[0]["messages"][0]["content"]  # the prompt says where to think
    # A call without it is no error.
    model.script(tool_call("send_message", {"message": "Still here."}))
    assert _replies(await collect(service.chat(user("ann"), "and now?"))) == ["Still here."]


async def test_several_calls_in_one_reply_all_run_each_answered(service, model, user):
    model.script(ChatReply(None, tool_call(
        "core_memory_append", {THOUGHTS: "Worth keeping.", "name": "human", "content": "Has a cat, Miso."},
        extra_calls=[("send_message", {THOUGHTS: "Now answer.", "message": "Miso is a lovely name!"})],
    ).tool_calls))
    events = await collect(service.chat(user("bea"), "my cat is called Miso"))
    assert _replies(events) == ["Miso is a lovely name!"]
    assert _thoughts(events) == ["Worth keeping.", "Now answer."]
    assert len(model.requests) == 1  # neither asked for a heartbeat
    assert "Miso" in (await service.memory(user("bea"))).blocks["private"][0]
    model.script(send("ok"))
    await collect(service.chat(user("bea"), "thanks"))
    sent = model.requests[-1]["messages"]
    asked = next(m for m in sent if m.get("tool_calls") and len(m["tool_calls"]) == 2)
    answered = [m["tool_call_id"] for m in sent if m["role"] == "tool"]
    assert [call["id"] for call in asked["tool_calls"]] == answered[-2:]
    # Found again by what the agent thought and said.
    found = await service.search_memory(user("bea"), "lovely keeping", limit=5)
    assert any("Worth keeping" in line and "lovely name" in line for line in found)


async def test_a_heartbeat_or_a_failure_among_several_calls_continues_the_chain(service, model, user):
    model.script(
        ChatReply(None, tool_call("conversation_search", {"query": "cat", "request_heartbeat": True},
                                  extra_calls=[("core_memory_append", {"name": "nowhere", "content": "x"})]).tool_calls),
        send("Done."),
    )
    events = await collect(service.chat(user("cy"), "what about my cat?"))
    assert _replies(events) == ["Done."] and len(model.requests) == 2


async def test_a_stubborn_text_model_is_forced_then_its_text_is_the_reply(service, model, user):
    model.script(text("I'd love to help with that!"), text("Sure, happy to help."))
    events = await collect(service.chat(user("dee"), "can you help?"))
    assert _replies(events) == ["Sure, happy to help."]
    assert [r["tool_choice"] for r in model.requests] == ["auto", "required"]
    assert any(isinstance(e, SystemNote) and "plain text" in e.text for e in events)
    # The next message starts unforced.
    model.script(send("ok"))
    await collect(service.chat(user("dee"), "thanks"))
    assert model.requests[-1]["tool_choice"] == "auto"


async def test_thinking_in_text_a_text_only_model_costs_three_calls_and_the_user_is_told(
    thinking_in_text: BotService, model, user
):
    model.default = lambda body: text("Hmm, let me think about this.")
    events = await collect(thinking_in_text.chat(user("eli"), "hello?"))
    assert len(model.requests) == 3
    assert _replies(events) == ["Sorry, I couldn't put a reply together this time. Your message is saved."]
    assert "Hmm, let me think" in " ".join(_thoughts(events))
    assert all(THOUGHTS not in json.dumps(r["tools"]) for r in model.requests)
    assert "inner monologue" in model.requests[0]["messages"][0]["content"]
    # A forced call is the way to the user.
    model.default = None
    model.script(text("thinking"), send("Here I am.", thought="Answer now."))
    assert _replies(await collect(thinking_in_text.chat(user("eli"), "hello?"))) == ["Here I am."]


NO_TOOLS = "registry.ollama.ai/library/llama2:latest does not support tools"


def _json_call(function: str, **arguments: object) -> ChatReply:
    return text("```json\n" + json.dumps({"function": function, "arguments": arguments}) + "\n```")


async def test_a_model_without_tools_is_offered_json_from_then_on(service, model, user):
    model.script(error(400, NO_TOOLS),
                 _json_call("core_memory_append", inner_thoughts="Keep it.", name="human", content="Likes tea.",
                            request_heartbeat=True),
                 _json_call("send_message", inner_thoughts="Answer.", message="Tea it is."))
    events = await collect(service.chat(user("fay"), "I like tea"))
    assert _replies(events) == ["Tea it is."]
    assert _thoughts(events) == ["Keep it.", "Answer."]
    assert any(isinstance(e, SystemNote) and "JSON mode" in e.text for e in events)
    asked = model.requests[1:]
    assert all("tools" not in r for r in asked)
    assert "send_message(" in asked[0]["messages"][0]["content"]  # the functions, listed in the prompt
    # The history goes in plain roles: no tool_calls, no tool messages.
    assert all(m["role"] != "tool" and "tool_calls" not in m for m in asked[-1]["messages"])
    assert "Result of core_memory_append" in json.dumps(asked[-1]["messages"])
    assert "Likes tea." in (await service.memory(user("fay"))).blocks["private"][0]
    model.script(_json_call("send_message", message="Still JSON."))
    assert _replies(await collect(service.chat(user("fay"), "and now?"))) == ["Still JSON."]
    assert "tools" not in model.requests[-1]


async def test_with_tools_required_a_refusal_of_tools_says_what_to_do_and_not_try_again(home, model, user):
    service = await BotService.open(make_settings(home, model, MEMBOT_TOOL_MODE="tools"))
    try:
        model.script(error(400, NO_TOOLS))
        replies = _replies(await collect(service.chat(user("gus"), "hello")))
        assert len(replies) == 1 and "llama2" in replies[0] and "try again" not in replies[0]
    finally:
        await service.close()
