"""Conversation threads: where a user started talking with the bot in a thread (a mention there, or a mention
the bot answered by opening one), their further messages in it reach their agent without a mention. Others
in the thread still mention the bot to be answered, and are then followed too. Kept in SQL, so every process
of the bot knows; looked up once per thread and user, then remembered (a bounded cache: a follow is never
undone)."""

from __future__ import annotations

from collections import OrderedDict

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from membot.agent.store.db import Database
from membot.agent.store.schema import ThreadRow, utcnow

CACHE = 10_000


class Threads:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._known: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    async def follow(self, platform: str, thread: str, user_id: str) -> None:
        """The user talks with the bot in this thread from now on (idempotent, race-free across processes)."""
        key = (platform, thread[:200], user_id[:200])
        if key in self._known:
            return
        insert = pg_insert if not self.db.is_sqlite else sqlite_insert
        statement = insert(ThreadRow).values(platform=key[0], thread=key[1], user_id=key[2], joined_at=utcnow())

        def work(session: Session) -> None:
            session.execute(statement.on_conflict_do_nothing())

        await self.db.write(work)
        self._remember(key)

    async def follows(self, platform: str, thread: str, user_id: str) -> bool:
        """Whether the user talks with the bot in this thread."""
        key = (platform, thread[:200], user_id[:200])
        if key in self._known:
            self._known.move_to_end(key)
            return True
        found = await self.db.scalar(select(ThreadRow.platform).where(
            ThreadRow.platform == key[0], ThreadRow.thread == key[1], ThreadRow.user_id == key[2]))
        if found is not None:
            self._remember(key)
        return found is not None

    async def forget_user(self, platform: str, user_id: str) -> None:
        """Drop every thread of the user (their agent is being deleted: nothing of them is kept)."""

        def work(session: Session) -> None:
            session.execute(delete(ThreadRow).where(ThreadRow.platform == platform, ThreadRow.user_id == user_id))

        await self.db.write(work)
        for key in [k for k in self._known if k[0] == platform and k[2] == user_id]:
            del self._known[key]

    def _remember(self, key: tuple[str, str, str]) -> None:
        self._known[key] = None
        while len(self._known) > CACHE:
            self._known.popitem(last=False)
