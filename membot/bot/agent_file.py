"""Letta's Agent File (`.af`, MemGPT's successor) read as a membot export, so a user moving from Letta keeps
their memory (see bot/portable.py, which calls `convert` on any file that is one).

What maps: the `persona` and `human` blocks (as core memory), any other block (kept as an archival passage
labelled with its name: membot's core memory has no free labels), every message of the conversation (user
messages, the agent's replies with their tool calls, tool results; Letta's MemGPT-style packed JSON user
messages keep their kind: login, heartbeat...), which of them were in the context window, their times, and the
agent's time zone. What does not: the system prompt (membot builds its own), tools and their code, model
settings, sources and files, groups. Archival passages are not in `.af` files yet (Letta's roadmap).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from membot.agent.messages import format_time

CORE_LABELS = ("persona", "human")


class AgentFileError(ValueError):
    """The Agent File cannot be read as one agent; the message says why."""


def is_agent_file(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("agents"), list) and "format" not in data


def convert(data: dict[str, Any], version: int) -> dict[str, Any]:
    """The Agent File's one agent as a membot export of format `version`."""
    agents = data["agents"]
    if len(agents) != 1 or not isinstance(agents[0], dict):
        raise AgentFileError(f"This Agent File holds {len(agents)} agents; membot imports files of one agent.")
    agent = agents[0]
    blocks = _blocks(data, agent)
    in_context = set(agent.get("in_context_message_ids") or [])
    messages = [m for m in (_message(raw, in_context) for raw in agent.get("messages") or []) if m is not None]
    _context_starts_clean(messages)
    # As old as the newest message: a passage newer than the last message looks like one of a step that died
    # before its commit, and would be cleared when the agent loads (Engine.load_agent).
    newest = messages[-1]["created_at"] if messages else None
    passages = [{"private": True, "text": f"[{label} block, from Letta] {value}", "filename": "", "page": 0,
                 "doc_hash": "", "created_at": newest} for label, value in blocks.items()
                if label not in CORE_LABELS and value.strip()]
    zone = agent.get("timezone")
    return {
        "format": "membot-agent",
        "version": version,
        "user": None,
        "agent": {"name": str(agent.get("name") or "letta agent")[:200], "persona_name": "letta",
                  "human_name": "letta", "timezone": None if zone in (None, "", "UTC") else str(zone)[:64]},
        "core_blocks": [{"label": label, "value": blocks.get(label, "")} for label in CORE_LABELS],
        "messages": messages,
        "passages": passages,
        "wakeups": [],
        "sources": [],
        "files": [],
    }


def _blocks(data: dict[str, Any], agent: dict[str, Any]) -> dict[str, str]:
    """label -> value of the agent's blocks (those it names, else all the file's)."""
    wanted = set(agent.get("block_ids") or [])
    found: dict[str, str] = {}
    for block in list(data.get("blocks") or []) + list(agent.get("memory_blocks") or []):
        if isinstance(block, dict) and (not wanted or block.get("id") in wanted or "id" not in block):
            found[str(block.get("label") or "block")] = str(block.get("value") or "")
    return found


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "\n".join(str(p.get("text") or "") for p in parts if isinstance(p, dict) and p.get("type") == "text")


def _when(value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC).replace(tzinfo=None)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _message(raw: Any, in_context: set[Any]) -> dict[str, Any] | None:
    """One Letta message as a row of membot's recall memory; None for what membot makes itself (the system)."""
    if not isinstance(raw, dict) or raw.get("role") not in ("user", "assistant", "tool"):
        return None
    created = _when(raw.get("created_at"))
    text = _text(raw.get("content"))
    row: dict[str, Any] = {"role": raw["role"], "kind": "", "content": None, "tool_calls": None,
                           "tool_call_id": None, "name": None, "search_text": None, "created_at": created.isoformat(),
                           "in_context": raw.get("id") in in_context, "private": True, "place": "dm"}
    if raw["role"] == "user":
        packed = _packed(text)
        if packed is not None:
            row.update(kind=str(packed["type"]), content=text,
                       search_text=str(packed.get("message") or "") if packed["type"] == "user_message" else None)
        else:
            row.update(kind="user_message", search_text=text, content=json.dumps(
                {"type": "user_message", "message": text, "time": format_time(created)}, ensure_ascii=False))
    elif raw["role"] == "assistant":
        calls = [_call(c) for c in raw.get("tool_calls") or [] if isinstance(c, dict)]
        said = [_said(c) for c in calls]
        row.update(kind="assistant", content=text or None, tool_calls=calls or None,
                   search_text="\n".join(p for p in [text, *said] if p) or None)
    else:
        returns = [r for r in raw.get("tool_returns") or [] if isinstance(r, dict)]
        first = returns[0] if returns else {}
        result = text or json.dumps({"status": "OK" if first.get("status", "success") == "success" else "Failed",
                                     "message": str(first.get("func_response")), "time": format_time(created)})
        row.update(kind="tool_result", content=result, name=raw.get("name"),
                   tool_call_id=raw.get("tool_call_id") or first.get("tool_call_id"))
    return row


def _packed(text: str) -> dict[str, Any] | None:
    """A MemGPT-style user turn (`{"type": "user_message", "message": …}`), as membot stores them too."""
    try:
        packed = json.loads(text)
    except ValueError:
        return None
    return packed if isinstance(packed, dict) and isinstance(packed.get("type"), str) else None


def _call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {"id": str(call.get("id") or ""), "type": "function",
            "function": {"name": str(function.get("name") or ""), "arguments": str(function.get("arguments") or "{}")}}


def _said(call: dict[str, Any]) -> str:
    if call["function"]["name"] != "send_message":
        return ""
    try:
        return str(json.loads(call["function"]["arguments"]).get("message") or "")
    except (ValueError, AttributeError):
        return ""


def _context_starts_clean(messages: list[dict[str, Any]]) -> None:
    """The context window must not open on a tool result whose call was left out of it: such results leave it."""
    for row in messages:
        if not row["in_context"]:
            continue
        if row["role"] != "tool":
            return
        row["in_context"] = False
