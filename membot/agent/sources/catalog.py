"""Data sources in SQL: which exist in a scope, what files they hold, and which agents they are attached to.

Attaching links a source to an agent; passages are never copied (MemGPT copied them, and large sources hit
that wall). The passages themselves live in the archival store under the owner `source:<id>`.

Who sees and adds to a source (`visible`, `may_add`): a source loaded in a DM lives in its sender's private
scope (`<platform>:…:dm:<user>`) and is theirs alone; a shared one (loaded in a channel, a guild) is seen by
everyone of its scope, but only its owner and the bot's operators may add files to it, since its passages reach
the memory of every agent that attached it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, bindparam, delete, false, func, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from membot.agent.memory.archival import source_owner
from membot.agent.store.db import Database
from membot.agent.store.passages import PassageStore
from membot.agent.store.schema import AgentRow, AttachmentRow, DocumentRow, SourceRow

MAX_NAME = 100
#: What marks a private scope, one person's DMs: `discord:dm:<user>`, `slack:<team>:dm:<user>`.
PRIVATE_MARK = ":dm:"


class SourceError(ValueError):
    """A request about sources that cannot be met; the message is for the user."""


@dataclass(frozen=True)
class SourceInfo:
    id: int
    scope: str
    name: str
    files: int
    documents: int
    passages: int
    private: bool = False


def is_private_scope(scope: str) -> bool:
    """A DM's scope: what is loaded there is its sender's alone."""
    return PRIVATE_MARK in scope


def visible(scope: str, viewer: str) -> ColumnElement[bool]:
    """The sources `viewer` (an owner key, "platform:scope:user") may list and attach from `scope`: the shared
    ones of that scope, and their own private ones wherever they were loaded. A private source with no owner
    (loaded in a DM before owners were kept) is seen only from its own scope, which is its sender's DM."""
    here = and_(SourceRow.scope == scope, or_(SourceRow.private == false(), SourceRow.owner.is_(None)))
    return or_(here, and_(SourceRow.private == true(), SourceRow.owner == viewer))


def may_add(source: SourceRow, viewer: str, *, is_admin: bool) -> bool:
    """Whether `viewer` may add files to `source`. A private source: its owner (one with no owner lives in the
    DM scope of the one who loaded it, so whoever reaches it is them). A shared source: its owner and the bot's
    operators; one from before owners were kept (owner None), operators only. Anyone else could slip passages
    into the memory of every agent that attached it."""
    if source.private:
        return source.owner is None or source.owner == viewer
    return is_admin or (source.owner is not None and source.owner == viewer)


def clean_name(name: str) -> str:
    cleaned = " ".join((name or "").split())
    if not cleaned:
        raise SourceError("A source needs a name.")
    if len(cleaned) > MAX_NAME:
        raise SourceError(f"A source name may be at most {MAX_NAME} characters.")
    if any(ord(ch) < 32 for ch in cleaned):
        raise SourceError("A source name may not contain control characters.")
    return cleaned


# Built once: read for every agent that loads.
_ATTACHED = (
    select(AttachmentRow.agent_id, SourceRow.name, SourceRow.private)
    .join(SourceRow, AttachmentRow.source_id == SourceRow.id)
    .where(AttachmentRow.agent_id.in_(bindparam("agents", expanding=True)))
    .order_by(AttachmentRow.agent_id, SourceRow.name)
)


#: An attached source's name, and whether it is private (named only in private steps).
Attached = tuple[str, bool]


def attached_names(session: Session, agent_ids: Sequence[int]) -> dict[int, list[Attached]]:
    """The sources attached to each of these agents, by name, sorted; agents with none are left out."""
    names: dict[int, list[Attached]] = {}
    for agent_id, name, private in session.execute(_ATTACHED, {"agents": list(agent_ids)}):
        names.setdefault(agent_id, []).append((name, bool(private)))
    return names


