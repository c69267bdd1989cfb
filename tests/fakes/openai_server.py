"""A scripted, OpenAI-compatible model server for tests.

Tests queue up exactly what "the model" will answer (tool calls, plain text,
HTTP errors, garbage; see scripted_replies.py) and then drive membot's model
client (or the ``openai`` SDK) against this server over real HTTP, so the whole
client stack (serialisation, retries, error mapping) is exercised without any
network access or nondeterminism.

Usage::

    async with ScriptedModel() as model:
        model.script(send("hello!"), tool_call("core_memory_append", {...}))
        client = AsyncOpenAI(base_url=model.base_url, api_key="test", max_retries=0)
        ...
        assert model.requests[0]["messages"][0]["role"] == "system"
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import itertools
import json
import logging
import math
import re
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict

from tests.fakes import openai_stream
from tests.fakes.model_habits import HABITS, Habit, HabitMemory, habits_of, refusal, serve
from tests.fakes.scripted_replies import (
    _STATIC_REPLIES,
    SCRIPTED_REASONING,
    ChatReply,
    ErrorReply,
    RawReply,
    Reply,
    Responder,
    _next_call_id,
    error,
    insufficient_quota,
    invalid_api_key,
    model_not_found,
    ollama_no_tools,
    raw,
    reasoned,
    send,
    text,
    tool_call,
    vllm_no_auto_tools,
)

__all__ = [
    "DEFAULT_EMBEDDING_DIM",
    "HABITS",
    "SCRIPTED_REASONING",
    "ChatReply",
    "ErrorReply",
    "Habit",
    "RawReply",
    "Reply",
    "Responder",
    "ScriptedModel",
    "embed_text",
    "error",
    "estimate_prompt_tokens",
    "insufficient_quota",
    "invalid_api_key",
    "model_not_found",
    "ollama_no_tools",
    "raw",
    "reasoned",
    "send",
    "text",
    "tool_call",
    "vllm_no_auto_tools",
]

log = logging.getLogger(__name__)

DEFAULT_EMBEDDING_DIM = 1536
DEFAULT_CHAT_MODEL = "scripted-model"
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
# Stand-in window for a scripted context_length_exceeded error when the
# server itself has no context_window configured.
_FALLBACK_CONTEXT_WINDOW = 8192
# Guards against a responder that keeps returning responders forever.
_MAX_RESPONDER_DEPTH = 32

_completion_ids = itertools.count(1)
_AZURE_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)


def _compact_json(value: Any) -> str:
    # Compact + sort_keys so the estimate only depends on content, not formatting.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Deterministic token estimate for a chat request: ~4 characters of JSON per token."""
    size = len(_compact_json(body.get("messages") or []))
    tools = body.get("tools")
    if tools:
        size += len(_compact_json(tools))
    return math.ceil(size / 4)


def _estimate_completion_tokens(message: dict[str, Any]) -> int:
    size = len(message.get("content") or "") + len(_compact_json(message.get("tool_calls") or []))
    return max(1, math.ceil(size / 4))


_WORD_RE = re.compile(r"\w+")
_STOP_WORDS = frozenset(
    """a an the and or but if of to in on at for with by from as is are was were be been being
    it its this that these those i me my we our you your he him his she her they them their
    do does did so than then there here what which who will would can could should just
    about into over also very too has have had am""".split()
)


def _strip_suffix(token: str) -> str:
    if len(token) > 5 and token.endswith("ing"):
        return _undouble(token[:-3])
    if len(token) > 4 and token.endswith("ied"):
        return token[:-3] + "y"
    if len(token) > 4 and token.endswith("ed"):
        return _undouble(token[:-2])
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 4 and token.endswith(("ses", "xes", "zes", "ches", "shes")):
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


def _undouble(stem: str) -> str:
    # "running" -> "runn" -> "run", "stopped" -> "stopp" -> "stop".
    if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in "aeiouls":
        return stem[:-1]
    return stem


def _stem(token: str) -> str:
    # Deliberately crude: enough that "memories"/"memory", "hiking"/"hikes" or
    # "loved"/"loves" collide. The final-"e" drop makes "hike" and "hik" agree.
    stem = _strip_suffix(token)
    if len(stem) > 3 and stem.endswith("e") and not stem.endswith("ee"):
        stem = stem[:-1]
    return stem


def _tokens(text: str) -> list[str]:
    return [_stem(t) for t in _WORD_RE.findall(text.lower()) if t not in _STOP_WORDS]


