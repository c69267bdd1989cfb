"""Archival memory of one agent: its own passages plus the data sources attached to it.

The owners an agent may see are worked out here, from its id, its attachments in SQL and whether the step is
private, for every call: callers cannot widen them. What the agent stores in a private conversation goes to
an owner of its own (`agent:<id>:private`), searched only in private steps, as are private sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select

from membot.agent.llm.embeddings import Embedder
from membot.agent.memory.paging import PAGE_SIZE, Page
from membot.agent.store.db import Database
from membot.agent.store.passages import PassageHit, PassageRow, PassageStore
from membot.agent.store.schema import AttachmentRow, DocumentRow, SourceRow


def agent_owner(agent_id: int, *, private: bool = False) -> str:
    return f"agent:{agent_id}:private" if private else f"agent:{agent_id}"


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
    def __init__(self, db: Database, store: PassageStore, embedder: Embedder, agent_id: int, own_count: int) -> None:
        self.db = db
        self.store = store
        self.embedder = embedder
        self.agent_id = agent_id
        #: The agent's own passages; the agent persists it with the step that inserted them.
        self.own_count = own_count

    async def _attached(self, private: bool) -> list[tuple[int, str, int]]:
        """(source id, name, passages) of the sources attached to this agent that a step may search (a private
        source only in a private step); the counts come from SQL."""
        query = (
            select(SourceRow.id, SourceRow.name, func.coalesce(func.sum(DocumentRow.passages), 0))
            .join(AttachmentRow, AttachmentRow.source_id == SourceRow.id)
            .outerjoin(DocumentRow, DocumentRow.source_id == SourceRow.id)
            .where(AttachmentRow.agent_id == self.agent_id)
            .group_by(SourceRow.id)
        )
        if not private:
            query = query.where(SourceRow.private.is_(False))
        rows = await self.db.rows(query)
        return [(sid, name, int(count)) for sid, name, count in rows]

    async def insert(self, text: str, *, private: bool) -> int:
        """Store a passage: the agent's own, or its private one when said in a private step."""
        embedding = await self.embedder.embed_one(text)
        owner = agent_owner(self.agent_id, private=private)
        ids = await self.store.insert(owner, [PassageRow(text=text, embedding=embedding)])
        # Sealed at once: Milvus Lite scans unsealed rows in Python, ~1 s per search at 5,000 of them.
        await self.store.flush()
        self.own_count += 1
        return ids[0]

    async def search(
        self, query: str, page: int = 0, page_size: int = PAGE_SIZE, *, private: bool
    ) -> Page[ArchivalHit]:
        """The agent's passages and its attached sources' that a step in a private conversation (or not) may
        see, best first."""
        attached = await self._attached(private)
        scope: dict[str, str | None] = {agent_owner(self.agent_id): None}
        if private:
            scope[agent_owner(self.agent_id, private=True)] = None
        scope.update({source_owner(sid): name for sid, name, _ in attached})
        owners = list(scope)
        # Totals from our own counts: a filtered count(*) in Milvus Lite costs ~1 s at 10,000 rows.
        total = self.own_count + sum(count for _, _, count in attached)
        if total == 0 or page * page_size >= total:
            return Page([], total, page, page_size)
        embedding = await self.embedder.embed_one(query)
        offset = page * page_size
        hits = await self.store.search(owners, query, embedding, page_size, offset)
        items = [ArchivalHit(hit, scope.get(hit.owner)) for hit in hits]
        return Page(items, _total(total, offset, len(items), page_size), page, page_size)


def _total(counted: int, offset: int, shown: int, page_size: int) -> int:
    """The total to report beside a page, never at odds with it. The counts in SQL can drift from Milvus
    (a delete that failed half way, passages cleared after a crash); the search itself is the truth: a short
    page is the last one, and a full page means at least that many."""
    if shown < page_size:
        return offset + shown if shown or offset == 0 else min(counted, offset)
    return max(counted, offset + shown)
