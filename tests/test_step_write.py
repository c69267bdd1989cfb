"""A step's commit (StepWrite) on both databases: it lands whole or not at all, the chain's last commit gives
the lease back, and entity reads are spared for words already known to name no entity."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from membot.agent.messages import assistant_message, event_message, tool_result, user_message
from membot.agent.step_write import StepWrite
from membot.agent.store import entities
from membot.agent.store.db import Database
from membot.agent.store.leases import LeaseLost, Leases
from membot.agent.store.schema import AgentRow, BlockRow, EntityMentionRow, EntityRow, LeaseRow, MessageRow

pytestmark = pytest.mark.both_databases


async def _agent(db: Database) -> int:
    row = AgentRow(name="a", persona_name="p", human_name="h")
    await db.add(row)
    await db.add(BlockRow(agent_id=row.id, label="human", value=""), BlockRow(agent_id=row.id, label="persona", value=""))
    return row.id


def _call(agent: int, text: str) -> list:
    calls = [{"id": "c1", "type": "function", "function": {"name": "send_message", "arguments": "{}"}}]
    return [assistant_message(agent, None, calls, text, None), tool_result(agent, "c1", "send_message", True, None),
            event_message(agent, "heartbeat", "Function called with request_heartbeat=true.")]


async def test_a_step_write_lands_whole_with_ids_in_order(db: Database):
    agent = await _agent(db)
    leases = Leases(db, "proc-a")
    rows = _call(agent, "ok then")
    write = StepWrite(agent, leases.holder, rows, {"human": "Likes tea.", "persona": "Calm."},
                      {"last_prompt_tokens": 42, "pressure_alerted": True}, tokens=7)
    assert write.keys == []  # names no entity: nothing to read
    async with leases.hold(agent):
        stored = await db.write(write)
    assert not stored.cancelled
    ids = [row.id for row in rows]
    assert all(ids) and ids == sorted(ids)
    kinds = await db.rows(select(MessageRow.id, MessageRow.kind, MessageRow.tool_calls).order_by(MessageRow.id))
    assert [(r.id, r.kind) for r in kinds] == [(row.id, row.kind) for row in rows]
    assert kinds[0].tool_calls == rows[0].tool_calls and kinds[1].tool_calls is None
    agent_row = (await db.rows(select(AgentRow.version, AgentRow.last_prompt_tokens, AgentRow.pressure_alerted,
                                      AgentRow.tokens_today)))[0]
    assert tuple(agent_row) == (1, 42, True, 7)
    blocks = dict(tuple(r) for r in await db.rows(select(BlockRow.label, BlockRow.value)))
    assert blocks == {"human": "Likes tea.", "persona": "Calm."}


async def test_a_step_write_without_the_lease_lands_nothing(db: Database):
    agent = await _agent(db)
    first, second = Leases(db, "proc-a"), Leases(db, "proc-b")
    async with first.hold(agent):
        write = StepWrite(agent, second.holder, _call(agent, "from the wrong process"), {"human": "Changed."},
                          {"last_prompt_tokens": 9}, tokens=5)
        with pytest.raises(LeaseLost):
            await db.write(write)
    assert await db.scalar(select(MessageRow.id)) is None
    assert tuple((await db.rows(select(AgentRow.version, AgentRow.tokens_today)))[0]) == (0, 0)
    assert await db.scalar(select(BlockRow.value).where(BlockRow.label == "human")) == ""


async def test_words_known_to_name_no_entity_are_not_read_again(db: Database):
    agent = await _agent(db)
    leases = Leases(db, "proc-a")
    async with leases.hold(agent):
        # "Worth" starts a sentence: it names an entity only once that entity is known; it is not.
        first = StepWrite(agent, leases.holder, [user_message(agent, "Worth a try.")])
        assert first.keys == ["worth"]
        stored = await db.write(first)
        assert stored.absent == {"worth"} and stored.entities == []
        # Known absent now: nothing to read or count.
        again = StepWrite(agent, leases.holder, [user_message(agent, "Worth it.")], absent=stored.absent)
        assert again.keys == []
        assert (await db.write(again)).absent == frozenset()
        # Named mid-sentence, an entity is counted even if its key was thought absent; it is absent no more.
        named = StepWrite(agent, leases.holder, [user_message(agent, "I met Worth and Alice.")],
                          absent={"worth", "alice"})
        assert named.keys == ["alice", "worth"]
        stored = await db.write(named)
        assert {e.key for e in stored.entities} == {"alice", "worth"} and stored.absent == frozenset()
        # Known now, a sentence-initial mention counts.
        known = StepWrite(agent, leases.holder, [user_message(agent, "Alice called.")], absent={"worth"})
        assert known.keys == ["alice"]
        await db.write(known)
    counts = dict(tuple(r) for r in await db.rows(select(EntityRow.key, EntityRow.mentions)))
    assert counts == {"alice": 2, "worth": 1}


def test_entities_are_read_only_when_a_mention_could_count():
    said = [user_message(1, "Worth a try. Curious idea.")]
    assert entities.keys_to_read(said, set()) == ["curious", "worth"]  # unknown whether they are known: read
    assert entities.keys_to_read(said, {"worth", "curious"}) == []
    assert entities.keys_to_read(said, {"worth"}) == ["curious", "worth"]
    assert entities.keys_to_read([user_message(1, "ask Bob")], {"bob"}) == ["bob"]  # mid-sentence: counted anyway
    assert entities.keys_to_read([user_message(1, "nothing named here")], set()) == []


async def test_entities_new_and_known_are_counted_and_linked_to_their_messages_or_not_at_all(db: Database):
    agent = await _agent(db)
    first, second = Leases(db, "proc-a"), Leases(db, "proc-b")
    async with first.hold(agent):
        await db.write(StepWrite(agent, first.holder, [user_message(agent, "I met Alice.")]))
        said = [user_message(agent, "Then Bob and Alice left."), event_message(agent, "heartbeat", "go on"),
                user_message(agent, "and Carol too")]
        with pytest.raises(LeaseLost):  # not this process's lease: none of it lands
            await db.write(StepWrite(agent, second.holder, said))
        assert await db.scalar(select(func.count()).select_from(EntityRow)) == 1
        assert await db.scalar(select(func.count()).select_from(EntityMentionRow)) == 1
        stored = await db.write(StepWrite(agent, first.holder, said))
    assert {e.key: e.mentions for e in stored.entities} == {"alice": 2, "bob": 1, "carol": 1}
    counts = dict(tuple(r) for r in await db.rows(select(EntityRow.key, EntityRow.mentions)))
    assert counts == {"alice": 2, "bob": 1, "carol": 1}
    links = await db.rows(select(EntityRow.key, EntityMentionRow.message_id)
                          .join(EntityMentionRow, EntityMentionRow.entity_id == EntityRow.id))
    named = {(key, message_id) for key, message_id in links}
    assert {(k, m) for k, m in named if m != min(m for _, m in named)} == {
        ("bob", said[0].id), ("alice", said[0].id), ("carol", said[2].id)}


async def test_a_steps_last_commit_gives_the_lease_back_with_it(db: Database):
    agent = await _agent(db)
    first, second = Leases(db, "proc-a"), Leases(db, "proc-b", wait=0.2)
    async with first.hold(agent):
        await db.write(StepWrite(agent, first.holder, [user_message(agent, "hello")]))
        assert await db.scalar(select(LeaseRow.holder)) == "proc-a"
        await db.write(StepWrite(agent, first.holder, _call(agent, "bye"), release=True))
        first.given_back(agent)
        assert await db.scalar(select(LeaseRow.holder)) is None
        assert await second.acquire(agent) == 2  # at once, and it sees both commits
        with pytest.raises(LeaseLost):  # given back: nothing more lands
            await db.write(StepWrite(agent, first.holder, [user_message(agent, "too late")]))
    # The block's end releases nothing of the next holder's.
    assert await db.scalar(select(LeaseRow.holder)) == "proc-b"
    assert await db.scalar(select(func.count()).select_from(MessageRow)) == 4
