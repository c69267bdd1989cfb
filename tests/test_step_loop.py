"""The step loop against the scripted model: chaining, its bound, and every kind of malformed output."""

from __future__ import annotations

import json

import pytest

from membot.agent.events import AssistantMessage, ErrorMessage, FunctionResult, SystemNote, Thought
from tests.conftest import collect
from tests.fakes.openai_server import error, raw, send, text, tool_call

pytestmark = pytest.mark.both_databases  # SQL-backed: run on SQLite and on PostgreSQL (see conftest)


async def test_login_greets_and_monologue_is_not_visible(service, model, user):
    model.script(send("Hi, I'm Sam!", thought="A new person. Greet warmly."))
    events = await collect(service.login(user("alice")))
    visible = [e for e in events if e.visible]
    assert [e.text for e in visible] == ["Hi, I'm Sam!"]
    assert any(isinstance(e, Thought) and "Greet warmly" in e.text for e in events)
    first = json.loads(model.requests[0]["messages"][1]["content"])
    assert first["type"] == "login" and "first time" in first["message"]
    tools = {t["function"]["name"] for t in model.requests[0]["tools"]}
    assert tools == {
        "send_message", "pause_heartbeats", "schedule_wakeup", "core_memory_append", "core_memory_replace",
        "conversation_search", "conversation_search_date", "archival_memory_insert", "archival_memory_search",
        "knowledge_insert", "knowledge_search",
    }


async def test_heartbeat_chains_and_send_ends(service, model, user):
    model.script(
        tool_call("core_memory_append", {"name": "human", "content": "Name: Alice", "request_heartbeat": True},
                  "She told me her name."),
        send("Nice to meet you, Alice."),
    )
    events = await collect(service.chat(user("alice"), "I'm Alice"))
    assert [e.text for e in events if isinstance(e, AssistantMessage)] == ["Nice to meet you, Alice."]
    assert len(model.requests) == 2
    # The second call sees the function's result and the heartbeat.
    roles = [m["role"] for m in model.requests[1]["messages"]]
    assert roles[-3:] == ["assistant", "tool", "user"]
    assert "Name: Alice" in model.requests[1]["messages"][0]["content"]
    report = await service.memory(user("alice"))
    assert "Name: Alice" in report.blocks["private"][0]


async def test_chain_is_bounded(service, model, user):
    model.default = lambda body: tool_call(
        "conversation_search", {"query": "anything", "request_heartbeat": True}
    )
    events = await collect(service.chat(user("bob"), "loop forever"))
    assert len(model.requests) == service.settings.max_chain
    assert isinstance(events[-1], SystemNote) and "cut" in events[-1].text


async def test_malformed_output_goes_back_to_the_model(service, model, user):
    model.script(
        tool_call("send_message", '{"message": "unterminated'),          # not JSON
        tool_call("no_such_function", {"x": 1}),                         # unknown function
        tool_call("core_memory_append", {"name": "human"}),              # missing argument
        tool_call("core_memory_append", {"name": "soul", "content": "x"}),  # not a block
        tool_call("conversation_search", {"query": "x", "page": "first"}),  # wrong type
        tool_call("conversation_search_date", {"start_date": "yesterday", "end_date": "2024-01-01"}),  # raises
        text(None),                                                      # empty reply
        raw("this is not json at all"),                                  # garbage body
        send("Recovered."),
    )
    events = await collect(service.chat(user("carol"), "hello"))
    assert [e.text for e in events if e.visible] == ["Recovered."]
    results = [e for e in events if isinstance(e, FunctionResult)]
    assert [r.ok for r in results] == [False] * 6 + [True]
    assert "not valid JSON" in results[0].result
    assert "no function named 'no_such_function'" in results[1].result
    assert "content" in results[2].result and "required" in results[2].result.lower()
    assert "persona" in results[3].result
    assert "page" in results[4].result
    assert "YYYY-MM-DD" in results[5].result
    # The model was told, each time, what went wrong.
    tool_messages = [m for m in model.requests[-1]["messages"] if m["role"] == "tool"]
    assert any("not valid JSON" in m["content"] for m in tool_messages)
    alerts = [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "user"]
    assert sum("without calling a function" in a for a in alerts) == 2
    # After a reply without a call, the next one is asked to call a function.
    assert [r["tool_choice"] for r in model.requests[-3:]] == ["auto", "required", "required"]


async def test_model_down_keeps_the_message(service, model, user):
    model.script(error(500, "boom"))
    events = await collect(service.chat(user("dave"), "remember the blue door"))
    errors = [e for e in events if isinstance(e, ErrorMessage)]
    assert len(errors) == 1 and "saved" in errors[0].text
    found = await service.search_memory(user("dave"), "blue door")
    assert found and "remember the blue door" in found[0]


async def test_model_unreachable(settings, user, home):
    from membot.bot.service import BotService
    from tests.conftest import make_settings
    from tests.fakes.openai_server import ScriptedModel

    dead = ScriptedModel()
    await dead.start()
    await dead.stop()  # the port is now closed: connection refused
    service = await BotService.open(make_settings(home, dead))
    try:
        events = await collect(service.chat(user("erin"), "hello?"))
        assert [type(e) for e in events if e.visible] == [ErrorMessage]
        assert "cannot be reached" in [e for e in events if e.visible][0].text
    finally:
        await service.close()


async def test_model_too_slow_is_told_apart_from_unreachable(model, user, home, database_url):
    from membot.bot.service import BotService
    from tests.conftest import make_settings

    model.latency = 2.0
    model.default = lambda body: send("too late")
    settings = make_settings(home, model, MEMBOT_MODEL_TIMEOUT=0.3, MEMBOT_DATABASE_URL=database_url)
    service = await BotService.open(settings)
    try:
        events = await collect(service.chat(user("erin"), "hello?"))
        visible = [e for e in events if e.visible]
        assert [type(e) for e in visible] == [ErrorMessage] and "did not answer in time" in visible[0].text
        assert "hello?" in (await service.search_memory(user("erin"), "hello"))[0]  # the message is kept
    finally:
        await service.close()


async def test_answers_of_the_wrong_shape_read_as_no_answer(service, model, user):
    model.script(
        raw([1, 2, 3]),                                                  # JSON, not an object
        raw({"choices": [{"message": {"tool_calls": 5, "content": 7}}], "usage": "lots"}),  # wrong types
        raw({"choices": [{"message": {"tool_calls": [{"function": {"name": 9}}, "x"]}}]}),  # broken calls
        send("Recovered."),
    )
    events = await collect(service.chat(user("carol"), "hello"))
    assert [e.text for e in events if e.visible] == ["Recovered."]
    # The nameless call was answered as a failed function; the others as replies without a function call.
    assert [r.ok for r in events if isinstance(r, FunctionResult)] == [False, True]
    alerts = [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "user"]
    assert sum("without calling a function" in a for a in alerts) == 2


async def test_context_overflow_once_is_recovered(service, model, user):
    model.script(error(400, code="context_length_exceeded"), send("Fine now."))
    events = await collect(service.chat(user("frank"), "hi"))
    assert [e.text for e in events if e.visible] == ["Fine now."]
