"""Model trouble, said plainly: each failure of the model endpoint becomes an error whose message names the cause
and, when waiting cannot fix it, the setting to change; never a key. And what a reply is read as: a reasoning
model's reasoning kept apart from its text, garbage read as nothing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from membot.agent.config import EngineConfig
from membot.agent.llm.client import (
    ContextOverflow,
    ModelClient,
    ModelRefused,
    ModelUnavailable,
    ToolsUnsupported,
)
from membot.agent.llm.endpoint import open_endpoints
from membot.agent.llm.reply import split_reasoning
from tests.fakes.openai_server import (
    SCRIPTED_REASONING,
    RawReply,
    ScriptedModel,
    error,
    insufficient_quota,
    invalid_api_key,
    model_not_found,
    ollama_no_tools,
    raw,
    reasoned,
    send,
    text,
    vllm_no_auto_tools,
)

HELLO: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {"name": "send_message", "parameters": {
    "type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}}}]
KEY = "sk-test-secret-0123456789"


def open_client(model: ScriptedModel, name: str = "gpt-4o-mini", *, retries: int = 0, **values: Any) -> ModelClient:
    values.setdefault("base_url", model.base_url)
    values.setdefault("api_key", KEY)
    config = EngineConfig(database_url="sqlite+aiosqlite://", milvus_uri="unused", home=Path("unused"),
                          model_max_retries=retries, model_timeout=values.pop("timeout", 5.0), **values)
    chat, _ = open_endpoints(config)
    return ModelClient(chat, name)


@pytest.fixture
async def client(model: ScriptedModel) -> AsyncIterator[ModelClient]:
    opened = open_client(model)
    yield opened
    await opened.endpoint.close()


async def refusal(client: ModelClient, *, tools: bool = False, retried: bool = False) -> ModelRefused:
    with pytest.raises(ModelRefused) as raised:
        await client.chat(HELLO, TOOLS if tools else None)
    assert raised.value.permanent
    said = str(raised.value)
    assert KEY not in said and "try again" not in said.lower()
    return raised.value


async def test_a_wrong_or_missing_key_names_the_variable_to_set(model, client, caplog):
    caplog.set_level(logging.DEBUG)
    model.script(invalid_api_key())
    said = str(await refusal(client))
    assert "refused the API key (HTTP 401): check OPENAI_API_KEY" in said and model.base_url in said
    assert "sk-test-****" not in said  # the server's message quotes part of the key: not passed on
    async with ScriptedModel() as keyless:
        no_key = open_client(keyless, api_key=None)
        keyless.script(error(401, "Unauthorized"))
        assert "needs an API key (HTTP 401): set OPENAI_API_KEY" in str(await refusal(no_key))
        await no_key.endpoint.close()
    assert all(KEY not in record.getMessage() for record in caplog.records)


async def test_an_unknown_model_names_it_and_MEMBOT_MODEL(model, client):
    model.script(model_not_found(), error(404, "model \"llama9\" not found, try pulling it first"),
                 raw("404 page not found", status=404))
    said = str(await refusal(client))
    assert "has no model named 'gpt-4o-mini' (HTTP 404): set MEMBOT_MODEL" in said
    assert "MEMBOT_MODEL" in str(await refusal(client))  # Ollama's words
    # A 404 that is not about the model: most often a base URL without its /v1.
    said = str(await refusal(client))
    assert "OPENAI_BASE_URL (it usually ends in /v1)" in said and "MEMBOT_MODEL (gpt-4o-mini)" in said


async def test_no_quota_left_is_billing_not_a_moment_to_wait(model, client):
    model.script(insufficient_quota())
    said = str(await refusal(client))
    assert "no quota left (insufficient_quota)" in said and "billing" in said and "OPENAI_API_KEY" in said
    # Plain rate limiting is temporary.
    model.script(error(429, "Rate limit reached for requests", code="rate_limit_exceeded"))
    with pytest.raises(ModelUnavailable, match="rate-limited") as limited:
        await client.chat(HELLO)
    assert not limited.value.permanent


async def test_access_denied_and_other_refusals_quote_the_server_and_name_the_settings(model, client):
    model.script(error(403, "Project `proj_1` does not have access to model `gpt-4o-mini`"),
                 error(400, "Invalid value for 'temperature': must be at most 2."))
    said = str(await refusal(client))
    assert "denied access (HTTP 403): Project `proj_1` does not have access" in said and "OPENAI_API_KEY" in said
    said = str(await refusal(client))
    assert "(HTTP 400): Invalid value for 'temperature'" in said and "MEMBOT_MODEL" in said


@pytest.mark.parametrize("refused", [ollama_no_tools, vllm_no_auto_tools(),
                                     error(400, "tools is not supported for this model"),
                                     error(400, "Invalid value for 'tool_choice': 'required' is not supported")])
async def test_a_server_refusing_tools_is_said_once_with_what_to_do(model, refused):
    client = open_client(model, "llama2", retries=2)
    model.script(refused)
    with pytest.raises(ToolsUnsupported) as raised:
        await client.chat(HELLO, TOOLS)
    said = str(raised.value)
    assert raised.value.permanent and len(model.requests) == 1  # never retried
    assert said.startswith(f"The model llama2 at {model.base_url} does not take functions (tools)")
    fix = "Start the server with --enable-auto-tool-choice" if isinstance(refused, RawReply) else "Use a model with tool"
    assert fix in said and "MEMBOT_TOOL_MODE=json" in said and "try again" not in said
    await client.endpoint.close()


async def test_a_400_about_tools_without_tools_asked_is_no_tool_refusal(model, client):
    model.script(error(400, "messages with role 'tool' must answer tools the assistant called"),
                 error(400, "Invalid 'tools[0].function.name': string does not match pattern."))
    with pytest.raises(ModelRefused) as raised:
        await client.chat(HELLO)
    assert not isinstance(raised.value, ToolsUnsupported)
    with pytest.raises(ModelRefused) as raised:  # one schema found wrong: our bug, not the model's limits
        await client.chat(HELLO, TOOLS)
    assert not isinstance(raised.value, ToolsUnsupported)


async def test_json_mode_drops_response_format_once_the_server_refuses_it(model, client):
    model.script(error(400, "response_format json_object is not supported by this model"), text('{"function": "x"}'),
                 text('{"function": "y"}'))
    first = await client.chat(HELLO, json_object=True)
    second = await client.chat(HELLO, TOOLS, json_object=True)
    assert (first.content, second.content) == ('{"function": "x"}', '{"function": "y"}')
    assert "response_format" in model.requests[0]
    assert all("response_format" not in r and "tools" not in r for r in model.requests[1:])


async def test_a_slow_model_is_a_timeout_retried_then_temporary(home):
    async with ScriptedModel(latency=0.5) as slow:
        client = open_client(slow, retries=1, timeout=0.2)
        slow.script(send("late"), send("late again"))
        with pytest.raises(ModelUnavailable) as raised:
            await client.chat(HELLO)
        await client.endpoint.close()
    said = str(raised.value)
    assert not raised.value.permanent and len(slow.requests) == 2
    assert said == f"The model endpoint at {slow.base_url} did not answer in time (within 0.2 s, MEMBOT_MODEL_TIMEOUT)."


async def test_server_errors_are_retried_by_the_sdk_then_temporary(model):
    client = open_client(model, retries=2)
    model.script(*[error(503, "overloaded", headers={"retry-after-ms": "1"}) for _ in range(3)])
    with pytest.raises(ModelUnavailable) as raised:
        await client.chat(HELLO)
    assert not raised.value.permanent and len(model.requests) == 3
    assert str(raised.value) == f"The model endpoint at {model.base_url} failed (HTTP 503)."
    await client.endpoint.close()


async def test_every_servers_way_of_saying_the_prompt_is_too_long_is_understood(model, client):
    vllm = {"object": "error", "message": "This model's maximum context length is 8192 tokens.", "code": 400}
    model.script(raw(vllm, status=400), raw({"error": "context_length_exceeded"}, status=400),
                 raw("prompt exceeds the context length", status=400), error(400, code="context_length_exceeded"))
    for _ in range(4):
        with pytest.raises(ContextOverflow):
            await client.chat(HELLO, TOOLS)


async def test_garbage_reads_as_no_answer_not_an_outage(model, client):
    model.script(raw("<html>oops</html>"), raw({"choices": "none"}), raw([1, 2]),
                 raw({"choices": [{"message": {"content": 7, "tool_calls": [{"function": "x"}, {"id": 3}]}}]}),
                 send("fine"))
    for _ in range(4):
        garbage = await client.chat(HELLO)
        assert (garbage.content, garbage.tool_calls, garbage.reasoning) == (None, [], None)
    fine = await client.chat(HELLO)
    assert fine.tool_calls[0].name == "send_message" and fine.prompt_tokens


@pytest.mark.parametrize("how", ["think", "reasoning_content", "reasoning"])
async def test_a_reasoning_models_reasoning_is_kept_apart_from_its_text(model, client, how):
    model.script(reasoned(send("Hi!", thought="Greet them."), how), reasoned(text("Plain answer."), how),
                 reasoned(text(None), how))
    called = await client.chat(HELLO, TOOLS)
    assert called.content == "Greet them." and called.reasoning == SCRIPTED_REASONING
    assert called.tool_calls[0].name == "send_message"
    plain = await client.chat(HELLO, TOOLS)
    assert plain.content == "Plain answer." and plain.reasoning == SCRIPTED_REASONING
    only = await client.chat(HELLO, TOOLS)
    assert only.content is None and only.reasoning == SCRIPTED_REASONING


async def test_the_server_habits_of_reasoning_models(model, client):
    model.habits = {"think", "reasoning_content"}
    model.script(send("Hello.", thought="Say hello."))
    result = await client.chat(HELLO, TOOLS)
    # The same reasoning in the text and in the field is said once.
    assert result.content == "Say hello." and result.reasoning == SCRIPTED_REASONING
    model.habits = {"reasoning"}
    model.script(reasoned(text("Answer."), "reasoning_content", "first trace"))
    result = await client.chat(HELLO, TOOLS)
    assert result.content == "Answer." and result.reasoning == f"first trace\n\n{SCRIPTED_REASONING}"


def test_think_blocks_are_taken_out_of_the_text_however_they_come():
    assert split_reasoning("no tags at all ") == ("no tags at all ", [])
    assert split_reasoning(" \n ") == (None, [])
    assert split_reasoning("<think>\nweigh it\n</think>\n\nThe answer.") == ("The answer.", ["weigh it"])
    assert split_reasoning("<think>a</think>x<think>b</think>") == ("x", ["a", "b"])
    # Cut off while reasoning: all of it is reasoning.
    assert split_reasoning("<think>still weighing whether") == (None, ["still weighing whether"])
    # The opening tag was in the prompt (DeepSeek-R1's template): what precedes the closing tag is reasoning.
    assert split_reasoning("weighing</think>\n\nThe answer.") == ("The answer.", ["weighing"])
    assert split_reasoning("<think>only this</think>  \n") == (None, ["only this"])
