"""A user's memory as theirs: export, import (here or on another deployment) and forget, checked against every
table that holds an agent's data as the schema lists them, Milvus (both owners) and the sandbox."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, literal, select, text
from sqlalchemy.orm import Session

from membot.agent.memory.archival import agent_owner
from membot.agent.place import Place
from membot.agent.store import agent_data, wakeups
from membot.agent.store.passages import PassageRow
from membot.agent.store.schema import Base, utcnow
from membot.bot.erase import sandbox_of
from membot.bot.identity import UserRef, find_agent
from membot.bot.service import BotService, CommandError
from membot.bot.settings import Settings
from tests.conftest import collect, make_settings
from tests.fakes.openai_server import ScriptedModel, send, tool_call
from tests.milvus_server import fresh_deployment

pytestmark = pytest.mark.both_databases

ALICE = UserRef("terminal", "local", "alice", "alice")
CHANNEL = Place.shared("C1", "#general")


@pytest.fixture
async def settings(home: Path, model: ScriptedModel, database_url: str, milvus_server: str) -> Settings:
    """On the session's Milvus server, not a Milvus Lite of the test's own, whose start each test paid. The
    round trip's other deployment, and the shell's tests (test_memory_export.py), keep Milvus Lite."""
    await fresh_deployment(database_url)
    await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True)  # as `membot` does; Milvus Lite did here
    return make_settings(home, model, MEMBOT_DATABASE_URL=database_url, MEMBOT_MILVUS_URI=milvus_server)


def agent_tables() -> list[Table]:
    """Built here from the schema, not taken from the code under test: `agents`, every table with an
    `agent_id`, and every table linked to one of those by a foreign key."""
    tables = list(Base.metadata.sorted_tables)
    found = [t for t in tables if t.name == "agents" or "agent_id" in t.c]
    while extra := [t for t in tables if t not in found and any(fk.column.table in found for fk in t.foreign_keys)]:
        found += extra
    return found


def test_every_agent_table_travels_or_says_why_not():
    """A table added with an agent's data that the export neither carries nor names fails here."""
    handled = {table.name for table in agent_data.SECTIONS.values()} | set(agent_data.OTHER_TABLES)
    assert {t.name for t in agent_tables()} <= handled
    assert [t.name for t in agent_data.agent_tables()] == [t.name for t in agent_tables()]


async def _rows(service: BotService, agent_id: int) -> dict[str, list[dict[str, Any]]]:
    """The agent's rows in every agent table, without ids (row ids and links to rows differ by deployment) nor
    what the export leaves out on purpose (agent_data.SKIPPED); attachments as the sources' names."""

    def read(session: Session) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for table in agent_tables():
            key = table.c.id if table.name == "agents" else table.c.agent_id
            skipped = agent_data.SKIPPED.get(table.name, frozenset()) | {"id", "agent_id", "source_id", "entity_id",
                                                                         "message_id"}
            # A table of links only (entity_mentions): one mark a row.
            cols = [c for c in table.columns if c.name not in skipped] or [literal(1).label("link")]
            rows = session.execute(select(*cols).where(key == agent_id)).mappings()
            out[table.name] = sorted((dict(r) for r in rows), key=repr)
            if table.name == "agent_sources":
                out[table.name] = [{"source": name} for name in session.scalars(
                    text("SELECT s.name FROM agent_sources a JOIN sources s ON s.id = a.source_id "
                         "WHERE a.agent_id = :a ORDER BY s.name"), {"a": agent_id})]
        return out

    return await service.engine.db.read(read)


async def _passages(service: BotService, agent_id: int) -> dict[bool, list[tuple[str, str, int]]]:
    return {private: [(p.text, p.filename, p.page) for p in
                      await service.engine.passages.rows_of(agent_owner(agent_id, private=private))]
            for private in (False, True)}


