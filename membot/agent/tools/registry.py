"""Tools are plain typed Python functions with a docstring. Their JSON schemas are derived here from the
signature (through a pydantic model, which also validates the model's arguments) and from the docstring's
summary and `Args:` section: written once, never twice.

A tool's first parameter may be the `ToolContext` (by annotation); it is passed in, not shown to the model.

The registry may add one parameter to every function, first and required: the inner monologue
(`THOUGHTS`). Models that send no text beside a tool call (OpenAI's current ones) think there instead; it is
taken out of the arguments before the function runs. Neither it nor `request_heartbeat` (`HEARTBEAT`, which a
tool declares in its signature only) carries a description: the system prompt explains both once, where a
description in every tool would cost its tokens on every call, once per tool.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

THOUGHTS = "inner_thoughts"
_THOUGHTS_SCHEMA = {"type": "string"}
HEARTBEAT = "request_heartbeat"

# "    name: description" or "    name (type): description", indented one level under "Args:".
_ARG_LINE = re.compile(r"^ {4}(\w+)(?: \([^)]*\))?:\s*(.*)$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary (text before `Args:`) and one description per argument (Google style)."""
    summary_lines: list[str] = []
    args: dict[str, str] = {}
    section = "summary"
    current: str | None = None
    for line in inspect.cleandoc(doc).splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            section, current = "args", None
            continue
        if stripped in ("Returns:", "Raises:", "Examples:"):
            section = "other"
            continue
        if section == "summary":
            summary_lines.append(stripped)
        elif section == "args":
            match = _ARG_LINE.match(line)
            if match:
                current = match.group(1)
                args[current] = match.group(2).strip()
            elif current and stripped:
                args[current] = f"{args[current]} {stripped}"
    summary = " ".join(" ".join(summary_lines).split())
    return summary, args


class ToolArgumentsError(ValueError):
    """The model's arguments do not fit the function; the message says what is expected."""


@dataclass
class Tool:
    name: str
    func: Callable[..., Awaitable[str | None]]
    params: type[BaseModel]
    schema: dict[str, Any]
    takes_context: bool
    #: The inner-monologue parameter this tool's schema carries (see `with_thoughts`), if any.
    thoughts: str | None = None

    def with_thoughts(self, name: str) -> Tool:
        """This tool with the monologue parameter `name` first in its schema, and required."""
        function = self.schema["function"]
        parameters = function["parameters"]
        schema = {**self.schema, "function": {**function, "parameters": {
            **parameters,
            "properties": {name: dict(_THOUGHTS_SCHEMA), **parameters.get("properties", {})},
            "required": [name, *parameters.get("required", [])],
        }}}
        return Tool(self.name, self.func, self.params, schema, self.takes_context, name)

    def split_thought(self, raw: str) -> tuple[str | None, str]:
        """The monologue the model wrote in these arguments (if it did, whatever else is wrong with them), and
        the arguments without it, for showing the call."""
        if self.thoughts is None or self.thoughts not in raw:
            return None, raw
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            return None, raw
        if not isinstance(data, dict):
            return None, raw
        thought = data.pop(self.thoughts, None)
        rest = json.dumps(data, ensure_ascii=False)
        return (thought.strip() or None if isinstance(thought, str) else None), rest

    def parse_arguments(self, raw: str | None) -> dict[str, Any]:
        """Validate the model's JSON arguments against the signature, the monologue taken out (a call without it
        is no error); errors say exactly what is wrong."""
        try:
            data = json.loads(raw) if raw and raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise ToolArgumentsError(
                f"The arguments for {self.name} are not valid JSON ({exc.msg} at position {exc.pos}). "
                f"Send a JSON object with: {self.signature_hint()}."
            ) from None
        if not isinstance(data, dict):
            raise ToolArgumentsError(f"The arguments for {self.name} must be a JSON object: {self.signature_hint()}.")
        if self.thoughts is not None:
            data.pop(self.thoughts, None)
        try:
            model = self.params.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}" for err in exc.errors()
            )
            raise ToolArgumentsError(
                f"Wrong arguments for {self.name}: {problems}. Expected: {self.signature_hint()}."
            ) from None
        return model.model_dump()

    def signature_hint(self) -> str:
        props = self.schema["function"]["parameters"].get("properties", {})
        required = set(self.schema["function"]["parameters"].get("required", []))
        return ", ".join(
            f"{name} ({spec.get('type', 'any')}{', required' if name in required else ''})"
            for name, spec in props.items()
        )


def _is_context(annotation: Any) -> bool:
    return getattr(annotation, "__name__", "") == "ToolContext"


def make_tool(func: Callable[..., Awaitable[str | None]]) -> Tool:
    summary, arg_docs = parse_docstring(func.__doc__ or "")
    if not summary:
        raise TypeError(f"tool {func.__name__} needs a docstring: it is the model's description of it")
    hints = get_type_hints(func)
    params = list(inspect.signature(func).parameters.values())
    takes_context = bool(params) and _is_context(hints.get(params[0].name))
    fields: dict[str, Any] = {}
    if HEARTBEAT in arg_docs:
        raise TypeError(f"tool {func.__name__}: {HEARTBEAT} is explained by the system prompt, not the docstring")
    for param in params[1:] if takes_context else params:
        if param.name not in arg_docs and param.name != HEARTBEAT:
            raise TypeError(f"tool {func.__name__}: argument {param.name!r} is not described in the docstring")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints[param.name], default)
    model = create_model(
        f"{func.__name__}_args",
        __config__=ConfigDict(extra="forbid", strict=False),
        **fields,
    )
    parameters = model.model_json_schema()
    # Validation forbids extra arguments anyway; the schema need not spend tokens on saying so.
    for key in ("title", "additionalProperties"):
        parameters.pop(key, None)
    for name, prop in parameters.get("properties", {}).items():
        # Optional arguments are simply not required; their defaults cost tokens and tell the model nothing.
        prop.pop("title", None)
        prop.pop("default", None)
        if name in arg_docs:
            prop["description"] = arg_docs[name]
    parameters.setdefault("required", [])
    schema = {
        "type": "function",
        "function": {"name": func.__name__, "description": summary, "parameters": parameters},
    }
    return Tool(func.__name__, func, model, schema, takes_context)


class ToolRegistry:
    def __init__(self, funcs: list[Callable[..., Awaitable[str | None]]], thoughts: str | None = THOUGHTS) -> None:
        """`thoughts`: the name of the monologue parameter added to every function, or None for none (the model
        thinks in its message's text)."""
        tools = [make_tool(func) for func in funcs]
        if thoughts is not None:
            tools = [tool.with_thoughts(thoughts) for tool in tools]
        self.tools = {tool.name: tool for tool in tools}
        # Built once: the same list goes with every call.
        self._schemas = [tool.schema for tool in self.tools.values()]

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)

    def schemas(self) -> list[dict[str, Any]]:
        return self._schemas

    def names(self) -> list[str]:
        return list(self.tools)
