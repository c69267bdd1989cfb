"""The SQL database: engine, units of work, schema (with SQLite's FTS5 index for conversation search).

Every unit of work is a plain function over a SQLAlchemy `Session`, awaited as one call: `await db.read(fn)`
or `await db.write(fn)` (committed when `fn` returns, rolled back if it raises). How it runs depends on the
database:

- SQLite is a library inside this process, so its calls block; they run on threads of their own, one hop
  there and back per unit of work. (Through aiosqlite every cursor operation is a hop of its own: about four
  per statement, eleven statements per user message, and the event loop paid for each.) Writes queue on one
  thread, in order, instead of contending for SQLite's write lock, and those queued together commit together
  (`GroupCommit`, group_commit.py); reads run beside them (WAL) on others.
- Any other SQLAlchemy async URL (PostgreSQL with asyncpg) runs the same function through the driver's
  event loop with `AsyncSession.run_sync`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Executable, Row, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from membot.agent.config import EngineConfigError
from membot.agent.store.group_commit import EarlierWriteFailed, GroupCommit, Work, WriteChain
from membot.agent.store.schema import Base

T = TypeVar("T")

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
# Reads that may run beside the writer on SQLite (searches at 100,000 messages take milliseconds).
SQLITE_READERS = 2


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer; busy_timeout waits for the lock (another process) instead of
    # failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # SQLAlchemy, not pysqlite, says where transactions begin (see `_sqlite_begin`): pysqlite's own implicit
    # BEGIN comes only before a data change, so a SAVEPOINT ahead of it would start (and its RELEASE end)
    # the transaction itself. This is SQLAlchemy's documented recipe for savepoints on pysqlite.
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")


def _end_failed_transaction(dbapi_connection: Any, _record: Any) -> None:
    # Without the pool's own rollback (see SqliteThreads), a COMMIT that failed would send the connection back
    # still inside its transaction (SQLite keeps it open when a deferred constraint or a full disk fails the
    # COMMIT), and every unit of work given that connection next would fail at its BEGIN.
    if dbapi_connection is not None and dbapi_connection.in_transaction:
        dbapi_connection.rollback()


def _create_schema(session: Session) -> None:
    Base.metadata.create_all(session.connection())
    if session.bind is not None and session.bind.dialect.name == "sqlite":
        for ddl in _FTS_DDL:
            session.execute(text(ddl))


class Runner(Protocol):
    """Where units of work run: SQLite threads, or an async driver."""

    dialect: str

    async def read(self, work: Work[T]) -> T: ...
    async def write(self, work: Work[T]) -> T: ...
    # Units of work begun on one chain run in the order they were begun; after one fails or is cancelled, the
    # rest fail unrun.
    def start_write(self, work: Work[T], chain: WriteChain | None = None) -> asyncio.Future[T]: ...
    # Someone waits for a unit of work begun with start_write: run it without waiting for others to join it.
    def hurry(self) -> None: ...
    async def close(self) -> None: ...


class SqliteThreads:
    def __init__(self, url: URL) -> None:
        memory = url.database in (None, "", ":memory:")
        # Sessions always end their transaction (commit, or rollback on close), so the pool's own rollback
        # after each commit is not needed. Connections move between our threads, one at a time.
        kwargs: dict[str, Any] = {
            "connect_args": {"timeout": 30, "check_same_thread": False},
            "pool_reset_on_return": None,
        }
        if memory:  # one connection holds the whole database: every unit of work shares it, on one thread
            kwargs["poolclass"] = StaticPool
        self.engine = create_engine(url.set(drivername="sqlite+pysqlite"), **kwargs)
        event.listen(self.engine, "connect", _sqlite_pragmas)
        event.listen(self.engine, "begin", _sqlite_begin)
        event.listen(self.engine.pool, "checkin", _end_failed_transaction)
        self.dialect = "sqlite"
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = GroupCommit(self._sessions)
        self._readers = None if memory else ThreadPoolExecutor(SQLITE_READERS, "membot-sql-read")

    async def read(self, work: Work[T]) -> T:
        if self._readers is None:  # in memory: the writer's connection is the database
            return await self._writer.submit(work)
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._read, work)

    async def write(self, work: Work[T]) -> T:
        return await self._writer.submit(work)

    def start_write(self, work: Work[T], chain: WriteChain | None = None) -> asyncio.Future[T]:
        return self._writer.start(work, chain, core=True)  # one writer thread, one queue: in order

    def hurry(self) -> None:
        self._writer.hurry()

    def _read(self, work: Work[T]) -> T:
        with self._sessions() as session:
            return work(session)

    async def close(self) -> None:
        await self._writer.close()
        await asyncio.to_thread(self.engine.dispose)
        if self._readers is not None:
            self._readers.shutdown(wait=False)


class AsyncDriver:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._started: set[asyncio.Future[Any]] = set()  # begun, not yet settled: close waits for them
        self._closed = False

    async def read(self, work: Work[T]) -> T:
        async with self._sessions() as session:
            return await session.run_sync(work)

    async def write(self, work: Work[T]) -> T:
        async with self._sessions.begin() as session:
            return await session.run_sync(work)

    def start_write(self, work: Work[T], chain: WriteChain | None = None) -> asyncio.Future[T]:
        if self._closed:  # nobody would wait for it
            raise RuntimeError("the database is closed")
        task = asyncio.ensure_future(self._in_turn(chain, work) if chain is not None else self.write(work))
        if chain is not None:
            task.add_done_callback(lambda done: _gap_if_cancelled(chain, done))
        self._started.add(task)
        task.add_done_callback(self._started.discard)
        return task

    def hurry(self) -> None:
        pass  # each write runs as soon as it is begun

    async def _in_turn(self, chain: WriteChain, work: Work[T]) -> T:
        # On one chain, in order, one at a time, as the SQLite writer thread runs them; chains run side by side.
        async with chain.turn():
            if chain.broken:
                raise EarlierWriteFailed("an earlier write of its caller failed")
            try:
                return await self.write(work)
            except Exception:
                chain.broken = True
                raise

    async def close(self) -> None:
        # Writes begun and not awaited (a step's last commit) land before the connections go.
        self._closed = True
        while self._started:
            await asyncio.wait(set(self._started))
        await self.engine.dispose()


def _gap_if_cancelled(chain: WriteChain, task: asyncio.Future[Any]) -> None:
    if task.cancelled():  # before it ran or midway: its write is not there, so the ones after it must not be
        chain.broken = True


class Database:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.is_sqlite = runner.dialect == "sqlite"

    @classmethod
    async def open(cls, url: str) -> Database:
        try:
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite":
                if parsed.database and parsed.database != ":memory:":
                    await asyncio.to_thread(_ensure_folder, parsed.database)
                runner: Runner = SqliteThreads(parsed)
            else:
                runner = AsyncDriver(create_async_engine(url))
        except (SQLAlchemyError, ValueError, ImportError, OSError) as exc:
            # A sync driver, a driver that is not installed, a folder that cannot be made.
            raise EngineConfigError(
                f"MEMBOT_DATABASE_URL is not usable ({exc.__class__.__name__}: {exc}); "
                "e.g. sqlite+aiosqlite:///path/membot.db or postgresql+asyncpg://user@host/db"
            ) from None
        db = cls(runner)
        try:
            await db.write(_create_schema)
        except (SQLAlchemyError, OSError) as exc:
            await runner.close()
            raise EngineConfigError(f"Could not open the database at {parsed.render_as_string()}: {exc}") from None
        return db

    async def read(self, work: Work[T]) -> T:
        """Run `work` for what it reads; nothing it does is committed."""
        return await self.runner.read(work)

    async def write(self, work: Work[T]) -> T:
        """One unit of work: everything `work` does commits together, or not at all if it raises."""
        return await self.runner.write(work)

    def start_write(self, work: Work[T], chain: WriteChain | None = None) -> asyncio.Future[T]:
        """`write(work)`, begun now and awaited later: the caller goes on while it commits. Units of work begun
        on one `chain` run in the order they were begun, so a caller may queue several without waiting; once
        one fails, the ones after it fail unrun (EarlierWriteFailed) instead of landing over the gap.

        `work` runs Core statements only, no ORM objects (on SQLite it runs in a plain savepoint; see
        GroupCommit.start): these are the commits of every step, behind every reply. On SQLite it may wait a
        moment (GROUP_WINDOW) for others to commit with; `landed` waits for it without that moment."""
        return self.runner.start_write(work, chain)

    async def landed(self, write: asyncio.Future[Any]) -> None:
        """Wait for a write begun with `start_write` to settle, without raising what it failed with (and
        without cancelling it if this wait is cancelled). It is committed as soon as the writer can: a write
        begun without waiting may otherwise wait a moment for others to commit with."""
        if not write.done():
            self.runner.hurry()
            await asyncio.wait((write,))

    # Shorthands for the one-statement units of work.
    async def scalar(self, statement: Executable) -> Any:
        return await self.read(lambda session: session.scalar(statement))

    async def rows(self, statement: Executable) -> list[Row[Any]]:
        return await self.read(lambda session: list(session.execute(statement)))

    async def add(self, *rows: Base) -> None:
        """Insert these ORM rows; they get their ids (and defaults) back."""
        await self.write(lambda session: session.add_all(rows))

    async def close(self) -> None:
        await self.runner.close()


def _ensure_folder(database_path: str) -> None:
    Path(database_path).expanduser().parent.mkdir(parents=True, exist_ok=True)
