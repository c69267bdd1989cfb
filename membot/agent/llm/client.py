"""The model: chat completions, with tools or asking for one JSON object, over the endpoint's SDK client (see
endpoint.py); failures become the errors the step loop tells apart (errors.py, said as trouble.py says).

A call given `on_chunk` is streamed (stream.py) and `on_chunk` sees the reply grow; a server that refuses
`stream_options` (usage in the last chunk) is asked without it, and one that refuses streaming is asked whole
from then on: the result is the same ChatResult either way."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import openai

from membot.agent.llm.endpoint import Endpoint
from membot.agent.llm.errors import ContextOverflow, ModelRefused, ModelUnavailable, ToolsUnsupported
from membot.agent.llm.reply import EMPTY, ChatResult, ToolCallOut, read_reply
from membot.agent.llm.stream import StreamedReply
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
_STREAM_OPTIONS_REFUSED = re.compile(r"stream[_ ]options|include[_ ]usage", re.IGNORECASE)
# A refusal of the `stream` parameter itself ("does not support stream=true", "streaming is not supported",
# "Unrecognized request argument: stream"), not any 400 that happens to mention a stream.
_STREAM_REFUSED = re.compile(
    r"(not|n't|un)\s*support\w*\s+(\w+\s+)?stream|stream\w*[^.]{0,40}\b(not|un)\s*(supported|allowed|available)"
    r"|(unrecognized|unknown|unexpected|unsupported|extra)\s+(request\s+)?(argument|parameter|field|input)s?:?\s*['\"`]?stream\b",
    re.IGNORECASE,
)

#: Sees a streamed reply as it grows (after each chunk).
OnChunk = Callable[[StreamedReply], None]


class ModelClient:
    def __init__(self, endpoint: Endpoint, model: str) -> None:
        self.endpoint = endpoint
        self.model = model
        self._asked = Asked("model", model, "MEMBOT_MODEL")
        #: Whether to ask for a JSON object with `response_format`; off for good once the server refuses it.
        self._response_format = True
        #: Whether to stream when asked to, and to ask for usage in the last chunk; each off for good once the
        #: server refuses it.
        self._streams = True
        self._stream_usage = True

    async def chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        tool_choice: str | None = None,
        json_object: bool = False,
        on_chunk: OnChunk | None = None,
    ) -> ChatResult:
        """One completion. With `tools`, `tool_choice` is sent too ("auto" unless given; "required" forces a
        call). `json_object` asks for one JSON object in the text, with no tools. `on_chunk`: stream it."""
        base: dict[str, Any] = {"model": self.model, "messages": messages}
        if tools and not json_object:
            base["tools"] = tools
            base["tool_choice"] = tool_choice or "auto"
        # Each refusal of an optional part turns it off for good and asks again: at most once per part.
        for _ in range(4):
            body = dict(base)
            if json_object and self._response_format:
                body["response_format"] = {"type": "json_object"}
            streaming = on_chunk is not None and self._streams
            if streaming:
                body["stream"] = True
                if self._stream_usage:
                    body["stream_options"] = {"include_usage": True}
            try:
                return await (self._ask_streamed(body, on_chunk) if on_chunk and streaming else self._ask(body))
            except openai.BadRequestError as exc:
                if not self._drop_refused_part(body, server_says(exc)):
                    raise self._refusal(exc, body) from None
            except openai.OpenAIError as exc:
                raise explain(exc, self.endpoint, self._asked) from None
        raise ModelUnavailable(f"The model at {self.endpoint.url} refused every form of the request.")

    def _drop_refused_part(self, body: dict[str, Any], said: str) -> bool:
        """Turn off the optional part of `body` the server refused, if one was; whether one was."""
        if "response_format" in body and _FORMAT_REFUSED.search(said):
            # Not every server takes it (the prompt asks for the object anyway).
            log.info("the model endpoint does not take response_format; asking without it from now on")
            self._response_format = False
        elif "stream_options" in body and _STREAM_OPTIONS_REFUSED.search(said):
            log.info("the model endpoint does not take stream_options; usage is estimated from now on")
            self._stream_usage = False
        elif body.get("stream") and _STREAM_REFUSED.search(said) and not _CONTEXT.search(said):
            log.info("the model endpoint does not stream; replies are shown whole from now on")
            self._streams = False
        else:
            return False
        return True

    async def _ask_streamed(self, body: dict[str, Any], on_chunk: OnChunk) -> ChatResult:
        reply = StreamedReply()
        showing = True
        try:
            async for chunk in self.endpoint.stream("/chat/completions", body):
                reply.add(chunk)
                showing = showing and _show(on_chunk, reply)
        except openai.OpenAIError:
            raise  # an error event in the stream: said as any SDK error is
        except ValueError:
            log.warning("unreadable chunk in the model's stream; the reply so far is used")
        except Exception as exc:
            # The connection broke (or timed out, MEMBOT_MODEL_TIMEOUT) mid-answer; the SDK's HTTP library
            # raises its own types there, which differ between its transports.
            raise ModelUnavailable(
                f"The model at {self.endpoint.url} broke off its answer ({type(exc).__name__})."
            ) from None
        return reply.result()

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


def _show(on_chunk: OnChunk, reply: StreamedReply) -> bool:
    """Hand the reply so far to `on_chunk` (drafts shown while it is written); False once that failed. Its
    failure is no failure of the model's answer: the call goes on without drafts, its final text shown whole."""
    try:
        on_chunk(reply)
    except Exception:
        log.exception("showing a reply while it is written failed; it is shown once whole")
        return False
    return True
