"""What a user, a file or the model can throw at the bot: bounded, clearly answered, and nothing leaks."""

from __future__ import annotations

import io
import time
import zlib

import pytest
from pypdf import PdfWriter
from pypdf.generic import DictionaryObject, NameObject, StreamObject

from membot.agent.events import FunctionResult
from membot.bot.identity import UserRef
from membot.bot.service import CommandError
from tests.conftest import collect
from tests.fakes.openai_server import send, tool_call

pytestmark = pytest.mark.both_databases  # SQL-backed: run on SQLite and on PostgreSQL (see conftest)

NASTY = ["", "   ", "x" * 100_000, "bad\x00name\x07", "../../etc/passwd", "ソース 📚", "\u202eevil"]


async def test_commands_with_hostile_arguments_fail_clearly(service, model, user):
    alice = user("alice")
    model.default = lambda body: send("ok")
    for arg in NASTY:
        with pytest.raises(CommandError) as caught:
            await service.attach(alice, arg)
        assert len(str(caught.value)) < 600
        with pytest.raises(CommandError):
            await service.set_persona(alice, arg)
        with pytest.raises(CommandError):
            await service.detach(alice, arg)
    assert (await service.memory(alice)).persona_name == "sam_pov"  # nothing changed
    # A huge, odd message is still just a message.
    events = await collect(service.chat(alice, "\x00\x1b[31m" + "🙂" * 50_000))
    assert [e.text for e in events if e.visible] == ["ok"]


async def test_a_nul_from_a_user_name_or_the_model_is_stored_not_a_crash(service, model):
    # PostgreSQL's text cannot hold NUL; a name or a memory edit carrying one must not fail the step.
    odd = UserRef("terminal", "local", "nul\x00user", "Nul\x00Name")
    model.script(tool_call("core_memory_append", {"name": "human", "content": "Code: a\x00b.", "request_heartbeat": True}),
                 send("stored"))
    events = await collect(service.chat(odd, "remember a\x00b"))
    assert [e.text for e in events if e.visible] == ["stored"]
    assert "Code: a" in (await service.memory(odd)).blocks["private"][0]


async def test_the_model_cannot_reach_another_agent(service, model, user):
    alice, bob = user("alice"), user("bob")
    model.script(tool_call("archival_memory_insert", {"content": "alice private passage"}), tool_call(
        "core_memory_append", {"name": "human", "content": "alice private fact"}))
    await collect(service.chat(alice, "store"))
    await collect(service.chat(alice, "remember"))
    bob_id, _ = await service.agent_id(bob)
    alice_id, _ = await service.agent_id(alice)
    attempts = [
        ("archival_memory_search", {"query": "alice private", "agent_id": alice_id}),
        ("conversation_search", {"query": "alice private", "agent": "alice"}),
        ("core_memory_append", {"name": "human", "content": "x", "agent_id": alice_id}),
        ("archival_memory_search", {"query": "alice private", "owner": f"agent:{alice_id}"}),
    ]
    for name, args in attempts:
        model.script(tool_call(name, args))
        events = await collect(service.chat(bob, "try"))
        result = next(e for e in events if isinstance(e, FunctionResult))
        assert not result.ok and "Extra inputs are not permitted" in result.result
    model.script(tool_call("archival_memory_search", {"query": "alice private passage"}))
    result = next(e for e in await collect(service.chat(bob, "plain")) if isinstance(e, FunctionResult))
    assert "alice private" not in result.result
    model.script(tool_call("conversation_search", {"query": "alice private"}))
    result = next(e for e in await collect(service.chat(bob, "plain")) if isinstance(e, FunctionResult))
    assert "alice private" not in result.result and "store" not in result.result
    assert "alice private fact" not in (await service.memory(bob)).blocks["private"][0]
    assert bob_id != alice_id


async def test_huge_arguments_and_endless_heartbeats_stay_bounded(service, model, user):
    alice = user("alice")
    model.default = lambda body: tool_call(
        "archival_memory_insert", {"content": "y" * 1_000_000, "request_heartbeat": True}
    )
    started = time.perf_counter()
    events = await collect(service.chat(alice, "go wild"))
    assert time.perf_counter() - started < 30
    results = [e for e in events if isinstance(e, FunctionResult)]
    assert len(results) == service.settings.max_chain and not any(r.ok for r in results)
    assert "at most" in results[0].result


async def test_sources_of_another_workspace_cannot_be_attached(service, model, user):
    alice = user("alice")
    outcome, events = await service.load_file(alice, "notes.md", b"# Notes\n\nThe launch code is 1234.\n")
    assert outcome.status == "loaded"
    model.default = lambda body: send("ok")
    await collect(events)
    mallory = UserRef("slack", "T-OTHER", "U-MALLORY", "mallory")
    with pytest.raises(CommandError, match="no source called"):
        await service.attach(mallory, "notes.md")
    assert [s.name for s in await service.sources(mallory)] == []


def _pdf(pages: int) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(72, 72)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _bomb() -> bytes:
    """One page whose content stream inflates from ~100 KB to 100 MB of text-drawing operators."""
    writer = PdfWriter()
    page = writer.add_blank_page(612, 792)
    stream = StreamObject()
    raw = b"BT /F1 12 Tf 72 720 Td (" + b"A" * 100_000_000 + b") Tj ET"
    stream._data = zlib.compress(raw, 9)
    stream[NameObject("/Filter")] = NameObject("/FlateDecode")
    page[NameObject("/Contents")] = writer._add_object(stream)
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})}
    )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


async def test_pathological_pdfs_are_refused_quickly(service, user):
    alice = user("alice")
    for name, data in (("huge.pdf", _pdf(10_000)), ("bomb.pdf", _bomb())):
        started = time.perf_counter()
        outcome, _ = await service.load_file(alice, name, data)
        elapsed = time.perf_counter() - started
        assert outcome.failed and name in outcome.reason, outcome
        assert ("pages" if name == "huge.pdf" else "decompression bomb") in outcome.reason
        assert elapsed < 20, (name, elapsed)
    assert await service.sources(alice) == []