def embed_text(text: str, dim: int = DEFAULT_EMBEDDING_DIM) -> list[float]:
    """Hashed bag-of-words embedding: texts sharing (stemmed) words get high cosine similarity.

    Uses blake2b rather than ``hash()`` so vectors are stable across processes
    (PYTHONHASHSEED), which matters for anything persisted between runs.
    """
    if dim <= 0:
        raise ValueError(f"dim must be positive, got {dim}")
    vec = [0.0] * dim
    for token in _tokens(text):
        h = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "big")
        vec[h % dim] += 1.0 if (h >> 63) & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0.0:
        # Fixed unit vector so "no content" still yields a valid, normalised embedding.
        return [1.0 / math.sqrt(dim)] * dim
    return [v / norm for v in vec]


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


class ScriptedModel:
    """aiohttp web server on 127.0.0.1 (random free port) speaking the OpenAI REST API.

    Chat replies come from a FIFO queue filled with :meth:`script`; when it runs
    dry, ``default`` (a responder) answers, or else a loud HTTP 500.

    ``habits`` (see model_habits.py) make it serve its script as real models
    do. It answers Azure OpenAI's paths too (``/openai/deployments/{deployment}/
    chat/completions?api-version=...``, and ``/embeddings``), where it wants an
    ``api-key`` header (``azure_api_key`` when set, else any) and answers 401
    without it, as Azure does.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        embedding_latency: float = 0.0,
        context_window: int | None = None,
        default: Responder | None = None,
        port: int = 0,
        reuse_port: bool = False,
        record: bool = True,
        habits: Habit | set[Habit] | frozenset[Habit] | tuple[Habit, ...] | None = None,
        azure_api_key: str | None = None,
        streams: bool = True,
        stream_delay: float = 0.0,
    ) -> None:
        self.latency = latency
        #: Whether `stream: true` is served (else refused with a 400, as by a server that cannot stream), and
        #: the pause between chunks (a slow model writes its answer over seconds).
        self.streams = streams
        self.stream_delay = stream_delay
        # record: keep every request for the test to read. A long benchmark turns it off: thousands of kept
        # bodies made the server's garbage collector pause for up to 0.3 s, and answers came that much late.
        self.record = record
        # reuse_port: several server processes may share one port (the kernel spreads connections over them).
        self._port, self._reuse_port = port, reuse_port
        self.embedding_latency = embedding_latency
        self.context_window = context_window
        self.default = default
        self.embedding_failures = 0
        self.requests: list[dict[str, Any]] = []
        self.embedding_requests: list[dict[str, Any]] = []
        #: The headers of every chat and embeddings request, in order (names in any case).
        self.request_headers: list[CIMultiDict[str]] = []
        #: The path and query of every chat and embeddings request, in order.
        self.request_paths: list[str] = []
        self.habits = habits_of(habits)
        self._habit_memory = HabitMemory()
        self.azure_api_key = azure_api_key
        self.max_prompt_tokens = 0
        self._queue: deque[Reply] = deque()
        # Tool call ids already sent; a reply object served twice gets fresh ids.
        self._served_call_ids: set[str] = set()
        self._models_seen: dict[str, None] = {DEFAULT_CHAT_MODEL: None, DEFAULT_EMBEDDING_MODEL: None}
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    @property
    def habits(self) -> frozenset[str]:
        return self._habits

    @habits.setter
    def habits(self, value: Habit | set[Habit] | frozenset[Habit] | tuple[Habit, ...] | None) -> None:
        self._habits = habits_of(value)

    @property
    def azure_endpoint(self) -> str:
        """What AZURE_OPENAI_ENDPOINT would be for this server."""
        return self.base_url.removesuffix("/v1")

    # ---- lifecycle -------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("ScriptedModel is not running; call start() first")
        return self._base_url

    async def start(self) -> None:
        if self._runner is not None:
            return
        # Large body limit: archival-memory inserts can embed many chunks at once.
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._handle_chat)
        app.router.add_post("/v1/embeddings", self._handle_embeddings)
        app.router.add_get("/v1/models", self._handle_models)
        app.router.add_get("/v1/models/{model}", self._handle_model)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._azure(self._handle_chat))
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self._azure(self._handle_embeddings))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(  # 200 clients may connect at once
            runner, "127.0.0.1", self._port, backlog=1024, reuse_port=self._reuse_port or None
        )
        await site.start()
        port = runner.addresses[0][1]
        self._runner = runner
        self._base_url = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---- scripting -------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Append replies to the FIFO queue consumed by /chat/completions."""
        for reply in replies:
            # Fail at the call site rather than as a confusing 500 later.
            if not isinstance(reply, _STATIC_REPLIES) and not callable(reply):
                raise TypeError(f"not a Reply: {reply!r}")
        self._queue.extend(replies)

    @property
    def pending(self) -> int:
        return len(self._queue)

    # ---- handlers --------------------------------------------------------

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        body = await _read_json(request)
        if not isinstance(body, dict):
            return _error_response(
                400, "We could not parse the JSON body of your request.", "invalid_request_error"
            )
        if self.record:
            self.requests.append(body)
            self.request_headers.append(CIMultiDict(request.headers))
            self.request_paths.append(request.path_qs)
        model = str(body.get("model") or request.match_info.get("deployment") or DEFAULT_CHAT_MODEL)
        self._models_seen[model] = None
        prompt_tokens = estimate_prompt_tokens(body)
        self.max_prompt_tokens = max(self.max_prompt_tokens, prompt_tokens)

        scripted: Reply | None = None
        refused = refusal(self.habits, body, self._habit_memory)
        if refused is not None:
            # Before popping, as the habit's server refuses before any model runs.
            reply: Reply = refused
        elif self.context_window is not None and prompt_tokens > self.context_window:
            # Checked before popping so the scripted reply is still there for the retry.
            reply = ErrorReply(status=400, code="context_length_exceeded")
        elif body.get("stream") and not self.streams:
            reply = ErrorReply(status=400, message="This server does not support stream=true", param="stream")
        elif self._queue:
            reply = scripted = self._queue.popleft()
        elif self.default is not None:
            reply = self.default
        else:
            return _error_response(
                500,
                f"ScriptedModel script exhausted (request #{len(self.requests)}); script more replies",
                "server_error",
                code="script_exhausted",
                # Retrying can't help; don't let the SDK spend seconds backing off.
                headers={"x-should-retry": "false"},
            )

        if self.latency > 0:
            await asyncio.sleep(self.latency)
        try:
            resolved = await _resolve(reply, body)
        except Exception as exc:  # surface responder bugs in the test output
            log.exception("ScriptedModel responder failed")
            return _error_response(
                500,
                f"ScriptedModel responder raised {exc!r}",
                "server_error",
                headers={"x-should-retry": "false"},
            )
        if isinstance(resolved, ChatReply) and self.habits:
            served = serve(self.habits, resolved, body, self._queue, self._habit_memory)
            if served.keep_scripted and scripted is not None:
                self._queue.appendleft(scripted)  # what it would not do this time, it does when made to
            resolved = served.reply
        if isinstance(resolved, ChatReply) and body.get("stream"):
            completion = self._completion(resolved, model, prompt_tokens)
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await openai_stream.stream(request, openai_stream.chunks(completion, include_usage=include_usage),
                                              self.stream_delay)
        return self._render(resolved, body, model, prompt_tokens)

    def _render(
        self, reply: ChatReply | ErrorReply | RawReply, body: dict[str, Any], model: str, prompt_tokens: int
    ) -> web.Response:
        if isinstance(reply, RawReply):
            payload = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
            return web.Response(
                status=reply.status, text=payload, content_type="application/json", headers=reply.headers
            )
        if isinstance(reply, ErrorReply):
            return self._render_error(reply, prompt_tokens, model)
        return web.json_response(self._completion(reply, model, prompt_tokens))

    def _render_error(self, reply: ErrorReply, prompt_tokens: int, model: str) -> web.Response:
        message = reply.message
        param = reply.param
        if reply.code == "model_not_found" and message is None:
            message = f"The model `{model}` does not exist or you do not have access to it."
        if reply.code == "context_length_exceeded":
            param = param or "messages"
            if message is None:
                window = self.context_window or _FALLBACK_CONTEXT_WINDOW
                # A scripted overflow may come from a small prompt; keep the numbers coherent.
                used = max(prompt_tokens, window + 1)
                message = (
                    f"This model's maximum context length is {window} tokens. However, your messages "
                    f"resulted in {used} tokens. Please reduce the length of the messages."
                )
        if message is None:
            message = f"Scripted error (HTTP {reply.status})"
        return _error_response(
            reply.status,
            message,
            reply.type or _default_error_type(reply.status),
            code=reply.code,
            param=param,
            headers=reply.headers,
        )

    def _completion(self, reply: ChatReply, model: str, prompt_tokens: int) -> dict[str, Any]:
        tool_calls: list[dict[str, Any]] = []
        for scripted in reply.tool_calls:
            call = json.loads(json.dumps(scripted))  # deep copy; never mutate the scripted object
            if call.get("id") in self._served_call_ids:
                call["id"] = _next_call_id()
            self._served_call_ids.add(call["id"])
            tool_calls.append(call)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.content,
            "tool_calls": tool_calls or None,
            "refusal": None,
            **reply.fields,
        }
        completion_tokens = _estimate_completion_tokens(message)
        return {
            "id": f"chatcmpl-scripted-{next(_completion_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_scripted",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if tool_calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    async def _handle_embeddings(self, request: web.Request) -> web.Response:
        body = await _read_json(request)
        if not isinstance(body, dict):
            return _error_response(
                400, "We could not parse the JSON body of your request.", "invalid_request_error"
            )
        if self.record:
            self.embedding_requests.append(body)
            self.request_headers.append(CIMultiDict(request.headers))
            self.request_paths.append(request.path_qs)
        model = str(body.get("model") or DEFAULT_EMBEDDING_MODEL)
        self._models_seen[model] = None

        if self.embedding_latency > 0:
            await asyncio.sleep(self.embedding_latency)
        if self.embedding_failures > 0:
            self.embedding_failures -= 1
            # Tiny retry-after so SDK-level retries don't add real seconds to tests.
            return _error_response(
                500, "Scripted embedding failure", "server_error", headers={"retry-after-ms": "5"}
            )

        texts = _embedding_inputs(body.get("input"))
        if texts is None:
            return _error_response(
                400,
                "'$.input' is invalid: expected a non-empty string or array",
                "invalid_request_error",
                param="input",
            )
        dim = body.get("dimensions", DEFAULT_EMBEDDING_DIM)
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            return _error_response(
                400, f"Invalid dimensions: {dim!r}", "invalid_request_error", param="dimensions"
            )

        as_base64 = body.get("encoding_format") == "base64"
        data: list[dict[str, Any]] = []
        for index, t in enumerate(texts):
            vec = embed_text(t, dim)
            # The SDK asks for base64 by default: little-endian float32, like OpenAI.
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode("ascii") if as_base64 else vec
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(max(1, len(_WORD_RE.findall(t))) for t in texts)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def _azure(self, handler: Callable[[web.Request], Awaitable[web.Response]]) -> Callable[..., Any]:
        """`handler` behind Azure's checks: the `api-key` header and the `api-version` query."""

        async def checked(request: web.Request) -> web.Response:
            key = request.headers.get("api-key")
            if not key or (self.azure_api_key is not None and key != self.azure_api_key):
                return web.json_response({"error": {"code": "401", "message": _AZURE_DENIED}}, status=401)
            if not request.query.get("api-version"):
                return web.json_response({"error": {"code": "404", "message": "Resource not found"}}, status=404)
            return await handler(request)

        return checked

    async def _handle_models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [_model_card(m) for m in self._models_seen]})

    async def _handle_model(self, request: web.Request) -> web.Response:
        return web.json_response(_model_card(request.match_info["model"]))


