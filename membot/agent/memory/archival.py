"""Archival memory of one agent: its own passages plus the data sources attached to it.

The owners an agent may see are worked out here, from its id and its attachments in SQL, for every call:
callers cannot widen them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from membot.agent.llm.embeddings import Embedder
from membot.agent.memory.paging import PAGE_SIZE, Page
from membot.agent.store.db import Database
from membot.agent.store.passages import PassageHit, PassageRow, PassageStore
from membot.agent.store.schema import AttachmentRow, SourceRow


def agent_owner(agent_id: int) -> str:
    return f"agent:{agent_id}"


def source_owner(source_id: int) -> str:
    return f"source:{source_id}"


@dataclass(frozen=True)
class ArchivalHit:
    hit: PassageHit
    source: str | None  # the data source's name, or None for the agent's own passage

    def describe(self) -> str:
        if self.source is None:
            when = datetime.fromtimestamp(self.hit.created_at, UTC).strftime("%Y-%m-%d %I:%M %p UTC")
            return f"[{when}] {self.hit.text}"
        where = self.hit.filename + (f", page {self.hit.page}" if self.hit.page else "")
        return f"[source {self.source}: {where}] {self.hit.text}"


class ArchivalMemory:
    def __init__(self, db: Database, store: PassageStore, embedder: Embedder, agent_id: int) -> None:
        self.db = db
        self.store = store
        self.embedder = embedder
        self.agent_id = agent_id
        self._own_count: int | None = None

    async def _scope(self) -> dict[str, str | None]:
        """owner -> source name (None for the agent's own passages)."""
        async with self.db.sessions() as session:
            rows = await session.execute(
                select(SourceRow.id, SourceRow.name)
                .join(AttachmentRow, AttachmentRow.source_id == SourceRow.id)
                .where(AttachmentRow.agent_id == self.agent_id)
            )
            scope: dict[str, str | None] = {agent_owner(self.agent_id): None}
            scope.update({source_owner(sid): name for sid, name in rows})
        return scope

    async def insert(self, text: str) -> int:
        embedding = await self.embedder.embed_one(text)
        ids = await self.store.insert(agent_owner(self.agent_id), [PassageRow(text=text, embedding=embedding)])
        if self._own_count is not None:
            self._own_count += 1
        return ids[0]

    async def search(self, query: str, page: int = 0, page_size: int = PAGE_SIZE) -> Page[ArchivalHit]:
        scope = await self._scope()
        owners = list(scope)
        total = await self.store.count(owners)
        if total == 0 or page * page_size >= total:
            return Page([], total, page, page_size)
        embedding = await self.embedder.embed_one(query)
        hits = await self.store.search(owners, query, embedding, page_size, page * page_size)
        return Page([ArchivalHit(hit, scope.get(hit.owner)) for hit in hits], total, page, page_size)

    async def count_own(self) -> int:
        # Counted once, then kept up to date here: only this agent writes its own passages, and a count
        # query per step would cost more than the rest of the step.
        if self._own_count is None:
            self._own_count = await self.store.count([agent_owner(self.agent_id)])
        return self._own_count

    async def count_all(self) -> int:
        return await self.store.count(list(await self._scope()))
