"""What one step commits at a time, as data: the event that started it, or what one model call changed (its
messages, core memory edits, the agent's state). The step awaits each as one transaction before it goes on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from membot.agent.memory.entities import Entity
from membot.agent.memory.recall import check_owner, insert_messages
from membot.agent.messages import Message
from membot.agent.store import entities
from membot.agent.store.leases import check
from membot.agent.store.schema import AgentRow, BlockRow
from membot.agent.store.usage import SPEND_TOKENS, today


class Stored(NamedTuple):
    """What a StepWrite's commit tells the step: whether it was asked to stop (/cancel), and the entities its
    messages named, as recorded (for the agent's top list)."""

    cancelled: bool
    entities: list[Entity]


@dataclass(frozen=True, slots=True)
class StepWrite:
    """Messages to store for one agent, its core memory blocks' new values, and columns of its agent row to set,
    committed only while `holder` holds the agent's lease (else LeaseLost, and nothing lands). Every statement is
    bound to `agent_id`, and every message must be that agent's (checked when made). Raises the agent's version,
    and adds `tokens` to what the agent spent on `day` (store/usage.py). The entities the messages name are
    counted in the same transaction, so each message counts once, and only if it is stored (store/entities.py).
    Returns whether the step was asked to stop (/cancel), and the entities recorded."""

    agent_id: int
    holder: str
    messages: Sequence[Message] = ()
    blocks: Mapping[str, str] = field(default_factory=dict)
    state: Mapping[str, Any] = field(default_factory=dict)
    tokens: int = 0
    day: str = ""

    def __post_init__(self) -> None:
        check_owner(self.agent_id, self.messages)

    def __call__(self, session: Session) -> Stored:
        cancelled = check(session, self.agent_id, self.holder)
        insert_messages(session, self.messages)
        recorded = entities.record(session, self.agent_id, self.messages)
        conn = session.connection()
        if self.blocks:
            conn.execute(_BLOCK_VALUE, [{"agent": self.agent_id, "block": label, "value": value}
                                        for label, value in self.blocks.items()])
        conn.execute(_AGENT_STATE, {"agent": self.agent_id, "day": self.day or today(), "tokens": self.tokens,
                                    **self.state})
        return Stored(cancelled, recorded)


# Built once: building a statement costs about as much as running it. An execute's other keys are the
# columns to set.
_AGENTS, _BLOCKS = AgentRow.__table__, BlockRow.__table__
_AGENT_STATE = update(_AGENTS).where(_AGENTS.c.id == bindparam("agent")).values(version=_AGENTS.c.version + 1,
                                                                              **SPEND_TOKENS)
_BLOCK_VALUE = update(_BLOCKS).where(_BLOCKS.c.agent_id == bindparam("agent"), _BLOCKS.c.label == bindparam("block"))
