"""SQL tables of the engine. Every table that holds an agent's data carries `agent_id`; the stores in
`agent/memory/` are built for one agent and filter every query on it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from membot.agent.memory.cjk import index_tokens

if TYPE_CHECKING:
    from sqlalchemy.engine.default import DefaultExecutionContext


def utcnow() -> datetime:
    """Naive UTC: SQLite keeps no zone, so every timestamp in the database is UTC without one."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Words(TypeDecorator[str]):
    """Text that people or models wrote. PostgreSQL's text cannot hold NUL, which a user can send (and a model
    repeat into core memory): it is stored as U+FFFD on both databases, instead of failing the commit."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


def words(length: int | None = None) -> Words:
    """`Words`, stored as VARCHAR(length) when a length is given, else as TEXT."""
    column = Words()
    if length is not None:
        column.impl = String(length)
    return column


class AgentRow(Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(words(200))
    persona_name: Mapped[str] = mapped_column(String(100))
    human_name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # Recursive summary of everything evicted from the context window, and how many messages it hides.
    summary: Mapped[str] = mapped_column(words(), default="")
    summary_hidden: Mapped[int] = mapped_column(Integer, default=0)
    # The same for shared channels: built from the evicted messages said outside DMs only (see agent/place.py).
    shared_summary: Mapped[str] = mapped_column(words(), default="", server_default=text("''"))
    shared_hidden: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    heartbeats_paused_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    # The agent's own archival passages, counted here with each step's commit: Milvus Lite needs ~1 s to
    # count 5,000 filtered rows.
    archival_passages: Mapped[int] = mapped_column(Integer, default=0)
    token_ratio: Mapped[float] = mapped_column(default=1.0)
    pressure_alerted: Mapped[bool] = mapped_column(Boolean, default=False)
    # Raised by every commit that changes what a loaded agent holds (a step, a persona, an attach): a process
    # that cached the agent compares it when it takes the agent's lease, and loads the agent again if another
    # process changed it meanwhile.
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What the agent's user spent, for the quotas (store/usage.py): model tokens on `usage_day` (UTC), and
    # messages in `usage_minute`. Written by Core statements only, never by flushing a loaded row.
    usage_day: Mapped[str | None] = mapped_column(String(10), nullable=True)
    tokens_today: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    usage_minute: Mapped[str | None] = mapped_column(String(16), nullable=True)
    messages_this_minute: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The user's time zone (IANA name), set by schedule_wakeup when the agent learns it; None means UTC.
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The user's choice of timed heartbeats (/heartbeats on|off), and the heartbeat-started messages they got on
    # `unsolicited_day` (their local date) for MEMBOT_UNSOLICITED_PER_DAY (bot/unsolicited.py).
    heartbeats_on: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    unsolicited_day: Mapped[str | None] = mapped_column(String(10), nullable=True)
    unsolicited_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class LeaseRow(Base):
    """Which process is running a step of an agent, until when (see store/leases.py). A row is the lease; a
    holder that died is known by its expiry."""

    __tablename__ = "agent_leases"

    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    # Set by /cancel (from any process); the step reads it back with each commit's lease check and stops.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class BlockRow(Base):
    __tablename__ = "core_blocks"

    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    label: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[str] = mapped_column(words(), default="")
    char_limit: Mapped[int] = mapped_column(Integer, default=2000)


def _search_cjk(context: DefaultExecutionContext) -> str | None:
    return index_tokens(context.get_current_parameters().get("search_text"))


class MessageRow(Base):
    """Recall memory: every message ever, never deleted. `in_context` marks the FIFO queue in the prompt."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(20))  # user | assistant | tool | system
    kind: Mapped[str] = mapped_column(String(30))  # user_message, heartbeat, login, system_alert, ...
    content: Mapped[str | None] = mapped_column(words(), nullable=True)  # exactly what the model is shown
    # none_as_null: no calls is SQL NULL (not the JSON text 'null'), whether written by the ORM or by Core.
    tool_calls: Mapped[list | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    tool_call_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    name: Mapped[str | None] = mapped_column(words(100), nullable=True)
    # Plain text the conversation search indexes (what the user said, what the agent said and thought).
    search_text: Mapped[str | None] = mapped_column(words(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    in_context: Mapped[bool] = mapped_column(Boolean, default=True)
    # Said in a private conversation (a DM, the terminal): shown to the model, and found by its searches, only
    # in private steps (agent/place.py). Messages from before places were kept count as private.
    private: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Where: "dm", or the shared channel's key as its adapter names it.
    place: Mapped[str | None] = mapped_column(words(300), nullable=True)
    # The CJK words of `search_text` the search index holds beside it (memory/cjk.py; None without CJK): made
    # here on every insert, ORM or Core, as the index's triggers cannot call Python.
    search_cjk: Mapped[str | None] = mapped_column(Text, nullable=True, default=_search_cjk)

    __table_args__ = (
        Index("ix_messages_agent_ctx", "agent_id", "in_context", "id"),
        Index("ix_messages_agent_time", "agent_id", "created_at"),
        # The search index's trigger looks up the previous message of the same agent and role.
        Index("ix_messages_agent_role", "agent_id", "role", "id"),
    )


class EntityRow(Base):
    """An entity the agent's conversation names (agent/memory/entities.py), in one scope: learnt in private
    conversations, or in shared ones. Named in both, it has a row in each, so a shared step sees only what was
    said where it is shared."""

    __tablename__ = "entities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(words(200))  # the normalised form mentions are matched by
    name: Mapped[str] = mapped_column(words(200))  # as most recently written
    aliases: Mapped[list] = mapped_column(JSON, default=list)  # its other written forms, newest first
    private: Mapped[bool] = mapped_column(Boolean)
    mentions: Mapped[int] = mapped_column(Integer, default=0)  # messages that name it
    weight: Mapped[float] = mapped_column(default=0.0)  # mentions decayed with recency, as of last_seen
    first_seen: Mapped[datetime] = mapped_column(DateTime)
    last_seen: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (UniqueConstraint("agent_id", "private", "key"),)


class EntityMentionRow(Base):
    """A message that names an entity: each is counted once, however often the message is recorded."""

    __tablename__ = "entity_mentions"

    entity_id: Mapped[int] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"), primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True,
                                            index=True)
    agent_id: Mapped[int] = mapped_column(Integer)


class IdentityRow(Base):
    """A platform user, within a scope, has exactly one agent (the unique constraint makes creating it
    race-free across processes)."""

    __tablename__ = "identities"

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(20))
    scope: Mapped[str] = mapped_column(words(200))
    user_id: Mapped[str] = mapped_column(words(200))
    display_name: Mapped[str] = mapped_column(words(200), default="")
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))

    __table_args__ = (UniqueConstraint("platform", "scope", "user_id"),)


