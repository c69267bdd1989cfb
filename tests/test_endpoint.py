"""The model endpoint over real HTTP to the scripted server: the retry policy the OpenAI SDK had (which servers
and proxies expect), the errors a caller tells apart, and what chat and embeddings make of them."""

from __future__ import annotations

import base64
import struct
import time
from email.utils import formatdate

import pytest
from multidict import CIMultiDict

from membot.agent.config import EngineConfigError
from membot.agent.llm.client import ContextOverflow, ModelClient, ModelUnavailable
from membot.agent.llm.embeddings import Embedder, _vectors
from membot.agent.llm.endpoint import Endpoint, StatusError, Unreachable, backoff, env_proxy, retry_after
from membot.bot.identity import UserRef
from membot.bot.service import BotService
from tests.conftest import collect, make_settings
from tests.fakes.openai_server import ScriptedModel, error, raw, send, text, tool_call

HELLO = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def endpoint(model: ScriptedModel):
    opened = Endpoint(model.base_url, "sk-test", timeout=5, max_retries=2)
    yield opened
    await opened.close()


async def test_a_server_error_is_retried_after_the_wait_it_asks_for(model, endpoint):
    model.script(error(500, "boom", headers={"retry-after-ms": "10"}), error(503, "busy", headers={"retry-after-ms": "5"}),
                 text("third time"))
    answer = await endpoint.post("/chat/completions", HELLO)
    assert answer["choices"][0]["message"]["content"] == "third time" and len(model.requests) == 3


async def test_retries_end_and_the_last_error_is_raised(model, endpoint):
    model.script(*[error(429, "slow down", headers={"retry-after-ms": "1"}) for _ in range(3)], text("never"))
    with pytest.raises(StatusError) as raised:
        await endpoint.post("/chat/completions", HELLO)
    assert raised.value.status == 429 and raised.value.message == "slow down"
    assert len(model.requests) == 3  # one try and max_retries=2 retries
    assert await ModelClient(endpoint, "m").chat(HELLO["messages"]) is not None  # the fourth reply is still there


async def test_what_the_server_says_not_to_retry_is_not_retried(model, endpoint):
    model.script(error(500, "hopeless", headers={"x-should-retry": "false"}), error(400, "bad request"))
    with pytest.raises(StatusError):
        await endpoint.post("/chat/completions", HELLO)
    with pytest.raises(StatusError) as raised:  # 4xx other than 408/409/429 is final
        await endpoint.post("/chat/completions", HELLO)
    assert raised.value.status == 400 and len(model.requests) == 2
    model.script(error(429, "come back in an hour", headers={"retry-after": "3600"}), text("x"))
    with pytest.raises(StatusError):  # asked to wait longer than two minutes: not retried at all
        await endpoint.post("/chat/completions", HELLO)
    assert len(model.requests) == 3


async def test_chat_tells_the_user_what_went_wrong(model, endpoint):
    chat = ModelClient(endpoint, "m")
    model.script(error(401, "Incorrect API key provided"), error(400, "too long", code="context_length_exceeded"),
                 error(429, "slow", headers={"x-should-retry": "false"}), raw("<html>oops</html>"), send("fine"))
    with pytest.raises(ModelUnavailable, match="refused the API key"):
        await chat.chat(HELLO["messages"])
    with pytest.raises(ContextOverflow):
        await chat.chat(HELLO["messages"])
    with pytest.raises(ModelUnavailable, match="rate-limited"):
        await chat.chat(HELLO["messages"])
    garbage = await chat.chat(HELLO["messages"])  # a 200 that is not JSON: no answer, not an outage
    assert garbage.content is None and garbage.tool_calls == []
    fine = await chat.chat(HELLO["messages"])
    assert fine.tool_calls[0].name == "send_message"


async def test_an_endpoint_that_is_not_there_is_unreachable_after_retries(unused_tcp_port: int):
    gone = Endpoint(f"http://127.0.0.1:{unused_tcp_port}/v1", None, timeout=5, max_retries=1)
    started = time.perf_counter()
    with pytest.raises(Unreachable):
        await gone.post("/chat/completions", HELLO)
    assert time.perf_counter() - started >= 0.35  # it waited one backoff (0.375-0.5 s) before the retry
    await gone.close()


async def test_embeddings_in_input_order_and_their_failures(model, endpoint):
    embedder = Embedder(endpoint, "text-embedding-3-small", dim=8)
    vectors = await embedder.embed(["tea", "", "coffee"])
    assert len(vectors) == 3 and all(len(v) == 8 for v in vectors)
    assert vectors[0] == await embedder.embed_one("tea") and vectors[0] != vectors[2]
    assert model.embedding_requests[0]["dimensions"] == 8 and model.embedding_requests[0]["input"][1] == " "
    # A model without `dimensions` answers at its own size: told apart from the setting, not stored.
    other = Embedder(endpoint, "nomic-embed-text", dim=8)
    with pytest.raises(ModelUnavailable, match="MEMBOT_EMBEDDING_DIM is 8"):
        await other.embed(["tea"])
    assert "dimensions" not in model.embedding_requests[-1]


