"""The database's units of work, on both runners: SQLite's own threads, and an async driver's run_sync (here
aiosqlite, standing in for asyncpg: the code path is the one a PostgreSQL URL takes)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from membot.agent.memory.recall import RecallMemory, load_recall
from membot.agent.memory.term_stats import TermFrequencies
from membot.agent.messages import user_message
from membot.agent.store.db import AsyncDriver, Database, _create_schema
from membot.agent.store.group_commit import EarlierWriteFailed, TransactionLost, WriteChain
from membot.agent.store.schema import AgentRow, MessageRow, SourceRow
from tests.conftest import store_messages, writer_held


async def _open(kind: str, folder: Path) -> Database:
    if kind == "threads":
        return await Database.open(f"sqlite+aiosqlite:///{folder}/threads.db")
    db = Database(AsyncDriver(create_async_engine(f"sqlite+aiosqlite:///{folder}/driver.db")))
    await db.write(_create_schema)
    return db


@pytest.fixture(params=["threads", "async driver"])
async def db(request: pytest.FixtureRequest, tmp_path: Path):
    database = await _open(request.param, tmp_path)
    yield database
    await database.close()


async def test_a_unit_of_work_commits_whole_or_not_at_all(db: Database):
    agent = AgentRow(name="a", persona_name="p", human_name="h")
    await db.add(agent)
    assert agent.id is not None

    def half_then_fail(session: Session) -> None:
        RecallMemory(db, agent.id, TermFrequencies()).add(session, user_message(agent.id, "written, then undone"))
        raise RuntimeError("the step died")

    with pytest.raises(RuntimeError):
        await db.write(half_then_fail)
    count = select(func.count()).select_from(MessageRow)
    assert await db.scalar(count) == 0
    await store_messages(db, user_message(agent.id, "kept"))
    assert await db.scalar(count) == 1
    # A constraint broken inside the worker reaches the caller as SQLAlchemy's own error.
    await db.add(SourceRow(scope="s", name="n"))
    with pytest.raises(IntegrityError):
        await db.add(SourceRow(scope="s", name="n"))


async def test_writes_begun_on_a_chain_run_in_order_and_stop_at_the_first_failure(db: Database):
    # An agent queues its commits and goes on (Agent._write_behind): a later one must never land first, even
    # when an earlier one is slow, and never land over the gap a failed one left.
    ran: list[str] = []
    chain, other = WriteChain(), WriteChain()

    def slow(session: Session) -> None:
        for _ in range(50):  # on an async driver, each statement lets other tasks run
            session.execute(select(1))
        ran.append("slow")

    def failing(session: Session) -> None:
        ran.append("failing")
        raise RuntimeError("this one fails")

    started = [db.start_write(slow, chain), db.start_write(failing, chain),
               db.start_write(lambda session: ran.append("after the failure"), chain),
               db.start_write(lambda session: ran.append("another chain"), other)]
    await asyncio.wait(started)
    assert ran.index("slow") < ran.index("failing") and "after the failure" not in ran and "another chain" in ran
    assert isinstance(started[1].exception(), RuntimeError)
    assert isinstance(started[2].exception(), EarlierWriteFailed) and started[3].exception() is None
    assert chain.broken and not other.broken


async def test_a_write_cancelled_before_it_ran_stops_its_chain_and_the_rest_keep_their_order(db: Database):
    ran: list[str] = []
    chain = WriteChain()

    def slow(session: Session) -> None:
        for _ in range(50):  # on an async driver, each statement lets other tasks run
            session.execute(select(1))
        ran.append("first")

    first = db.start_write(slow, chain)
    cancelled = db.start_write(lambda session: ran.append("cancelled"), chain)
    after = db.start_write(lambda session: ran.append("after"), chain)
    cancelled.cancel()  # whoever waited for it was cancelled: its write is not there
    await asyncio.wait((first, after))
    assert ran == ["first"] and first.exception() is None
    assert isinstance(after.exception(), EarlierWriteFailed) and chain.broken


@pytest.mark.parametrize("kind", ["threads", "async driver"])
async def test_a_write_begun_and_not_awaited_lands_before_the_database_closes(kind: str, tmp_path: Path):
    # A step's last commit is not awaited by the step (Agent._write_behind); closing must not lose it.
    db = await _open(kind, tmp_path)
    agent = AgentRow(name="a", persona_name="p", human_name="h")
    await db.add(agent)

    def slow(session: Session) -> None:
        for _ in range(50):  # on an async driver, each statement lets other tasks run
            session.execute(select(1))
        RecallMemory(db, agent.id, TermFrequencies()).add(session, user_message(agent.id, "last words"))

    db.start_write(slow)
    await db.close()
    with pytest.raises(RuntimeError, match="closed"):  # nothing begun after close would be waited for
        db.start_write(slow)
    db = await _open(kind, tmp_path)
    try:
        assert await db.scalar(select(func.count()).select_from(MessageRow)) == 1
    finally:
        await db.close()


async def test_search_runs_as_one_unit_of_work_and_keeps_agents_apart(db: Database):
    alice, bob = AgentRow(name="alice", persona_name="p", human_name="h"), AgentRow(name="bob", persona_name="p",
                                                                                     human_name="h")
    await db.add(alice, bob)
    await store_messages(db, user_message(alice.id, "I adopted a tabby cat"), user_message(bob.id, "bob's cat is secret"))
    recall = RecallMemory(db, alice.id, TermFrequencies())
    page = await recall.search("cat")
    assert [row.search_text for row in page.items] == ["I adopted a tabby cat"] and page.total == 1
    # Writes queue while reads run beside them; all of them land.
    await asyncio.gather(*(store_messages(db, user_message(alice.id, f"cat number {i}")) for i in range(20)),
                         *(recall.search("cat") for _ in range(5)))
    assert (await recall.search("cat", page_size=50)).total == 21
    assert (await db.read(lambda session: load_recall(session, [alice.id])))[alice.id].count == 21


async def test_messages_stored_by_the_step_read_back_the_same(db: Database):
    agent = AgentRow(name="a", persona_name="p", human_name="h")
    await db.add(agent)
    recall = RecallMemory(db, agent.id, TermFrequencies())
    said = user_message(agent.id, "no function was called here")
    await db.write(lambda session: recall.add(session, said))
    await db.write(lambda session: recall.add(session))  # nothing to store is no error
    assert said.id is not None and said.in_context
    stored = await db.rows(select(MessageRow.id, MessageRow.content).where(MessageRow.tool_calls.is_(None)))
    assert stored == [(said.id, said.content)]  # no calls is SQL NULL, not the JSON text 'null'
    with pytest.raises(PermissionError):
        await db.write(lambda session: recall.add(session, user_message(agent.id + 1, "not mine")))


async def test_units_of_work_queued_together_commit_together_but_fail_alone(tmp_path: Path):
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path}/group.db")
    try:
        agent = AgentRow(name="a", persona_name="p", human_name="h")
        await db.add(agent)
        # Hold the writer so that everything below queues behind it and runs as one group.
        commits: list[int] = []
        event.listen(db.runner.engine, "commit", lambda conn: commits.append(1))
        gate = threading.Event()

        def hold(session: Session) -> None:
            session.execute(select(1))  # a transaction of its own, committed
            gate.wait(10)

        held = asyncio.ensure_future(db.write(hold))
        await asyncio.sleep(0.05)  # the writer is inside it

        def failing(session: Session) -> None:
            RecallMemory(db, agent.id, TermFrequencies()).add(session, user_message(agent.id, "undone with its savepoint"))
            raise RuntimeError("this one fails")

        def never(session: Session) -> None:
            raise AssertionError("a write cancelled before it ran must not run")

        writes = [asyncio.ensure_future(store_messages(db, user_message(agent.id, f"kept {i}"))) for i in range(5)]
        doomed = asyncio.ensure_future(db.write(failing))
        cancelled = asyncio.ensure_future(db.write(never))
        writes += [asyncio.ensure_future(store_messages(db, user_message(agent.id, f"kept {i}"))) for i in range(5, 10)]
        await asyncio.sleep(0.05)  # every job is in the queue
        cancelled.cancel()
        gate.set()
        await asyncio.gather(held, *writes)
        with pytest.raises(RuntimeError, match="this one fails"):
            await doomed
        texts = await db.rows(select(MessageRow.search_text).order_by(MessageRow.id))
        assert [text for (text,) in texts] == [f"kept {i}" for i in range(10)]
        assert len(commits) == 2  # the held unit of work, then everything queued behind it at once

        # What a unit of work adds is flushed when its savepoint is released: a constraint broken there is
        # that unit of work's error, not a success.
        first, second = SourceRow(scope="s", name="same"), SourceRow(scope="s", name="same")
        async with writer_held(db):
            adds = [asyncio.ensure_future(db.add(row)) for row in (first, second)]
            await asyncio.sleep(0.05)  # both are in the queue
        outcomes = await asyncio.gather(*adds, return_exceptions=True)
        assert outcomes[0] is None and isinstance(outcomes[1], IntegrityError) and first.id is not None
    finally:
        await db.close()


@asynccontextmanager
async def _one_agent(tmp_path: Path, *ddl: str) -> AsyncIterator[tuple[Database, RecallMemory]]:
    """A database with one agent (and whatever `ddl` adds to its schema), and that agent's recall memory."""
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path}/group.db")
    try:
        agent = AgentRow(name="a", persona_name="p", human_name="h")
        await db.add(agent)
        for statement in ddl:
            await db.write(lambda session, statement=statement: session.execute(text(statement)))
        yield db, RecallMemory(db, agent.id, TermFrequencies())
    finally:
        await db.close()


