"""Schema migrations: a database of the release before them is adopted with its data, a new one is built, both
databases agree with the models, and processes that start at once do not trip over each other."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from membot.agent.memory.query import query_terms
from membot.agent.memory.recall import _FTS_RANKED, RecallMemory, fts_query
from membot.agent.memory.term_stats import TermFrequencies
from membot.agent.store.db import Database, sqlite_engine
from membot.agent.store.migrate import config, current, downgrade, head, include_name, include_object, upgrade
from membot.agent.store.schema import AgentRow, Base, BlockRow, IdentityRow, MessageRow
from membot.bot.cli import main

# Made by membot at d228cc3 (the last release without migrations): its own Database.open, then rows of every
# table written through its db.write; two agents, their messages indexed by its FTS5 trigger.
OLD_DB = Path(__file__).parent / "data" / "membot-d228cc3.db"
POSTGRES = os.environ.get("TEST_POSTGRES_URL") or "postgresql+asyncpg://postgres@127.0.0.1:5432"


async def _postgres_admin(statement: str) -> None:
    # CREATE and DROP DATABASE run outside a transaction, on the server's own database.
    engine = create_async_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for one test, dropped after it."""
    name = f"membot_mig_{secrets.token_hex(4)}"
    try:
        await _postgres_admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # down, refused, no right to create databases
        where = make_url(POSTGRES).render_as_string(hide_password=True)
        reason = (f"PostgreSQL not reachable at {where} ({exc.__class__.__name__}: {exc}); start it, or set "
                  "TEST_POSTGRES_URL to a server that is")
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        await _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _engine(url: str) -> AsyncEngine:
    return sqlite_engine(url) if url.startswith("sqlite") else create_async_engine(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'membot.db'}"
    return request.getfixturevalue("postgres_url")  # only asked for here: a SQLite run never connects


@pytest.fixture
async def old_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    path = tmp_path / "membot.db"
    shutil.copy(OLD_DB, path)
    engine = sqlite_engine(f"sqlite+aiosqlite:///{path}")
    yield engine
    await engine.dispose()


async def _count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()


async def _search(session: AsyncSession, word: str) -> list[int]:
    query = text("SELECT rowid FROM messages_fts WHERE messages_fts MATCH :word")
    return list(await session.scalars(query, {"word": word}))


async def test_a_database_of_the_release_before_migrations_is_adopted_with_its_data(old_engine):
    assert await current(old_engine) is None
    await upgrade(old_engine)
    assert await current(old_engine) == head()

    counts = {t: await _count(old_engine, t) for t in
              ("agents", "core_blocks", "messages", "identities", "sources", "documents", "agent_sources")}
    # Each agent gained its private block (0009), and its old messages count as private.
    assert counts == {"agents": 2, "core_blocks": 6, "messages": 14, "identities": 2, "sources": 1,
                      "documents": 1, "agent_sources": 1}
    assert await _count(old_engine, "agent_leases") == 0
    async with AsyncSession(old_engine) as session:  # read through today's models
        agents = (await session.scalars(select(AgentRow).order_by(AgentRow.id))).all()
        assert [(a.name, a.version, a.archival_passages) for a in agents] == [
            ("alice's agent", 0, 3), ("bob's agent", 0, 6)]
        assert (await session.get(BlockRow, (2, "human"))).value == "Name: Bob"
        bob = await session.scalar(select(IdentityRow).where(IdentityRow.user_id == "bob"))
        assert (bob.agent_id, bob.display_name) == (2, "Bob")
        call = await session.scalar(select(MessageRow.tool_calls).where(MessageRow.tool_calls.is_not(None)))
        assert call[0]["function"]["name"] == "send_message"
        # The old search index still finds old messages, and its trigger indexes new ones.
        said = await session.scalar(select(MessageRow.id).where(MessageRow.content.contains("giraffe")))
        assert said in await _search(session, "giraffe")
        session.add(MessageRow(agent_id=2, role="user", kind="user_message", search_text="a zebra"))
        await session.commit()
        assert len(await _search(session, "zebra")) == 1


