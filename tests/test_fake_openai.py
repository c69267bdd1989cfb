"""Self-test for the scripted OpenAI server, driven through the real openai SDK."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncAzureOpenAI, AsyncOpenAI

from tests.fakes.openai_server import (
    SCRIPTED_REASONING,
    ChatReply,
    Reply,
    ScriptedModel,
    embed_text,
    error,
    estimate_prompt_tokens,
    insufficient_quota,
    model_not_found,
    raw,
    send,
    text,
    tool_call,
)

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a helpful memory agent."},
    {"role": "user", "content": "hi there"},
]
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "send_message",
            "description": "Send a message to the user.",
            "parameters": {
                "type": "object",
                "properties": {"message": {"type": "string"}},
                "required": ["message"],
            },
        },
    }
]


@pytest.fixture
async def model() -> AsyncIterator[ScriptedModel]:
    async with ScriptedModel() as m:
        yield m


def make_client(m: ScriptedModel, max_retries: int = 0) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=m.base_url, api_key="test", max_retries=max_retries)


@pytest.fixture
async def client(model: ScriptedModel) -> AsyncIterator[AsyncOpenAI]:
    c = make_client(model)
    yield c
    await c.close()


async def chat(client: AsyncOpenAI, messages: list[dict[str, Any]] | None = None, **kw: Any) -> Any:
    kw.setdefault("tools", TOOLS)
    return await client.chat.completions.create(model="gpt-test", messages=messages or MESSAGES, **kw)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # inputs are unit vectors


# ---------------------------------------------------------------- chat


async def test_tool_call_round_trip(model: ScriptedModel, client: AsyncOpenAI) -> None:
    model.script(
        tool_call(
            "core_memory_append",
            {"name": "human", "content": "Likes tea ☕"},
            "User told me a preference.",
            extra_calls=[("conversation_search", {"query": "tea"})],
        )
    )
    resp = await chat(client)

    assert resp.object == "chat.completion"
    assert resp.model == "gpt-test"
    choice = resp.choices[0]
    assert choice.index == 0
    assert choice.finish_reason == "tool_calls"
    assert choice.message.role == "assistant"
    assert choice.message.content == "User told me a preference."
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 2
    assert [c.function.name for c in calls] == ["core_memory_append", "conversation_search"]
    assert json.loads(calls[0].function.arguments) == {"name": "human", "content": "Likes tea ☕"}
    assert json.loads(calls[1].function.arguments) == {"query": "tea"}
    assert all(re.fullmatch(r"call_\d+", c.id) for c in calls)
    assert len({c.id for c in calls}) == 2

    assert resp.usage is not None
    assert resp.usage.prompt_tokens == estimate_prompt_tokens(model.requests[0])
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert model.max_prompt_tokens == resp.usage.prompt_tokens
    assert model.pending == 0


async def test_string_arguments_sent_verbatim(model: ScriptedModel, client: AsyncOpenAI) -> None:
    model.script(tool_call("send_message", '{"message": "oops', "broken"))
    resp = await chat(client)
    calls = resp.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].function.arguments == '{"message": "oops'


async def test_send_shorthand(model: ScriptedModel, client: AsyncOpenAI) -> None:
    model.script(send("Hello!", thought="Greet them."), send("Again", heartbeat=True))
    first = (await chat(client)).choices[0].message
    second = (await chat(client)).choices[0].message

    assert first.content == "Greet them."
    assert first.tool_calls is not None
    assert first.tool_calls[0].function.name == "send_message"
    assert json.loads(first.tool_calls[0].function.arguments) == {"message": "Hello!"}
    assert second.tool_calls is not None
    assert json.loads(second.tool_calls[0].function.arguments) == {
        "message": "Again",
        "request_heartbeat": True,
    }
    assert first.tool_calls[0].id != second.tool_calls[0].id


async def test_text_and_empty_replies(model: ScriptedModel, client: AsyncOpenAI) -> None:
    model.script(text("just words"), text(None), text(""))
    results = [(await chat(client)).choices[0] for _ in range(3)]
    assert [c.message.content for c in results] == ["just words", None, ""]
    assert all(c.message.tool_calls is None for c in results)
    assert all(c.finish_reason == "stop" for c in results)


async def test_reused_reply_gets_fresh_call_ids(model: ScriptedModel, client: AsyncOpenAI) -> None:
    reply = send("same object twice")
    model.script(reply, reply)
    ids = []
    for _ in range(2):
        calls = (await chat(client)).choices[0].message.tool_calls
        assert calls is not None
        ids.append(calls[0].id)
    assert ids[0] != ids[1]


async def test_requests_are_recorded(model: ScriptedModel, client: AsyncOpenAI) -> None:
    model.script(send("a"), send("b"))
    await chat(client)
    await chat(client, messages=[*MESSAGES, {"role": "user", "content": "second"}], temperature=0.2)
    assert len(model.requests) == 2
    assert model.requests[0]["messages"] == MESSAGES
    assert model.requests[0]["tools"] == TOOLS
    assert model.requests[1]["messages"][-1]["content"] == "second"
    assert model.requests[1]["temperature"] == 0.2
    assert model.max_prompt_tokens == estimate_prompt_tokens(model.requests[1])


async def test_latency(model: ScriptedModel, client: AsyncOpenAI) -> None:
    model.latency = 0.1
    model.script(send("slow"))
    start = time.monotonic()
    await chat(client)
    assert time.monotonic() - start >= 0.1


# ---------------------------------------------------------------- errors


async def test_rate_limit_error(model: ScriptedModel, client: AsyncOpenAI) -> None:
    model.script(error(429, "Slow down", code="rate_limit_exceeded"))
    with pytest.raises(openai.RateLimitError) as excinfo:
        await chat(client)
    assert excinfo.value.status_code == 429
    assert excinfo.value.code == "rate_limit_exceeded"
    assert "Slow down" in str(excinfo.value)


async def test_sdk_retries_after_server_error(model: ScriptedModel) -> None:
    model.script(error(500, "boom", headers={"retry-after-ms": "10"}), send("recovered"))
    async with make_client(model, max_retries=1) as retrying:
        resp = await chat(retrying)
    calls = resp.choices[0].message.tool_calls
    assert calls is not None
    assert json.loads(calls[0].function.arguments) == {"message": "recovered"}
    assert len(model.requests) == 2
    assert model.pending == 0


async def test_context_window_rejects_without_popping(client: AsyncOpenAI) -> None:
    async with ScriptedModel(context_window=50) as small:
        small.script(send("fits"))
        async with make_client(small) as c:
            long_messages = [*MESSAGES, {"role": "user", "content": "x" * 400}]
            with pytest.raises(openai.BadRequestError) as excinfo:
                await chat(c, messages=long_messages)
            err = excinfo.value
            assert err.code == "context_length_exceeded"
            estimate = estimate_prompt_tokens(small.requests[0])
            assert estimate > 50
            assert isinstance(err.body, dict)
            assert err.body["message"] == (
                f"This model's maximum context length is 50 tokens. However, your messages "
                f"resulted in {estimate} tokens. Please reduce the length of the messages."
            )
            assert err.body["param"] == "messages"
            assert small.pending == 1  # the scripted reply survived
            assert small.max_prompt_tokens == estimate

            # Once the prompt is shrunk (here: window grown) the queued reply is served.
            small.context_window = 10_000
            resp = await chat(c)
            assert resp.choices[0].message.tool_calls is not None
            assert small.pending == 0


async def test_scripted_context_length_error(model: ScriptedModel, client: AsyncOpenAI) -> None:
    model.script(error(400, code="context_length_exceeded"))
    with pytest.raises(openai.BadRequestError) as excinfo:
        await chat(client)
    assert excinfo.value.code == "context_length_exceeded"
    assert "maximum context length is" in str(excinfo.value)


async def test_script_exhausted(model: ScriptedModel) -> None:
    # Even with SDK retries enabled, exhaustion must fail at once (x-should-retry: false).
    async with make_client(model, max_retries=2) as c:
        with pytest.raises(openai.InternalServerError) as excinfo:
            await chat(c)
    assert excinfo.value.status_code == 500
    assert "script exhausted" in str(excinfo.value)
    assert len(model.requests) == 1


async def test_raw_garbage(model: ScriptedModel, client: AsyncOpenAI) -> None:
    model.script(raw("this is {not json", status=200), raw({"error": {"message": "custom"}}, status=503))
    # The SDK does not wrap this: a non-JSON 200 body surfaces as json.JSONDecodeError.
    with pytest.raises(json.JSONDecodeError):
        await chat(client)
    with pytest.raises(openai.InternalServerError) as excinfo:
        await chat(client)
    assert excinfo.value.status_code == 503
    assert "custom" in str(excinfo.value)


# ---------------------------------------------------------------- responders


async def test_responder_sees_request(model: ScriptedModel, client: AsyncOpenAI) -> None:
    seen: list[dict[str, Any]] = []

    def echo(body: dict[str, Any]) -> Reply:
        seen.append(body)
        # Responders may return another responder; it gets resolved too.
        return lambda b: send(f"echo: {b['messages'][-1]['content']}")

    async def async_responder(body: dict[str, Any]) -> Reply:
        return error(418, f"teapot for {body['model']}")

    model.script(echo, async_responder)
    resp = await chat(client)
    calls = resp.choices[0].message.tool_calls
    assert calls is not None
    assert json.loads(calls[0].function.arguments) == {"message": "echo: hi there"}
    assert seen == [model.requests[0]]

    with pytest.raises(openai.APIStatusError) as excinfo:
        await chat(client)
    assert excinfo.value.status_code == 418
    assert "teapot for gpt-test" in str(excinfo.value)


async def test_default_responder() -> None:
    async with ScriptedModel(default=lambda body: text(f"{len(body['messages'])} messages")) as m:
        m.script(text("scripted first"))
        async with make_client(m) as c:
            contents = [(await chat(c)).choices[0].message.content for _ in range(3)]
    assert contents == ["scripted first", "2 messages", "2 messages"]


async def test_responder_exception_is_loud(model: ScriptedModel, client: AsyncOpenAI) -> None:
    def broken(body: dict[str, Any]) -> Reply:
        raise ValueError("responder bug")

    model.script(broken)
    with pytest.raises(openai.InternalServerError) as excinfo:
        await chat(client)
    assert "responder bug" in str(excinfo.value)


def test_script_rejects_non_replies() -> None:
    m = ScriptedModel()
    with pytest.raises(TypeError):
        m.script("not a reply")  # type: ignore[arg-type]
    assert m.pending == 0
    m.script(send("x"), text("y"))
    assert m.pending == 2
    assert isinstance(send("z"), ChatReply)


# ---------------------------------------------------------------- embeddings


async def test_embeddings_list_input_and_dimensions(model: ScriptedModel, client: AsyncOpenAI) -> None:
    inputs = [
        "The user loves hiking in the mountains",
        "User loved hikes in mountains every weekend",
        "Quarterly tax filing deadline for corporations",
    ]
    resp = await client.embeddings.create(model="text-embedding-3-small", input=inputs, dimensions=256)
    assert [d.index for d in resp.data] == [0, 1, 2]
    vecs = [d.embedding for d in resp.data]
    assert all(len(v) == 256 for v in vecs)
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-5) for v in vecs)
    assert cosine(vecs[0], vecs[1]) > 0.5
    assert cosine(vecs[0], vecs[1]) > cosine(vecs[0], vecs[2]) + 0.3
    assert resp.model == "text-embedding-3-small"
    assert resp.usage.prompt_tokens > 0

    # The SDK requested base64 by default; decoded values match the module function.
    expected = embed_text(inputs[0], 256)
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(vecs[0], expected, strict=True))
    assert model.embedding_requests[0]["input"] == inputs
    assert model.embedding_requests[0]["dimensions"] == 256


async def test_embeddings_single_string_float_format(model: ScriptedModel, client: AsyncOpenAI) -> None:
    resp = await client.embeddings.create(model="emb", input="hello world", encoding_format="float")
    assert len(resp.data) == 1
    assert resp.data[0].embedding == embed_text("hello world", 1536)
    assert len(model.embedding_requests) == 1


async def test_embedding_failures(model: ScriptedModel, client: AsyncOpenAI) -> None:
    model.embedding_failures = 1
    with pytest.raises(openai.InternalServerError):
        await client.embeddings.create(model="emb", input=["a"], dimensions=8)
    assert model.embedding_failures == 0
    ok = await client.embeddings.create(model="emb", input=["a"], dimensions=8)
    assert len(ok.data[0].embedding) == 8

    # With SDK retries the transient failure is invisible (and fast thanks to retry-after-ms).
    model.embedding_failures = 1
    async with make_client(model, max_retries=1) as retrying:
        again = await retrying.embeddings.create(model="emb", input=["a"], dimensions=8)
    assert again.data[0].embedding == ok.data[0].embedding
    assert len(model.embedding_requests) == 4


def test_embed_text_properties() -> None:
    a = embed_text("Memories of the ocean", 64)
    assert a == embed_text("memory OCEAN!", 64)  # stop words, case, punctuation, plural
    assert len(a) == 64
    empty = embed_text("the and of", 64)  # only stop words -> fixed unit vector
    assert empty == embed_text("", 64)
    assert math.isclose(sum(x * x for x in empty), 1.0)


# ---------------------------------------------------------------- real servers' errors


async def test_errors_as_openai_sends_them(model: ScriptedModel, client: AsyncOpenAI) -> None:
    model.script(insufficient_quota(), model_not_found())
    with pytest.raises(openai.RateLimitError) as quota:
        await chat(client)
    assert quota.value.code == "insufficient_quota" and "billing" in quota.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        await chat(client)
    assert missing.value.code == "model_not_found"
    assert "The model `gpt-test` does not exist" in missing.value.message


# ---------------------------------------------------------------- habits

THOUGHTS = "inner_thoughts"
# As the registry offers functions when the model thinks in the arguments: the thought parameter first.
THINKING_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {
                "type": "object",
                "properties": {THOUGHTS: {"type": "string"}, **properties},
                "required": [THOUGHTS, *properties],
            },
        },
    }
    for name, properties in (
        ("send_message", {"message": {"type": "string"}}),
        ("core_memory_append", {"name": {"type": "string"}, "content": {"type": "string"}}),
    )
]


def arguments(message: Any) -> list[dict[str, Any]]:
    return [json.loads(call.function.arguments) for call in message.tool_calls or []]


async def test_no_text_puts_the_monologue_in_the_thought_parameter(model: ScriptedModel, client: AsyncOpenAI) -> None:
    model.habits = "no_text"
    model.script(send("Hi!", thought="Greet them."), send("Hi again!", thought="Again."),
                 tool_call("send_message", {THOUGHTS: "Mine.", "message": "Hey"}, "Scripted content."),
                 text("Just text."))
    first = (await chat(client, tools=THINKING_TOOLS)).choices[0].message
    assert first.content is None and arguments(first) == [{THOUGHTS: "Greet them.", "message": "Hi!"}]
    assert next(iter(arguments(first)[0])) == THOUGHTS  # where the model writes it: first
    plain = (await chat(client)).choices[0].message  # a schema without one: the monologue is lost, as with OpenAI
    assert plain.content is None and arguments(plain) == [{"message": "Hi again!"}]
    own = (await chat(client, tools=THINKING_TOOLS)).choices[0].message
    assert own.content is None and arguments(own) == [{THOUGHTS: "Mine.", "message": "Hey"}]
    assert (await chat(client, tools=THINKING_TOOLS)).choices[0].message.content == "Just text."


async def test_parallel_sends_a_chain_as_one_reply(model: ScriptedModel, client: AsyncOpenAI) -> None:
    model.habits = "parallel"
    model.script(
        tool_call("core_memory_append", {"name": "human", "content": "Has a cat.", "request_heartbeat": True},
                  "Worth keeping."),
        send("What a lovely cat!", thought="Now answer."),
        send("Next turn."),
    )
    resp = await chat(client, tools=THINKING_TOOLS)
    message = resp.choices[0].message
    assert message.content is None and resp.choices[0].finish_reason == "tool_calls"
    assert arguments(message) == [
        {THOUGHTS: "Worth keeping.", "name": "human", "content": "Has a cat."},  # no heartbeat: all said at once
        {THOUGHTS: "Now answer.", "message": "What a lovely cat!"},
    ]
    assert len({call.id for call in message.tool_calls or []}) == 2 and model.pending == 1
    # Several calls scripted in one reply are served with content null as they are.
    model.script(ChatReply(None, tool_call("conversation_search", {"query": "cat"},
                                           extra_calls=[("send_message", {"message": "Found it."})]).tool_calls))
    await chat(client, tools=THINKING_TOOLS)
    last = (await chat(client, tools=THINKING_TOOLS)).choices[0].message
    assert last.content is None and [c.function.name for c in last.tool_calls or []] == [
        "conversation_search", "send_message"]


async def test_text_only_answers_in_text_until_a_call_is_required(model: ScriptedModel, client: AsyncOpenAI) -> None:
    model.habits = "text_only"
    model.script(send("Hello there!", thought="Greet."), text("Just words."))
    spoken = (await chat(client, tools=THINKING_TOOLS, tool_choice="auto")).choices[0].message
    assert spoken.content == "Hello there!" and spoken.tool_calls is None and model.pending == 2
    again = (await chat(client, tools=THINKING_TOOLS)).choices[0].message
    assert again.content == "Hello there!" and model.pending == 2  # as stubborn the second time
    forced = (await chat(client, tools=THINKING_TOOLS, tool_choice="required")).choices[0].message
    assert arguments(forced) == [{"message": "Hello there!"}] and forced.content == "Greet." and model.pending == 1
    # Scripted text, forced: its text goes by send_message.
    words = (await chat(client, tools=THINKING_TOOLS, tool_choice="required")).choices[0].message
    assert arguments(words) == [{"message": "Just words."}] and model.pending == 0


async def test_no_tools_refuses_tools_as_ollama_and_answers_without(model: ScriptedModel, client: AsyncOpenAI) -> None:
    model.habits = "no_tools"
    model.script(send("Hello!", thought="Greet them."), text('{"function": "send_message"}'))
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model="llama2", messages=MESSAGES, tools=THINKING_TOOLS)
    assert refused.value.body == {"message": "registry.ollama.ai/library/llama2:latest does not support tools",
                                  "type": "api_error", "param": None, "code": None}
    assert model.pending == 2
    # Without tools the scripted call comes as one JSON object in the text, the monologue where the refused
    # request offered a place for it.
    answer = (await client.chat.completions.create(model="llama2:7b", messages=MESSAGES)).choices[0].message
    assert answer.tool_calls is None and json.loads(answer.content or "") == {
        "function": "send_message", "arguments": {THOUGHTS: "Greet them.", "message": "Hello!"}}
    assert (await client.chat.completions.create(model="m", messages=MESSAGES)).choices[0].message.content == (
        '{"function": "send_message"}')


async def test_reasoning_habits(model: ScriptedModel, client: AsyncOpenAI) -> None:
    model.habits = "think"
    model.script(send("Hi!", thought="Greet."), text(None))
    thinking = (await chat(client)).choices[0].message
    assert thinking.content == f"<think>\n{SCRIPTED_REASONING}\n</think>\n\nGreet." and thinking.tool_calls
    assert (await chat(client)).choices[0].message.content == f"<think>\n{SCRIPTED_REASONING}\n</think>\n\n"
    for field in ("reasoning_content", "reasoning"):
        model.habits = {field, "no_text"}
        model.script(send("Hi!", thought="Greet."))
        message = (await chat(client)).choices[0].message
        assert (message.model_extra or {})[field] == SCRIPTED_REASONING and message.content is None
    with pytest.raises(ValueError, match="unknown habits"):
        model.habits = {"telepathy"}  # type: ignore[arg-type]


# ---------------------------------------------------------------- Azure OpenAI


async def test_azure_paths_and_api_key(model: ScriptedModel) -> None:
    model.script(send("From Azure."))
    async with AsyncAzureOpenAI(azure_endpoint=model.azure_endpoint, api_key="azure-key", api_version="2024-10-21",
                                max_retries=0) as azure:
        resp = await azure.chat.completions.create(model="my-deployment", messages=MESSAGES, tools=TOOLS)
        vectors = await azure.embeddings.create(model="my-embeddings", input=["tea"], dimensions=8)
    assert arguments(resp.choices[0].message) == [{"message": "From Azure."}] and len(vectors.data[0].embedding) == 8
    assert model.request_paths == ["/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21",
                                   "/openai/deployments/my-embeddings/embeddings?api-version=2024-10-21"]
    assert all(h["api-key"] == "azure-key" for h in model.request_headers)
    async with aiohttp.ClientSession() as session:
        url = f"{model.azure_endpoint}/openai/deployments/d/chat/completions"
        async with session.post(f"{url}?api-version=2024-10-21", json={"messages": MESSAGES}) as keyless:
            assert keyless.status == 401 and "Access denied" in (await keyless.json())["error"]["message"]
        async with session.post(url, json={"messages": MESSAGES}, headers={"api-key": "k"}) as versionless:
            assert versionless.status == 404
    model.azure_api_key = "the-only-key"
    async with AsyncAzureOpenAI(azure_endpoint=model.azure_endpoint, api_key="another", api_version="2024-10-21",
                                max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.chat.completions.create(model="d", messages=MESSAGES)
    assert model.pending == 0


# ---------------------------------------------------------------- misc


async def test_models_endpoint(model: ScriptedModel, client: AsyncOpenAI) -> None:
    page = await client.models.list()
    assert any(m.id for m in page.data)


def test_estimate_prompt_tokens_is_deterministic() -> None:
    body = {"messages": MESSAGES, "tools": TOOLS}
    assert estimate_prompt_tokens(body) == estimate_prompt_tokens(json.loads(json.dumps(body)))
    assert estimate_prompt_tokens({"messages": MESSAGES}) < estimate_prompt_tokens(body)
