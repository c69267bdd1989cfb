"""The habits of real models, as modes of the scripted model server (``ScriptedModel(habits=...)``, or its
``habits`` attribute): each changes how a scripted reply is served, so the same script plays as a cooperative
model, as OpenAI's current models, as a stubborn text-only model, as a model without tool support, or as a
reasoning model.

- ``no_text``: OpenAI's current models: ``content: null`` beside tool calls. The scripted content (the monologue)
  goes into the called function's thought parameter when its schema in the request offers one: the first entry of
  its ``required`` list whose property is a string, when the scripted arguments lack it.
- ``parallel``: everything at once, as OpenAI's models do by default: a reply whose last call asks for a
  heartbeat is served together with the next scripted tool-call replies (their calls in one reply, the
  heartbeat left only on the last), with ``no_text``.
- ``text_only``: a stubborn model that answers in plain text (what its ``send_message`` would have said, else
  its monologue), leaving the scripted reply for the next request, except when the request says
  ``tool_choice: "required"``: then it makes its scripted call (a plain-text reply becomes a ``send_message``).
- ``no_tools``: Ollama with a model without tool support: every request carrying ``tools`` gets Ollama's 400;
  requests without them are served, a scripted call written as the one JSON object ``{"function": ...,
  "arguments": {...}}`` in the text (the monologue in the thought parameter the refused requests offered).
- ``think``, ``reasoning_content``, ``reasoning``: a reasoning model's reasoning (``SCRIPTED_REASONING``) as a
  <think> block before the text, or in that message field.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from tests.fakes.scripted_replies import ChatReply, ErrorReply, Reply, _make_call, ollama_no_tools, reasoned

Habit: TypeAlias = Literal["no_text", "parallel", "text_only", "no_tools", "think", "reasoning_content", "reasoning"]
HABITS: frozenset[str] = frozenset(Habit.__args__)  # type: ignore[attr-defined]
_REASONING = ("think", "reasoning_content", "reasoning")


def habits_of(value: Habit | tuple[Habit, ...] | list[Habit] | set[Habit] | frozenset[Habit] | None) -> frozenset[str]:
    """The habits named (one, or several together), checked."""
    named = frozenset() if value is None else frozenset([value] if isinstance(value, str) else value)
    unknown = named - HABITS
    if unknown:
        raise ValueError(f"unknown habits {sorted(unknown)}; choose from {sorted(HABITS)}")
    return named


@dataclass
class Served:
    """What to serve, and whether the scripted reply stays queued for the next request."""

    reply: ChatReply
    keep_scripted: bool = False


@dataclass
class HabitMemory:
    """What a model with habits remembers between requests: the thought parameter each function offered."""

    thought_params: dict[str, str] = field(default_factory=dict)


def refusal(habits: frozenset[str], body: dict[str, Any], memory: HabitMemory) -> ErrorReply | None:
    """The answer to a request before any scripted reply is taken: Ollama's refusal of tools."""
    if "no_tools" in habits and body.get("tools"):
        memory.thought_params.update(_thought_params(body))
        return ollama_no_tools(body)
    return None


def serve(
    habits: frozenset[str], reply: ChatReply, body: dict[str, Any], queue: deque[Reply], memory: HabitMemory
) -> Served:
    """`reply`, as a model with these habits serves it for this request."""
    offered = _thought_params(body)
    memory.thought_params.update(offered)
    thoughts: list[str | None] = [reply.content] + [None] * (len(reply.tool_calls) - 1)
    calls = list(reply.tool_calls)
    if "text_only" in habits:
        if body.get("tool_choice") != "required":
            if calls:
                return Served(ChatReply(_spoken(reply), fields=reply.fields), keep_scripted=True)
        elif not calls:
            calls, thoughts = [_make_call("send_message", {"message": reply.content or ""})], [None]
    elif "parallel" in habits and calls:
        while _asks_heartbeat(calls[-1]) and queue and isinstance(queue[0], ChatReply) and queue[0].tool_calls:
            following = queue.popleft()
            assert isinstance(following, ChatReply)
            calls[-1] = _without_heartbeat(calls[-1])
            thoughts += [following.content] + [None] * (len(following.tool_calls) - 1)
            calls += following.tool_calls
    content = reply.content
    if "no_tools" in habits and calls and not body.get("tools"):
        first = _with_thought(calls[0], thoughts[0], memory.thought_params)
        content, calls = json.dumps({"function": first["function"]["name"], "arguments": _arguments(first)}), []
    elif calls and habits & {"no_text", "parallel"}:
        content = None
        calls = [_with_thought(call, thought, offered) for call, thought in zip(calls, thoughts, strict=True)]
    served = ChatReply(content, tuple(calls), reply.fields)
    for how in _REASONING:
        if how in habits:
            served = reasoned(served, how)
    return Served(served)


def _thought_params(body: dict[str, Any]) -> dict[str, str]:
    """For each function the request offers, its thought parameter: the first required entry whose property is
    a string."""
    found: dict[str, str] = {}
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        parameters = function.get("parameters") if isinstance(function, dict) else None
        if not isinstance(parameters, dict):
            continue
        properties = parameters.get("properties") or {}
        for name in parameters.get("required") or []:
            if isinstance(properties.get(name), dict) and properties[name].get("type") == "string":
                found[str(function.get("name"))] = name
                break
    return found


def _arguments(call: dict[str, Any]) -> Any:
    try:
        return json.loads(call["function"]["arguments"])
    except (TypeError, ValueError):
        return call["function"]["arguments"]


def _with_thought(call: dict[str, Any], thought: str | None, offered: dict[str, str]) -> dict[str, Any]:
    """The call with `thought` in its function's thought parameter, if it offers one the call lacks."""
    param = offered.get(call["function"]["name"])
    arguments = _arguments(call)
    if not thought or param is None or not isinstance(arguments, dict) or param in arguments:
        return call
    filled = {param: thought, **arguments}
    return {**call, "function": {**call["function"], "arguments": json.dumps(filled, ensure_ascii=False)}}


def _asks_heartbeat(call: dict[str, Any]) -> bool:
    arguments = _arguments(call)
    return isinstance(arguments, dict) and arguments.get("request_heartbeat") is True


def _without_heartbeat(call: dict[str, Any]) -> dict[str, Any]:
    arguments = {k: v for k, v in _arguments(call).items() if k != "request_heartbeat"}
    return {**call, "function": {**call["function"], "arguments": json.dumps(arguments, ensure_ascii=False)}}


def _spoken(reply: ChatReply) -> str:
    """What a model that will not call functions says instead: its send_message's text, else its monologue."""
    for call in reply.tool_calls:
        arguments = _arguments(call)
        if call["function"]["name"] == "send_message" and isinstance(arguments, dict):
            return str(arguments.get("message", ""))
    return reply.content or "I would rather just talk."