async def _fill(service: BotService, model: ScriptedModel) -> int:
    """Alice's agent with something in every place: both core blocks edited, the private block, messages in a DM
    and in a channel, passages of both owners, a reminder, a time zone, an attached source and a sandbox file."""
    model.script(
        tool_call("core_memory_append", {"name": "human", "content": "Name: Alice", "request_heartbeat": True}),
        tool_call("archival_memory_insert", {"content": "Alice's PIN is 4417", "request_heartbeat": True}),
        send("Noted, Alice."),
    )
    await collect(service.chat(ALICE, "I'm Alice; my PIN is 4417"))
    model.script(
        tool_call("archival_memory_insert", {"content": "The team meets on Mondays", "request_heartbeat": True}),
        send("Got it, team."),
    )
    await collect(service.chat(ALICE, "Remember: we meet on Mondays", CHANNEL))
    agent_id = await find_agent(service.engine.db, ALICE)
    assert agent_id is not None
    now = utcnow()

    def extras(session: Session) -> None:
        wakeups.add_reminder(session, agent_id, now + timedelta(hours=3), "call the bank", now)
        wakeups.set_zone(session, agent_id, "Europe/Paris")
        session.execute(text("UPDATE core_blocks SET value = value || ' secret plans' WHERE agent_id = :a "
                             "AND label = 'private'"), {"a": agent_id})

    await service.engine.db.write(extras)
    notes = service.settings.home_dir / "notes.txt"
    notes.write_text("Shared notes for everyone.\n" * 5)
    source = await service.engine.catalog.get_or_create("terminal:local", "notes")
    outcome = await service.engine.loader.load_bytes(source, "notes.txt", notes.read_bytes())
    assert not outcome.failed
    await service.engine.catalog.attach(agent_id, source.id)
    folder = await sandbox_of(service.engine, agent_id)
    assert folder is not None
    (folder / "diary").mkdir(parents=True)
    (folder / "diary" / "monday.txt").write_text("Met Alice.\n")
    service._drop(agent_id)  # what was written behind the cached agent's back
    return agent_id


async def test_export_import_export_round_trips_on_another_deployment(service, model, home, tmp_path, request):
    agent_id = await _fill(service, model)
    name, raw = await service.export_memory(ALICE)
    assert name.startswith("membot-memory-alice-") and name.endswith(".json")
    data = json.loads(raw)
    assert data["format"] == "membot-agent" and data["user"]["user_id"] == "alice"
    assert {b["label"] for b in data["core_blocks"]} == {"persona", "human", "private"}
    assert {(p["text"], p["private"]) for p in data["passages"]} == {
        ("Alice's PIN is 4417", True), ("The team meets on Mondays", False)}
    assert any(m["place"] == "C1" and not m["private"] for m in data["messages"])
    assert data["sources"] == [{"scope": "terminal:local", "name": "notes"}]
    assert data["files"] == [{"path": "diary/monday.txt", "text": "Met Alice.\n"}]
    assert data["agent"]["timezone"] == "Europe/Paris" and "shared_summary" in data["agent"]

    # Another deployment: its own database and Milvus; the same source loaded there.
    overrides: dict[str, Any] = {}
    if not service.engine.db.is_sqlite:  # a second database on the server, dropped with the run's others
        postgres = request.getfixturevalue("postgres")
        overrides["MEMBOT_DATABASE_URL"] = postgres.url(await postgres.clone())
    other = await BotService.open(make_settings(tmp_path / "other", model, **overrides))
    try:
        source = await other.engine.catalog.get_or_create("terminal:local", "notes")
        await other.engine.loader.load_bytes(source, "notes.txt", (home / "notes.txt").read_bytes())
        said = await other.import_memory(raw)
        assert "as the agent of alice" in said and "2 archival passages" in said and "1 sandbox file" in said
        new_id = await find_agent(other.engine.db, ALICE)
        assert new_id is not None
        assert await _rows(other, new_id) == await _rows(service, agent_id)
        assert await _passages(other, new_id) == await _passages(service, agent_id)
        _, again = await other.export_memory(ALICE)
        assert _without_times(json.loads(again)) == _without_times(data)
        # The imported agent talks with its memory.
        model.script(send("Hi again."))
        await collect(other.chat(ALICE, "hello"))
        assert "secret plans" in model.requests[-1]["messages"][0]["content"]

        with pytest.raises(CommandError, match="already has an agent.*--replace"):
            await other.import_memory(raw)
        said = await other.import_memory(raw, replace=True)
        replaced = await find_agent(other.engine.db, ALICE)
        assert replaced != new_id and await _rows(other, new_id) == {t.name: [] for t in agent_tables()}
        assert await _passages(other, new_id) == {False: [], True: []}
        bob = UserRef("terminal", "local", "bob", "bob")
        assert "as the agent of bob" in await other.import_memory(raw, bob)
    finally:
        await other.close()


