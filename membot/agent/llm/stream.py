"""A streamed chat completion, put together chunk by chunk (`stream: true`): the text, each tool call's name and
growing arguments, the reasoning, and the usage the last chunk carries where the server was asked for it
(`stream_options`). The whole is read as a non-streamed reply would be (reply.read_reply), so both paths give
the step loop the same ChatResult. Pure logic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from membot.agent.llm.reply import ChatResult, read_reply


@dataclass
class StreamedCall:
    id: str = ""
    name: str = ""
    #: The arguments' pieces as they came: joined when read, as joining on every chunk would copy a long
    #: argument once per chunk.
    pieces: list[str] = field(default_factory=list)
    #: How long the arguments are so far, known without joining them.
    length: int = 0

    @property
    def arguments(self) -> str:
        if len(self.pieces) > 1:
            self.pieces[:] = ["".join(self.pieces)]
        return self.pieces[0] if self.pieces else ""


@dataclass
class StreamedReply:
    content: str = ""
    reasoning: str = ""
    calls: dict[int, StreamedCall] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    #: The indices of the calls whose arguments grew with the last chunk.
    grown: set[int] = field(default_factory=set)
    #: A whole completion, from a server that answered the stream request without streaming.
    whole: Any = None

    def add(self, chunk: Any) -> None:
        """Fold one chunk in; anything malformed in it is ignored."""
        self.grown = set()
        if not isinstance(chunk, dict):
            self.whole = chunk  # read as a whole answer would be (and found malformed there)
            return
        choices = chunk.get("choices")
        if chunk.get("object") == "chat.completion" or (
            isinstance(choices, list) and choices and isinstance(choices[0], dict) and "message" in choices[0]
        ):
            self.whole = chunk
            return
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        first = choices[0] if isinstance(choices, list) and choices else None
        delta = first.get("delta") if isinstance(first, dict) else None
        if not isinstance(delta, dict):
            return
        self.content += _text(delta.get("content"))
        self.reasoning += _text(delta.get("reasoning_content")) or _text(delta.get("reasoning"))
        calls = delta.get("tool_calls")
        for part in calls if isinstance(calls, list) else []:
            if not isinstance(part, dict):
                continue
            index = part.get("index")
            index = index if isinstance(index, int) else len(self.calls)
            call = self.calls.setdefault(index, StreamedCall())
            call.id = call.id or _text(part.get("id"))
            function = part.get("function")
            if isinstance(function, dict):
                call.name += _text(function.get("name"))
                grown = _text(function.get("arguments"))
                if grown:
                    call.pieces.append(grown)
                    call.length += len(grown)
                    self.grown.add(index)

    def result(self) -> ChatResult:
        if self.whole is not None:
            return read_reply(self.whole)
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        if self.calls:
            message["tool_calls"] = [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for _, call in sorted(self.calls.items())
            ]
        return read_reply({"choices": [{"message": message}], "usage": self.usage})


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
