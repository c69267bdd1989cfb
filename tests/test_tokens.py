"""Token counting: tool schemas are counted as the model reads them, and the fixed prompt stays in budget."""

from __future__ import annotations

import json

from membot.agent.context.tokens import TokenCounter, render_tools
from membot.agent.memory.entities import PROMPT_TOKENS
from membot.agent.tools.base import BASE_FUNCTIONS
from membot.agent.tools.registry import ToolRegistry
from tests.conftest import collect
from tests.fakes.openai_server import send

SCHEMAS = ToolRegistry(BASE_FUNCTIONS, thoughts=None).schemas()


def test_render_tools_shows_every_function_argument_and_choice() -> None:
    text = render_tools(SCHEMAS)
    assert text.startswith("# Tools") and text.endswith("} // namespace functions")
    assert "type send_message = (_: {\n// The message text.\nmessage: string,\n}) => any;" in text
    thinking = render_tools(ToolRegistry(BASE_FUNCTIONS).schemas())
    # The monologue and the heartbeat carry no description: the system prompt explains them once.
    assert "type send_message = (_: {\ninner_thoughts: string,\n// The message text." in thinking
    assert "request_heartbeat?: boolean,\n}) => any;" in text
    assert 'name: "persona" | "human" | "private",' in text  # an enum becomes its choices
    assert "request_heartbeat?: boolean," in text  # optional arguments are marked, required ones are not
    assert "minutes: number," in text
    for schema in SCHEMAS:
        assert f"type {schema['function']['name']} = " in text


def test_rendered_tools_are_counted_smaller_than_their_json() -> None:
    counter = TokenCounter()
    as_json = counter.text(json.dumps(SCHEMAS, separators=(",", ":")))
    assert counter.tools(SCHEMAS) < as_json * 0.75
    assert counter.tools([]) == 0


def test_a_function_without_arguments_renders() -> None:
    schema = {"type": "function", "function": {"name": "ping", "description": "Ping.", "parameters": {}}}
    assert "// Ping.\ntype ping = () => any;" in render_tools([schema])


async def test_the_fixed_prompt_of_a_new_conversation_stays_within_1800_tokens(service, model, user):
    # System prompt + default core memory + tool schemas (the monologue parameter included), as sent: the part
    # every call pays for.
    model.script(send("Hello!"))
    await collect(service.chat(user("newcomer"), "Hi"))
    request = model.requests[0]
    counter = TokenCounter.for_model(service.settings.model)
    system = [m for m in request["messages"] if m["role"] == "system"]
    # A new user has no entities yet; the list an older one has is capped so that it fits beside the rest.
    assert "### Entities" not in system[0]["content"]
    assert counter.messages(system) + counter.tools(request["tools"]) + PROMPT_TOKENS <= 1800
