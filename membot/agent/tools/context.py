"""What a tool can reach: its own agent's memory and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from membot.agent.memory.core import CoreMemory
from membot.agent.memory.recall import RecallMemory
from membot.agent.place import Place

if TYPE_CHECKING:
    from membot.agent.config import EngineConfig
    from membot.agent.llm.client import ModelClient
    from membot.agent.memory.archival import ArchivalMemory


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
    #: Messages sent to the user by this call (send_message), in order.
    outbox: list[str] = field(default_factory=list)
    core_changed: bool = False
    heartbeats_paused_until: datetime | None = None
    #: Tells this process's scheduler that a wake-up was scheduled (Engine.wakeups.announce).
    announce_wakeup: Callable[[], None] = lambda: None