# --------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------


async def _read_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError):
        return None


async def _resolve(reply: Reply, body: dict[str, Any]) -> ChatReply | ErrorReply | RawReply:
    """Call responders (sync or async) until a concrete reply comes out."""
    for _ in range(_MAX_RESPONDER_DEPTH):
        if isinstance(reply, _STATIC_REPLIES):
            return reply
        if not callable(reply):
            raise TypeError(f"responder returned a non-Reply: {reply!r}")
        result = reply(body)
        reply = await result if inspect.isawaitable(result) else result
    raise RuntimeError("responders nested too deeply (a responder keeps returning responders)")


def _embedding_inputs(value: Any) -> list[str] | None:
    """Normalise OpenAI's accepted ``input`` shapes to a list of strings (None = invalid)."""
    if isinstance(value, str):
        return [value] if value else None
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, int) for v in value):
        # A single pre-tokenised input: embed the token ids as words.
        return [" ".join(f"tok{v}" for v in value)]
    texts: list[str] = []
    for item in value:
        if isinstance(item, str) and item:
            texts.append(item)
        elif isinstance(item, list) and item and all(isinstance(v, int) for v in item):
            texts.append(" ".join(f"tok{v}" for v in item))
        else:
            return None
    return texts


def _default_error_type(status: int) -> str:
    if status == 429:
        return "requests"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def _error_response(
    status: int,
    message: str,
    type_: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _model_card(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "membot-tests"}
