"""The SQL database: engine, sessions, schema (with SQLite's FTS5 index for conversation search)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from membot.agent.config import EngineConfigError
from membot.agent.store.schema import Base

# Contentless FTS5 index over messages.search_text, with a second column holding the previous message of
# the same role (a turn often answers words said just before it; it is ranked at half weight). Porter
# stemming so "loves" finds "love". Messages are never updated or deleted, so one insert trigger suffices.
_FTS_DDL = (
    """CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
        search_text, context, content='', tokenize='porter unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER IF NOT EXISTS messages_fts_ai AFTER INSERT ON messages
        WHEN new.search_text IS NOT NULL BEGIN
        INSERT INTO messages_fts(rowid, search_text, context) VALUES (new.id, new.search_text,
            coalesce((SELECT search_text FROM messages WHERE agent_id = new.agent_id AND id < new.id
                      AND role = new.role AND search_text IS NOT NULL ORDER BY id DESC LIMIT 1), '')); END""",
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer; busy_timeout waits for the lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _ensure_folder(database_path: str) -> None:
    Path(database_path).expanduser().parent.mkdir(parents=True, exist_ok=True)


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.is_sqlite = engine.dialect.name == "sqlite"

    @classmethod
    async def open(cls, url: str) -> Database:
        try:
            parsed = make_url(url)
            kwargs: dict[str, Any] = {}
            if parsed.get_backend_name() == "sqlite":
                if parsed.database and parsed.database != ":memory:":
                    await asyncio.to_thread(_ensure_folder, parsed.database)
                kwargs["connect_args"] = {"timeout": 30}
            engine = create_async_engine(url, **kwargs)
        except (SQLAlchemyError, ValueError, ImportError, OSError) as exc:
            # A sync driver, a driver that is not installed, a folder that cannot be made.
            raise EngineConfigError(
                f"MEMBOT_DATABASE_URL is not usable ({exc.__class__.__name__}: {exc}); "
                "e.g. sqlite+aiosqlite:///path/membot.db or postgresql+asyncpg://user@host/db"
            ) from None
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        db = cls(engine)
        try:
            await db.create_schema()
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            raise EngineConfigError(f"Could not open the database at {parsed.render_as_string()}: {exc}") from None
        return db

    async def create_schema(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            if self.is_sqlite:
                for ddl in _FTS_DDL:
                    await conn.execute(text(ddl))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: everything in it commits together or not at all."""
        async with self.sessions() as session, session.begin():
            yield session

    async def close(self) -> None:
        await self.engine.dispose()
