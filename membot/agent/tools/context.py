"""What a tool can reach: its own agent's memory and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.orm import Session

from membot.agent.memory.core import CoreMemory
from membot.agent.memory.recall import RecallMemory
from membot.agent.place import Place
from membot.agent.store.leases import check

if TYPE_CHECKING:
    from membot.agent.config import EngineConfig
    from membot.agent.llm.client import ModelClient
    from membot.agent.memory.archival import ArchivalMemory


T = TypeVar("T")


@dataclass
class ToolContext:
    agent_id: int
    core: CoreMemory
    recall: RecallMemory
    archival: ArchivalMemory
    config: EngineConfig
    #: The model endpoint, for message_chatgpt.
    model: ModelClient
    #: Where the step happens: a shared channel's step reaches nothing private (agent/place.py).
    place: Place
    #: The lease the step holds on its agent (store/leases.py): a tool's own writes commit only under it.
    holder: str
    #: Messages sent to the user by this call (send_message), in order.
    outbox: list[str] = field(default_factory=list)
    core_changed: bool = False
    heartbeats_paused_until: datetime | None = None
    #: Tells this process's scheduler that a wake-up was scheduled (Engine.wakeups.announce).
    announce_wakeup: Callable[[], None] = lambda: None

    async def write(self, work: Callable[[Session], T]) -> T:
        """Run a tool's own write (one not carried by the step's commit) in a transaction that first checks the
        step still holds its agent's lease, so that two processes never interleave one agent's writes."""

        def guarded(session: Session) -> T:
            check(session, self.agent_id, self.holder)
            return work(session)

        return await self.recall.db.write(guarded)
