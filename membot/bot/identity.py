"""Who is who: a platform user, within a scope, has exactly one agent."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from membot.agent.store.db import Database, Work
from membot.agent.store.schema import IdentityRow


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


async def find_agent(db: Database, user: UserRef) -> int | None:
    query = select(IdentityRow.agent_id).where(
        IdentityRow.platform == user.platform,
        IdentityRow.scope == user.scope,
        IdentityRow.user_id == user.user_id,
    )
    return await db.scalar(query)


async def owner(db: Database, agent_id: int) -> UserRef | None:
    """Who the agent belongs to, as their platform names them; None for an agent with no identity."""
    row = await db.read(lambda session: session.execute(
        select(IdentityRow.platform, IdentityRow.scope, IdentityRow.user_id, IdentityRow.display_name)
        .where(IdentityRow.agent_id == agent_id)
    ).first())
    return None if row is None else UserRef(row.platform, row.scope, row.user_id, row.display_name)


async def create_linked(db: Database, user: UserRef, create: Work[int]) -> tuple[int, bool]:
    """The user's agent made by `create` and linked to them in one transaction: (agent id, created). If another
    process linked the user first, the unique constraint refuses this link, nothing of it is kept, and theirs
    is returned."""

    def create_and_link(session: Session) -> int:
        agent_id = create(session)
        session.add(IdentityRow(platform=user.platform, scope=user.scope, user_id=user.user_id,
                                display_name=user.display_name[:200], agent_id=agent_id))
        session.flush()
        return agent_id

    try:
        return await db.write(create_and_link), True
    except IntegrityError:
        existing = await find_agent(db, user)
        if existing is None:
            raise
        return existing, False