class SourceCatalog:
    def __init__(self, db: Database, passages: PassageStore) -> None:
        self.db = db
        self.passages = passages
        #: Bumped by every attach, detach and delete in this process, so agents can cache their source names.
        self.changes = 0

    async def find(self, scope: str, name: str) -> SourceRow | None:
        query = select(SourceRow).where(SourceRow.scope == scope, SourceRow.name == name)
        return await self.db.scalar(query)

    async def require(self, scope: str, name: str) -> SourceRow:
        source = await self.find(scope, clean_name(name))
        if source is None:
            names = [s.name for s in await self.list(scope)]
            known = f" Sources here: {', '.join(names)}." if names else " There are no sources here yet."
            raise SourceError(f"There is no source called {name[:MAX_NAME]!r}.{known}")
        return source

    async def resolve(self, scope: str, viewer: str, name: str) -> SourceRow:
        """The source called `name` that `viewer` may see from `scope` (see `visible`); one of that scope
        before one of their private ones elsewhere. A source they may not see is reported like a missing one."""
        cleaned = clean_name(name)
        query = select(SourceRow).where(SourceRow.name == cleaned, visible(scope, viewer))
        found = sorted(await self.db.read(lambda session: list(session.scalars(query))), key=lambda s: s.scope != scope)
        if not found:
            names = sorted({s.name for s in await self.list(scope, viewer=viewer)}, key=str.lower)
            known = f" Sources you can attach: {', '.join(names)}." if names else " There are no sources here yet."
            raise SourceError(f"There is no source called {name[:MAX_NAME]!r}.{known}")
        return found[0]

    async def get_or_create(
        self, scope: str, name: str, *, owner: str | None = None, private: bool = False
    ) -> SourceRow:
        """The source `name` of `scope`, made for `owner` if new. An existing one is returned whoever owns it:
        the caller decides (`may_add`) whether they may add to it."""
        name = clean_name(name)
        existing = await self.find(scope, name)
        if existing:
            return existing
        try:
            row = SourceRow(scope=scope, name=name, owner=owner, private=private)
            await self.db.add(row)
            return row
        except IntegrityError:  # created meanwhile by another task or process
            found = await self.find(scope, name)
            assert found is not None
            return found

    async def list(
        self, scope: str | None = None, *, source_id: int | None = None, viewer: str | None = None
    ) -> list[SourceInfo]:
        """Sources with their sizes: all of `scope`, or with `viewer`, those they may see from it (`visible`)."""
        query = (
            select(
                SourceRow.id,
                SourceRow.scope,
                SourceRow.name,
                func.count(DocumentRow.id),
                func.coalesce(func.sum(DocumentRow.documents), 0),
                func.coalesce(func.sum(DocumentRow.passages), 0),
                SourceRow.private,
            )
            .outerjoin(DocumentRow, DocumentRow.source_id == SourceRow.id)
            .group_by(SourceRow.id)
            .order_by(SourceRow.scope, SourceRow.name)
        )
        if viewer is not None:
            query = query.where(visible(scope or "", viewer))
        elif scope is not None:
            query = query.where(SourceRow.scope == scope)
        if source_id is not None:
            query = query.where(SourceRow.id == source_id)
        rows = await self.db.rows(query)
        return [SourceInfo(*row) for row in rows]

    async def info(self, source_id: int) -> SourceInfo:
        found = await self.list(source_id=source_id)
        if not found:
            raise SourceError(f"source {source_id} is gone")
        return found[0]

    async def private_of(self, owner: str) -> list[SourceRow]:
        """The private sources of one owner (the files they sent in DMs)."""
        query = select(SourceRow).where(SourceRow.owner == owner, SourceRow.private.is_(True))
        return list(await self.db.read(lambda session: list(session.scalars(query))))

    async def delete_if_empty(self, source: SourceRow) -> bool:
        """Delete a source that holds no file (one made by a load whose files all failed); whether it did."""
        if (await self.info(source.id)).files:
            return False
        await self.delete(source.scope, source.name)
        return True

    async def delete(self, scope: str, name: str) -> SourceInfo:
        source = await self.require(scope, name)
        info = await self.info(source.id)
        # Passages first: a crash after this leaves an empty source to delete again, never orphan passages.
        await self.passages.delete(source_owner(source.id))

        def remove(session: Session) -> None:
            attached = select(AttachmentRow.agent_id).where(AttachmentRow.source_id == source.id)
            _changed(session, AgentRow.id.in_(attached))
            session.execute(delete(AttachmentRow).where(AttachmentRow.source_id == source.id))
            session.execute(delete(DocumentRow).where(DocumentRow.source_id == source.id))
            session.execute(delete(SourceRow).where(SourceRow.id == source.id))

        await self.db.write(remove)
        self.changes += 1
        return info

    # ----- files of a source ------------------------------------------------------------------------------

    async def has_file(self, source_id: int, content_hash: str) -> bool:
        query = select(DocumentRow.id).where(
            DocumentRow.source_id == source_id, DocumentRow.content_hash == content_hash
        )
        return await self.db.scalar(query) is not None

    async def record_file(self, source_id: int, filename: str, content_hash: str, documents: int, passages: int) -> None:
        row = DocumentRow(
            source_id=source_id,
            filename=filename[:500],
            content_hash=content_hash,
            documents=documents,
            passages=passages,
        )
        await self.db.add(row)

    # ----- attachments ------------------------------------------------------------------------------------

    async def attach(self, agent_id: int, source_id: int) -> bool:
        """Link; False when it was linked already."""
        def link(session: Session) -> None:
            session.add(AttachmentRow(agent_id=agent_id, source_id=source_id))
            session.flush()
            _changed(session, AgentRow.id == agent_id)

        try:
            await self.db.write(link)
            self.changes += 1
            return True
        except IntegrityError:
            return False

    async def detach(self, agent_id: int, source_id: int) -> bool:
        def unlink(session: Session) -> int:
            removed = session.execute(
                delete(AttachmentRow).where(AttachmentRow.agent_id == agent_id, AttachmentRow.source_id == source_id)
            ).rowcount
            _changed(session, AgentRow.id == agent_id)
            return removed

        removed = await self.db.write(unlink)
        self.changes += 1
        return bool(removed)


def _changed(session: Session, agents: ColumnElement[bool]) -> None:
    """Attached sources are part of what a loaded agent holds: a process that cached one of these agents loads
    it again (see AgentRow.version)."""
    session.execute(update(AgentRow).where(agents).values(version=AgentRow.version + 1))