def _store(recall: RecallMemory, said: str, then: Callable[[Session], None] | None = None) -> Callable[[Session], None]:
    """A step's commit: one message, then `then` (a failure, say)."""
    def work(session: Session) -> None:
        recall.add(session, user_message(recall.agent_id, said))
        if then is not None:
            then(session)
    return work


async def _as_one_group(db: Database, works: list[Callable[[Session], None]]) -> list[BaseException | None]:
    """Begin `works` with start_write (each on a chain of its own) while the writer is held, so that they run as
    one group; what each came to."""
    async with writer_held(db):
        begun = [db.start_write(work, WriteChain()) for work in works]
    return await asyncio.gather(*begun, return_exceptions=True)


async def test_commits_begun_without_waiting_fail_alone_in_a_group_and_may_not_touch_orm_objects(tmp_path: Path):
    # start_write's units run Core statements only, in a plain savepoint of the driver's when grouped.
    async with _one_agent(tmp_path) as (db, recall):
        def fails(session: Session) -> None:
            raise RuntimeError("this one fails")

        def uses_the_orm(session: Session) -> None:
            session.add(SourceRow(scope="s", name="not through start_write"))

        outcomes = await _as_one_group(db, [
            _store(recall, "kept 0"), _store(recall, "undone with its savepoint", fails), _store(recall, "kept 1"),
            _store(recall, "undone: it also added an ORM object", uses_the_orm), _store(recall, "kept 2")])
        assert isinstance(outcomes[1], RuntimeError) and "this one fails" in str(outcomes[1])
        assert isinstance(outcomes[3], RuntimeError) and "ORM" in str(outcomes[3])
        assert [outcomes[i] for i in (0, 2, 4)] == [None, None, None]
        # Alone (a transaction of its own, no savepoint) the same unit of work fails the same way.
        with pytest.raises(RuntimeError, match="ORM"):
            await db.start_write(_store(recall, "alone", uses_the_orm), WriteChain())
        texts = await db.rows(select(MessageRow.search_text).order_by(MessageRow.id))
        assert [text for (text,) in texts] == ["kept 0", "kept 1", "kept 2"]
        assert await db.scalar(select(func.count()).select_from(SourceRow)) == 0


