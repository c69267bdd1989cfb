"""Archival passages in Milvus (Milvus Lite for a file path, a server for a URI).

Every row carries an `owner`: `agent:<id>` for an agent's own passages, `source:<id>` for a data source's.
Every search and count names the owners it may see; the archival memory of one agent builds that list
from its own id and its attached sources, so nothing here can return another agent's rows.

Owners are namespaced here, in the store: a store made with a deployment's namespace writes and reads
`<namespace>:agent:1`, so two membot databases that share one Milvus never see each other's rows, whatever
their callers ask. Callers keep using the plain names, and hits come back with them. The empty namespace
(a deployment whose passages predate namespaces, see store/deployment.py) uses the plain names in Milvus too.

Milvus Lite and a Milvus server are laid out differently. On a server, one collection with a partition key
on `owner` and Milvus's BM25 function, searched with `hybrid_search`. On Lite, one partition per owner and the
texts in SQLite FTS5 beside the Milvus file, the two halves fused here with the same RRF (see milvus_layout
and passage_text for why). Callers see the same store either way.

A Milvus Lite file is never opened in this process: every membot process over it reaches the one Milvus
Lite server of that file (lite_shared), started by whichever needed it first. It keeps the Lite layout.

Reads that follow one's own writes (an agent's search after its insert, a search after a load) must see
them: searches and counts ask for Strong consistency (a server's default, Bounded, missed a passage
written 43 ms before; Milvus Lite has no such lag, and the level costs it nothing measurable, see the bench).

pymilvus is blocking (gRPC): every call goes to a worker thread. The store opens on first use, not at start:
pymilvus costs memory and start-up time, which commands and agents that never touch archival memory need
not pay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from membot.agent.store import milvus_layout
from membot.agent.store.milvus_layout import LiteLayout
from membot.agent.store.milvus_open import (
    Opened,
    PassageStoreError,
    is_server,
    one_line,
    open_store,
    unreachable,
)
from membot.agent.store.passage_text import TextHit, TextRow

T = TypeVar("T")

RRF_K = 60  # Milvus's RRFRanker default, used on both layouts
# Every page is a search of its own, and Milvus returns equal scores in an order that depends on the limit
# asked for: each search fetches this many more than its window, and ties are broken by id here, so that
# pages neither repeat nor skip a passage.
TIE_MARGIN = 16
STRONG = "Strong"  # see the module's docstring
MAX_TEXT = 16_000  # characters kept per passage (Milvus VARCHAR limit is counted in bytes: 65,535)


@dataclass(frozen=True)
class PassageRow:
    text: str
    embedding: list[float]
    filename: str = ""
    page: int = 0
    doc_hash: str = ""
    #: When it was first written (epoch seconds): kept by an import, so its age survives a move; None is now.
    created_at: float | None = None


#: One passage as stored, without its embedding (what an export carries): the text index's row has just that.
StoredPassage = TextRow


@dataclass(frozen=True)
class PassageHit:
    id: int
    owner: str
    text: str
    filename: str
    page: int
    created_at: float
    score: float


def _owner_filter(owners: list[str]) -> str:
    return "owner in " + json.dumps(owners)


_FIELDS = ["owner", "text", "filename", "page", "created_at"]


def _ordered(hits: Any) -> list[dict[str, Any]]:
    """Milvus hits best first, ties by id."""
    return sorted(hits or [], key=lambda hit: (-float(hit["distance"]), int(hit["id"])))


def _hit(hit: dict[str, Any], score: float) -> PassageHit:
    entity = hit["entity"]
    return PassageHit(
        id=int(hit["id"]),
        owner=entity["owner"],
        text=entity["text"],
        filename=entity.get("filename", ""),
        page=int(entity.get("page", 0)),
        created_at=float(entity.get("created_at", 0.0)),
        score=score,
    )


def _text_hit(hit: TextHit, score: float) -> PassageHit:
    row = hit.row
    return PassageHit(row.id, hit.owner, row.text, row.filename, int(row.page), float(row.created_at), score)


def fuse(dense: list[dict[str, Any]], lexical: list[TextHit], window: int) -> list[PassageHit]:
    """Reciprocal rank fusion of the two rankings (each best first), as Milvus's RRFRanker(60) does."""
    scores: dict[int, float] = {}
    hits: dict[int, PassageHit] = {}
    for rank, hit in enumerate(dense):
        pk = int(hit["id"])
        scores[pk] = scores.get(pk, 0.0) + 1 / (RRF_K + rank + 1)
        hits.setdefault(pk, _hit(hit, 0.0))
    for rank, text_hit in enumerate(lexical):
        pk = text_hit.row.id
        scores[pk] = scores.get(pk, 0.0) + 1 / (RRF_K + rank + 1)
        hits.setdefault(pk, _text_hit(text_hit, 0.0))
    best = sorted(scores, key=lambda pk: (-scores[pk], pk))[:window]
    return [replace(hits[pk], score=scores[pk]) for pk in best]


