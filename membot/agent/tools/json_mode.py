"""Functions for a model without tool support (MemGPT's way for local models): the functions are listed in the
system prompt, the model answers one JSON object `{"function": name, "arguments": {...}}` in its text, and
that object is read back as a tool call. The conversation is sent in plain roles, since such servers may
refuse `tool_calls` and `tool` messages in the history."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from membot.agent.llm.client import ChatResult, ModelClient, ToolCallOut

_OBJECT = re.compile(r"\{.*\}", re.DOTALL)

INSTRUCTIONS = (
    "Functions: you have no tool API. To call a function, answer with exactly one JSON object and nothing else: "
    '{"function": "<name>", "arguments": {...}}. The functions:'
)


async def chat_in_json(model: ModelClient, prompt: list[dict[str, Any]], schemas: list[dict[str, Any]]) -> ChatResult:
    """One model call in JSON mode: the functions listed after the system message, the history in plain roles, and
    the JSON object of the answer read back as its call."""
    head = dict(prompt[0], content=f"{prompt[0]['content']}\n\n{function_list(schemas)}")
    result = await model.chat([head, *plain_history(prompt[1:])], json_object=True)
    call = read_call(result.content)
    return result if call is None else ChatResult(None, [call], result.prompt_tokens, result.reasoning, result.completion_tokens)


def function_list(schemas: list[dict[str, Any]]) -> str:
    """The functions, one line each: name(arg: type*, …): description (* required), then each argument's."""
    lines = [INSTRUCTIONS]
    for schema in schemas:
        function = schema["function"]
        parameters = function.get("parameters", {})
        required = set(parameters.get("required", []))
        props = parameters.get("properties", {})
        args = ", ".join(f"{name}: {spec.get('type', 'any')}{'*' if name in required else ''}"
                         for name, spec in props.items())
        lines.append(f"- {function['name']}({args}): {function.get('description', '')}")
        lines.extend(f"    {name}: {spec.get('description', '')}" for name, spec in props.items())
    return "\n".join(lines)


def read_call(content: str | None) -> ToolCallOut | None:
    """The call a JSON-mode answer makes, or None when it holds none (plain text, or JSON of another shape).
    Tolerates text or a code fence around the object, as local models write it."""
    if not content:
        return None
    match = _OBJECT.search(content)
    if match is None:
        return None
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("function"), str):
        return None
    arguments = data.get("arguments", {})
    encoded = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return ToolCallOut(f"call_{uuid.uuid4().hex[:12]}", data["function"], encoded)


def plain_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The prompt's messages in plain roles: an assistant's tool calls become the JSON objects it answered, a
    tool result becomes a user message saying whose result it is."""
    plain = []
    names: dict[str, str] = {}  # call id -> function, to say whose result a tool message is
    for message in messages:
        role = message["role"]
        if role == "assistant" and message.get("tool_calls"):
            calls = message["tool_calls"]
            names.update((call["id"], call["function"]["name"]) for call in calls)
            objects = [json.dumps({"function": call["function"]["name"],
                                   "arguments": _loaded(call["function"]["arguments"])}, ensure_ascii=False)
                       for call in calls]
            plain.append({"role": "assistant", "content": "\n".join(objects)})
        elif role == "tool":
            name = names.get(message.get("tool_call_id") or "", "the function")
            plain.append({"role": "user", "content": f"Result of {name}: {message['content']}"})
        else:
            plain.append({"role": role, "content": message.get("content") or ""})
    return plain


def _loaded(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except (json.JSONDecodeError, TypeError):
        return arguments
