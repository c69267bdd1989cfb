"""Streamed model calls: drafts of a reply as the model writes it, the final text exactly what send_message
carried, a malformed call's draft dropped, and servers that stream partly or not at all."""

from __future__ import annotations

import json
import time

import pytest

from membot.agent.drafts import Drafts
from membot.agent.events import AssistantMessage, DraftDropped, ReplyDraft
from membot.agent.llm.partial_json import partial_string
from membot.bot.service import BotService
from tests.conftest import collect, make_settings
from tests.fakes.openai_server import ChatReply, ErrorReply, ScriptedModel, send

LONG = "Here is a longer answer, with \"quotes\", a tab\tand an emoji 🐈 — written word by word. " * 3


# ----- reading a string out of a JSON object that is still arriving -----------------------------------------


@pytest.mark.parametrize("value", [LONG, "", "a\\b\nc", "\u00e9😀 and \\u escapes", "}{,:\""])
def test_every_prefix_gives_a_prefix_of_the_value(value):
    whole = json.dumps({"inner_thoughts": "thinking, {hard} \"here\"", "n": [1, {"x": "]"}], "message": value,
                        "request_heartbeat": False})
    seen = ""
    for end in range(len(whole) + 1):
        part = partial_string(whole[:end], "message")
        if part is not None:
            assert value.startswith(part) and len(part) >= len(seen)
            seen = part
    assert seen == value


def test_what_is_not_a_string_field_reads_as_none():
    assert partial_string("", "message") is None
    assert partial_string('{"inner_thoughts": "still thinking', "message") is None
    assert partial_string('{"message": 5}', "message") is None
    assert partial_string("[1, 2]", "message") is None
    assert partial_string('{"message": "half \\', "message") == "half "  # the escape waits for its end
    assert partial_string('{"message": "\\ud83d', "message") == ""


# ----- through the step loop -------------------------------------------------------------------------------


async def test_a_slow_reply_arrives_as_growing_drafts_then_the_exact_message(service, model, user):
    model.stream_delay = 0.01
    model.script(send(LONG, thought="Answer at length."))
    started = time.monotonic()
    events = await collect(service.chat(user("sam"), "tell me more"))
    drafts = [e for e in events if isinstance(e, ReplyDraft)]
    final = [e for e in events if isinstance(e, AssistantMessage)]
    assert len(drafts) >= 4 and final[0].text == LONG and final[0].draft == drafts[0].draft
    texts = [d.text for d in drafts]  # read every few dozen characters; the final message is the whole
    assert all(LONG.startswith(t) for t in texts) and texts == sorted(texts, key=len) and len(texts[-1]) > 150
    assert time.monotonic() - started > 0.3  # it really was written over time
    request = model.requests[0]
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}


async def test_drafts_that_fail_to_show_cost_the_reply_nothing(service, model, user, monkeypatch, caplog):
    # A defect in showing drafts is no failure of the model's answer: the reply arrives whole, logged once.
    def broken(self, reply):
        raise IndexError("a draft defect")

    monkeypatch.setattr(Drafts, "update", broken)
    model.script(send(LONG))
    events = await collect(service.chat(user("sam"), "tell me more"))
    assert [e.text for e in events if isinstance(e, AssistantMessage)] == [LONG]
    assert not [e for e in events if isinstance(e, ReplyDraft)]
    assert caplog.text.count("showing a reply while it is written failed") == 1


async def test_a_malformed_reply_call_drops_its_draft(service, model, user):
    broken = ChatReply(None, tool_calls=({"id": "call_1", "type": "function", "function": {
        "name": "send_message", "arguments": '{"inner_thoughts": "hm", "message": "half a repl'}},))
    model.script(broken, send("Second try."))
    events = await collect(service.chat(user("sam"), "hi"))
    drafts = [e for e in events if isinstance(e, ReplyDraft)]
    dropped = [e for e in events if isinstance(e, DraftDropped)]
    assert drafts and dropped and dropped[0].draft == drafts[0].draft
    assert [e.text for e in events if isinstance(e, AssistantMessage)] == ["Second try."]


async def test_servers_that_refuse_stream_options_or_streaming_are_asked_again(home, user):
    async with ScriptedModel() as model:
        service = await BotService.open(make_settings(home, model))
        try:
            model.script(ErrorReply(status=400, message="Unrecognized request argument: stream_options"),
                         send("One."), send("Two."))
            assert [e.text for e in await collect(service.chat(user("a"), "x")) if e.visible] == ["One."]
            assert "stream_options" not in model.requests[1] and model.requests[1]["stream"] is True
            model.streams = False  # now it cannot stream at all
            assert [e.text for e in await collect(service.chat(user("a"), "y")) if e.visible] == ["Two."]
            assert "stream" not in model.requests[-1]
        finally:
            await service.close()


async def test_stream_off_asks_whole(home, user):
    async with ScriptedModel() as model:
        service = await BotService.open(make_settings(home, model, MEMBOT_STREAM="false"))
        try:
            model.script(send("Whole."))
            events = await collect(service.chat(user("a"), "x"))
            assert not any(isinstance(e, ReplyDraft) for e in events)
            assert [e.text for e in events if e.visible] == ["Whole."] and "stream" not in model.requests[0]
        finally:
            await service.close()


def test_only_a_refusal_of_streaming_itself_turns_it_off():
    from membot.agent.llm.client import _STREAM_REFUSED

    for said in ("This server does not support stream=true", "Streaming is not supported for this model",
                 "Unrecognized request argument: stream", "unsupported parameter: stream"):
        assert _STREAM_REFUSED.search(said), said
    for said in ("Invalid 'messages[3]': upstream service failed", "Invalid value for 'tool_choice'",
                 "The stream_options parameter is only allowed when stream is true"):
        assert not _STREAM_REFUSED.search(said), said