class PassageStore:
    def __init__(
        self, uri: str, dim: int, token: str | None = None, namespace: str = "", consistency: str = STRONG
    ) -> None:
        self.uri = uri
        self.dim = dim
        self.token = token
        #: Prefix of every owner in Milvus (see the module's docstring); "" for the plain names.
        self.namespace = namespace
        #: Of searches and counts; only the bench asks for another, to measure what Strong costs.
        self.consistency = consistency
        self._opened: Opened | None = None
        self._opening = asyncio.Lock()

    def _stored(self, owner: str) -> str:
        """The owner's name in Milvus."""
        return f"{self.namespace}:{owner}" if self.namespace else owner

    def _plain(self, hits: list[PassageHit], owners: dict[str, str]) -> list[PassageHit]:
        """Hits with the callers' owner names; a hit of an owner that was not asked for is dropped (a guard)."""
        return [replace(hit, owner=owners[hit.owner]) for hit in hits if hit.owner in owners]

    @property
    def is_server(self) -> bool:
        """A Milvus server URI rather than a Milvus Lite file."""
        return is_server(self.uri)

    async def ready(self) -> Opened:
        """The open store, opened now if this is its first use."""
        if self._opened is None:
            async with self._opening:
                if self._opened is None:
                    self._opened = await asyncio.to_thread(open_store, self.uri, self.dim, self.token)
        return self._opened

    async def _blocking(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn` in a worker thread; a failure becomes a PassageStoreError."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except PassageStoreError:
            raise
        except Exception as exc:
            if unreachable(exc):
                await self._forget()  # its server is gone (killed, stopped): the next use finds or starts one
            raise PassageStoreError(f"The archival store failed ({what}): {one_line(exc)}") from exc

    async def _forget(self) -> None:
        opened, self._opened = self._opened, None
        if opened is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(opened.close)

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A MilvusClient method on the collection, in a worker thread; a failure becomes a PassageStoreError."""
        opened = await self.ready()
        return await self._blocking(method, getattr(opened.client, method), opened.collection, *args, **kwargs)

    async def insert(self, owner: str, rows: list[PassageRow]) -> list[int]:
        if not rows:
            return []
        now = time.time()
        data = [
            {
                "owner": self._stored(owner),
                "text": row.text[:MAX_TEXT],
                "dense": row.embedding,
                "filename": row.filename[:500],
                "page": row.page,
                "doc_hash": row.doc_hash,
                "created_at": now if row.created_at is None else row.created_at,
            }
            for row in rows
        ]
        opened = await self.ready()
        if opened.lite is not None:
            return await self._blocking("insert", opened.lite.insert, self._stored(owner), data)
        result = await self._call("insert", data)
        return list(result["ids"])

    async def search(
        self, owners: list[str], query: str, embedding: list[float], limit: int, offset: int = 0
    ) -> list[PassageHit]:
        if not owners or limit <= 0:
            return []
        stored = {self._stored(owner): owner for owner in owners}
        opened = await self.ready()
        if opened.lite is not None:
            hits = await self._search_lite(opened.lite, list(stored), query, embedding, offset + limit, offset)
            return self._plain(hits, stored)
        from pymilvus import AnnSearchRequest, RRFRanker

        expr = _owner_filter(list(stored))
        window = offset + limit
        fetch = window + TIE_MARGIN
        if opened.hybrid and query.strip():
            requests = [
                AnnSearchRequest([embedding], "dense", {"metric_type": "COSINE"}, limit=fetch, expr=expr),
                AnnSearchRequest([query], "sparse", {"metric_type": "BM25"}, limit=fetch, expr=expr),
            ]
            result = await self._call(
                "hybrid_search",
                requests,
                RRFRanker(RRF_K),
                limit=fetch,
                output_fields=_FIELDS,
                consistency_level=self.consistency,
            )
        else:
            result = await self._call(
                "search",
                data=[embedding],
                anns_field="dense",
                filter=expr,
                limit=fetch,
                output_fields=_FIELDS,
                consistency_level=self.consistency,
            )
        hits = _ordered(result[0] if result else [])
        return self._plain([_hit(hit, float(hit["distance"])) for hit in hits[offset:window]], stored)

    async def _search_lite(
        self, lite: LiteLayout, owners: list[str], query: str, embedding: list[float], window: int, offset: int
    ) -> list[PassageHit]:
        partitions = await self._blocking("partitions", lite.partition_names, owners)
        if not partitions:  # never search the whole collection for owners that have no rows
            return []
        dense_call = self._blocking(
            "search",
            lite.client.search,
            milvus_layout.COLLECTION,
            data=[embedding],
            anns_field="dense",
            filter=_owner_filter(owners),
            limit=window + TIE_MARGIN,
            output_fields=_FIELDS,
            partition_names=partitions,
            search_params=milvus_layout.DENSE_SEARCH,
            consistency_level=self.consistency,
        )
        if lite.text is None or not query.strip():
            result = await dense_call
            hits = _ordered(result[0] if result else [])
            return [_hit(hit, float(hit["distance"])) for hit in hits[offset:window]]
        # The two halves run side by side: faiss and SQLite both let go of the GIL.
        result, lexical = await asyncio.gather(
            dense_call, self._blocking("text search", lite.text.search, owners, query, window + TIE_MARGIN)
        )
        return fuse(_ordered(result[0] if result else []), lexical, window)[offset:]

    async def flush(self) -> None:
        """Seal what was inserted so that searches use the index instead of scanning growing segments.

        Milvus Lite only (~10 ms for a few rows): a server indexes growing segments itself, and rate-limits
        flush calls.
        """
        if self._opened is not None and not self.is_server:  # nothing was written if it never opened
            await self._call("flush")

    async def count(self, owners: list[str]) -> int:
        """Rows of these owners, counted by Milvus (slow in Milvus Lite: ~1 s at 10,000 rows; membot keeps its
        own counts in SQL for every step, this is for checks)."""
        if not owners:
            return 0
        stored = [self._stored(owner) for owner in owners]
        opened = await self.ready()
        kwargs: dict[str, Any] = {"consistency_level": self.consistency}
        if opened.lite is not None:
            kwargs["partition_names"] = await self._blocking("partitions", opened.lite.partition_names, stored)
            if not kwargs["partition_names"]:
                return 0
        result = await self._call("query", filter=_owner_filter(stored), output_fields=["count(*)"], **kwargs)
        return int(result[0]["count(*)"]) if result else 0

    async def rows_of(self, owner: str) -> list[StoredPassage]:
        """Every passage of one owner, oldest first (for an export: a search cannot list them all). Milvus's
        query iterator pages through them in its worker thread."""
        stored = self._stored(owner)
        opened = await self.ready()
        kwargs: dict[str, Any] = {"consistency_level": self.consistency}
        if opened.lite is not None:
            kwargs["partition_names"] = await self._blocking("partitions", opened.lite.partition_names, [stored])
            if not kwargs["partition_names"]:
                return []
        fields = ["id", "text", "filename", "page", "doc_hash", "created_at"]

        def read_all() -> list[dict[str, Any]]:
            return [row for batch in milvus_layout.batches(opened.client, opened.collection, fields,
                                                           _owner_filter([stored]), **kwargs) for row in batch]

        rows = await self._blocking("list", read_all)
        passages = [
            StoredPassage(int(r["id"]), r["text"], r.get("filename", ""), int(r.get("page", 0)),
                          r.get("doc_hash", ""), float(r.get("created_at", 0.0)))
            for r in rows
        ]
        return sorted(passages, key=lambda p: (p.created_at, p.id))

    async def delete_newer(self, owner: str, after: float) -> None:
        """Delete an owner's passages written after a moment (epoch seconds)."""
        owner = self._stored(owner)
        expr = f"owner == {json.dumps(owner)} and created_at > {after!r}"
        await self._delete(owner, expr, after=after)

    async def delete(self, owner: str, doc_hash: str | None = None) -> None:
        owner = self._stored(owner)
        expr = f"owner == {json.dumps(owner)}"
        if doc_hash is not None:
            expr += f" and doc_hash == {json.dumps(doc_hash)}"
        await self._delete(owner, expr, doc_hash=doc_hash)

    async def _delete(self, owner: str, expr: str, doc_hash: str | None = None, after: float | None = None) -> None:
        """`owner` is the name in Milvus."""
        opened = await self.ready()
        if opened.lite is None:
            await self._call("delete", filter=expr)
            return
        # Texts first: a crash in between leaves passages found by meaning only, never a text hit for a
        # passage that is gone. The callers' retries (a reload, a reload of the file) finish the delete.
        if opened.lite.text is not None:
            await self._blocking("delete", opened.lite.text.delete, owner, doc_hash, after)
        partitions = await self._blocking("partitions", opened.lite.partition_names, [owner])
        if partitions:
            await self._call("delete", filter=expr, partition_name=partitions[0])

    async def close(self) -> None:
        if self._opened is not None:
            opened, self._opened = self._opened, None
            await asyncio.to_thread(opened.close)
