"""What each agent's user spent, for the quotas: model tokens per UTC day and messages per minute, kept on the
agent's row so that every process counts the same. A step adds its tokens in the commit of each model call
(`SPEND_TOKENS`, part of the step's own statement); a message is counted when it is taken (`take_message`)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import bindparam, case, select, update
from sqlalchemy.orm import Session

from membot.agent.store.schema import AgentRow

_AGENTS = AgentRow.__table__

#: Column values for an UPDATE of agents with bind parameters `day` and `tokens`: a new day starts from zero.
SPEND_TOKENS = {
    "tokens_today": case(
        (_AGENTS.c.usage_day == bindparam("day"), _AGENTS.c.tokens_today + bindparam("tokens")),
        else_=bindparam("tokens"),
    ),
    "usage_day": bindparam("day"),
}


def today(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%d")


def this_minute(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M")


def take_message(session: Session, agent_id: int, minute: str) -> int:
    """Count one message in `minute`; how many the agent has had in it, this one included. One statement, so
    two processes counting at once both count."""
    result = session.connection().execute(
        update(_AGENTS)
        .where(_AGENTS.c.id == agent_id)
        .values(
            messages_this_minute=case(
                (_AGENTS.c.usage_minute == minute, _AGENTS.c.messages_this_minute + 1), else_=1
            ),
            usage_minute=minute,
        )
        .returning(_AGENTS.c.messages_this_minute)
    )
    return int(result.scalar_one())


def tokens_on(session: Session, agent_id: int, day: str) -> int:
    """Model tokens the agent spent on `day`."""
    row = session.connection().execute(
        select(_AGENTS.c.usage_day, _AGENTS.c.tokens_today).where(_AGENTS.c.id == agent_id)
    ).first()
    return int(row.tokens_today) if row is not None and row.usage_day == day else 0
