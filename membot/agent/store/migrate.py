"""Schema migrations: Alembic, with its environment shipped inside the package (`migrations/`), so no
alembic.ini is needed. `upgrade` brings a database to the newest revision; membot runs it at every start."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001_baseline"
# Any fixed number: it only has to be the same in every membot process that migrates this database.
_PG_LOCK_KEY = 0x6D656D626F74
# db.py's `begin` handler starts a transaction with this option as BEGIN IMMEDIATE: the write lock is taken
# first, so a second process waits for the first to finish rather than migrating from a stale read.
_SQLITE_WRITE = {"membot_write": True}
# Alembic's `op` and `context` are module globals: two migrations interleaved on one event loop (two databases
# opened at once) would send one's statements to the other's connection. One at a time per loop.
_in_process: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = WeakKeyDictionary()


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))  # the option is interpolated
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision in `migrations/versions`."""
    revision = ScriptDirectory.from_config(config()).get_current_head()
    if revision is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS}")
    return revision


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database to the newest revision, in one transaction; safe when several processes start at
    once. A database made before migrations (tables, no version) is taken as the baseline, then upgraded."""
    await _migrate(engine, _upgrade)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Take the database back to `revision` (for operators and tests; membot itself only upgrades)."""
    await _migrate(engine, lambda connection: command.downgrade(config(connection), revision))


async def _migrate(engine: AsyncEngine, work: Callable[[Connection], None]) -> None:
    async with _in_process.setdefault(asyncio.get_running_loop(), asyncio.Lock()):
        await _migrate_alone(engine, work)


async def _migrate_alone(engine: AsyncEngine, work: Callable[[Connection], None]) -> None:
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:
        engine = engine.execution_options(**_SQLITE_WRITE)
    async with engine.connect() as conn:
        if sqlite:
            # A batch migration copies a table and drops the old one; with foreign keys on, that drop would
            # cascade into every table that refers to it. SQLite takes this pragma only outside a transaction.
            await conn.run_sync(_foreign_keys, False)
        try:
            async with conn.begin():
                if not sqlite:
                    # Held until this transaction ends: a second process then reads the version the first
                    # committed.
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
                await conn.run_sync(work)
                if sqlite:  # what the foreign keys would have refused while they were off
                    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).first()
                    if broken is not None:
                        raise RuntimeError(f"a migration left a row without its parent: {tuple(broken)}")
        finally:
            if sqlite:
                await conn.run_sync(_foreign_keys, True)


def _foreign_keys(connection: Connection, on: bool) -> None:
    # On the driver's connection: through SQLAlchemy the statement would first begin a transaction.
    cursor = connection.connection.dbapi_connection.cursor()
    cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    cursor.close()


def _upgrade(connection: Connection) -> None:
    cfg = config(connection)
    if _unversioned(connection):
        command.stamp(cfg, BASELINE)
    command.upgrade(cfg, "head")


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _unversioned(connection: Connection) -> bool:
    # Made by create_all before migrations existed: membot's tables are there, Alembic's table is not.
    names = inspect(connection).get_table_names()
    return "agents" in names and "alembic_version" not in names


async def current(engine: AsyncEngine) -> str | None:
    """The database's revision; None when it has none (empty, or made before migrations: `unversioned`)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def unversioned(engine: AsyncEngine) -> bool:
    """Whether the database holds membot's tables from before migrations (`upgrade` adopts it)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_unversioned)


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """For autogenerate: what the models do not describe on purpose (PostgreSQL's search column and index,
    made by their own migration) is not a difference."""
    if reflected and compare_to is None and type_ in ("column", "index") and name is not None:
        return not name.startswith(("search_", "ix_messages_search"))
    return True


def include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    """For autogenerate: SQLite's FTS5 search table and its shadow tables are not modelled."""
    return not (type_ == "table" and name is not None and name.startswith("messages_fts"))
