"""The context window of one agent: the prompt of its next model call as its step's place allows, and room
made when it would not fit (summarise, then evict: MemGPT's queue manager). A part of `Agent`, kept apart:
the step loop (agent.py) asks for a prompt; this decides what it holds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from membot.agent import messages as msg
from membot.agent.context.summarizer import fallback_summary, summarise
from membot.agent.context.tokens import TokenCalibration
from membot.agent.context.window import (
    ContextQueue,
    MemoryStats,
    PromptBudget,
    choose_eviction,
    summary_message,
    system_message,
)
from membot.agent.memory.archival import ArchivalMemory
from membot.agent.memory.core import CoreMemory
from membot.agent.memory.entities import TOP_ENTITIES, TopEntities, render_entities
from membot.agent.memory.recall import RecallMemory
from membot.agent.place import Place
from membot.agent.sources.catalog import Attached, attached_names
from membot.agent.store import entities
from membot.agent.store.leases import check
from membot.agent.store.schema import AgentRow, utcnow

if TYPE_CHECKING:
    from membot.agent.engine import Engine


class WindowUpkeep:
    """What the context window needs of the agent; `Agent` has it all."""

    engine: Engine
    row: AgentRow
    id: int
    core: CoreMemory
    recall: RecallMemory
    archival: ArchivalMemory
    calibration: TokenCalibration
    budget: PromptBudget
    context: ContextQueue
    place: Place
    _recall_count: int
    _sources: tuple[int, list[Attached]]
    _entities: TopEntities | None

    async def _stats(self, everything: bool = False) -> MemoryStats:
        """The memory statistics the prompt shows: the step's place decides which sources and entities are
        named, unless `everything` (for the user's own /memory)."""
        private = everything or self.place.private
        top = (await self._top_entities()).seen(private)
        return MemoryStats(self._recall_count, self.archival.own_count, await self._source_names(private),
                           render_entities(top))

    async def _top_entities(self) -> TopEntities:
        """The agent's most talked-about entities: read once, when a step or /memory first needs them after the
        agent loads (like its source names), then kept current from what each of its commits recorded (`_store`),
        so a step costs no query for them."""
        if self._entities is None:
            self._entities = await self.engine.db.read(self._read_entities)
        return self._entities

    def _read_entities(self, session: Session) -> TopEntities:
        now = utcnow()
        return TopEntities(entities.top(session, self.id, private=False, now=now, limit=TOP_ENTITIES),
                           entities.top(session, self.id, private=True, now=now, limit=TOP_ENTITIES),
                           TOP_ENTITIES)

    async def _source_names(self, private: bool) -> list[str]:
        """Names of the attached sources the step's place may name (a private source's only in private), for
        the prompt: read again only after an attach, detach or delete."""
        changes = self.engine.catalog.changes
        if self._sources[0] != changes:
            self._sources = (changes, await self.engine.db.read(self._attached))
        return [name for name, is_private in self._sources[1] if private or not is_private]

    def _attached(self, session: Session) -> list[Attached]:
        return attached_names(session, [self.id]).get(self.id, [])

    def _prompt(self, stats: MemoryStats) -> tuple[list[dict[str, Any]], int]:
        """The prompt for the next call, and its size in tokens (tool schemas included, not calibrated). In a
        shared channel it holds nothing private: no private block, the shared summary, the shared messages."""
        private = self.place.private
        head = [system_message(self.engine.system_prompt, self.core, stats, private=private)]
        if private:
            summary = summary_message(self.row.summary, self.row.summary_hidden)
        else:
            summary = summary_message(self.row.shared_summary, self.row.shared_hidden)
        if summary:
            head.append(summary)
        forms, tokens = self.context.seen(private)
        return head + forms, self.budget.size(head) + tokens

    def prompt_tokens(self, stats: MemoryStats) -> int:
        """The corrected size of the next prompt, tools included."""
        return self.calibration.correct(self._prompt(stats)[1])

    async def _fit(self, stats: MemoryStats, summarised: bool) -> tuple[list[dict[str, Any]], int, str | None]:
        """The prompt for the next call and its size, after summarising and evicting if it would not fit."""
        prompt, raw = self._prompt(stats)
        size = self.calibration.correct(raw)
        if size <= self.budget.limit:
            return prompt, raw, None
        # Free half of the room the queue may use, so that summaries are rare, not every turn.
        fixed = self.calibration.correct(self.budget.size(prompt[:1]))
        target = fixed + max(0, self.budget.limit - fixed) // 2
        note = await self._evict(size - target, stats, use_model=not summarised)
        return (*self._prompt(stats), note)

    async def _evict(self, to_free: int, stats: MemoryStats, use_model: bool = True) -> str:
        # What a shared channel's step does not see frees nothing of its prompt (agent/place.py): eviction goes
        # on past it, oldest first, until the messages the step sees have made room.
        shown = self.place.private
        sizes = [self.calibration.correct(tokens) if shown or not row.private else 0
                 for row, tokens in zip(self.context.rows, self.context.sizes, strict=True)]
        cut = choose_eviction(self.context.rows, sizes, to_free, self.engine.config.keep_recent_messages)
        if cut == 0:
            return "nothing could be evicted."
        evicted = self.context.rows[:cut]
        summary, by_model = await self._summarise(self.row.summary, evicted, use_model)
        shared = [row for row in evicted if not row.private]
        if not shared:
            shared_summary = self.row.shared_summary
        elif len(shared) == len(evicted) and self.row.shared_summary == self.row.summary:
            shared_summary = summary  # nothing private in either: one summary serves both
        else:
            shared_summary, _ = await self._summarise(self.row.shared_summary, shared, use_model)
        hidden, shared_hidden = self.row.summary_hidden + len(evicted), self.row.shared_hidden + len(shared)

        def store(session: Session) -> None:
            check(session, self.id, self.engine.leases.holder)
            self.recall.evict(session, [row.id for row in evicted])
            session.execute(
                update(AgentRow)
                .where(AgentRow.id == self.id)
                .values(summary=summary, summary_hidden=hidden, shared_summary=shared_summary,
                        shared_hidden=shared_hidden, pressure_alerted=False, version=AgentRow.version + 1)
            )

        await self.engine.db.write(store)
        self.row.version += 1
        self.row.summary, self.row.summary_hidden, self.row.pressure_alerted = summary, hidden, False
        self.row.shared_summary, self.row.shared_hidden = shared_summary, shared_hidden
        self.context.drop_oldest(cut)
        how = "summarised" if by_model else "set aside (the summary model call failed)"
        return f"{len(evicted)} old messages {how} and evicted from context; {hidden} hidden in all."

    async def _summarise(self, previous: str, rows: list[msg.Message], use_model: bool) -> tuple[str, bool]:
        """The summary of `previous` and `rows`, and whether the model wrote it."""
        if not use_model:
            return fallback_summary(previous, len(rows)), False
        return await summarise(self.engine.model, previous, rows, words=self.engine.config.summary_word_limit,
                               budget_tokens=self.budget.limit)