class SourceRow(Base):
    """A data source: loaded documents, searchable by every agent it is attached to (linked, not copied)."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(words(200))
    name: Mapped[str] = mapped_column(words(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Who loaded it ("platform:scope:user"; None for sources from before owners were kept, and the CLI's):
    # only they and the operators may add to a shared source.
    owner: Mapped[str | None] = mapped_column(words(300), nullable=True)
    # Sent in a DM: its owner's alone, and searched only in private steps.
    private: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (UniqueConstraint("scope", "name"),)


class DocumentRow(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(words(500))
    content_hash: Mapped[str] = mapped_column(String(64))
    documents: Mapped[int] = mapped_column(Integer, default=0)
    passages: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("source_id", "content_hash"),)


class AttachmentRow(Base):
    __tablename__ = "agent_sources"

    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True)
    attached_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class DeploymentRow(Base):
    """This database's deployment: one row, made by its migration (see store/deployment.py). Its id names the
    database's passages in a Milvus that other membot databases may share."""

    __tablename__ = "deployment"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The database held agents or sources before deployments existed: their passages are in Milvus under the
    # plain owner names, which stay this deployment's.
    legacy_owners: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class SeenEventRow(Base):
    """A platform event already taken by one of the bot's processes (store/seen.py): a redelivery that reaches
    another process is dropped there too."""

    __tablename__ = "seen_events"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class WakeupRow(Base):
    """A scheduled wake-up of an agent (store/wakeups.py): a reminder it set, or its next timed heartbeat. Fired
    once: the process whose claim sets `fired_at` runs it; it is claimed again only if that step never finished."""

    __tablename__ = "wakeups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))  # reminder | heartbeat
    due_at: Mapped[datetime] = mapped_column(DateTime)
    note: Mapped[str] = mapped_column(words(), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    fired_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # Set when the step of a claim ended; a claim left unfinished long enough is fired once more (store/wakeups.py).
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (
        # What is due (pending first), and an agent's pending wake-ups.
        Index("ix_wakeups_due", "fired_at", "due_at"),
        Index("ix_wakeups_agent", "agent_id", "fired_at"),
    )


class ThreadRow(Base):
    """A conversation thread on a platform that a user holds with the bot (bot/threads.py): their messages there
    reach their agent without a mention."""

    __tablename__ = "conversation_threads"

    platform: Mapped[str] = mapped_column(String(20), primary_key=True)
    thread: Mapped[str] = mapped_column(String(200), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    joined_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class FactRow(Base):
    """A fact the agent learnt (store/facts.py): subject, relation, object, and when it held. A newer object for
    the same subject and relation supersedes it (valid_to, superseded_by); nothing is deleted but with the agent."""

    __tablename__ = "facts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(words(300))
    # Normalised as entity keys are, so a fact and an entity of the same name meet.
    subject_key: Mapped[str] = mapped_column(words(300))
    relation: Mapped[str] = mapped_column(String(60))
    object: Mapped[str] = mapped_column(words(300))
    object_key: Mapped[str] = mapped_column(words(300))
    # Learnt in a private step: only private steps see it (agent/place.py).
    private: Mapped[bool] = mapped_column(Boolean)
    valid_from: Mapped[datetime] = mapped_column(DateTime)
    recorded_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    valid_to: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    superseded_by: Mapped[int | None] = mapped_column(ForeignKey("facts.id"), nullable=True)

    __table_args__ = (
        Index("ix_facts_agent_subject", "agent_id", "subject_key"),
        Index("ix_facts_agent_object", "agent_id", "object_key"),
    )
