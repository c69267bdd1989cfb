"""The scripted model's streamed answers (`stream: true`), as OpenAI sends them: server-sent events, one
`chat.completion.chunk` each, the role first, then the reasoning, the text and each tool call (its id and name
first, its arguments in pieces), the finish reason, a last chunk with the usage when `stream_options` asked
for it, and `data: [DONE]`. A delay between chunks plays a slow model."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

#: Characters of text or arguments per chunk: real servers send a token or a few at a time.
PIECE = 8


#: At most this many chunks a part: a model's output is bounded by its token limit, so a huge scripted text
#: (a test's megabyte of arguments) goes in bigger pieces rather than in a hundred thousand chunks.
MAX_CHUNKS = 1000


def _pieces(text: str, size: int) -> list[str]:
    size = max(size, -(-len(text) // MAX_CHUNKS))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def chunks(completion: dict[str, Any], *, include_usage: bool, piece: int = PIECE) -> list[dict[str, Any]]:
    """The chunks that stream `completion` (a whole chat.completion as the scripted server builds it)."""
    head = {key: completion[key] for key in ("id", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"
    message = completion["choices"][0]["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        body = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            body["usage"] = None
        return body

    out = [chunk({"role": "assistant", "content": ""})]
    for field in ("reasoning_content", "reasoning"):
        if isinstance(message.get(field), str) and message[field]:
            out += [chunk({field: part}) for part in _pieces(message[field], piece)]
    if message.get("content"):
        out += [chunk({"content": part}) for part in _pieces(message["content"], piece)]
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        out.append(chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                          "function": {"name": function["name"], "arguments": ""}}]}))
        out += [chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
                for part in _pieces(function["arguments"], piece) if part]
    out.append(chunk({}, completion["choices"][0]["finish_reason"]))
    if include_usage:
        out.append({**head, "choices": [], "usage": completion["usage"]})
    return out


async def stream(request: web.Request, parts: list[dict[str, Any]], delay: float) -> web.StreamResponse:
    """Send `parts` as server-sent events, `delay` seconds apart."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for i, part in enumerate(parts):
        if delay and i:
            await asyncio.sleep(delay)
        await response.write(f"data: {json.dumps(part)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response
