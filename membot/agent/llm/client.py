"""The model: chat completions, with tools or asking for one JSON object, over the endpoint's SDK client (see
endpoint.py); failures become the errors the step loop tells apart (errors.py, said as trouble.py says)."""

from __future__ import annotations

import logging
import re
from typing import Any

import openai

from membot.agent.llm.endpoint import Endpoint
from membot.agent.llm.errors import ContextOverflow, ModelRefused, ModelUnavailable, ToolsUnsupported
from membot.agent.llm.reply import EMPTY, ChatResult, ToolCallOut, read_reply
from membot.agent.llm.trouble import Asked, explain, server_quote, server_says

__all__ = [
    "ChatResult",
    "ContextOverflow",
    "ModelClient",
    "ModelRefused",
    "ModelUnavailable",
    "ToolCallOut",
    "ToolsUnsupported",
]

log = logging.getLogger(__name__)

# A 400 naming these refuses tools for the model (Ollama's "does not support tools", vLLM's "auto" tool choice
# without --enable-auto-tool-choice, "does not support function calling"); `tools[` is one schema found wrong.
_TOOLS_REFUSED = re.compile(r"\btools\b(?!\[)|\btool[_ ]choice\b|function[_ ]calling", re.IGNORECASE)
_FORMAT_REFUSED = re.compile(r"response[_ ]format|json_object|json mode", re.IGNORECASE)
_CONTEXT = re.compile(r"context[_ ]length|maximum context", re.IGNORECASE)


class ModelClient:
    def __init__(self, endpoint: Endpoint, model: str) -> None:
        self.endpoint = endpoint
        self.model = model
        self._asked = Asked("model", model, "MEMBOT_MODEL")
        #: Whether to ask for a JSON object with `response_format`; off for good once the server refuses it.
        self._response_format = True

    async def chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        tool_choice: str | None = None,
        json_object: bool = False,
    ) -> ChatResult:
        """One completion. With `tools`, `tool_choice` is sent too ("auto" unless given; "required" forces a
        call). `json_object` asks for one JSON object in the text, with no tools."""
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if json_object:
            if self._response_format:
                body["response_format"] = {"type": "json_object"}
        elif tools:
            body["tools"] = tools
            body["tool_choice"] = tool_choice or "auto"
        try:
            return await self._ask(body)
        except openai.BadRequestError as exc:
            if "response_format" in body and _FORMAT_REFUSED.search(server_says(exc)):
                # Not every server takes it (the prompt asks for the object anyway): asked once more without.
                log.info("the model endpoint does not take response_format; asking without it from now on")
                self._response_format = False
                del body["response_format"]
                return await self._ask_explained(body)
            raise self._refusal(exc, body) from None
        except openai.OpenAIError as exc:
            raise explain(exc, self.endpoint, self._asked) from None

    async def _ask_explained(self, body: dict[str, Any]) -> ChatResult:
        try:
            return await self._ask(body)
        except openai.BadRequestError as exc:
            raise self._refusal(exc, body) from None
        except openai.OpenAIError as exc:
            raise explain(exc, self.endpoint, self._asked) from None

    async def _ask(self, body: dict[str, Any]) -> ChatResult:
        try:
            data = await self.endpoint.post("/chat/completions", body)
        except ValueError:
            # A success whose body is not JSON: garbage, not an outage (the step loop tells the model to call a
            # function).
            log.warning("unreadable model response")
            return EMPTY
        return read_reply(data)

    def _refusal(self, exc: openai.BadRequestError, body: dict[str, Any]) -> Exception:
        said = server_says(exc)
        if exc.code == "context_length_exceeded" or _CONTEXT.search(said):
            return ContextOverflow(said or "The prompt is longer than the model's context window.")
        if "tools" in body and _TOOLS_REFUSED.search(said):
            return ToolsUnsupported(_no_tools(self.model, self.endpoint, server_quote(exc, self.endpoint)))
        return explain(exc, self.endpoint, self._asked)


def _no_tools(model: str, endpoint: Endpoint, said: str) -> str:
    """Which model, and what to do about it."""
    if "--enable-auto-tool-choice" in said:
        fix = (
            "Start the server with --enable-auto-tool-choice and the --tool-call-parser for this model, or set "
            "MEMBOT_TOOL_MODE=json"
        )
    else:
        fix = "Use a model with tool support (MEMBOT_MODEL), or set MEMBOT_TOOL_MODE=json"
    words = f"; the server said: {said.rstrip('.')}" if said else ""
    return f"The model {model} at {endpoint.url} does not take functions (tools){words}. {fix}."
