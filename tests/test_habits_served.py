"""The scripted server's habits (tests/fakes/model_habits.py) through the real bot: the same script, played as
each kind of model, gets the user the reply and the monologue channel the thoughts; nothing of a reasoning
model's reasoning reaches a user; the model calls per message stay within bounds."""

from __future__ import annotations

from typing import Any

import pytest

from membot.agent.events import AssistantMessage, ErrorMessage, Thought
from tests.cli_helpers import membot
from tests.conftest import collect
from tests.fakes.openai_server import SCRIPTED_REASONING, send, tool_call

CHAIN = (
    tool_call("core_memory_append", {"name": "human", "content": "Has a cat called Miso.", "request_heartbeat": True},
              "Worth keeping: the cat's name."),
    send("Miso is a lovely name!", thought="Now answer warmly."),
)


def _seen(events: list[Any]) -> tuple[list[str], list[str]]:
    shown = [e.text for e in events if isinstance(e, AssistantMessage | ErrorMessage)]
    thoughts = [e.text for e in events if isinstance(e, Thought)]
    return shown, thoughts


@pytest.mark.parametrize(
    ("habits", "calls"),
    [
        (set(), 2),
        ({"no_text"}, 2),
        ({"parallel"}, 1),
        ({"think"}, 2),
        ({"reasoning_content", "no_text"}, 2),
        ({"reasoning", "parallel"}, 1),
    ],
)
async def test_one_script_played_by_each_kind_of_model(service, model, user, habits, calls):
    model.habits = habits
    model.script(*CHAIN)
    events = await collect(service.chat(user("ann"), "my cat is called Miso"))
    shown, thoughts = _seen(events)
    assert shown == ["Miso is a lovely name!"] and len(model.requests) == calls
    assert "Worth keeping: the cat's name." in thoughts and "Now answer warmly." in thoughts
    assert "Miso" in (await service.memory(user("ann"))).blocks["private"][0]
    reasoning = bool(habits & {"think", "reasoning_content", "reasoning"})
    assert (SCRIPTED_REASONING in thoughts) == reasoning
    assert all(SCRIPTED_REASONING not in text for text in shown)
    # Never sent back to the model either.
    model.script(send("ok"))
    await collect(service.chat(user("ann"), "thanks"))
    assert SCRIPTED_REASONING not in str(model.requests[-1]["messages"])


async def test_a_text_only_model_is_made_to_call(service, model, user):
    model.habits = "text_only"
    model.script(send("Hello, Bea!", thought="Greet her."))
    shown, _ = _seen(await collect(service.chat(user("bea"), "hello")))
    assert shown == ["Hello, Bea!"]
    assert [r["tool_choice"] for r in model.requests] == ["auto", "required"]


async def test_a_model_without_tools_is_answered_in_json(service, model, user):
    model.habits = "no_tools"
    model.script(*CHAIN)
    events = await collect(service.chat(user("cy"), "my cat is called Miso"))
    shown, thoughts = _seen(events)
    assert shown == ["Miso is a lovely name!"]
    assert "Worth keeping: the cat's name." in thoughts and "Now answer warmly." in thoughts
    assert len(model.requests) == 3 and "tools" in model.requests[0]  # refused once, then JSON
    assert all("tools" not in r for r in model.requests[1:])


@pytest.mark.parametrize("habits", [{"parallel", "think"}, {"no_tools", "reasoning_content"}, {"text_only"}])
async def test_membot_chat_with_each_kind_of_model(model, home, habits):
    model.habits = habits
    model.script(send("Hello, I'm Sam.", thought="Greet them."), *CHAIN)  # a session opens with a greeting
    code, out, err = await membot(model, home, "chat", "--user", "dee", stdin="my cat is called Miso\n")
    assert code == 0, err
    assert out.splitlines() == ["Hello, I'm Sam.", "Miso is a lovely name!"]
    assert SCRIPTED_REASONING not in out and "Worth keeping" not in out
    if "text_only" not in habits:  # a text-only model's monologue is its text; its first call is forced
        assert "Worth keeping: the cat's name." in err
    assert (SCRIPTED_REASONING in err) == bool(habits & {"think", "reasoning_content"})
