"""Leases and step commits: one process at a time runs an agent's steps, a commit lands only while its
process holds the lease, and a holder that died is known by its expiry."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from functools import partial
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, update

from membot.agent.llm.reply import ToolCallOut
from membot.agent.messages import user_message
from membot.agent.place import PRIVATE
from membot.agent.step_write import StepWrite
from membot.agent.store import facts
from membot.agent.store.db import Database
from membot.agent.store.leases import AgentBusy, LeaseLost, Leases, NoSuchAgent, new_holder
from membot.agent.store.schema import AgentRow, BlockRow, FactRow, LeaseRow, MessageRow, utcnow
from membot.agent.tools.context import ToolContext
from membot.agent.tools.knowledge import KNOWLEDGE_FUNCTIONS
from membot.agent.tools.registry import ToolRegistry
from membot.agent.tools.run import run_tool
from membot.bot.identity import UserRef
from membot.bot.service import BotService

pytestmark = pytest.mark.both_databases


async def _agent(db: Database) -> int:
    row = AgentRow(name="a", persona_name="p", human_name="h")
    await db.add(row)
    await db.add(BlockRow(agent_id=row.id, label="human", value=""))
    return row.id


async def test_a_step_write_lands_whole_with_the_lease_and_raises_the_version(db: Database):
    agent = await _agent(db)
    leases = Leases(db, "proc-a")
    async with leases.hold(agent) as version:
        assert version == 0
        said = user_message(agent, "my door is teal")
        await db.write(StepWrite(agent, leases.holder, [said], {"human": "Door: teal."}, {"last_prompt_tokens": 42}))
    assert said.id is not None
    row = (await db.rows(select(AgentRow.version, AgentRow.last_prompt_tokens).where(AgentRow.id == agent)))[0]
    assert tuple(row) == (1, 42)
    assert await db.scalar(select(BlockRow.value).where(BlockRow.agent_id == agent)) == "Door: teal."
    assert await db.scalar(select(LeaseRow.holder)) is None  # given back


async def test_a_step_write_without_the_lease_lands_nothing(db: Database):
    agent = await _agent(db)
    first, second = Leases(db, "proc-a"), Leases(db, "proc-b")
    async with first.hold(agent):
        with pytest.raises(LeaseLost):
            await db.write(StepWrite(agent, second.holder, [user_message(agent, "from the wrong process")]))
    with pytest.raises(LeaseLost):  # nobody holds it
        await db.write(StepWrite(agent, first.holder, [user_message(agent, "after the step")]))
    assert await db.scalar(select(MessageRow.id)) is None
    assert await db.scalar(select(AgentRow.version)) == 0


async def test_a_tools_own_write_lands_only_under_the_steps_lease(db: Database):
    # knowledge_insert and schedule_wakeup write in transactions of their own (ToolContext.write): those check
    # the lease as a step's commit does.
    agent = await _agent(db)
    first, second = Leases(db, "proc-a"), Leases(db, "proc-b")
    recall = SimpleNamespace(db=db)
    mine, theirs = (ToolContext(agent, None, recall, None, None, None, PRIVATE, holder)  # type: ignore[arg-type]
                    for holder in (first.holder, second.holder))
    fact = partial(facts.add_fact, agent_id=agent, relation="lives_in", private=True, valid_from=None, now=utcnow())
    async with first.hold(agent):
        await mine.write(partial(fact, subject="Ann", object="Oslo"))
        with pytest.raises(LeaseLost):
            await theirs.write(partial(fact, subject="Bob", object="Rome"))
    with pytest.raises(LeaseLost):  # the step is over
        await mine.write(partial(fact, subject="Cy", object="Lima"))
    assert await db.scalar(select(func.count()).select_from(FactRow)) == 1


async def test_a_lease_lost_in_a_tools_write_stops_the_step_instead_of_telling_the_model(db: Database):
    agent = await _agent(db)
    first, second = Leases(db, "proc-a"), Leases(db, "proc-b")
    theirs = ToolContext(agent, None, SimpleNamespace(db=db), None, None, None, PRIVATE,  # type: ignore[arg-type]
                         second.holder)
    call = ToolCallOut("c1", "knowledge_insert", '{"subject": "Ann", "relation": "lives_in", "object": "Oslo"}')
    async with first.hold(agent):
        with pytest.raises(LeaseLost):
            await run_tool(ToolRegistry(KNOWLEDGE_FUNCTIONS, thoughts=None), theirs, call)
    assert await db.scalar(select(func.count()).select_from(FactRow)) == 0


async def test_a_second_process_waits_for_the_first_and_sees_its_version(db: Database):
    agent = await _agent(db)
    first, second = Leases(db, "proc-a"), Leases(db, "proc-b")
    order: list[str] = []

    async def step(leases: Leases, name: str) -> int:
        async with leases.hold(agent) as version:
            order.append(f"{name} in")
            await asyncio.sleep(0.2)
            await db.write(StepWrite(agent, leases.holder, [user_message(agent, name)]))
            order.append(f"{name} out")
            return version

    first_step = asyncio.create_task(step(first, "a"))
    await asyncio.sleep(0.05)
    versions = await asyncio.gather(first_step, step(second, "b"))
    assert order == ["a in", "a out", "b in", "b out"]
    assert versions == [0, 1]


async def test_a_holder_that_died_is_known_by_its_expiry(db: Database):
    agent = await _agent(db)
    dead, alive = Leases(db, "dead-proc"), Leases(db, "live-proc", wait=0.3)
    await dead.acquire(agent)  # never released: the process died
    with pytest.raises(AgentBusy):
        await alive.acquire(agent)
    await db.write(lambda session: session.execute(
        update(LeaseRow).values(expires_at=utcnow() - timedelta(seconds=1))))
    assert await alive.acquire(agent) == 0
    # The dead holder, back from a long stall, commits nothing and cannot release another's lease.
    with pytest.raises(LeaseLost):
        await db.write(StepWrite(agent, dead.holder, [user_message(agent, "too late")]))
    await dead.release(agent)
    assert await db.scalar(select(LeaseRow.holder)) == "live-proc"


async def test_a_lease_is_renewed_while_held(db: Database):
    agent = await _agent(db)
    leases = Leases(db, "proc-a", seconds=0.3)
    async with leases.hold(agent):
        first = await db.scalar(select(LeaseRow.expires_at))
        await asyncio.sleep(0.35)  # past the first expiry: renewed meanwhile
        assert await db.scalar(select(LeaseRow.expires_at)) > first
        await db.write(StepWrite(agent, leases.holder, [user_message(agent, "still mine")]))


async def test_no_lease_for_an_agent_that_does_not_exist(db: Database):
    with pytest.raises(NoSuchAgent):
        await Leases(db).acquire(12345)


async def test_a_step_write_holds_only_its_own_agents_messages():
    with pytest.raises(PermissionError):
        StepWrite(1, "proc", [user_message(2, "not mine")])


async def test_a_lease_of_a_process_of_this_machine_that_is_gone_is_taken_at_once(db: Database):
    agent = await _agent(db)
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    host = new_holder().partition(":")[0]
    await Leases(db, f"{host}:{gone.pid}:deadbeef").acquire(agent)  # killed mid-step: never released
    assert await Leases(db, wait=0.2).acquire(agent) == 0
    # One of another machine (or alive) is waited for.
    await db.write(lambda session: session.execute(update(LeaseRow).values(holder=f"elsewhere:{gone.pid}:x")))
    with pytest.raises(AgentBusy):
        await Leases(db, wait=0.2).acquire(agent)


async def test_two_processes_creating_one_users_agent_at_once_make_one(settings):
    # Two services over one database are two processes as far as SQL goes: no lock of one reaches the other.
    first, second = await BotService.open(settings), await BotService.open(settings)
    try:
        carol = UserRef("slack", "T1", "U-carol", "carol")
        made = await asyncio.gather(*(service.agent_id(carol) for service in (first, second, first, second)))
        assert len({agent_id for agent_id, _ in made}) == 1
        assert sum(created for _, created in made) == 1
        assert await first.engine.db.scalar(select(func.count()).select_from(AgentRow)) == 1
    finally:
        await first.close()
        await second.close()