async def test_when_sqlite_rolls_a_whole_group_back_every_unit_of_work_in_it_fails_and_none_lands(tmp_path: Path):
    # A trigger that ends the whole transaction, as SQLite may itself do on a full disk.
    async with _one_agent(tmp_path, "CREATE TRIGGER lose_all BEFORE INSERT ON messages "
                                  "WHEN new.search_text = 'lose all' BEGIN SELECT RAISE(ROLLBACK, 'by the test'); END") as (db, recall):
        outcomes = await _as_one_group(db, [_store(recall, said) for said in ("before", "lose all", "after")])
        # "before" was in the transaction SQLite threw away; "after" would have committed on its own.
        assert all(isinstance(outcome, TransactionLost) for outcome in outcomes)
        assert await db.scalar(select(func.count()).select_from(MessageRow)) == 0
        await store_messages(db, user_message(recall.agent_id, "the writer goes on"))
        assert await db.scalar(select(func.count()).select_from(MessageRow)) == 1

        # A failed unit whose savepoint cannot be rolled back (here it released it itself) cannot be told apart
        # from the others' work any more: the group fails whole, rather than commit what it did.
        def releases_then_fails(session: Session) -> None:
            session.connection().exec_driver_sql("RELEASE unit_of_work")
            raise RuntimeError("and then fails")

        outcomes = await _as_one_group(db, [_store(recall, "kept?"), _store(recall, "not kept", releases_then_fails)])
        assert all(isinstance(outcome, TransactionLost) for outcome in outcomes)
        assert await db.scalar(select(func.count()).select_from(MessageRow)) == 1
        # Nor when its savepoint cannot be released: what it did would commit with the group, reported failed.
        outcomes = await _as_one_group(db, [_store(recall, "kept?"), _store(recall, "not kept", lambda session: (
            session.connection().exec_driver_sql("RELEASE unit_of_work")))])
        assert all(isinstance(outcome, TransactionLost) for outcome in outcomes)
        assert await db.scalar(select(func.count()).select_from(MessageRow)) == 1