async def test_downgrading_to_the_baseline_and_back_keeps_the_data(old_engine):
    # The downgrade copies `agents` (SQLite drops a column by rebuilding its table): with the foreign keys on,
    # dropping the old copy would cascade into every agent's messages.
    await upgrade(old_engine)
    await downgrade(old_engine, "0001_baseline")
    assert await current(old_engine) == "0001_baseline"
    assert (await _count(old_engine, "messages"), await _count(old_engine, "core_blocks")) == (14, 4)
    async with AsyncSession(old_engine) as session:  # the search index, refilled without its agent column
        said = (await session.execute(  # the columns the baseline has
            select(MessageRow.id, MessageRow.agent_id).where(MessageRow.content.contains("giraffe")))).one()
        assert said.id in await _search(session, "giraffe")
    await upgrade(old_engine)
    assert (await current(old_engine), await _count(old_engine, "messages")) == (head(), 14)
    async with AsyncSession(old_engine) as session:  # and with it again
        assert said.id in await _search(session, f'agent:"a{said.agent_id}" AND giraffe')
        assert said.id not in await _search(session, f'agent:"a{said.agent_id + 1}" AND giraffe')
    async with old_engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1  # back on for the app


# Two agents' talk, interleaved: (agent, role, text). Words shared between the agents, and messages found only
# through their context (the agent's previous message of the same role).
_TALK = [
    (0, "user", "I adopted a tabby cat"), (1, "user", "my tabby cat sleeps all day"),
    (0, "assistant", "what a lovely cat"), (0, "user", "she is called Miso"),
    (1, "user", "the vet said the cat is fine"), (1, "assistant", "good news about the cat"),
    (0, "user", "Miso likes the garden"), (1, "user", "the garden is too small for a dog"),
    (0, "assistant", "gardens are good for cats"), (1, "user", "tabby cats and dogs, all fine"),
]
_QUERIES = ("cat", "tabby", "garden", "cats dogs", "lovely news", "Miso vet")  # each finds both agents'


async def _upgrade_to(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(config(c), revision))


async def _write_talk(engine: AsyncEngine) -> list[int]:
    """The agents and their talk, in plain SQL (the models may be ahead of the revision); the agents' ids."""
    agent = text("""INSERT INTO agents (name, persona_name, human_name, created_at, summary, summary_hidden,
        last_prompt_tokens, archival_passages, token_ratio, pressure_alerted)
        VALUES (:name, 'p', 'h', CURRENT_TIMESTAMP, '', 0, 0, 0, 1.0, 0) RETURNING id""")
    message = text("""INSERT INTO messages (agent_id, role, kind, search_text, created_at, in_context)
        VALUES (:agent_id, :role, 'message', :said, CURRENT_TIMESTAMP, 1)""")
    async with engine.begin() as conn:
        agents = [(await conn.execute(agent, {"name": name})).scalar_one() for name in ("alice", "bob")]
        for n, role, said in _TALK:  # one INSERT each, in order: the trigger reads the rows before
            await conn.execute(message, {"agent_id": agents[n], "role": role, "said": said})
    return agents


def _ranked(db: Database, agent_id: int, query: str):
    params = {"query": fts_query(agent_id, query_terms(query)), "agent_id": agent_id, "limit": 50, "private": True}
    return db.read(lambda session: [(r.id, r.score) for r in session.execute(_FTS_RANKED, params)])


async def test_messages_indexed_before_the_agent_column_are_found_per_agent_after_it(tmp_path):
    # One database given the talk at 0004 and then upgraded (the index refilled from the messages); one given
    # it at the head (the index filled by the trigger). Both must rank the same rows with the same scores.
    urls = [f"sqlite+aiosqlite:///{tmp_path / name}" for name in ("at_0004.db", "at_head.db")]
    for url, revision in zip(urls, ("0004_deployment", "head"), strict=True):
        engine = sqlite_engine(url)
        await _upgrade_to(engine, revision)
        agents = await _write_talk(engine)
        await engine.dispose()
    dbs = [await Database.open(url) for url in urls]  # opening upgrades the first
    try:
        assert [await current(db.engine) for db in dbs] == [head(), head()]
        owner = {i + 1: agents[n] for i, (n, _, _) in enumerate(_TALK)}
        for agent_id in agents:
            for query in _QUERIES:
                refilled, triggered = [await _ranked(db, agent_id, query) for db in dbs]
                assert refilled == triggered
                assert refilled and {owner[row_id] for row_id, _ in refilled} == {agent_id}
        # A message only its context matches ("she is called Miso" before "Miso likes the garden")
        found = await RecallMemory(dbs[0], agents[0], TermFrequencies()).search("adopted", private=True)
        assert [m.search_text for m in found.items] == ["I adopted a tabby cat", "she is called Miso"]
        # and the rebuilt trigger indexes a new message under its agent.
        await dbs[0].write(lambda s: s.add(MessageRow(agent_id=agents[1], role="user", kind="message",
                                                      search_text="a zebra, Miso")))
        assert [m.search_text for m in (await RecallMemory(dbs[0], agents[1], TermFrequencies()).search(
            "zebra Miso", private=True)).items] == ["a zebra, Miso"]
    finally:
        for db in dbs:
            await db.close()


