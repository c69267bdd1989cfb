"""What a user said in one shared place (a server, a channel), for a server's own admins when the operator
allows it: their messages there and nothing else. Private messages are excluded here, in the query, whatever
place is asked for."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from membot.agent.memory.recall import MESSAGE_FIELDS
from membot.agent.messages import Message
from membot.agent.store.schema import MessageRow


def said_in(session: Session, *, agent_id: int, prefix: str, limit: int) -> list[Message]:
    """The user's newest messages (at most `limit`, oldest first) whose place starts with `prefix`."""
    rows = session.execute(
        select(*MESSAGE_FIELDS)
        .where(MessageRow.agent_id == agent_id, MessageRow.private.is_(False), MessageRow.kind == "user_message",
               MessageRow.place.startswith(prefix, autoescape=True))
        .order_by(MessageRow.id.desc())
        .limit(limit)
    )
    return [Message(**row._mapping) for row in reversed(rows.all())]