async def test_a_commit_that_fails_leaves_no_transaction_open_for_the_next_unit_of_work(tmp_path: Path):
    # A deferred constraint is checked at COMMIT, and SQLite keeps the transaction open when it fails there
    # (as it may on a full disk): the connection must not go back to the pool still inside it.
    async with _one_agent(tmp_path, "CREATE TABLE notes (id INTEGER PRIMARY KEY, "
                                  "agent INTEGER REFERENCES agents(id) DEFERRABLE INITIALLY DEFERRED)") as (db, recall):
        def dangling(session: Session) -> None:
            recall.add(session, user_message(recall.agent_id, "committed with a dangling note"))
            session.execute(text("INSERT INTO notes (agent) VALUES (424242)"))

        with pytest.raises(IntegrityError):
            await db.write(dangling)
        await store_messages(db, user_message(recall.agent_id, "the next one"))
        texts = await db.rows(select(MessageRow.search_text))
        assert [text for (text,) in texts] == ["the next one"]


async def test_the_writer_outlives_what_a_unit_of_work_raises_and_a_closed_database_says_so(tmp_path: Path):
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path}/w.db")

    def exits(session: Session) -> None:
        raise SystemExit("a unit of work must not take the writer thread with it")

    with pytest.raises(RuntimeError, match="SystemExit"):
        await db.write(exits)
    await db.add(SourceRow(scope="s", name="after"))  # the writer still runs
    assert await db.scalar(select(func.count()).select_from(SourceRow)) == 1
    await db.close()
    with pytest.raises(RuntimeError, match="closed"):
        await asyncio.wait_for(db.add(SourceRow(scope="s", name="too late")), 5)
