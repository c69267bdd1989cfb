"""Token-aware chunking: bounded, complete, overlapping, and fast on the MemGPT paper."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from membot.agent.context.tokens import TokenCounter
from membot.agent.sources.chunking import (
    Chunk,
    chunk_document,
    chunk_documents,
    split_paragraphs,
    split_sentences,
)
from membot.agent.sources.documents import Document, ParsedFile, read_path

PAPER = Path("/work/shared/data/memgpt_paper.pdf")
COUNTER = TokenCounter()


@pytest.fixture(scope="module")
def paper() -> ParsedFile:
    if not PAPER.exists():
        pytest.skip("the MemGPT paper PDF is not available")
    return read_path(PAPER, max_bytes=50 * 1024 * 1024)


@pytest.fixture(scope="module")
def paper_chunks(paper: ParsedFile) -> list[Chunk]:
    return chunk_documents(paper.documents, max_tokens=300, overlap_tokens=30)


def _overlap_words(prev: str, nxt: str) -> int:
    """How many trailing words of `prev` the next chunk starts with."""
    words = prev.split()
    return max(
        (n for n in range(1, min(len(words), 60) + 1) if nxt.startswith(" ".join(words[-n:]))), default=0
    )


def test_paper_chunks_are_bounded_and_labelled(paper: ParsedFile, paper_chunks: list[Chunk]) -> None:
    assert 40 <= len(paper_chunks) <= 120
    assert all(0 < COUNTER.text(c.text) <= 300 and c.text.strip() == c.text for c in paper_chunks)
    assert {c.filename for c in paper_chunks} == {"memgpt_paper.pdf"}
    assert sorted({c.page for c in paper_chunks}) == list(range(1, 14))
    for page in range(1, 14):
        assert [c.index for c in paper_chunks if c.page == page] == list(
            range(sum(c.page == page for c in paper_chunks))
        )


def test_paper_chunks_cover_every_sentence(paper: ParsedFile, paper_chunks: list[Chunk]) -> None:
    for doc in paper.documents:
        texts = [c.text for c in paper_chunks if c.page == doc.page]
        for paragraph in split_paragraphs(doc.text):
            for sentence in split_sentences(paragraph):
                if COUNTER.text(sentence) <= 300:
                    assert any(sentence in t for t in texts), sentence
                else:  # too long for one chunk: its words are spread over several
                    assert all(any(w in t for t in texts) for w in sentence.split())


def test_paper_chunks_overlap(paper_chunks: list[Chunk]) -> None:
    pairs = [(a, b) for a, b in zip(paper_chunks, paper_chunks[1:], strict=False) if a.page == b.page]
    overlaps = [_overlap_words(a.text, b.text) for a, b in pairs]
    assert sum(n > 0 for n in overlaps) >= 0.9 * len(pairs)
    for (a, _), n in zip(pairs, overlaps, strict=True):
        assert COUNTER.text(" ".join(a.text.split()[-n:])) <= 30 if n else True
    # Chunks are not just copies of each other: the overlap is a small part of each.
    assert all(n < 30 for n in overlaps)


def test_paper_chunking_is_fast(paper: ParsedFile) -> None:
    best = min(_timed(lambda: chunk_documents(paper.documents)) for _ in range(3))
    assert best < 0.1


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def test_pdf_line_breaks_and_hyphens_are_joined() -> None:
    doc = Document("p.pdf", 2, "Virtual memo-\nry pages   data\nbetween tiers.\r\n\r\nOS-\nInspired design.")
    chunks = chunk_document(doc)
    assert [c.text for c in chunks] == ["Virtual memory pages data between tiers.\n\nOS-Inspired design."]
    assert (chunks[0].filename, chunks[0].page, chunks[0].index) == ("p.pdf", 2, 0)


def test_prefers_paragraph_boundaries() -> None:
    paragraphs = [f"Paragraph {i} " + " ".join(f"word{i}x{j}." for j in range(25)) for i in range(4)]
    chunks = chunk_document(Document("a.md", None, "\n\n".join(paragraphs)), max_tokens=200, overlap_tokens=0)
    # Each paragraph is ~80 estimated tokens: two fit in a chunk, and a third is not split to fill the gap.
    assert [c.text for c in chunks] == ["\n\n".join(paragraphs[:2]), "\n\n".join(paragraphs[2:])]
    assert all(COUNTER.text(c.text) <= 200 for c in chunks)


def test_splits_long_paragraph_at_sentences() -> None:
    sentences = [f"Sentence number {i} talks about memory tiers and paging." for i in range(60)]
    chunks = chunk_document(Document("a.txt", None, " ".join(sentences)), max_tokens=100, overlap_tokens=20)
    assert len(chunks) > 1
    for chunk in chunks:
        assert COUNTER.text(chunk.text) <= 100
        assert chunk.text.endswith(".") and chunk.text.startswith("Sentence number")
    assert all(any(s in c.text for c in chunks) for s in sentences)


def test_overlap_falls_back_to_words_for_a_long_sentence() -> None:
    text = " ".join(f"w{i}" for i in range(500))  # one sentence of 500 words
    chunks = chunk_document(Document("a.txt", None, text), max_tokens=50, overlap_tokens=10)
    assert all(COUNTER.text(c.text) <= 50 for c in chunks)
    for a, b in zip(chunks, chunks[1:], strict=False):
        n = _overlap_words(a.text, b.text)
        assert n > 0 and COUNTER.text(" ".join(a.text.split()[-n:])) <= 10
    assert chunks[-1].text.endswith("w499")


def test_enormous_word_is_cut_by_characters() -> None:
    word = "".join(chr(ord("a") + i % 26) for i in range(5000))
    chunks = chunk_document(Document("a.txt", None, f"Start {word} end."), max_tokens=100, overlap_tokens=10)
    assert all(0 < COUNTER.text(c.text) <= 100 for c in chunks)
    assert word in "".join(c.text.replace(" ", "") for c in chunks)


def test_never_over_budget_with_a_counter_that_is_not_additive() -> None:
    # Counting characters makes "\n\n" joins cost more than the one token the packer budgets for them.
    by_chars = TokenCounter(encode_len=len, exact=True)
    text = "\n\n".join(f"p{i}" for i in range(200))
    chunks = chunk_document(Document("a.txt", None, text), max_tokens=20, overlap_tokens=5, counter=by_chars)
    assert chunks and all(len(c.text) <= 20 for c in chunks)
    assert {f"p{i}" for i in range(200)} <= {w for c in chunks for w in c.text.split()}


def test_empty_and_whitespace_documents_give_no_chunks() -> None:
    assert chunk_document(Document("a.txt", None, "")) == []
    assert chunk_document(Document("a.txt", None, " \n\n\t \n")) == []


def test_chunk_documents_indexes_per_document() -> None:
    docs = [Document("a.pdf", 1, "First page."), Document("a.pdf", 2, "Second page.")]
    chunks = chunk_documents(docs)
    assert [(c.page, c.index, c.text) for c in chunks] == [(1, 0, "First page."), (2, 0, "Second page.")]


@pytest.mark.parametrize(("max_tokens", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_rejects_bad_settings(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_document(Document("a.txt", None, "text"), max_tokens=max_tokens, overlap_tokens=overlap)
