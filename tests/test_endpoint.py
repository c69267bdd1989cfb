"""The model endpoint over real HTTP to the scripted server, through the openai SDK's client: its retry policy
(which servers and proxies expect), the start-up checks of the settings, Azure OpenAI's paths and key, and
what chat and embeddings send."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from membot.agent.config import EngineConfig, EngineConfigError
from membot.agent.llm.client import ModelClient, ModelRefused, ModelUnavailable
from membot.agent.llm.embeddings import Embedder, _vectors
from membot.agent.llm.endpoint import Endpoint, open_endpoints
from membot.bot.identity import UserRef
from membot.bot.service import BotService
from tests.cli_helpers import membot
from tests.conftest import collect, make_settings
from tests.fakes.openai_server import ScriptedModel, error, send, text, tool_call

HELLO: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
KEY = "sk-test-secret-0123456789"


def config(**values: Any) -> EngineConfig:
    values.setdefault("api_key", KEY)
    values.setdefault("model_timeout", 5.0)
    return EngineConfig(database_url="sqlite+aiosqlite://", milvus_uri="unused", home=Path("unused"), **values)


@pytest.fixture
async def endpoint(model: ScriptedModel) -> AsyncIterator[Endpoint]:
    chat, _ = open_endpoints(config(base_url=model.base_url, model_max_retries=2))
    yield chat
    await chat.close()


async def test_a_server_error_is_retried_after_the_wait_it_asks_for(model, endpoint):
    model.script(error(500, "boom", headers={"retry-after-ms": "10"}), error(503, "busy", headers={"retry-after-ms": "5"}),
                 text("third time"))
    answer = await ModelClient(endpoint, "m").chat(HELLO)
    assert answer.content == "third time" and len(model.requests) == 3


async def test_retries_end_and_the_failure_is_temporary(model, endpoint):
    client = ModelClient(endpoint, "m")
    model.script(*[error(429, "slow down", headers={"retry-after-ms": "1"}) for _ in range(3)],
                 *[error(502, "bad gateway", headers={"retry-after-ms": "1"}) for _ in range(3)], text("still here"))
    with pytest.raises(ModelUnavailable, match="rate-limited") as limited:
        await client.chat(HELLO)
    assert not limited.value.permanent and len(model.requests) == 3  # one try and max_retries=2 retries
    with pytest.raises(ModelUnavailable, match=r"failed \(HTTP 502\)") as failed:
        await client.chat(HELLO)
    assert not failed.value.permanent and len(model.requests) == 6
    assert (await client.chat(HELLO)).content == "still here"


async def test_what_the_server_says_not_to_retry_is_not_retried(model, endpoint):
    client = ModelClient(endpoint, "m")
    model.script(error(500, "hopeless", headers={"x-should-retry": "false"}), error(400, "bad request"))
    with pytest.raises(ModelUnavailable):
        await client.chat(HELLO)
    with pytest.raises(ModelRefused):  # 4xx other than 408/409/429 is final
        await client.chat(HELLO)
    assert len(model.requests) == 2
    model.script(error(429, "come back in an hour", headers={"retry-after": "3600"}), text("x"))
    with pytest.raises(ModelUnavailable):  # asked to wait longer than two minutes: not retried at all
        await client.chat(HELLO)
    assert len(model.requests) == 3


async def test_an_endpoint_that_is_not_there_is_named_after_retries(unused_tcp_port: int):
    url = f"http://127.0.0.1:{unused_tcp_port}/v1"
    gone, _ = open_endpoints(config(base_url=url, model_max_retries=1))
    started = time.perf_counter()
    with pytest.raises(ModelUnavailable) as raised:
        await ModelClient(gone, "m").chat(HELLO)
    assert time.perf_counter() - started >= 0.35  # it waited one backoff (0.375-0.5 s) before the retry
    said = str(raised.value)
    assert url in said and "OPENAI_BASE_URL" in said and "cannot be reached" in said and KEY not in said
    assert not raised.value.permanent
    await gone.close()


async def test_embeddings_in_input_order_and_their_failures(model, endpoint):
    embedder = Embedder(endpoint, "text-embedding-3-small", dim=8)
    vectors = await embedder.embed(["tea", "", "coffee"])
    assert len(vectors) == 3 and all(len(v) == 8 for v in vectors)
    assert vectors[0] == await embedder.embed_one("tea") and vectors[0] != vectors[2]
    assert model.embedding_requests[0]["dimensions"] == 8 and model.embedding_requests[0]["input"][1] == " "
    assert model.embedding_requests[0]["encoding_format"] == "base64"
    # A model without `dimensions` answers at its own size: told apart from the setting, not stored.
    other = Embedder(endpoint, "nomic-embed-text", dim=8)
    with pytest.raises(ModelRefused, match="MEMBOT_EMBEDDING_DIM is 8"):
        await other.embed(["tea"])
    assert "dimensions" not in model.embedding_requests[-1]
    # The SDK's retries cover embeddings too; what is left is said as for chat, naming the embedding settings.
    model.embedding_failures = 3
    with pytest.raises(ModelUnavailable, match=r"embedding endpoint at .* failed \(HTTP 500\)"):
        await embedder.embed(["tea"])


def test_embeddings_read_in_either_encoding_and_refuse_garbage():
    one = base64.b64encode(struct.pack("<f", 1.0)).decode()
    # A server that ignores encoding_format sends numbers; items may come in any order.
    assert _vectors({"data": [{"index": 1, "embedding": [0.5]}, {"index": 0, "embedding": one}]}) == [[1.0], [0.5]]
    nan = base64.b64encode(struct.pack("<2f", 0.5, float("nan"))).decode()
    for garbage in ({"data": [{"embedding": "not base64!"}]}, {"data": [{"embedding": []}]}, {"data": "x"}, [1],
                    {"data": [{"embedding": [0.5, "0.1", 0.2]}]}, {"data": [{"embedding": [0.5, None]}]},
                    {"data": [{"embedding": nan}]}, {"data": [{"embedding": [0.5, 1e308, 1e308]}]},
                    {"data": [{"embedding": [float("inf"), float("-inf")]}]}, {"data": [{"embedding": [0.5, 1e39]}]},
                    None):
        assert _vectors(garbage) is None, garbage


def test_settings_that_can_never_work_are_refused_at_start_in_one_line():
    for url in ("localhost:11434/v1", "ftp://models.example/v1", "http:///v1", "http://localhost:99999/v1",
                "http://localhost:port/v1", "http://localhost:0/v1"):
        with pytest.raises(EngineConfigError, match="OPENAI_BASE_URL .* not a usable http"):
            open_endpoints(config(base_url=url))
    with pytest.raises(EngineConfigError, match="MEMBOT_EMBEDDING_BASE_URL"):
        open_endpoints(config(base_url="http://localhost:11434/v1", embedding_base_url="localhost:8080"))
    with pytest.raises(EngineConfigError, match="AZURE_OPENAI_ENDPOINT"):
        open_endpoints(config(azure_endpoint="myresource.openai.azure.com", azure_api_key="k"))
    # A URL with a password in it is refused without showing it.
    with pytest.raises(EngineConfigError) as refused:
        open_endpoints(config(base_url="ftp://user:hunter2@models.example/v1"))
    assert "hunter2" not in str(refused.value)
    # A key pasted with its line break would make every request fail; the message never shows the key.
    with pytest.raises(EngineConfigError, match="OPENAI_API_KEY holds a control character") as refused:
        open_endpoints(config(base_url="http://localhost:11434/v1", api_key="sk-secret\n"))
    assert "sk-secret" not in str(refused.value)
    with pytest.raises(EngineConfigError, match="OPENAI_PROJECT_ID holds a control character"):
        open_endpoints(config(base_url="http://localhost:11434/v1", project="p\r1"))
    # No key and no base URL: OpenAI itself, which needs one.
    with pytest.raises(EngineConfigError, match="OPENAI_API_KEY is not set") as refused:
        open_endpoints(config(api_key=None))
    assert "\n" not in str(refused.value) and "OPENAI_BASE_URL" in str(refused.value)
    # Azure: its own key, and one endpoint or the other.
    with pytest.raises(EngineConfigError, match="AZURE_OPENAI_API_KEY is not"):
        open_endpoints(config(azure_endpoint="https://r.openai.azure.com"))
    with pytest.raises(EngineConfigError, match="not both"):
        open_endpoints(config(azure_endpoint="https://r.openai.azure.com", azure_api_key="k",
                              base_url="http://localhost:11434/v1"))


async def test_a_local_server_needs_no_key_and_a_missing_key_is_said_at_start(model, home):
    model.script(send("Hello without a key."))
    service = await BotService.open(make_settings(home, model, OPENAI_API_KEY=None))
    try:
        events = await collect(service.chat(UserRef("terminal", "local", "ann", "ann"), "hi"))
    finally:
        await service.close()
    assert any(getattr(e, "text", "") == "Hello without a key." for e in events)
    # Before any message: one line on stderr, naming the variable.
    code, out, err = await membot(model, home, "chat", stdin="hello\n",
                                  env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""})
    said = [line for line in err.splitlines() if line.startswith("membot:")]
    assert code == 2 and out == "" and len(said) == 1 and "OPENAI_API_KEY is not set" in said[0]
    assert model.pending == 0


async def test_the_proxy_the_environment_names_is_used(model, monkeypatch: pytest.MonkeyPatch):
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", model.base_url.removesuffix("/v1"))
    model.script(text("through the proxy"))
    chat, _ = open_endpoints(config(base_url="http://models.example.invalid/v1", model_max_retries=0))
    try:
        assert (await ModelClient(chat, "m").chat(HELLO)).content == "through the proxy"
    finally:
        await chat.close()
    assert model.request_headers[-1]["Host"] == "models.example.invalid"
    monkeypatch.setenv("NO_PROXY", "models.example.invalid")
    bypassed, _ = open_endpoints(config(base_url="http://models.example.invalid/v1", model_max_retries=0))
    try:
        with pytest.raises(ModelUnavailable, match="cannot be reached"):
            await ModelClient(bypassed, "m").chat(HELLO)
    finally:
        await bypassed.close()


async def test_a_chat_request_arrives_whole_with_the_tools_and_choice_asked(model, endpoint):
    client = ModelClient(endpoint, "m")
    messages = [{"role": "user", "content": 'hé "quoted" \\ and } braces {'}]
    tools = [{"type": "function", "function": {"name": "first", "parameters": {"type": "object"}}}]
    others = [{"type": "function", "function": {"name": "second", "parameters": {"type": "object"}}}]
    # Half an emoji (a lone surrogate, as a platform may pass on) cannot be UTF-8: it goes as U+FFFD.
    broken = [{"role": "user", "content": "half an emoji: \ud83d and é"}]
    model.script(text("a"), text("b"), text("c"), text("d"), text("e"), text('{"function": "first"}'))
    await client.chat(messages, tools)
    await client.chat(messages, tools, tool_choice="required")
    await client.chat(messages, others)
    await client.chat(messages)
    await client.chat(broken, tools)
    await client.chat(messages, json_object=True)
    assert model.requests == [
        {"model": "m", "messages": messages, "tools": tools, "tool_choice": "auto"},
        {"model": "m", "messages": messages, "tools": tools, "tool_choice": "required"},
        {"model": "m", "messages": messages, "tools": others, "tool_choice": "auto"},
        {"model": "m", "messages": messages},
        {"model": "m", "messages": [{"role": "user", "content": "half an emoji: \ufffd and é"}], "tools": tools,
         "tool_choice": "auto"},
        {"model": "m", "messages": messages, "response_format": {"type": "json_object"}},
    ]
    assert all(h["Authorization"] == f"Bearer {KEY}" for h in model.request_headers)


async def test_an_organization_and_project_set_go_with_every_chat_and_embeddings_request(model, home):
    model.script(tool_call("archival_memory_insert", {"content": "tea at four", "request_heartbeat": True}),
                 send("Noted."), send("Hello."))
    settings = make_settings(home, model, OPENAI_ORG_ID="org-123", OPENAI_PROJECT_ID="proj_456")
    service = await BotService.open(settings)
    try:
        await collect(service.chat(UserRef("terminal", "local", "ann", "ann"), "tea is at four"))
    finally:
        await service.close()
    assert model.embedding_requests and len(model.request_headers) >= 3  # chat, embeddings, chat
    for headers in model.request_headers:
        assert headers["OpenAI-Organization"] == "org-123" and headers["OpenAI-Project"] == "proj_456"
    # Unset, they are not sent at all.
    service = await BotService.open(make_settings(home, model))
    try:
        await collect(service.chat(UserRef("terminal", "local", "ann", "ann"), "hello"))
    finally:
        await service.close()
    assert "OpenAI-Organization" not in model.request_headers[-1] and "OpenAI-Project" not in model.request_headers[-1]


async def test_azure_openai_deployments_are_asked_with_the_api_key_header(home):
    async with ScriptedModel(azure_api_key="azure-key-0123456789") as model:
        model.script(tool_call("archival_memory_insert", {"content": "tea at four", "request_heartbeat": True}),
                     send("Noted."))
        settings = make_settings(home, model, OPENAI_BASE_URL=None, OPENAI_API_KEY=None,
                                 AZURE_OPENAI_ENDPOINT=model.azure_endpoint, AZURE_OPENAI_API_KEY="azure-key-0123456789",
                                 MEMBOT_MODEL="my-gpt", MEMBOT_EMBEDDING_MODEL="my-embeddings",
                                 MEMBOT_EMBEDDING_DIM=1536)
        service = await BotService.open(settings)
        try:
            events = await collect(service.chat(UserRef("terminal", "local", "ann", "ann"), "tea is at four"))
        finally:
            await service.close()
        assert any(getattr(e, "text", "") == "Noted." for e in events)
        assert model.request_paths == [
            "/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21",
            "/openai/deployments/my-embeddings/embeddings?api-version=2024-10-21",
            "/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21",
        ]
        assert all(h["api-key"] == "azure-key-0123456789" and "Authorization" not in h for h in model.request_headers)
        # A wrong key: Azure's 401, said with the variable to check.
        wrong, _ = open_endpoints(config(azure_endpoint=model.azure_endpoint, azure_api_key="not-the-key"))
        try:
            with pytest.raises(ModelRefused, match="AZURE_OPENAI_API_KEY") as refused:
                await ModelClient(wrong, "my-gpt").chat(HELLO)
        finally:
            await wrong.close()
        assert "not-the-key" not in str(refused.value) and " OPENAI_API_KEY" not in str(refused.value)
