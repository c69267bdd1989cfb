"""A question found by conversation search brings its reply: the answer is what the searcher wants, and it
often shares no word with the search ("What inspired you to join?" — "I've always respected the military").

The reply is the next message a person wrote (role user, with text), whoever asked: the agent's question
("How was Oslo?") is answered by the user, and in a channel one person's question by the next. The agent's
own answer to a user's question is left out: it says what the agent knew already. For a person's question
this is the neighbour the search index holds it beside as its context (see the index triggers). The reply
takes the question's rank, just before it (ties go to the newer message), unless it already ranks higher;
the page keeps its size, so the last hit gives way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import aliased

from membot.agent.store.schema import MessageRow

# A question mark in Latin, CJK (full-width) and Arabic script.
QUESTION_MARKS = frozenset("?？؟")


class _Hit(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def search_text(self) -> str | None: ...


H = TypeVar("H", bound=_Hit)


def is_question(text: str | None) -> bool:
    return text is not None and any(mark in text for mark in QUESTION_MARKS)


def questions(rows: Sequence[_Hit]) -> list[int]:
    """The ids of the rows that ask something."""
    return [row.id for row in rows if is_question(row.search_text)]


def with_replies(rows: Sequence[H], replies: Mapping[int, H]) -> list[H]:
    """The ranked `rows`, each question's reply (`replies`: question id -> reply row) placed just before it
    unless placed already; a reply that is also a hit further down moves up, not twice."""
    out: list[H] = []
    placed: set[int] = set()
    for row in rows:
        if row.id in placed:
            continue
        reply = replies.get(row.id)
        if reply is not None and reply.id not in placed:
            out.append(reply)
            placed.add(reply.id)
        out.append(row)
        placed.add(row.id)
    return out


@lru_cache(maxsize=2)
def replies_statement(private: bool) -> Select[Any]:
    """For the questions :ids of agent :agent_id: (question id, then the reply's message columns). The reply is
    the next user message that has text (an index seek on ix_messages_agent_role), shared unless the step
    asking is `private`, and only if it was said where the question was: the next message of a busy agent
    may be someone else's, elsewhere (and looking further for one of the same place could walk its history)."""
    question, following, reply = aliased(MessageRow), aliased(MessageRow), aliased(MessageRow)
    visible = () if private else (following.private.is_(False),)
    next_id = (
        select(following.id)
        .where(following.agent_id == question.agent_id, following.role == "user",
               following.id > question.id, following.search_text.is_not(None), *visible)
        .order_by(following.id)
        .limit(1)
        .correlate(question)
        .scalar_subquery()
    )
    agent = bindparam("agent_id")
    return (
        select(question.id.label("question"), reply.id, reply.role, reply.kind, reply.search_text, reply.content,
               reply.created_at, reply.in_context, reply.private)
        .select_from(question)
        .join(reply, reply.id == next_id)
        .where(question.id.in_(bindparam("ids", expanding=True)), question.agent_id == agent,
               reply.agent_id == agent, reply.place.is_not_distinct_from(question.place))
    )