def test_retry_after_reads_every_form_servers_send():
    def wait(**headers: str) -> float | None:
        return retry_after(CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()}))

    assert wait(retry_after_ms="250") == 0.25
    assert wait(retry_after="3") == 3.0
    in_two = wait(retry_after=formatdate(time.time() + 2, usegmt=True))
    assert in_two is not None and 0 < in_two <= 2
    assert wait(retry_after="3600") == 3600.0
    assert wait(retry_after="1e400") == float("inf")  # too long to say: not retried (see above)
    assert wait(retry_after="soon") is None and wait(retry_after="nan") is None and wait() is None
    assert all(0.375 <= backoff(0) <= 0.5 and 6 <= backoff(10) <= 8 for _ in range(50))


def test_the_proxy_the_environment_names_is_used(monkeypatch: pytest.MonkeyPatch):
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert env_proxy("https://api.openai.com/v1") == "http://proxy.internal:3128"
    assert env_proxy("http://127.0.0.1:11434/v1") is None  # listed in NO_PROXY; and no HTTP_PROXY for http
    monkeypatch.delenv("NO_PROXY")
    assert env_proxy("http://127.0.0.1:11434/v1") is None


def test_embeddings_read_in_either_encoding_and_refuse_garbage():
    one = base64.b64encode(struct.pack("<f", 1.0)).decode()
    # A server that ignores encoding_format sends numbers; items may come in any order.
    assert _vectors({"data": [{"index": 1, "embedding": [0.5]}, {"index": 0, "embedding": one}]}) == [[1.0], [0.5]]
    nan = base64.b64encode(struct.pack("<2f", 0.5, float("nan"))).decode()
    for garbage in ({"data": [{"embedding": "not base64!"}]}, {"data": [{"embedding": []}]}, {"data": "x"}, [1],
                    {"data": [{"embedding": [0.5, "0.1", 0.2]}]}, {"data": [{"embedding": [0.5, None]}]},
                    {"data": [{"embedding": nan}]}, {"data": [{"embedding": [0.5, 1e308, 1e308]}]},
                    {"data": [{"embedding": [float("inf"), float("-inf")]}]}, {"data": [{"embedding": [0.5, 1e39]}]}):
        assert _vectors(garbage) is None, garbage


async def test_every_servers_way_of_saying_the_prompt_is_too_long_is_understood(model, endpoint):
    chat = ModelClient(endpoint, "m")
    vllm = {"object": "error", "message": "This model's maximum context length is 8192 tokens.", "code": 400}
    model.script(raw(vllm, status=400), raw({"error": "context_length_exceeded"}, status=400),
                 raw("prompt exceeds the context length", status=400), raw({"error": {"message": "no"}}, status=400))
    for _ in range(3):
        with pytest.raises(ContextOverflow):
            await chat.chat(HELLO["messages"])
    with pytest.raises(ModelUnavailable, match="refused the request"):
        await chat.chat(HELLO["messages"])


def test_an_endpoint_url_that_can_never_work_is_refused_at_start():
    for url in ("localhost:11434/v1", "ftp://models.example/v1", "http:///v1", "http://localhost:99999/v1",
                "http://localhost:port/v1", "http://localhost:0/v1"):
        with pytest.raises(EngineConfigError, match="not a usable http"):
            Endpoint(url, None, timeout=5, max_retries=0)
    # A key pasted with its line break would make every request fail; the message never shows the key.
    with pytest.raises(EngineConfigError, match="control character") as refused:
        Endpoint("http://localhost:11434/v1", "sk-secret\n", timeout=5, max_retries=0)
    assert "sk-secret" not in str(refused.value)
    with pytest.raises(EngineConfigError, match="control character"):
        Endpoint("http://localhost:11434/v1", None, timeout=5, max_retries=0, headers={"OpenAI-Project": "p\r1"})


async def test_a_chat_request_arrives_whole_and_a_new_tool_list_is_sent_as_it_is(model, endpoint):
    client = ModelClient(endpoint, "m")
    messages = [{"role": "user", "content": 'hé "quoted" \\ and } braces {'}]
    tools = [{"type": "function", "function": {"name": "first", "parameters": {"type": "object"}}}]
    others = [{"type": "function", "function": {"name": "second", "parameters": {"type": "object"}}}]
    # Half an emoji (a lone surrogate, as a platform may pass on) cannot be UTF-8: it goes escaped.
    broken = [{"role": "user", "content": "half an emoji: \ud83d and é"}]
    model.script(text("a"), text("b"), text("c"), text("d"), text("e"))
    await client.chat(messages, tools)
    await client.chat(messages, tools, tool_choice="required")
    await client.chat(messages, others)
    await client.chat(messages)
    await client.chat(broken, tools)
    assert model.requests == [
        {"model": "m", "messages": messages, "tools": tools, "tool_choice": "auto"},
        {"model": "m", "messages": messages, "tools": tools, "tool_choice": "required"},
        {"model": "m", "messages": messages, "tools": others, "tool_choice": "auto"},
        {"model": "m", "messages": messages},
        {"model": "m", "messages": broken, "tools": tools, "tool_choice": "auto"},
    ]


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
