"""Memory users own, in the bot service (a part of BotService, kept apart): export, import and forget
(bot/portable.py, bot/erase.py), each under the agent's lock and lease."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from membot.agent.llm.errors import ModelUnavailable
from membot.agent.store.leases import AgentBusy, NoSuchAgent
from membot.agent.store.passages import PassageStoreError
from membot.bot import portable
from membot.bot.erase import erase_agent
from membot.bot.errors import BUSY_COMMAND, CommandError
from membot.bot.identity import UserRef, find_agent
from membot.bot.service_parts import ServiceParts
from membot.bot.source_commands import uploader

log = logging.getLogger("membot.bot.service")
audit = logging.getLogger("membot.audit")


class MemoryOwnership(ServiceParts):
    async def _whose_agent(self, requester: UserRef, target: UserRef | None, is_admin: bool,
                           what: str) -> tuple[UserRef, int]:
        """The agent a command about a user's whole memory is for: the requester's own, or (operators only)
        another user's, each such use of someone else's audited. None is made for it."""
        own = target is None or target.key == requester.key
        if not own and not is_admin:
            raise CommandError(f"Only the bot's operators can {what} another user's memory.")
        who = requester if own or target is None else target
        agent_id = await find_agent(self.engine.db, who)
        if agent_id is None:
            whose = "You have" if own else f"{who.display_name or who.user_id} has"
            raise CommandError(f"{whose} no agent here: there is nothing to {what}.")
        if not own:
            audit.warning("memory of %s:%s:%s: %s by %s:%s:%s", *who.key, what, *requester.key)
        return who, agent_id

    @asynccontextmanager
    async def _holding(self, agent_id: int) -> AsyncIterator[None]:
        """The agent's lock here and its lease everywhere: no step of it runs, or writes, meanwhile."""
        try:
            async with self._lock(agent_id), self.engine.leases.hold(agent_id):
                yield
        except AgentBusy:
            raise CommandError(BUSY_COMMAND) from None
        except NoSuchAgent:
            raise CommandError("That agent was just deleted; there is nothing left of it.") from None

    def _unlink(self, user: UserRef, agent_id: int) -> None:
        """Forget a deleted agent in this process: its cached copy and its user's link."""
        self._drop(agent_id)
        if self._linked.get(user.key) == agent_id:
            self._linked.pop(user.key)

    async def export_memory(self, requester: UserRef, target: UserRef | None = None, *,
                            is_admin: bool = False) -> tuple[str, bytes]:
        """Everything the requester's agent holds (an operator: anyone's) as one file: (file name, bytes)."""
        who, agent_id = await self._whose_agent(requester, target, is_admin, "export")
        try:
            async with self._holding(agent_id):
                data = await portable.export_agent(self.engine, agent_id, who)
        except PassageStoreError as exc:
            raise CommandError(f"The export needs the archival store, which failed: {exc}") from None
        raw, suffix = await asyncio.to_thread(portable.encode, data)
        return portable.file_name(who, suffix), raw

    async def import_memory(self, raw: bytes, user: UserRef | None = None, *, replace: bool = False) -> str:
        """An export restored as `user`'s agent (by default the user it was exported from); refused when they
        have one already, unless `replace`. What to tell whoever asked."""
        try:
            data = await asyncio.to_thread(portable.decode, raw)
        except portable.PortableError as exc:
            raise CommandError(str(exc)) from None
        if user is None:
            who = data.get("user")
            if not isinstance(who, dict) or not all(isinstance(who.get(k), str) for k in ("platform", "scope", "user_id")):
                raise CommandError("The export does not say whose it was; name the user to import it as.")
            user = UserRef(who["platform"], who["scope"], who["user_id"], str(who.get("display_name") or ""))
        existing = await find_agent(self.engine.db, user)
        if existing is not None and not replace:
            raise CommandError(portable.already_has(user))
        try:
            if existing is None:
                imported = await portable.import_agent(self.engine, data, user, None)
            else:
                async with self._holding(existing):
                    imported = await portable.import_agent(self.engine, data, user, existing)
                    self._unlink(user, existing)
        except portable.PortableError as exc:
            raise CommandError(str(exc)) from None
        except PassageStoreError as exc:
            raise CommandError(f"Nothing was imported: the archival store failed ({exc}).") from None
        except ModelUnavailable as exc:  # the passages are embedded again, before anything is written
            raise CommandError(f"Nothing was imported: the embeddings could not be made. {exc}") from None
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            # A hand-edited file whose values are not what an export holds (a time, a number, a record).
            raise CommandError(f"Nothing was imported: the file is not a valid membot export ({exc}).") from None
        self._remember(user, imported.agent_id)
        audit.warning("memory imported as %s:%s:%s (agent %s%s)", *user.key, imported.agent_id,
                      f", replacing agent {existing}" if existing is not None else "")
        return imported.describe(user.display_name or user.user_id)

    async def forget(self, requester: UserRef, target: UserRef | None = None, *, is_admin: bool = False) -> str:
        """Delete the requester's agent (an operator: anyone's) and everything it holds, under its lease; the
        adapters ask for a confirmation first."""
        who, agent_id = await self._whose_agent(requester, target, is_admin, "delete")
        try:
            async with self._holding(agent_id):
                await erase_agent(self.engine, agent_id)
                self._unlink(who, agent_id)
            await self.threads.forget_user(who.platform, who.user_id)
            # The files they sent privately are theirs alone: they go too (shared sources stay with their scope).
            for source in await self.engine.catalog.private_of(uploader(who)):
                await self.engine.catalog.delete(source.scope, source.name)
        except PassageStoreError as exc:
            raise CommandError(f"Nothing was deleted: the archival store failed ({exc}). Try again later.") from None
        audit.warning("agent %s of %s:%s:%s deleted by %s:%s:%s", agent_id, *who.key, *requester.key)
        whose = "Your agent" if who.key == requester.key else f"The agent of {who.display_name or who.user_id}"
        return (f"{whose} and everything it held are deleted: core memory, every message, its archival passages, "
                "its reminders, its files and the files sent to it privately. A new message starts a new agent.")


