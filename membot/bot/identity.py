"""Who is who: a platform user, within a scope, has exactly one agent."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ForeignKey, String, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from membot.agent.store.db import Database
from membot.agent.store.schema import Base


@dataclass(frozen=True)
class UserRef:
    """A person as a platform names them. `scope` is where their agent lives (the terminal, a Slack
    workspace; all of Discord, whose user ids are global), and their sources too unless `source_scope`
    says otherwise."""

    platform: str
    scope: str
    user_id: str
    display_name: str = ""
    #: Where the data sources this user sees live; f"{platform}:{scope}" unless the adapter says otherwise
    #: (a Discord user has one agent everywhere, but sources belong to the guild, or the DM, they came from).
    source_scope: str = ""

    def __post_init__(self) -> None:
        if not self.source_scope:
            object.__setattr__(self, "source_scope", f"{self.platform}:{self.scope}")

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity without the display name (which can change) and without where the user is talking."""
        return (self.platform, self.scope, self.user_id)

    @property
    def label(self) -> str:
        return f"{self.platform}:{self.display_name or self.user_id}"


class IdentityRow(Base):
    __tablename__ = "identities"

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(20))
    scope: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[str] = mapped_column(String(200))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))

    __table_args__ = (UniqueConstraint("platform", "scope", "user_id"),)


async def find_agent(db: Database, user: UserRef) -> int | None:
    query = select(IdentityRow.agent_id).where(
        IdentityRow.platform == user.platform,
        IdentityRow.scope == user.scope,
        IdentityRow.user_id == user.user_id,
    )
    return await db.scalar(query)


async def link_agent(db: Database, user: UserRef, agent_id: int) -> int:
    """Record user -> agent; if another process linked the user first, theirs wins and is returned."""
    try:
        row = IdentityRow(
            platform=user.platform,
            scope=user.scope,
            user_id=user.user_id,
            display_name=user.display_name[:200],
            agent_id=agent_id,
        )
        await db.add(row)
        return agent_id
    except IntegrityError:
        existing = await find_agent(db, user)
        if existing is None:
            raise
        return existing
