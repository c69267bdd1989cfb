"""What one step commits at a time, as data: the event that started it, or what one model call changed (its
messages, core memory edits, the agent's state). The step awaits each as one transaction before it goes on."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from membot.agent.memory.entities import Entity
from membot.agent.memory.recall import check_owner, insert_messages
from membot.agent.messages import Message
from membot.agent.store import entities
from membot.agent.store.leases import check, give_back
from membot.agent.store.schema import AgentRow, BlockRow
from membot.agent.store.usage import SPEND_TOKENS, today


class Stored(NamedTuple):
    """What a StepWrite's commit tells the step: whether it was asked to stop (/cancel), and the entities its
    messages named, as recorded (for the agent's top list)."""

    cancelled: bool
    entities: list[Entity]
    #: Keys read that no entity of the agent has, even after this write (see StepWrite.absent).
    absent: frozenset[str] = frozenset()


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
    #: The step's last commit: the lease is given back with it (store/leases.py, `give_back`).
    release: bool = False
    #: Keys the caller knows no entity of the agent has (learnt from earlier writes' `Stored.absent`): when the
    #: messages name only such entities, and only at the start of a sentence, nothing is counted or read.
    absent: Collection[str] = frozenset()
    #: The keys of the entities to read and count (store/entities.py); none: no entity is counted.
    keys: list[str] = field(init=False)

    def __post_init__(self) -> None:
        check_owner(self.agent_id, self.messages)
        object.__setattr__(self, "keys", entities.keys_to_read(self.messages, self.absent))

    def __call__(self, session: Session) -> Stored:
        cancelled = check(session, self.agent_id, self.holder)
        insert_messages(session, self.messages)
        stored = self._record(session, entities.of_keys(session, self.agent_id, self.keys), cancelled)
        conn = session.connection()
        if self.blocks:
            conn.execute(_BLOCK_VALUE, [{"agent": self.agent_id, "block": label, "value": value}
                                        for label, value in self.blocks.items()])
        conn.execute(_AGENT_STATE, {"agent": self.agent_id, "day": self.day or today(), "tokens": self.tokens,
                                    **self.state})
        if self.release:
            give_back(session, self.agent_id, self.holder)
        return stored

    def _record(self, session: Session, known: list[Any], cancelled: bool) -> Stored:
        """Count the named entities, from their rows `known` (read in this transaction)."""
        if not self.keys:
            return Stored(cancelled, [])
        recorded = entities.record(session, self.agent_id, self.messages, known)
        return Stored(cancelled, recorded, self._absent(known, recorded))

    def _absent(self, known: list[Any], recorded: list[Entity]) -> frozenset[str]:
        """The keys read that still have no entity: none was found, and none was made."""
        return frozenset(set(self.keys) - {row.key for row in known} - {entity.key for entity in recorded})


# Built once: building a statement costs about as much as running it. An execute's other keys are the
# columns to set.
_AGENTS, _BLOCKS = AgentRow.__table__, BlockRow.__table__
_AGENT_STATE = update(_AGENTS).where(_AGENTS.c.id == bindparam("agent")).values(version=_AGENTS.c.version + 1,
                                                                              **SPEND_TOKENS)
_BLOCK_VALUE = update(_BLOCKS).where(_BLOCKS.c.agent_id == bindparam("agent"), _BLOCKS.c.label == bindparam("block"))
