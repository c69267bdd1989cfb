"""Splits documents into token-bounded chunks for archival search.

Chunks break at paragraphs first, then sentences, then words; only a single "word" longer than the budget
is cut by characters. Each piece of text is counted once and chunk sizes are sums of those counts, so
chunking stays linear in the document's length; one exact count per finished chunk guards against a
tokenizer that counts joined text higher than its parts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from membot.agent.context.tokens import TokenCounter
from membot.agent.sources.documents import Document

# PDF extraction hyphenates at line ends ("memo-\nry"); rejoin when a lowercase letter follows.
_HYPHEN_BREAK = re.compile(r"(?<=[^\W\d_])-[ \t]*\n[ \t]*([^\W\d_])")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\f\v]*\n\s*")
# Two fixed-width lookbehinds: "end." and "end." followed by a closing quote or bracket.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?][\"'”’)\]])\s+|(?<=[.!?])\s+")
# Separators between pieces are charged one token each; with the character estimate that makes the sum
# an upper bound on the joined text's count.
_SEPARATOR_TOKENS = 1


@dataclass(frozen=True)
class Chunk:
    text: str
    filename: str
    page: int | None
    index: int  # position within its document, from 0


@dataclass(frozen=True, slots=True)
class _Piece:
    text: str
    tokens: int
    starts_paragraph: bool


def _join_hyphen(match: re.Match[str]) -> str:
    after = match.group(1)
    return after if after.islower() else f"-{after}"


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs with hyphenated line breaks rejoined and all inner whitespace collapsed to one space."""
    text = _HYPHEN_BREAK.sub(_join_hyphen, text.replace("\r\n", "\n").replace("\r", "\n"))
    paragraphs = (" ".join(p.split()) for p in _PARAGRAPH_BREAK.split(text))
    return [p for p in paragraphs if p]


def normalise_text(text: str) -> str:
    """The text as chunks see it: one line per paragraph, paragraphs separated by a blank line."""
    return "\n\n".join(split_paragraphs(text))


def split_sentences(paragraph: str) -> list[str]:
    return [s for s in _SENTENCE_BREAK.split(paragraph) if s]


def _hard_cut(word: str, budget: int, count: Callable[[str], int]) -> Iterator[_Piece]:
    # Guess a slice length from the word's overall density, then shrink only the slices that overflow.
    step = max(1, len(word) * budget // max(1, count(word)))
    pos = 0
    while pos < len(word):
        piece = word[pos : pos + step]
        tokens = count(piece)
        while tokens > budget and len(piece) > 1:
            piece = piece[: max(1, len(piece) * 9 // 10)]
            tokens = count(piece)
        yield _Piece(piece, tokens, False)
        pos += len(piece)


def _pieces(paragraphs: list[str], budget: int, count: Callable[[str], int]) -> Iterator[_Piece]:
    """The largest units that fit the budget: whole paragraphs, else sentences, else words, else slices."""
    for paragraph in paragraphs:
        tokens = count(paragraph)
        if tokens <= budget:
            yield _Piece(paragraph, tokens, True)
            continue
        first = True
        for sentence in split_sentences(paragraph):
            tokens = count(sentence)
            if tokens <= budget:
                yield _Piece(sentence, tokens, first)
                first = False
                continue
            for word in sentence.split(" "):
                tokens = count(word)
                if tokens <= budget:
                    yield _Piece(word, tokens, first)
                else:
                    for cut in _hard_cut(word, budget, count):
                        yield _Piece(cut.text, cut.tokens, first)
                        first = False
                first = False


def _join(lead: str, pieces: list[_Piece]) -> str:
    parts = [lead] if lead else []
    for piece in pieces:
        if parts:
            parts.append("\n\n" if piece.starts_paragraph else " ")
        parts.append(piece.text)
    return "".join(parts)


def _tail(pieces: list[_Piece], limit: int, count: Callable[[str], int]) -> tuple[str, int]:
    """The last whole sentences of a chunk within `limit` tokens, else its last words; with their cost."""
    if limit <= 0 or not pieces:
        return "", 0
    taken: list[str] = []
    used = 0
    for piece in reversed(pieces):
        for sentence in reversed(split_sentences(piece.text)):
            cost = count(sentence) + (_SEPARATOR_TOKENS if taken else 0)
            if used + cost > limit:
                if taken:
                    return " ".join(reversed(taken)), used
                return _tail_words(sentence, limit, count)
            taken.append(sentence)
            used += cost
    return " ".join(reversed(taken)), used


def _tail_words(sentence: str, limit: int, count: Callable[[str], int]) -> tuple[str, int]:
    taken: list[str] = []
    used = 0
    for word in reversed(sentence.split(" ")):
        cost = count(word) + (_SEPARATOR_TOKENS if taken else 0)
        if used + cost > limit:
            break
        taken.append(word)
        used += cost
    return " ".join(reversed(taken)), used


def _pack(pieces: list[_Piece], budget: int, overlap: int, count: Callable[[str], int]) -> list[str]:
    chunks: list[str] = []
    lead, lead_tokens = "", 0
    start = 0
    while start < len(pieces):
        # Every piece fits alone, so dropping the overlap always leaves room to make progress.
        if lead and lead_tokens + _SEPARATOR_TOKENS + pieces[start].tokens > budget:
            lead, lead_tokens = "", 0
        used = lead_tokens
        end = start
        while end < len(pieces):
            cost = pieces[end].tokens + (_SEPARATOR_TOKENS if end > start or lead else 0)
            if end > start and used + cost > budget:
                break
            used += cost
            end += 1
        text = _join(lead, pieces[start:end])
        # Sums are an estimate for BPE tokenizers; one exact count per chunk enforces the cap.
        while count(text) > budget and (lead or end - start > 1):
            if lead:
                lead = ""
            else:
                end -= 1
            text = _join(lead, pieces[start:end])
        chunks.append(text)
        lead, lead_tokens = _tail(pieces[start:end], overlap, count)
        start = end
    return chunks


def chunk_document(
    doc: Document, *, max_tokens: int = 300, overlap_tokens: int = 30, counter: TokenCounter | None = None
) -> list[Chunk]:
    """Token-bounded chunks of one document, each starting with a little of the previous one's tail."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError("overlap_tokens must be at least 0 and below max_tokens")
    count = (counter or TokenCounter()).text
    pieces = list(_pieces(split_paragraphs(doc.text), max_tokens, count))
    texts = _pack(pieces, max_tokens, overlap_tokens, count)
    return [Chunk(text, doc.filename, doc.page, i) for i, text in enumerate(texts)]


def chunk_documents(
    docs: Iterable[Document],
    *,
    max_tokens: int = 300,
    overlap_tokens: int = 30,
    counter: TokenCounter | None = None,
) -> list[Chunk]:
    counter = counter or TokenCounter()
    return [
        chunk
        for doc in docs
        for chunk in chunk_document(
            doc, max_tokens=max_tokens, overlap_tokens=overlap_tokens, counter=counter
        )
    ]
