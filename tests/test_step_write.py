"""A step's commits (StepWrite) on the SQLite writer: those that queue together run as one set of statements,
one that fails still fails alone, and a commit begun without waiting waits for company only while nobody waits
for it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import event, select

from membot.agent.messages import user_message
from membot.agent.step_write import StepWrite
from membot.agent.store import group_commit
from membot.agent.store.db import Database
from membot.agent.store.group_commit import EarlierWriteFailed, WriteChain
from membot.agent.store.schema import AgentRow, BlockRow, MessageRow
from tests.conftest import writer_held


@pytest.fixture
async def db(tmp_path: Path):
    database = await Database.open(f"sqlite+aiosqlite:///{tmp_path}/steps.db")
    yield database
    await database.close()


async def _agents(db: Database, count: int) -> list[int]:
    rows = [AgentRow(name=f"a{i}", persona_name="p", human_name="h") for i in range(count)]
    await db.add(*rows)
    await db.add(*(BlockRow(agent_id=row.id, label="human", value="") for row in rows))
    return [row.id for row in rows]


def _statements(db: Database) -> list[str]:
    """The updates the database runs from now on, one per execute or executemany."""
    seen: list[str] = []

    def note(conn: object, cursor: object, statement: str, *rest: object) -> None:
        words = statement.split()
        if words[0] == "UPDATE":
            seen.append(f"{words[0]} {words[1]}")

    event.listen(db.runner.engine, "before_cursor_execute", note)
    return seen


async def _as_one_group(db: Database, writes: list[tuple[StepWrite, WriteChain]]) -> list[BaseException | None]:
    """Begin `writes` without waiting while the writer is held, so that they queue as one group."""
    async with writer_held(db):
        begun = [db.start_write(write, chain) for write, chain in writes]
    return await asyncio.gather(*begun, return_exceptions=True)


async def test_step_writes_queued_together_run_as_one_set_of_statements(db: Database):
    first, second, third = await _agents(db, 3)
    said = {agent: [user_message(agent, f"hello from {agent}"), user_message(agent, f"and again {agent}")]
            for agent in (first, second, third)}
    chain = WriteChain()
    statements = _statements(db)
    outcomes = await _as_one_group(db, [
        (StepWrite(first, said[first][:1], state={"last_prompt_tokens": 10}), chain),
        (StepWrite(second, said[second], {"human": "likes tea"}, {"last_prompt_tokens": 20}), WriteChain()),
        (StepWrite(first, said[first][1:], state={"last_prompt_tokens": 11}), chain),
        (StepWrite(third, said[third]), WriteChain()),
    ])
    assert outcomes == [None] * 4
    # One executemany per table updated (one by one, the agents' rows would have been updated three times).
    assert sorted(statements) == ["UPDATE agents", "UPDATE core_blocks"]
    # Each message has its id, in the order queued; the last state an agent queued is the one it has.
    ids = [message.id for message in (said[first][0], *said[second], said[first][1], *said[third])]
    assert ids == sorted(ids) and None not in ids
    stored = await db.rows(select(MessageRow.id, MessageRow.agent_id).order_by(MessageRow.id))
    assert [agent for _, agent in stored] == [first, second, second, first, third, third]
    tokens = dict(await db.rows(select(AgentRow.id, AgentRow.last_prompt_tokens)))
    assert (tokens[first], tokens[second]) == (11, 20)
    assert await db.scalar(select(BlockRow.value).where(BlockRow.agent_id == second)) == "likes tea"


async def test_one_step_write_that_fails_in_a_group_fails_alone_and_stops_its_own_chain(db: Database):
    first, second = await _agents(db, 2)
    gone = second + 100  # no such agent: its message breaks the foreign key
    chain, doomed_chain = WriteChain(), WriteChain()
    outcomes = await _as_one_group(db, [
        (StepWrite(first, [user_message(first, "kept before")]), chain),
        (StepWrite(gone, [user_message(gone, "nobody's")]), doomed_chain),
        (StepWrite(gone, [user_message(gone, "after it, same chain")]), doomed_chain),
        (StepWrite(second, [user_message(second, "kept after")]), WriteChain()),
    ])
    assert outcomes[0] is None and outcomes[3] is None
    assert "FOREIGN KEY" in str(outcomes[1]) and isinstance(outcomes[2], EarlierWriteFailed)
    texts = await db.rows(select(MessageRow.search_text).order_by(MessageRow.id))
    assert [text for (text,) in texts] == ["kept before", "kept after"]
    assert doomed_chain.broken and not chain.broken


async def test_a_step_write_holds_only_its_own_agents_messages():
    with pytest.raises(PermissionError):
        StepWrite(1, [user_message(2, "not mine")])


async def test_a_write_begun_without_waiting_lingers_for_company_unless_someone_waits(
    db: Database, monkeypatch: pytest.MonkeyPatch
):
    (agent,) = await _agents(db, 1)
    # A window far longer than the test may take: only a hurry can end it in time.
    monkeypatch.setattr(group_commit, "GROUP_WINDOW", 60.0)
    write = db.start_write(StepWrite(agent, [user_message(agent, "waited for")]), WriteChain())
    await asyncio.sleep(0.05)
    assert not write.done()  # lingering
    await asyncio.wait_for(db.landed(write), 10)
    assert write.result() is None
    # A write someone awaits from the start does not linger; nor does closing wait out the window.
    await asyncio.wait_for(db.write(lambda session: None), 10)
    db.start_write(StepWrite(agent, [user_message(agent, "last words")]), WriteChain())
    await asyncio.wait_for(db.close(), 10)


async def test_a_write_cancelled_before_it_ran_fails_those_after_it_on_its_chain_and_none_before(db: Database):
    (agent,) = await _agents(db, 1)
    chain = WriteChain()
    async with writer_held(db):  # the three below queue as one group
        begun = [db.start_write(StepWrite(agent, [user_message(agent, said)]), chain) for said in ("J1", "J2", "J3")]
        begun[1].cancel()  # whoever waited for it was cancelled: its write is not there
    await asyncio.wait([begun[0], begun[2]])
    assert begun[0].exception() is None and isinstance(begun[2].exception(), EarlierWriteFailed)
    texts = await db.rows(select(MessageRow.search_text))
    assert [text for (text,) in texts] == ["J1"] and chain.broken


async def test_a_hurry_reaches_a_write_queued_behind_a_full_group(db: Database, monkeypatch: pytest.MonkeyPatch):
    (agent,) = await _agents(db, 1)
    monkeypatch.setattr(group_commit, "GROUP_WINDOW", 60.0)  # only a hurry can end it in time
    async with writer_held(db):
        begun = [db.start_write(StepWrite(agent, [user_message(agent, f"m{i}")]), WriteChain())
                 for i in range(group_commit.MAX_GROUP_COMMIT + 6)]
        waiting = asyncio.ensure_future(db.landed(begun[-1]))  # hurries the writer while it is still held
        await asyncio.sleep(0.05)
    await asyncio.wait_for(waiting, 10)  # the first group is full: the last write commits in the next one
    assert begun[-1].result() is None
