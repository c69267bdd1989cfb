"""The model endpoint: chat completions with tools, through the async OpenAI client and its own retries."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import openai
from openai import AsyncOpenAI

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """The model could not be reached or refused, after the SDK's retries. The message is safe to show."""


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


def make_openai(api_key: str | None, base_url: str | None, timeout: float, max_retries: int) -> AsyncOpenAI:
    # The SDK's aiohttp transport (aiohttp is ours already, for discord.py): about half the client CPU of its
    # default httpx one per call, which is most of what a busy bot spends. Local servers (Ollama, vLLM) take
    # any key; the SDK insists on one being set.
    return AsyncOpenAI(
        api_key=api_key or "not-set",
        base_url=base_url,
        timeout=timeout,
        max_retries=max_retries,
        http_client=openai.DefaultAioHttpClient(timeout=timeout),
    )


def _is_context_error(exc: openai.BadRequestError) -> bool:
    code = getattr(exc, "code", None) or ""
    text = str(exc).lower()
    return code == "context_length_exceeded" or "context length" in text or "context_length" in text


def _refused(exc: BaseException) -> bool:
    """Whether a "timeout" was in fact a refused or failed connection. The aiohttp transport maps every
    aiohttp connection error, a refused port included, to a connect timeout; the OS error is kept as the
    cause. (TimeoutError is an OSError too, and a real timeout.)"""
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


class ModelClient:
    def __init__(self, client: AsyncOpenAI, model: str) -> None:
        self.client = client
        self.model = model

    async def chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *, force_tool: bool = False
    ) -> ChatResult:
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        if tools:
            kwargs["tools"] = tools
            kwargs["tool_choice"] = "required" if force_tool else "auto"
        try:
            # Our messages and tools are already plain API JSON. `chat.completions.create` would walk all of
            # them against its typed parameters on every call (~6 ms for a short conversation, growing with
            # it: a third of the bot's CPU per message); the client's generic POST sends them as they are,
            # with the same retries and errors. The answer comes back as its JSON, read by `_parse`: building
            # the typed ChatCompletion costs ~0.4 ms a call for the four fields we read.
            response = await self.client.post("/chat/completions", body=kwargs, cast_to=object)
        except openai.BadRequestError as exc:
            if _is_context_error(exc):
                raise ContextOverflow(str(exc)) from None
            raise ModelUnavailable(f"The model refused the request ({exc.status_code}).") from None
        except openai.AuthenticationError:
            raise ModelUnavailable("The model endpoint refused the API key.") from None
        except openai.RateLimitError:
            raise ModelUnavailable("The model is rate-limited right now.") from None
        except openai.APITimeoutError as exc:
            if _refused(exc):
                raise ModelUnavailable("The model endpoint cannot be reached.") from None
            raise ModelUnavailable("The model did not answer in time.") from None
        except openai.APIConnectionError:
            raise ModelUnavailable("The model endpoint cannot be reached.") from None
        except openai.APIStatusError as exc:
            raise ModelUnavailable(f"The model endpoint failed ({exc.status_code}).") from None
        except (openai.APIError, ValueError) as exc:
            # An unreadable answer (a 200 whose body is not JSON raises ValueError): garbage, not an outage.
            log.warning("unreadable model response: %s", type(exc).__name__)
            return ChatResult(None, [], None)
        return self._parse(response)

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
