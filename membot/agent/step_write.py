"""What one step commits at a time, as data: the event that started it, or what one model call changed (its
messages, core memory edits, the agent's state).

Being data rather than a function, the commits of many agents that queued together run as one set of
statements in one savepoint (see group_commit.Batchable): in a burst of 200 users, unit after unit of work
took the GIL from the event loop hundreds of times over, and every reply waited for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from membot.agent.memory.recall import check_owner, insert_messages
from membot.agent.messages import Message
from membot.agent.store.schema import AgentRow, BlockRow

# Built once: building a statement costs as much as running it. The values to set are the execute parameters'
# other keys.
_AGENT_STATE = update(AgentRow.__table__).where(AgentRow.__table__.c.id == bindparam("agent"))
_BLOCK_VALUE = update(BlockRow.__table__).where(
    BlockRow.__table__.c.agent_id == bindparam("agent"), BlockRow.__table__.c.label == bindparam("block")
)


@dataclass(frozen=True, slots=True)
class StepWrite:
    """Messages to store for one agent, its core memory blocks' new values, and columns of its agent row to set.
    Every statement is bound to `agent_id`, and every message must be that agent's (checked when made)."""

    agent_id: int
    messages: Sequence[Message] = ()
    blocks: Mapping[str, str] = field(default_factory=dict)
    state: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_owner(self.agent_id, self.messages)

    def __call__(self, session: Session) -> None:
        self.run_together(session, [self])

    @classmethod
    def run_together(cls, session: Session, writes: Sequence[StepWrite]) -> None:
        """Run these writes, in order: one INSERT of all their messages (on SQLite, SQLAlchemy runs it row by row,
        to hand back the ids in order), one executemany UPDATE per kind of change."""
        insert_messages(session, [message for write in writes for message in write.messages])
        conn = session.connection()
        blocks = [{"agent": write.agent_id, "block": label, "value": value}
                  for write in writes for label, value in write.blocks.items()]
        if blocks:
            conn.execute(_BLOCK_VALUE, blocks)
        # One executemany per run of writes setting the same columns, so that the last of an agent's wins.
        changes = (write for write in writes if write.state)
        for _, same in groupby(changes, key=lambda write: tuple(write.state)):
            conn.execute(_AGENT_STATE, [{"agent": write.agent_id, **write.state} for write in same])