def _without_times(data: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in data.items() if k != "exported_at"}
    data["wakeups"] = [{k: v for k, v in w.items() if k != "created_at"} for w in data["wakeups"]]
    return data


async def test_import_refuses_a_broken_file_and_changes_nothing(service):
    for raw, words in ((b"not json", "not readable JSON"), (b'{"format": "x"}', "not a membot memory export"),
                       (json.dumps({"format": "membot-agent", "version": 99}).encode(), "newer membot"),
                       (json.dumps({"format": "membot-agent", "version": 1, "agent": {}}).encode(), "agent")):
        with pytest.raises(CommandError, match=words):
            await service.import_memory(raw)
    with pytest.raises(CommandError, match="no agent here"):
        await service.export_memory(ALICE)


async def test_forget_leaves_nothing_of_the_agent_anywhere(service, model):
    agent_id = await _fill(service, model)
    bob = UserRef("terminal", "local", "bob", "bob")
    model.script(send("Hi Bob."))
    await collect(service.chat(bob, "hi"))
    folder = await sandbox_of(service.engine, agent_id)
    assert folder is not None and folder.exists()
    with pytest.raises(CommandError, match="operators"):
        await service.forget(bob, ALICE)

    said = await service.forget(ALICE)
    assert "deleted" in said
    assert await _rows(service, agent_id) == {t.name: [] for t in agent_tables()}
    assert await _passages(service, agent_id) == {False: [], True: []}
    assert not folder.exists()
    if service.engine.db.is_sqlite:  # the contentless search index forgot her words too
        hits = await service.engine.db.read(lambda s: s.execute(text(
            "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH :q"), {"q": f'agent:"a{agent_id}"'}).scalar())
        assert hits == 0
    assert await find_agent(service.engine.db, bob) is not None  # nobody else's agent is touched
    with pytest.raises(CommandError, match="no agent here"):
        await service.forget(ALICE)
    # A new message starts a new agent, which finds nothing of the old one.
    model.script(tool_call("archival_memory_search", {"query": "PIN", "request_heartbeat": True}), send("New here."))
    await collect(service.chat(ALICE, "what is my PIN?"))
    assert "4417" not in json.dumps(model.requests[-1]["messages"])


async def test_an_operator_may_forget_anyone(service, model):
    await _fill(service, model)
    root = UserRef("terminal", "local", "root", "root")
    assert "The agent of alice" in await service.forget(root, ALICE, is_admin=True)
    assert await find_agent(service.engine.db, ALICE) is None


def _letta_file() -> dict[str, Any]:
    """A small Agent File as Letta writes them (the shape of letta-ai/agent-file's memgpt_agent examples)."""

    def msg(mid: str, role: str, text: str, **extra: Any) -> dict[str, Any]:
        return {"type": "message", "role": role, "content": [{"type": "text", "text": text}], "id": mid,
                "agent_id": "agent-0", "tool_calls": None, "tool_call_id": None, "tool_returns": [],
                "created_at": "2025-10-31T22:56:56.459100+00:00", **extra}

    call = {"id": "call-1", "type": "function",
            "function": {"name": "send_message", "arguments": json.dumps({"message": "Hi Chad, noted."})}}
    return {
        "agents": [{
            "name": "memgpt_agent", "block_ids": ["block-0", "block-1", "block-2"], "timezone": "Europe/Berlin",
            "in_context_message_ids": ["message-0", "message-2", "message-3", "message-4"],
            "messages": [
                msg("message-0", "system", "<base_instructions>Letta's own</base_instructions>"),
                msg("message-1", "user", "My sailing club meets on Thursdays"),
                msg("message-2", "user", json.dumps({"type": "user_message", "message": "I'm Chad", "time": "x"})),
                msg("message-3", "assistant", "He told me his name.", tool_calls=[call]),
                msg("message-4", "tool", "", tool_call_id="call-1", name="send_message",
                    tool_returns=[{"status": "success", "func_response": "None", "tool_call_id": "call-1"}]),
            ],
        }],
        "blocks": [{"id": "block-0", "label": "human", "value": "First name: Chad", "limit": 20000},
                   {"id": "block-1", "label": "persona", "value": "I am Sam.", "limit": 20000},
                   {"id": "block-2", "label": "tasks", "value": "Book the boat", "limit": 20000}],
        "tools": [], "sources": [], "files": [], "groups": [],
    }


