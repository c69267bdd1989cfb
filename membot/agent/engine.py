"""The engine: the shared parts every agent uses (database, archival store, model, embedder, tools), and the
creation and loading of agents. Built once per process and passed in; nothing here is global."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import partial

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from membot.agent import prompts
from membot.agent.agent import Agent
from membot.agent.config import EngineConfig, EngineConfigError
from membot.agent.context.tokens import TokenCounter
from membot.agent.llm.client import ModelClient
from membot.agent.llm.embeddings import Embedder
from membot.agent.llm.endpoint import open_endpoints
from membot.agent.memory.archival import agent_owner
from membot.agent.memory.core import Block, CoreMemory
from membot.agent.memory.recall import load_recall
from membot.agent.memory.term_stats import TermFrequencies
from membot.agent.place import PRIVATE_BLOCK
from membot.agent.sources.catalog import SourceCatalog, attached_names
from membot.agent.sources.loader import SourceLoader
from membot.agent.store import wakeups
from membot.agent.store.db import Database, Work
from membot.agent.store.deployment import owner_namespace
from membot.agent.store.leases import Leases
from membot.agent.store.passages import PassageStore, PassageStoreError
from membot.agent.store.schema import AgentRow, BlockRow
from membot.agent.tools import build_tools
from membot.agent.tools.registry import ToolRegistry

log = logging.getLogger(__name__)


class UnknownAgent(LookupError):
    pass


class Engine:
    def __init__(
        self,
        config: EngineConfig,
        db: Database,
        passages: PassageStore,
        model: ModelClient,
        embedder: Embedder,
        tools: ToolRegistry,
    ) -> None:
        self.config = config
        self.db = db
        self.passages = passages
        self.model = model
        self.embedder = embedder
        self.tools = tools
        self.counter = TokenCounter.for_model(config.model)
        self.tool_tokens = self.counter.tools(tools.schemas())
        self.system_prompt = prompts.system_prompt(config.inner_thoughts)
        #: Functions offered as a JSON object in the text, not through the tools API: set, or switched on when
        #: the server first refuses tools (see Agent._call_model).
        self.json_mode = config.tool_mode == "json"
        self.catalog = SourceCatalog(db, passages)
        self.terms = TermFrequencies()
        #: Which agents this process is running steps of (see store/leases.py).
        self.leases = Leases(db)
        #: Told when a wake-up is scheduled here, so that a sleeping scheduler wakes early.
        self.wakeups = wakeups.Signal()
        self.loader = SourceLoader(self.catalog, passages, embedder, max_bytes=config.max_file_bytes)

    @classmethod
    async def open(cls, config: EngineConfig) -> Engine:
        # First: a bad configuration opens nothing.
        tools = build_tools(config)
        db = await Database.open(config.database_url)
        try:
            # After the database, whose settings are said first; the SDK's clients connect on first use.
            chat, embed_endpoint = open_endpoints(config)
        except EngineConfigError:
            await db.close()
            raise
        # Opens on first use (see PassageStore); owners namespaced by this database's deployment.
        namespace = await owner_namespace(db)
        passages = PassageStore(config.milvus_uri, config.embedding_dim, config.milvus_token, namespace)
        return cls(
            config,
            db,
            passages,
            ModelClient(chat, config.model),
            Embedder(embed_endpoint, config.embedding_model, config.embedding_dim, config.embedding_batch_size),
            tools,
        )

    async def close(self) -> None:
        await self.passages.close()
        await self.db.close()
        await self.model.endpoint.close()
        if self.embedder.endpoint is not self.model.endpoint:
            await self.embedder.endpoint.close()

    def new_agent(self, name: str, persona: str, human: str) -> Work[int]:
        """A unit of work that creates an agent with the named persona and human texts and returns its id, to be
        committed with whatever else its caller writes (who the agent is for); raises UnknownPrompt for unknown
        names."""
        persona_text = prompts.load("personas", persona)
        human_text = prompts.load("humans", human)
        limit = self.config.core_memory_limit

        def create(session: Session) -> int:
            row = AgentRow(name=name[:200], persona_name=persona, human_name=human)
            session.add(row)
            session.flush()
            for label, value in (("persona", persona_text), ("human", human_text), (PRIVATE_BLOCK, "")):
                session.add(BlockRow(agent_id=row.id, label=label, value=value[:limit], char_limit=limit))
            session.flush()
            return row.id

        return create

    async def load_agent(self, agent_id: int) -> Agent:
        """The agent, as committed."""
        loaded = (await self.db.read(partial(self._load_rows, [agent_id]))).get(agent_id)
        if loaded is None:
            raise UnknownAgent(f"no agent {agent_id}")
        agent, newest = loaded
        if newest is not None and newest[0] != "tool":
            # A chain that ended cleanly ends on a function result. Anything else may be a step that died
            # between its archival insert (Milvus first) and its SQL commit: a passage newer than the last
            # commit was never seen stored by the agent, and goes.
            try:
                for private in (False, True):
                    await self.passages.delete_newer(agent_owner(agent_id, private=private),
                                                     newest[1].replace(tzinfo=UTC).timestamp())
            except PassageStoreError as exc:  # the agent can still talk; the next load tries again
                log.warning("could not clear uncommitted passages of agent %s: %s", agent_id, exc)
        return agent

    def _load_rows(
        self, agent_ids: list[int], session: Session
    ) -> dict[int, tuple[Agent, tuple[str, datetime] | None]]:
        """The agents, whole, each with the role and time of its newest message: one unit of work of a few
        set-based statements for them all. Building an Agent does no I/O."""
        changes = self.catalog.changes  # before the names are read: an attach meanwhile reads them again
        rows = session.scalars(_AGENTS, {"agents": agent_ids}).all()
        blocks: dict[int, dict[str, Block]] = {agent_id: {} for agent_id in agent_ids}
        for block in session.scalars(_BLOCKS, {"agents": agent_ids}):
            blocks[block.agent_id][block.label] = Block(block.label, block.value, block.char_limit)
        recall = load_recall(session, agent_ids)
        sources = attached_names(session, agent_ids)
        loaded = {}
        for row in rows:
            agent = Agent(self, row, CoreMemory(blocks[row.id]))
            agent.restore(recall[row.id], (changes, sources.get(row.id, [])))
            loaded[row.id] = (agent, recall[row.id].newest)
        return loaded


# Built once: building a statement costs about as much as running it.
_AGENTS = select(AgentRow).where(AgentRow.id.in_(bindparam("agents", expanding=True)))
_BLOCKS = (
    select(BlockRow)
    .where(BlockRow.agent_id.in_(bindparam("agents", expanding=True)))
    .order_by(BlockRow.agent_id, BlockRow.label)
)
