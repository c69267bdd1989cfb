"""The SQL database: one SQLAlchemy engine, and units of work over it.

Every unit of work is a plain function over a SQLAlchemy `Session`, awaited as one call: `await db.read(fn)`
or `await db.write(fn)` (committed when `fn` returns, rolled back if it raises). Nothing that waits on the
database blocks the event loop:

- PostgreSQL: the function runs through `AsyncSession.run_sync`, on asyncpg's own I/O. Each statement is a
  network round trip, and so are BEGIN and its end: reads, and a function that writes with one statement
  (`write_one`), run in autocommit mode without them.
- SQLite: the whole function runs on a worker thread, over the standard library's sqlite3 driver. aiosqlite
  (which the URL names, and migrations still use) hops to its thread and back once per statement, and those
  hops, not SQLite, were most of a step's time: one hop per unit of work instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from alembic.util import CommandError as AlembicError
from sqlalchemy import Engine, Executable, Row, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from membot.agent.config import EngineConfigError
from membot.agent.store.migrate import upgrade
from membot.agent.store.schema import Base

T = TypeVar("T")
Work = Callable[[Session], T]

DIALECTS = ("sqlite", "postgresql")
# A write transaction on SQLite takes the write lock at BEGIN (see `_sqlite_begin`).
_WRITE = {"membot_write": True}
# SQLite's worker threads: reads run beside each other (WAL) and beside this process's one writer.
_SQLITE_THREADS = 4


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer; busy_timeout waits for the lock (another process) instead of
    # failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # SQLAlchemy, not the driver, says where transactions begin (see `_sqlite_begin`): the driver's own implicit
    # BEGIN comes only before a data change. SQLAlchemy's documented recipe for pysqlite and aiosqlite.
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: Any) -> None:
    # A write begins IMMEDIATE: a transaction that reads and then writes would otherwise find the lock taken
    # by another process at its first write, and fail with "database is locked" instead of waiting.
    immediate = connection.get_execution_options().get("membot_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _sqlite_events(engine: Engine) -> None:
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _sqlite_begin)


def sqlite_engine(url: str) -> AsyncEngine:
    """An async engine over a SQLite file, with the pragmas and transaction handling membot relies on."""
    engine = create_async_engine(url, connect_args={"timeout": 30})
    _sqlite_events(engine.sync_engine)
    return engine


def _sqlite_threaded(engine: AsyncEngine) -> Engine:
    """The same file through the standard library's driver, for units of work run whole on a worker thread.
    A connection is used by one thread at a time (the pool hands it out), not only by the one that made it."""
    url = engine.url.set(drivername="sqlite+pysqlite")
    sync = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                         pool_size=_SQLITE_THREADS, max_overflow=0)
    _sqlite_events(sync)
    return sync


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.is_sqlite = self.dialect == "sqlite"
        self._writes = async_sessionmaker(engine.execution_options(**_WRITE), expire_on_commit=False)
        self._autocommit = async_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"),
                                          expire_on_commit=False)
        # SQLite has one writer at a time: this process's writes queue here, in order, rather than in SQLite's
        # busy handler, which polls with sleeps. Other processes still wait in the busy handler.
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._threaded: Engine | None = None
        self._threads: ThreadPoolExecutor | None = None
        if self.is_sqlite:
            self._threaded = _sqlite_threaded(engine)
            self._threads = ThreadPoolExecutor(_SQLITE_THREADS, thread_name_prefix="membot-sqlite")
            self._sync_reads = sessionmaker(self._threaded, expire_on_commit=False)
            self._sync_writes = sessionmaker(self._threaded.execution_options(**_WRITE), expire_on_commit=False)

    @classmethod
    async def open(cls, url: str) -> Database:
        try:
            parsed = make_url(url)
            backend = parsed.get_backend_name()
            if backend not in DIALECTS:
                raise ValueError(f"membot runs on SQLite or PostgreSQL, not {backend}")
            if backend == "sqlite":
                if parsed.database in (None, "", ":memory:"):
                    raise ValueError("an in-memory SQLite database keeps nothing; name a file")
                await asyncio.to_thread(_ensure_folder, parsed.database)
                engine = sqlite_engine(url)
            else:
                # No pre-ping: a round trip on every unit of work to spare one failure after the server
                # restarted (SQLAlchemy drops the pool on a disconnect error; the next unit reconnects).
                engine = create_async_engine(url)
        except (SQLAlchemyError, ValueError, ImportError, OSError) as exc:
            # A sync driver, a driver that is not installed, a folder that cannot be made.
            raise EngineConfigError(
                f"MEMBOT_DATABASE_URL is not usable ({exc.__class__.__name__}: {exc}); "
                "e.g. sqlite+aiosqlite:///path/membot.db or postgresql+asyncpg://user@host/db"
            ) from None
        db = cls(engine)
        where = parsed.render_as_string(hide_password=True)
        try:
            await upgrade(engine)
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            raise EngineConfigError(f"Could not open the database at {where}: {exc}") from None
        except AlembicError as exc:  # a revision this membot does not know: a newer one migrated it
            await engine.dispose()
            raise EngineConfigError(
                f"The database at {where} was migrated by a newer membot ({exc}); run that version, or upgrade"
            ) from None
        return db

    async def read(self, work: Work[T]) -> T:
        """Run `work` for what it reads; it must not write. On PostgreSQL it runs in autocommit mode: in READ
        COMMITTED each statement reads what was committed before it began, inside a transaction or not, so BEGIN
        and ROLLBACK would only be two round trips more."""
        if self._threads is not None:
            return await asyncio.get_running_loop().run_in_executor(self._threads, self._read_here, work)
        async with self._autocommit() as session:
            return await session.run_sync(work)

    async def write(self, work: Work[T]) -> T:
        """One unit of work: everything `work` does commits together, or not at all if it raises."""
        if self._write_lock is None:
            return await self._write(work)
        async with self._write_lock:
            return await self._write(work)

    async def _write(self, work: Work[T]) -> T:
        if self._threads is not None:
            # A write cancelled while its thread runs still ends as its function says (committed or rolled
            # back): what is in the database stays the truth a reloaded agent reads.
            return await asyncio.get_running_loop().run_in_executor(self._threads, self._write_here, work)
        async with self._writes.begin() as session:
            return await session.run_sync(work)

    async def write_one(self, work: Work[T]) -> T:
        """A unit of work that writes with one SQL statement at most (reads may come before it), atomic as
        `write`'s. On PostgreSQL it runs in autocommit mode: a statement is a transaction of its own, and BEGIN
        and COMMIT would be two round trips more. In READ COMMITTED, which `write` runs in, that changes nothing
        else: each statement reads what was committed before it began either way, and a plain read locks nothing.
        Work that writes with more than one statement must go through `write`."""
        if self.is_sqlite:
            return await self.write(work)
        async with self._autocommit() as session:
            return await session.run_sync(work)

    # On a SQLite worker thread.
    def _read_here(self, work: Work[T]) -> T:
        with self._sync_reads() as session:
            return work(session)

    def _write_here(self, work: Work[T]) -> T:
        with self._sync_writes.begin() as session:
            return work(session)

    # Shorthands for the one-statement units of work.
    async def scalar(self, statement: Executable) -> Any:
        return await self.read(lambda session: session.scalar(statement))

    async def rows(self, statement: Executable) -> list[Row[Any]]:
        return await self.read(lambda session: list(session.execute(statement)))

    async def add(self, *rows: Base) -> None:
        """Insert these ORM rows; they get their ids (and defaults) back."""
        await self.write(lambda session: session.add_all(rows))

    async def close(self) -> None:
        if self._threads is not None and self._threaded is not None:
            threads, threaded = self._threads, self._threaded

            def stop() -> None:
                # Units of work still running (their callers cancelled) finish before their connections go.
                threads.shutdown(wait=True)
                threaded.dispose()

            await asyncio.to_thread(stop)
        await self.engine.dispose()


def _ensure_folder(database_path: str) -> None:
    Path(database_path).expanduser().parent.mkdir(parents=True, exist_ok=True)