async def test_a_letta_agent_file_imports_its_blocks_and_conversation(service, model):
    raw = json.dumps(_letta_file()).encode()
    with pytest.raises(CommandError, match="name the user"):
        await service.import_memory(raw)
    said = await service.import_memory(raw, ALICE)
    assert "2 core blocks, 4 messages, 1 archival passage" in said
    _, exported = await service.export_memory(ALICE)
    data = json.loads(exported)
    blocks = {b["label"]: b["value"] for b in data["core_blocks"]}
    assert blocks["human"] == "First name: Chad" and blocks["persona"] == "I am Sam."
    assert [(m["kind"], m["in_context"]) for m in data["messages"]] == [
        ("user_message", False), ("user_message", True), ("assistant", True), ("tool_result", True)]
    assert data["agent"]["timezone"] == "Europe/Berlin"
    assert [p["text"] for p in data["passages"]] == ["[tasks block, from Letta] Book the boat"]
    assert any("sailing club" in line for line in await service.search_memory(ALICE, "sailing"))
    model.script(send("Hello again, Chad."))
    await collect(service.chat(ALICE, "hello"))
    prompt = model.requests[-1]["messages"]
    assert "First name: Chad" in prompt[0]["content"] and "Letta's own" not in json.dumps(prompt)
    assert any(m.get("tool_calls") for m in prompt) and any(m["role"] == "tool" for m in prompt)


async def test_an_owners_passages_are_listed_whole_past_the_iterators_pages(service):
    rows = [PassageRow(text=f"passage {n}", embedding=[float(n % 7 + 1)] + [0.0] * 63) for n in range(2_100)]
    await service.engine.passages.insert("agent:99", rows)
    await service.engine.passages.insert("agent:98", rows[:5])
    listed = await service.engine.passages.rows_of("agent:99")
    assert sorted(p.text for p in listed) == sorted(r.text for r in rows)
    assert await service.engine.passages.rows_of("agent:97") == []


async def test_a_process_that_linked_a_deleted_agent_answers_with_the_users_new_one(home, model, database_url, user):
    from membot.agent.events import AssistantMessage
    from membot.bot.service import BotService
    from tests.conftest import collect, make_settings
    from tests.fakes.openai_server import send

    settings = make_settings(home, model, MEMBOT_DATABASE_URL=database_url)
    serving, other = await BotService.open(settings), await BotService.open(settings)
    try:
        alice = user("alice")
        model.script(send("Hello."))
        await collect(serving.chat(alice, "remember the zebra"))  # this process now has alice's agent linked
        await other.forget(alice)  # another process (membot memory forget) deletes it
        model.script(send("Hello again, whoever you are."))
        events = await collect(serving.chat(alice, "still there?"))
        assert [e.text for e in events if isinstance(e, AssistantMessage)] == ["Hello again, whoever you are."]
        assert await serving.search_memory(alice, "zebra") == []  # a new agent: nothing of the old one
    finally:
        await serving.close()
        await other.close()


async def test_forget_takes_the_files_sent_privately_and_leaves_shared_ones(service, model):
    dm = UserRef("discord", "", "77", "dora", source_scope="discord:dm:77")
    in_guild = UserRef("discord", "", "77", "dora", source_scope="discord:500")
    model.script(send("Loaded."), send("Loaded too."))
    for who, name in ((dm, "diary.md"), (in_guild, "handbook.md")):
        _, events = await service.load_file(who, name, b"# Notes\n\nSomething worth keeping.\n")
        await collect(events)
    await service.forget(dm)
    left = {info.name for info in await service.engine.catalog.list()}
    assert "handbook.md" in left and "diary.md" not in left
