"""The PostgreSQL server the benchmarks run on, and a database of its own for each benchmark.

BENCH_POSTGRES_URL names the server (default the local one; `none` leaves PostgreSQL out).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

POSTGRES_ENV = "BENCH_POSTGRES_URL"
POSTGRES_DEFAULT = "postgresql+asyncpg://postgres@127.0.0.1:5432"


def postgres_server() -> str | None:
    """The PostgreSQL server the benchmarks run on, or None when told to leave it out."""
    url = os.environ.get(POSTGRES_ENV) or POSTGRES_DEFAULT
    return None if url.lower() == "none" else url


@asynccontextmanager
async def postgres_database(server: str, purpose: str) -> AsyncIterator[str]:
    """A new, empty database on the server for one benchmark (the service migrates it), dropped afterwards."""
    base = make_url(server)
    name = f"membot_fts_bench_{purpose}_{os.getpid()}"
    admin = create_async_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with admin.connect() as connection:
            await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as connection:
                await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()
