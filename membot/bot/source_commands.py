"""The data-source commands of the bot service (a part of BotService, kept apart): listing, attaching and
detaching sources, and loading an upload into one, as catalog.visible and catalog.may_add allow."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from membot.agent.events import Event
from membot.agent.sources.catalog import MAX_NAME, SourceError, SourceInfo, is_private_scope, may_add
from membot.agent.sources.loader import FileOutcome, Progress
from membot.agent.store.passages import PassageStoreError
from membot.agent.store.schema import SourceRow
from membot.bot.errors import CommandError
from membot.bot.identity import UserRef, find_agent
from membot.bot.service_parts import ServiceParts
from membot.bot.wording import counted

log = logging.getLogger("membot.bot.service")
audit = logging.getLogger("membot.audit")


class SourceCommands(ServiceParts):
    async def sources(self, user: UserRef) -> list[SourceInfo]:
        """The sources the user may see (for listings and autocomplete): the shared ones of their scope and
        their own private ones; never another user's private source (catalog.visible)."""
        return await self.engine.catalog.list(user.source_scope, viewer=uploader(user))

    async def attach(self, user: UserRef, name: str) -> tuple[str, AsyncIterator[Event]]:
        """Link a source the user may see to their agent. Returns a note for the user and the agent's
        reaction to the news (a system event naming the source and its size)."""
        return await self._attach_source(user, await self._visible_source(user, name))

    async def _visible_source(self, user: UserRef, name: str) -> SourceRow:
        """The source `name` as the user may see it; one they may not see is answered like a missing one."""
        try:
            return await self.engine.catalog.resolve(user.source_scope, uploader(user), name)
        except SourceError as exc:
            raise CommandError(str(exc)) from None

    async def _attach_source(self, user: UserRef, source: SourceRow) -> tuple[str, AsyncIterator[Event]]:
        agent_id, _ = await self.agent_id(user)
        info = await self.engine.catalog.info(source.id)
        if not await self.engine.catalog.attach(agent_id, source.id):
            return f"{info.name} is already attached.", no_events()
        note = (
            f"Attached {info.name} ({counted(info.passages, 'passage')} from {counted(info.documents, 'document')}) to your agent."
        )
        event = (
            f"The data source {info.name!r} was attached to your archival memory: {counted(info.passages, 'passage')} "
            f"from {counted(info.documents, 'document')}. archival_memory_search now searches it too."
        )
        return note, self.notify(agent_id, event)

    async def detach(self, user: UserRef, name: str) -> str:
        source = await self._visible_source(user, name)
        agent_id = await find_agent(self.engine.db, user)  # someone with no agent yet gets none made for this
        if agent_id is None or not await self.engine.catalog.detach(agent_id, source.id):
            return f"{source.name} was not attached."
        return f"Detached {source.name}; its passages are no longer searched by your agent."

    async def load_file(
        self,
        user: UserRef,
        filename: str,
        data: bytes,
        *,
        source_name: str | None = None,
        progress: Progress | None = None,
        is_admin: bool = False,
    ) -> tuple[FileOutcome, AsyncIterator[Event]]:
        """Load an upload as a source (named after the file unless given) and attach it to the uploader's
        agent. A failed file changes nothing and its outcome says why.

        A new name makes a new source owned by the uploader: private when their scope is a DM's, shared
        otherwise. An existing source takes the file only as catalog.may_add says: a shared one from its owner
        and the bot's operators (`is_admin`: DISCORD_ADMIN_IDS / SLACK_ADMIN_IDS, as the adapter knows them),
        one from before owners were kept from operators only. Anyone else is refused (CommandError) before
        anything is read: their passages would reach the memory of everyone who attached the source."""
        me = uploader(user)
        try:
            # A file names its source when none is given; long file names are common, so it is cut to fit.
            default = " ".join(filename.split())[:MAX_NAME]
            source = await self.engine.catalog.get_or_create(
                user.source_scope, source_name or default, owner=me, private=is_private_scope(user.source_scope)
            )
        except SourceError as exc:
            raise CommandError(str(exc)) from None
        if not may_add(source, me, is_admin=is_admin):
            audit.warning("upload of %s into source %s (%s) by %s refused: not its owner", filename, source.id,
                          source.name, me)
            raise CommandError(not_yours(source.name))
        async with self._uploads.hold(user.key):
            outcome = await self.engine.loader.load_bytes(source, filename, data, progress)
        if outcome.failed:
            await self._drop_if_empty(source)
            return outcome, no_events()
        _, events = await self._attach_source(user, source)
        return outcome, events

    async def _drop_if_empty(self, source: SourceRow) -> None:
        try:
            await self.engine.catalog.delete_if_empty(source)
        except (SourceError, PassageStoreError) as exc:  # an empty source left is harmless; the outcome says why
            log.warning("could not drop the empty source %s: %s", source.name, exc)


def uploader(user: UserRef) -> str:
    """The user as a source's owner is recorded: "platform:scope:user_id" (stable; no display name)."""
    return ":".join(user.key)


def not_yours(name: str) -> str:
    return (
        f"The source {name!r} belongs to someone else: only they and the bot's operators can add files to it. "
        "Nothing was loaded; upload your file under another name (rename it, or give /attach another source name)."
    )


async def no_events() -> AsyncIterator[Event]:
    return
    yield  # an empty async generator
