"""Loading files into a data source: parse (a PDF in a child process, a text file in a thread), chunk, embed in batches, write to the archival store
in batches, then record the file in SQL.

A file is all or nothing: if anything fails after passages were written, they are deleted again, and the
file is named with a one-line reason while the other files of the load go on. A file already in the source
(same content hash) adds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from membot.agent.context.tokens import TokenCounter
from membot.agent.llm.client import ModelUnavailable
from membot.agent.llm.embeddings import Embedder
from membot.agent.memory.archival import source_owner
from membot.agent.sources.catalog import SourceCatalog
from membot.agent.sources.chunking import Chunk, chunk_documents
from membot.agent.sources.documents import FileRejected, ParsedFile, read_file_bytes, read_path
from membot.agent.sources.isolated import ParseLimits, parse_in_child
from membot.agent.store.passages import PassageRow, PassageStore, PassageStoreError
from membot.agent.store.schema import SourceRow

INSERT_BATCH = 512


@dataclass(frozen=True)
class FileOutcome:
    filename: str
    status: str  # loaded | duplicate | failed
    documents: int = 0
    pages: int = 0
    passages: int = 0
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "failed"


#: Called with (passages written so far, passages in the file) while a file is being stored.
Progress = Callable[[int, int], None]


class SourceLoader:
    def __init__(
        self,
        catalog: SourceCatalog,
        passages: PassageStore,
        embedder: Embedder,
        *,
        max_bytes: int,
        chunk_tokens: int = 300,
        overlap_tokens: int = 30,
        limits: ParseLimits | None = None,
    ) -> None:
        self.catalog = catalog
        self.passages = passages
        self.embedder = embedder
        self.max_bytes = max_bytes
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens
        self.limits = limits or ParseLimits()
        self.counter = TokenCounter()

    async def load_path(self, source: SourceRow, path: Path, progress: Progress | None = None) -> FileOutcome:
        if _is_pdf(path.name):
            return await self._load(source, path.name, lambda: self._parse_pdf(path.name, path), progress)
        return await self._load(source, path.name, lambda: read_path(path, max_bytes=self.max_bytes), progress)

    async def load_bytes(
        self, source: SourceRow, filename: str, data: bytes, progress: Progress | None = None
    ) -> FileOutcome:
        if _is_pdf(filename):
            return await self._load(source, filename, lambda: self._parse_pdf(filename, data), progress)
        return await self._load(
            source, filename, lambda: read_file_bytes(filename, data, max_bytes=self.max_bytes), progress
        )

    def _parse_pdf(self, filename: str, source: bytes | Path) -> ParsedFile:
        # Text files are cheap to read and stay in a thread; a PDF can cost any CPU and memory.
        return parse_in_child(filename, source, max_bytes=self.max_bytes, limits=self.limits)

    def _chunk(self, parsed: ParsedFile) -> list[Chunk]:
        return chunk_documents(
            parsed.documents, max_tokens=self.chunk_tokens, overlap_tokens=self.overlap_tokens, counter=self.counter
        )

    async def _load(
        self, source: SourceRow, filename: str, parse: Callable[[], ParsedFile], progress: Progress | None
    ) -> FileOutcome:
        try:
            await self.passages.ready()  # before parsing: a store that cannot open fails the file at once
            parsed = await asyncio.to_thread(parse)
        except FileRejected as exc:
            return FileOutcome(filename, "failed", reason=exc.reason)
        except PassageStoreError as exc:
            return FileOutcome(filename, "failed", reason=f"{filename}: {exc}")
        if await self.catalog.has_file(source.id, parsed.content_hash):
            return FileOutcome(filename, "duplicate", len(parsed.documents), parsed.pages, 0)
        chunks = await asyncio.to_thread(self._chunk, parsed)
        owner = source_owner(source.id)
        written = 0
        try:
            # Passages of an earlier attempt that died before it was recorded would otherwise be doubled.
            await self.passages.delete(owner, parsed.content_hash)
            for start in range(0, len(chunks), INSERT_BATCH):
                batch = chunks[start : start + INSERT_BATCH]
                vectors = await self.embedder.embed([c.text for c in batch])
                rows = [
                    PassageRow(c.text, v, c.filename, c.page or 0, parsed.content_hash)
                    for c, v in zip(batch, vectors, strict=True)
                ]
                await self.passages.insert(owner, rows)
                written += len(rows)
                if progress:
                    progress(written, len(chunks))
            await self.passages.flush()
            await self.catalog.record_file(
                source.id, parsed.filename, parsed.content_hash, len(parsed.documents), len(chunks)
            )
        except Exception as exc:  # nothing half-loaded stays behind, whatever went wrong
            with contextlib.suppress(PassageStoreError):  # else the next load of the file clears them
                await self.passages.delete(owner, parsed.content_hash)
            why = str(exc) if isinstance(exc, ModelUnavailable | PassageStoreError) else f"{type(exc).__name__}: {exc}"
            return FileOutcome(filename, "failed", reason=f"{filename}: could not be stored ({why[:300]})")
        return FileOutcome(filename, "loaded", len(parsed.documents), parsed.pages, len(chunks))


def _is_pdf(filename: str) -> bool:
    return Path(filename).suffix.lower() == ".pdf"
