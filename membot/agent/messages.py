"""Building the messages the model sees, and turning stored rows back into OpenAI chat messages.

As in MemGPT, events the model did not produce (a user's words, a heartbeat, a login, a system alert) reach it
as `user`-role messages holding a small JSON object with a `type` and the local time, so the model can tell
a person from the system.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from membot.agent.store.schema import utcnow


@dataclass(eq=False, slots=True)
class Message:
    """One message as an agent holds it: a plain record of a row of recall memory (the table is MessageRow).

    Not an ORM object: an agent makes a few per model call and keeps its whole context window of them, and they
    are never updated through a session (recall memory inserts them with one Core statement). A mapped object
    cost ten times as much to build and kept an instance state beside each one. Compared by identity, as rows
    are; a message's id is set once it is stored."""

    agent_id: int
    role: str  # user | assistant | tool | system
    kind: str  # user_message, heartbeat, login, system_alert, assistant, tool_result, ...
    content: str | None = None  # exactly what the model is shown
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    search_text: str | None = None  # plain text the conversation search indexes
    created_at: datetime = field(default_factory=utcnow)
    in_context: bool = True
    #: Said in a private conversation, and where (see agent/place.py): stamped by the step that stores it.
    private: bool = True
    place: str | None = None
    id: int | None = None


def format_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %I:%M:%S %p UTC")


def _packed(kind: str, created: datetime, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields, "time": format_time(created)}, ensure_ascii=False)


def user_message(agent_id: int, text: str, *, sender: str | None = None, where: str | None = None) -> Message:
    """A user's words; `where` tells the model where they were said (a DM, a channel)."""
    now = utcnow()
    extra = {"from": sender} if sender else {}
    if where:
        extra["where"] = where
    return Message(
        agent_id=agent_id,
        role="user",
        kind="user_message",
        content=_packed("user_message", now, message=text, **extra),
        search_text=text,
        created_at=now,
    )


def event_message(agent_id: int, kind: str, text: str, **fields: Any) -> Message:
    """A system event (login, heartbeat, system_alert, upload notice) shown to the model as a user turn."""
    now = utcnow()
    return Message(
        agent_id=agent_id,
        role="user",
        kind=kind,
        content=_packed(kind, now, message=text, **fields),
        created_at=now,
    )


def assistant_message(
    agent_id: int,
    content: str | None,
    tool_calls: list[dict[str, Any]] | None,
    said: str | None = None,
    thoughts: str | None = None,
) -> Message:
    """The model's reply as stored: its text, its calls. What the agent thought (`thoughts`: in the text or in
    the calls' arguments) and what it said are searchable later; the calls themselves are not."""
    searchable = "\n".join(part for part in (thoughts or content, said) if part) or None
    return Message(
        agent_id=agent_id,
        role="assistant",
        kind="assistant",
        content=content or None,
        tool_calls=tool_calls or None,
        search_text=searchable,
        created_at=utcnow(),
    )


def tool_result(agent_id: int, call_id: str, name: str, ok: bool, result: str | None) -> Message:
    now = utcnow()
    body = {"status": "OK" if ok else "Failed", "message": result if result is not None else "None",
            "time": format_time(now)}
    return Message(
        agent_id=agent_id,
        role="tool",
        kind="tool_result",
        content=json.dumps(body, ensure_ascii=False),
        tool_call_id=call_id,
        name=name,
        created_at=now,
    )


def to_openai(row: Message) -> dict[str, Any]:
    message: dict[str, Any] = {"role": row.role, "content": row.content}
    if row.role == "assistant" and row.tool_calls:
        message["tool_calls"] = row.tool_calls
    if row.role == "tool":
        message["tool_call_id"] = row.tool_call_id
    return message


def describe(row: Message) -> str:
    """One line of a search result: time, who, what (line breaks shown as " / ")."""
    who = {"user": "user", "assistant": "you (assistant)"}.get(row.role, row.role)
    text = (row.search_text or row.content or "").replace("\r", " ").replace("\n", " / ")
    return f"[{format_time(row.created_at)}] {who}: {text}"
