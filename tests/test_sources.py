"""Data sources: loading the MemGPT paper, attaching, hybrid search, and bad files that leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from pypdf import PdfWriter

from membot.agent.events import FunctionResult
from membot.bot.service import CommandError
from tests.conftest import collect, make_settings
from tests.fakes.openai_server import send, tool_call
from tests.milvus_server import fresh_deployment

pytestmark = pytest.mark.both_databases  # SQL-backed: run on SQLite and on PostgreSQL (see conftest)


@pytest.fixture(params=["lite", "server"])
async def settings(request, home, model, database_url):
    """conftest's settings, on Milvus Lite and on the session's Milvus server."""
    if request.param == "lite":
        return make_settings(home, model, MEMBOT_DATABASE_URL=database_url)
    await fresh_deployment(database_url)
    return make_settings(
        home, model, MEMBOT_DATABASE_URL=database_url, MEMBOT_MILVUS_URI=request.getfixturevalue("milvus_server")
    )

PAPER = Path(__file__).resolve().parents[2] / "shared" / "data" / "memgpt_paper.pdf"
needs_paper = pytest.mark.skipif(not PAPER.exists(), reason="shared/data/memgpt_paper.pdf not present")


@needs_paper
async def test_paper_loads_attaches_and_is_found(service, model, user):
    alice, bob = user("alice"), user("bob")
    outcome, events = await service.load_file(alice, PAPER.name, PAPER.read_bytes(), source_name="memgpt_paper")
    assert outcome.status == "loaded" and outcome.documents == 13 and outcome.passages > 40
    # Embeddings were batched: far fewer requests than passages.
    assert len(model.embedding_requests) <= 2
    model.script(send("Noted, I'll look there."))
    await collect(events)
    assert "memgpt_paper" in model.requests[-1]["messages"][-1]["content"]  # the agent was told

    model.script(
        tool_call("archival_memory_search", {"query": "virtual context management", "request_heartbeat": True}),
        send("It's about virtual context management."),
    )
    events = await collect(service.chat(alice, "What is the paper about?"))
    result = next(e for e in events if isinstance(e, FunctionResult))
    assert result.ok and "virtual context" in result.result.lower()
    assert "[source memgpt_paper: memgpt_paper.pdf, page" in result.result

    # Bob's agent has not attached it and finds nothing.
    model.script(tool_call("archival_memory_search", {"query": "virtual context management"}))
    events = await collect(service.chat(bob, "search the paper"))
    result = next(e for e in events if isinstance(e, FunctionResult))
    assert "No passages found" in result.result

    # Loading the same file again adds nothing.
    again, _ = await service.load_file(alice, PAPER.name, PAPER.read_bytes(), source_name="memgpt_paper")
    assert again.status == "duplicate" and again.passages == 0
    [info] = await service.sources(alice)
    assert info.passages == outcome.passages and info.files == 1


async def test_bad_files_leave_nothing(service, user, tmp_path):
    alice = user("alice")
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.encrypt("secret", algorithm="AES-256")
    encrypted = tmp_path / "locked.pdf"
    with encrypted.open("wb") as fh:
        writer.write(fh)
    cases = {
        "locked.pdf": (encrypted.read_bytes(), "encrypted"),
        "empty.pdf": (b"", "empty"),
        "junk.pdf": (b"\x00\x01garbage" * 100, "not a PDF"),
        "notes.docx": (b"PK\x03\x04 whatever", "unsupported"),
    }
    for name, (data, why) in cases.items():
        outcome, _ = await service.load_file(alice, name, data)
        assert outcome.failed, name
        assert why.lower() in outcome.reason.lower(), (name, outcome.reason)
        assert name in outcome.reason
    assert await service.sources(alice) == []


@needs_paper
async def test_truncated_pdf_and_embedding_failure_leave_nothing(service, model, user):
    alice = user("alice")
    data = PAPER.read_bytes()
    outcome, _ = await service.load_file(alice, "half.pdf", data[: len(data) // 2])
    assert outcome.failed and "half.pdf" in outcome.reason
    model.embedding_failures = 5
    outcome, _ = await service.load_file(alice, PAPER.name, data)
    assert outcome.failed and "embedding" in outcome.reason
    assert await service.sources(alice) == []
    assert await service.engine.passages.count(["source:1", "source:2"]) == 0


async def test_attach_unknown_source_and_detach(service, model, user, tmp_path):
    alice = user("alice")
    with pytest.raises(CommandError, match="no source called"):
        await service.attach(alice, "nope")
    outcome, events = await service.load_file(alice, "cats.md", b"# Cats\n\nMy cat Tom likes tuna and naps.\n")
    assert outcome.status == "loaded"
    model.script(send("ok"))
    await collect(events)
    note, _ = await service.attach(alice, "cats.md")
    assert "already attached" in note
    assert "Detached" in await service.detach(alice, "cats.md")
    report = await service.memory(alice)
    assert report.sources == []


async def test_a_long_file_name_still_names_its_source(service, model, user):
    alice = user("alice")
    long_name = "Minutes of the " + "very " * 40 + "long meeting.md"
    model.script(send("Got it."))
    outcome, events = await service.load_file(alice, long_name, b"# Minutes\n\nWe agreed on tea.\n")
    await collect(events)
    assert outcome.status == "loaded"
    (source,) = await service.sources(alice)
    assert len(source.name) <= 100 and source.name.startswith("Minutes of the very")