async def test_a_fresh_database_is_built_and_a_second_upgrade_does_nothing(fresh_url):
    engine = _engine(fresh_url)
    try:
        assert await current(engine) is None
        await upgrade(engine)
        await upgrade(engine)
        assert await current(engine) == head()
    finally:
        await engine.dispose()


def _differences(conn: Connection) -> list:
    opts = {"include_name": include_name, "include_object": include_object, "compare_server_default": True}
    return compare_metadata(MigrationContext.configure(conn, opts=opts), Base.metadata)


async def test_the_models_and_the_migrations_agree(fresh_url):
    engine = _engine(fresh_url)
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
            # The filter hides only what the models leave out on purpose, not the tables around it.
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
            assert {"agents", "agent_leases", "messages"} <= set(tables)
        # And the check sees a real difference: the baseline lacks what the leases revision adds.
        await downgrade(engine, "0001_baseline")
        async with engine.connect() as conn:
            found = await conn.run_sync(_differences)
        kinds = {(d[0], d[2] if d[0] == "add_column" else d[1].name) for d in found}
        assert kinds == {("add_table", "agent_leases"), ("add_column", "agents"), ("add_table", "deployment"),
                         ("add_column", "messages"), ("add_column", "sources"),
                         ("add_table", "seen_events"), ("add_index", "ix_seen_events_seen_at"),
                         ("add_table", "wakeups"), ("add_index", "ix_wakeups_due"), ("add_index", "ix_wakeups_agent"),
                         ("add_table", "conversation_threads"), ("add_index", "ix_conversation_threads_joined_at"),
                         ("add_table", "entities"), ("add_table", "entity_mentions"),
                         ("add_index", "ix_entity_mentions_message_id"),
                         ("add_table", "facts"), ("add_index", "ix_facts_agent_subject"),
                         ("add_index", "ix_facts_agent_object")}
    finally:
        await engine.dispose()


# A process that only migrates: what `Database.open` does first at every start.
_UPGRADE = """import asyncio, sys
from sqlalchemy.ext.asyncio import create_async_engine
from membot.agent.store.db import sqlite_engine
from membot.agent.store.migrate import upgrade
url = sys.argv[1]
engine = sqlite_engine(url) if url.startswith("sqlite") else create_async_engine(url)
asyncio.run(upgrade(engine))
"""


async def test_two_processes_upgrading_at_once_both_succeed(fresh_url):
    # Processes, not tasks: inside one process `upgrade` waits its turn before it reaches the database's lock.
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", _UPGRADE, fresh_url,
                                                  stderr=asyncio.subprocess.PIPE) for _ in range(2)]
    errors = await asyncio.gather(*(proc.communicate() for proc in procs))
    assert [proc.returncode for proc in procs] == [0, 0], errors
    engine = _engine(fresh_url)
    try:
        assert await current(engine) == head()
    finally:
        await engine.dispose()


async def test_two_databases_upgraded_at_once_in_one_process_stay_apart(tmp_path):
    engines = [sqlite_engine(f"sqlite+aiosqlite:///{tmp_path / name}") for name in ("a.db", "b.db")]
    try:
        await asyncio.gather(*(upgrade(engine) for engine in engines))
        for engine in engines:
            assert await current(engine) == head()
            assert await _count(engine, "agent_leases") == 0
    finally:
        for engine in engines:
            await engine.dispose()


async def test_db_current_and_upgrade_from_the_command_line(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(OLD_DB, home / "membot.db")
    monkeypatch.setenv("MEMBOT_HOME", str(home))
    monkeypatch.chdir(tmp_path)  # no .env of the developer's

    async def run(*args: str) -> tuple[int, str]:
        out = io.StringIO()
        with redirect_stdout(out):
            code = await asyncio.to_thread(main, list(args))  # main runs its own event loop
        return code, out.getvalue().strip()

    where = f"sqlite+aiosqlite:///{home / 'membot.db'}"
    assert await run("db", "current") == (0, f"{where}: not under migrations "
                                             "(made by an older membot; `membot db upgrade` adopts it)")
    assert await run("db", "upgrade") == (0, f"{where}: upgraded to {head()} (from no revision)")
    assert await run("db", "current") == (0, f"{where}: {head()}")
