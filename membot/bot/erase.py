"""Deleting an agent and everything it holds: its SQL rows (every table), its own archival passages in Milvus
(both owners: `agent:<id>` and `agent:<id>:private`) and its sandbox folder. For /forget, for an import that
replaces an agent, and to undo an import that failed half way.

The caller holds the agent's lease (BotService does), so no step of it can write after the delete.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import datetime
from functools import partial
from pathlib import Path

from sqlalchemy import select

from membot.agent.engine import Engine
from membot.agent.memory.archival import agent_owner
from membot.agent.store import agent_data
from membot.agent.store.schema import AgentRow
from membot.agent.tools.sandbox import sandbox_dir


async def sandbox_of(engine: Engine, agent_id: int) -> Path | None:
    """The agent's sandbox folder (made or not), or None for an agent that is not there."""
    created_at: datetime | None = await engine.db.scalar(select(AgentRow.created_at).where(AgentRow.id == agent_id))
    return None if created_at is None else sandbox_dir(engine.config.sandbox_root, agent_id, created_at)


async def erase_passages(engine: Engine, agent_id: int) -> None:
    """The agent's own passages, shared and private. PassageStoreError if Milvus fails: nothing else is gone
    yet, so the whole delete can be tried again."""
    for private in (False, True):
        await engine.passages.delete(agent_owner(agent_id, private=private))


async def erase_agent(engine: Engine, agent_id: int) -> None:
    """Everything of the agent, Milvus first (the one part that can fail for outside reasons), then its folder,
    then its rows in one transaction."""
    folder = await sandbox_of(engine, agent_id)
    await erase_passages(engine, agent_id)
    if folder is not None:
        await asyncio.to_thread(shutil.rmtree, folder, True)
    await engine.db.write(partial(agent_data.erase, agent_id=agent_id))
    engine.catalog.changes += 1  # its attachments are gone
