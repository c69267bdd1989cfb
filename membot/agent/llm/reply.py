"""A chat completion as the step loop uses it: the text, the tool calls, the prompt's size, and a reasoning
model's reasoning kept apart from the text (it is monologue: never shown to a user, never sent back)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_OPEN, _CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class ToolCallOut:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatResult:
    #: The assistant's text without its reasoning; None when nothing is left.
    content: str | None
    tool_calls: list[ToolCallOut]
    prompt_tokens: int | None
    #: A reasoning model's reasoning: <think> blocks in the text, and the `reasoning_content` or `reasoning`
    #: field servers send it in (vLLM, DeepSeek, Ollama, LM Studio, OpenRouter); None when there is none.
    reasoning: str | None = None
    #: Tokens the server says it generated (reasoning included); None when it does not say.
    completion_tokens: int | None = None


EMPTY = ChatResult(None, [], None)


def read_reply(data: Any) -> ChatResult:
    """The parts of a chat completion we use, read from its JSON as sent; anything malformed reads as an empty
    answer (the step loop tells the model to call a function)."""
    if not isinstance(data, dict):
        return EMPTY
    usage = data.get("usage")
    prompt_tokens = _count(usage, "prompt_tokens")
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
            ToolCallOut(_text(call.get("id")) or f"call_{len(calls)}", _text(function.get("name")),
                        _text(function.get("arguments")))
        )
    content, thoughts = split_reasoning(_text(message.get("content")))
    for field in ("reasoning_content", "reasoning"):
        said = _text(message.get(field)).strip()
        if said and said not in thoughts:  # some servers send both spellings, alike
            thoughts.append(said)
    return ChatResult(content, calls, prompt_tokens, "\n\n".join(thoughts) or None, _count(usage, "completion_tokens"))


def _count(usage: Any, name: str) -> int | None:
    value = usage.get(name) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def split_reasoning(text: str) -> tuple[str | None, list[str]]:
    """The text without its <think> blocks, and the blocks. An opening tag never closed (the answer was cut
    off while reasoning) makes all that follows it reasoning; a closing tag never opened (templates that put
    the opening tag in the prompt, as DeepSeek-R1's) makes all that precedes it reasoning."""
    if _OPEN not in text and _CLOSE not in text:
        return (text if text.strip() else None), []
    thoughts: list[str] = []
    head, closed, tail = text.partition(_CLOSE)
    if closed and _OPEN not in head:
        thoughts.append(head)
        text = tail
    thoughts.extend(_THINK.findall(text))
    text = _THINK.sub("", text)
    before, opened, after = text.partition(_OPEN)
    if opened:
        thoughts.append(after)
        text = before
    return (text.strip() or None), [t.strip() for t in thoughts if t.strip()]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
