"""What the scripted model answers: the kinds of reply a test queues (a chat completion, an HTTP error, a raw
body, or a responder that decides from the request) and the helpers that build them (`send`, `tool_call`,
`text`, `error`, `raw`). The server that serves them is openai_server.ScriptedModel."""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

# Process-wide so ids stay unique even across several ScriptedModel instances.
_call_ids = itertools.count(1)


def _next_call_id() -> str:
    return f"call_{next(_call_ids)}"


# --------------------------------------------------------------------------
# Reply kinds
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatReply:
    """A successful assistant message (turned into a full chat.completion)."""

    content: str | None
    tool_calls: tuple[dict[str, Any], ...] = ()
    #: More fields of the message as sent, e.g. a reasoning model's ``reasoning_content``.
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ErrorReply:
    """An OpenAI-style error body with a non-2xx status.

    ``message=None`` means "pick a realistic message at serve time" (needed for
    context_length_exceeded, whose text embeds the request's token count).
    """

    status: int
    message: str | None = None
    code: str | None = None
    type: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RawReply:
    """Anything verbatim: a JSON-able value, or a str sent as-is (may be invalid JSON)."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


Responder: TypeAlias = Callable[[dict[str, Any]], "Reply | Awaitable[Reply]"]
Reply: TypeAlias = ChatReply | ErrorReply | RawReply | Responder

_STATIC_REPLIES = (ChatReply, ErrorReply, RawReply)


# --------------------------------------------------------------------------
# Helper constructors
# --------------------------------------------------------------------------


def _encode_arguments(arguments: dict[str, Any] | str) -> str:
    # A str is passed through untouched so tests can send malformed JSON.
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, ensure_ascii=False)


def _make_call(name: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
    return {
        "id": _next_call_id(),
        "type": "function",
        "function": {"name": name, "arguments": _encode_arguments(arguments)},
    }


def tool_call(
    name: str,
    arguments: dict[str, Any] | str,
    content: str | None = None,
    *,
    extra_calls: Sequence[tuple[str, dict[str, Any] | str]] = (),
) -> ChatReply:
    """An assistant message whose ``content`` is the inner monologue plus one (or more) tool calls."""
    calls = [_make_call(name, arguments)]
    calls.extend(_make_call(n, a) for n, a in extra_calls)
    return ChatReply(content=content, tool_calls=tuple(calls))


def send(text: str, thought: str = "Replying to the user.", heartbeat: bool = False) -> ChatReply:
    """Shorthand for the usual MemGPT turn: think, then call ``send_message``."""
    args: dict[str, Any] = {"message": text}
    if heartbeat:
        args["request_heartbeat"] = True
    return tool_call("send_message", args, content=thought)


def text(content: str | None) -> ChatReply:
    """A plain assistant message with no tool calls (``None``/"" for an empty reply)."""
    return ChatReply(content=content)


def error(
    status: int,
    message: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    *,
    type: str | None = None,  # named like OpenAI's error field, shadowing is harmless here
    param: str | None = None,
) -> ErrorReply:
    """An OpenAI-style error. ``headers`` e.g. ``{"retry-after-ms": "10"}`` to keep SDK retries fast."""
    return ErrorReply(
        status=status, message=message, code=code, type=type, param=param, headers=dict(headers or {})
    )


def raw(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> RawReply:
    """Send ``body`` verbatim (dict/list JSON-encoded, str as-is) to test garbage handling."""
    return RawReply(body=body, status=status, headers=dict(headers or {}))


# --------------------------------------------------------------------------
# Errors as real servers send them
# --------------------------------------------------------------------------

# What the scripted reasoning models reason, easy to look for where it must never appear.
SCRIPTED_REASONING = "REASONING-TRACE: weighing what the user asked before answering."


def insufficient_quota() -> ErrorReply:
    """OpenAI's 429 for an account without credit: retrying cannot help, paying can."""
    return ErrorReply(
        status=429,
        message="You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
        code="insufficient_quota",
        type="insufficient_quota",
    )


def model_not_found() -> ErrorReply:
    """OpenAI's 404 for a model name it does not serve (the request's model is named at serve time)."""
    return ErrorReply(status=404, code="model_not_found", type="invalid_request_error")


def invalid_api_key() -> ErrorReply:
    """OpenAI's 401 for a wrong key; its message quotes part of the key."""
    return ErrorReply(
        status=401,
        message="Incorrect API key provided: sk-test-****-key. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
        type="invalid_request_error",
    )


def ollama_no_tools(body: dict[str, Any]) -> ErrorReply:
    """Ollama's 400 (on its OpenAI-compatible /v1) for a model without tool support; a responder, since it names
    the request's model."""
    model = str(body.get("model") or "llama2")
    tag = model if ":" in model else f"{model}:latest"
    return ErrorReply(status=400, message=f"registry.ollama.ai/library/{tag} does not support tools", type="api_error")


def vllm_no_auto_tools() -> RawReply:
    """vLLM's 400 for tool_choice "auto" when the server was started without tool parsing (its error shape:
    top-level fields, an integer code)."""
    return RawReply(
        status=400,
        body={
            "object": "error",
            "message": '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    )


# --------------------------------------------------------------------------
# Reasoning models
# --------------------------------------------------------------------------


def reasoned(reply: ChatReply, how: str = "think", reasoning: str = SCRIPTED_REASONING) -> ChatReply:
    """``reply`` as a reasoning model sends it: ``how`` is "think" (a <think> block before the text, as
    DeepSeek-R1 or QwQ write it), or the message field the reasoning comes in ("reasoning_content", as vLLM and
    DeepSeek's API send it, or "reasoning", as Ollama, LM Studio and OpenRouter do)."""
    if how == "think":
        return replace(reply, content=f"<think>\n{reasoning}\n</think>\n\n{reply.content or ''}")
    if how in ("reasoning_content", "reasoning"):
        return replace(reply, fields={**reply.fields, how: reasoning})
    raise ValueError(f"unknown way of reasoning: {how!r}")
