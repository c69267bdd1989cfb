"""The model: chat completions with tools, over the OpenAI-compatible endpoint (see endpoint.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from membot.agent.llm.endpoint import (
    Endpoint,
    NoAnswerInTime,
    StatusError,
    Unreachable,
    Unreadable,
    json_bytes,
)

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """The model could not be reached or refused, after the endpoint's retries. The message is safe to show."""


class ToolsUnsupported(ModelUnavailable):
    """The server refuses tools for this model."""

    permanent = True


class ContextOverflow(RuntimeError):
    """The server said the prompt is longer than the model's context window."""


@dataclass(frozen=True)
class ToolCallOut:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatResult:
    content: str | None
    tool_calls: list[ToolCallOut]
    prompt_tokens: int | None
    reasoning: str | None = None


def _is_context_error(error: StatusError) -> bool:
    text = error.message.lower()
    return error.code == "context_length_exceeded" or "context length" in text or "context_length" in text


class ModelClient:
    def __init__(self, endpoint: Endpoint, model: str) -> None:
        self.endpoint = endpoint
        self.model = model
        self._tools: tuple[list[dict[str, Any]] | None, bytes] = (None, b"")

    async def chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
        tool_choice: str | None = None, json_object: bool = False,
    ) -> ChatResult:
        force_tool = tool_choice == "required"
        try:
            response = await self.endpoint.post("/chat/completions", self._body(messages, tools, force_tool))
        except StatusError as exc:
            if exc.status == 400 and _is_context_error(exc):
                raise ContextOverflow(exc.message or str(exc)) from None
            if exc.status == 400 and "support tools" in exc.message:
                raise ToolsUnsupported(exc.message) from None
            raise ModelUnavailable(_why(exc)) from None
        except NoAnswerInTime:
            raise ModelUnavailable("The model did not answer in time.") from None
        except Unreachable:
            raise ModelUnavailable("The model endpoint cannot be reached.") from None
        except Unreadable:
            # Garbage, not an outage: the step loop tells the model to call a function.
            log.warning("unreadable model response")
            return ChatResult(None, [], None)
        return self._parse(response)

    def _body(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, force_tool: bool) -> bytes:
        """The request as JSON. The tool schemas, a fixed part of every request, are encoded once for the list
        they come in (the registry builds its list once and never changes it)."""
        head = json_bytes({"model": self.model, "messages": messages})
        if not tools:
            return head
        if self._tools[0] is not tools:
            self._tools = (tools, json_bytes(tools))
        choice = b'"required"' if force_tool else b'"auto"'
        return b"".join((head[:-1], b',"tools":', self._tools[1], b',"tool_choice":', choice, b"}"))

    @staticmethod
    def _parse(data: Any) -> ChatResult:
        """The parts of a chat completion we use, read from its JSON as sent; anything malformed reads as an
        empty answer (the step loop tells the model to call a function)."""
        if not isinstance(data, dict):
            return ChatResult(None, [], None)
        usage = data.get("usage")
        prompt_tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        prompt_tokens = prompt_tokens if isinstance(prompt_tokens, int) else None
        choices = data.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, dict) else None
        if not isinstance(message, dict):
            return ChatResult(None, [], prompt_tokens)
        calls = []
        raw_calls = message.get("tool_calls")
        for call in raw_calls if isinstance(raw_calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                continue
            calls.append(
                ToolCallOut(_text(call.get("id")) or "call_0", _text(function.get("name")), _text(function.get("arguments")))
            )
        content = message.get("content")
        return ChatResult(content if isinstance(content, str) else None, calls, prompt_tokens)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _why(error: StatusError) -> str:
    """What a user is told when the model endpoint answered with an error."""
    if error.status == 400:
        return "The model refused the request (400)."
    if error.status == 401:
        return "The model endpoint refused the API key."
    if error.status == 429:
        return "The model is rate-limited right now."
    return f"The model endpoint failed ({error.status})."
