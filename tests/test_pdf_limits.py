"""A hostile PDF costs bounded CPU, memory and time, in a child process that never lags the event loop; a
lying page count is caught before the page tree is walked; one user's uploads are read a few at a time."""

from __future__ import annotations

import asyncio
import io
import time
import zlib

import pytest
from pypdf import PdfReader, PdfWriter
from pypdf.generic import ArrayObject, DictionaryObject, NameObject, NumberObject, StreamObject

from membot.agent.sources.documents import FileRejected, read_file_bytes
from membot.agent.sources.isolated import ParseLimits, parse_in_child
from membot.agent.sources.loader import FileOutcome
from membot.bot.slots import KeyedSlots

LIMIT = 50 * 1024 * 1024


def _font(writer: PdfWriter) -> DictionaryObject:
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    return DictionaryObject({NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})})


def _with_content(pages: int, content: bytes) -> bytes:
    """`pages` pages that all draw one shared, compressed content stream."""
    writer = PdfWriter()
    stream = StreamObject()
    stream._data = zlib.compress(content, 9)
    stream[NameObject("/Filter")] = NameObject("/FlateDecode")
    shared, resources = writer._add_object(stream), _font(writer)
    for _ in range(pages):
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Contents")] = shared
        page[NameObject("/Resources")] = resources
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _slow_pdf() -> bytes:
    """A few KB whose pages each cost seconds of CPU to read: tens of thousands of tiny text runs."""
    return _with_content(4, b"BT /F1 1 Tf " + b"(A) Tj 0 1 Td " * 60_000 + b"ET")


def _hungry_pdf() -> bytes:
    """A few KB whose content stream inflates to tens of MB (under pypdf's own cap)."""
    return _with_content(1, b"%" + b" " * 60_000_000 + b"\nBT /F1 12 Tf 72 720 Td (Hi) Tj ET")


def _lying_pdf(fanout: int = 10, depth: int = 5) -> bytes:
    """/Count says 1 page; the tree repeats one inner node at every level and stands for fanout**depth."""
    writer = PdfWriter()
    writer.add_blank_page(72, 72)
    pages = writer._root_object["/Pages"].get_object()
    node = pages["/Kids"][0]
    for _ in range(depth):
        node = writer._add_object(DictionaryObject({
            NameObject("/Type"): NameObject("/Pages"), NameObject("/Kids"): ArrayObject([node] * fanout),
            NameObject("/Count"): NumberObject(1),
        }))
    pages[NameObject("/Kids")] = ArrayObject([node])
    pages[NameObject("/Count")] = NumberObject(1)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_lying_page_count_is_refused_before_pypdf_walks_the_tree(monkeypatch):
    def never(self: PdfReader, *args: object, **kwargs: object) -> None:
        raise AssertionError("the page tree must not be flattened")

    monkeypatch.setattr(PdfReader, "_flatten", never)
    started = time.perf_counter()
    with pytest.raises(FileRejected, match=r"^lying\.pdf: the PDF says it has 1 page but holds more"):
        read_file_bytes("lying.pdf", _lying_pdf(), max_bytes=LIMIT)
    assert time.perf_counter() - started < 1
    with pytest.raises(FileRejected, match="holds more"):  # a loop in the tree ends the walk as well
        read_file_bytes("loop.pdf", _lying_pdf(fanout=1, depth=3000), max_bytes=LIMIT)


async def _ticking_max_gap(work):
    """Runs `work` while a ticker measures the event loop's longest gap; returns (result, gap in seconds)."""
    ticks = [time.perf_counter()]

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.005)
            ticks.append(time.perf_counter())

    ticker = asyncio.create_task(tick())
    try:
        result = await work
    finally:
        ticker.cancel()
    return result, max(b - a for a, b in zip(ticks, ticks[1:], strict=False))


async def test_a_pdf_costing_too_much_cpu_is_stopped_and_the_loop_keeps_ticking(service, user):
    service.engine.loader.limits = ParseLimits(cpu_seconds=1)
    await service.engine.passages.ready()
    started = time.perf_counter()
    (outcome, _), gap = await _ticking_max_gap(service.load_file(user("alice"), "slow.pdf", _slow_pdf()))
    assert outcome.failed and outcome.reason.startswith("slow.pdf: the PDF took too long to read"), outcome
    assert time.perf_counter() - started < 10
    # In a thread of this process the same file held the loop for hundreds of ms at a time.
    assert gap < 0.2, gap
    assert await service.sources(user("alice")) == []


def test_a_pdf_needing_too_much_memory_is_stopped():
    limits = ParseLimits(memory_bytes=150 * 1024 * 1024)
    with pytest.raises(FileRejected, match=r"^hungry\.pdf: the PDF needs too much memory to read"):
        parse_in_child("hungry.pdf", _hungry_pdf(), max_bytes=LIMIT, limits=limits)


def test_a_reader_that_overstays_the_wall_clock_is_killed():
    started = time.perf_counter()
    with pytest.raises(FileRejected, match=r"^slow\.pdf: the PDF took too long to read"):
        parse_in_child("slow.pdf", _slow_pdf(), max_bytes=LIMIT, limits=ParseLimits(wall_seconds=0.5))
    assert time.perf_counter() - started < 3


def test_a_file_on_disk_is_read_by_the_child(tmp_path):
    path = tmp_path / "one.pdf"
    path.write_bytes(_with_content(2, b"BT /F1 12 Tf 72 720 Td (Hello there) Tj ET"))
    parsed = parse_in_child("one.pdf", path, max_bytes=LIMIT, limits=ParseLimits())
    assert parsed.pages == 2 and [d.text for d in parsed.documents] == ["Hello there", "Hello there"]
    with pytest.raises(FileRejected, match="the PDF has 2 pages; the limit is 1"):
        parse_in_child("one.pdf", path, max_bytes=LIMIT, limits=ParseLimits(max_pages=1))


async def test_one_users_uploads_are_read_two_at_a_time(service, user, monkeypatch):
    reading: dict[str, int] = {}
    most: dict[str, int] = {}

    async def load_bytes(source, filename, data, progress=None):
        who = filename.split("-")[0]
        reading[who] = reading.get(who, 0) + 1
        most[who] = max(most.get(who, 0), reading[who])
        await asyncio.sleep(0.05)
        reading[who] -= 1
        return FileOutcome(filename, "failed", reason=f"{filename}: test")

    async def nothing_to_drop(source):
        return None

    monkeypatch.setattr(service.engine.loader, "load_bytes", load_bytes)
    monkeypatch.setattr(service, "_drop_if_empty", nothing_to_drop)
    uploads = [service.load_file(user("alice"), f"alice-{n}.txt", b"x") for n in range(5)]
    uploads.append(service.load_file(user("bob"), "bob-0.txt", b"x"))
    await asyncio.gather(*uploads)
    assert most == {"alice": 2, "bob": 1}
    assert service._uploads.busy(user("alice").key) == 0


async def test_keyed_slots_forget_idle_keys():
    slots = KeyedSlots(1)
    async with slots.hold("a"):
        waiting = asyncio.create_task(_hold_once(slots, "a"))
        await asyncio.sleep(0.01)
        assert slots.busy("a") == 2 and not waiting.done()
    await waiting
    assert slots.busy("a") == 0 and not slots._slots


async def _hold_once(slots: KeyedSlots, key: str) -> None:
    async with slots.hold(key):
        pass
