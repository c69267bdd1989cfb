"""Archival passages in Milvus (Milvus Lite for a file path, a server for a URI).

Every row carries an `owner`: `agent:<id>` for an agent's own passages, `source:<id>` for a data source's.
Every search and count names the owners it may see; the archival memory of one agent builds that list
from its own id and its attached sources, so nothing here can return another agent's rows.

pymilvus is blocking (gRPC, and Milvus Lite runs in this process): every call goes to a worker thread.
The store opens on first use, not at start: pymilvus with Milvus Lite costs ~120 MB of memory and a second
of start-up, which commands and agents that never touch archival memory need not pay.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymilvus import MilvusClient

log = logging.getLogger(__name__)

COLLECTION = "membot_passages"
MAX_TEXT = 16_000  # characters kept per passage (Milvus VARCHAR limit is counted in bytes: 65,535)


class PassageStoreError(RuntimeError):
    """Milvus could not be opened or used; the message says what to do."""


@dataclass(frozen=True)
class PassageRow:
    text: str
    embedding: list[float]
    filename: str = ""
    page: int = 0
    doc_hash: str = ""


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


@dataclass(frozen=True)
class _Opened:
    client: MilvusClient
    #: BM25 full-text search fused with dense search; decided once, when the collection is created.
    hybrid: bool


class PassageStore:
    def __init__(self, uri: str, dim: int, token: str | None = None) -> None:
        self.uri = uri
        self.dim = dim
        self.token = token
        self._opened: _Opened | None = None
        self._opening = asyncio.Lock()

    @property
    def is_server(self) -> bool:
        """A Milvus server URI rather than a Milvus Lite file."""
        return "://" in self.uri

    async def ready(self) -> _Opened:
        """The open store, opened now if this is its first use."""
        if self._opened is None:
            async with self._opening:
                if self._opened is None:
                    self._opened = await asyncio.to_thread(self._open_blocking)
        return self._opened

    def _open_blocking(self) -> _Opened:
        # Arrow's own allocator keeps ~20-30 MB more than malloc once Milvus Lite holds a few hundred rows.
        # It is read when pyarrow loads, so it is set before the first pymilvus import (unless set already).
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
        from pymilvus import MilvusClient

        uri = self.uri
        if not self.is_server:
            # Milvus Lite's in-process gRPC server logs a traceback for calls it does not implement
            # (AllocTimestamp) although the client carries on; keep that out of the user's terminal.
            logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
            Path(uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
            uri = str(Path(uri).expanduser())
        try:
            client = MilvusClient(uri=uri, token=self.token or "")
        except Exception as exc:
            if "lock" in str(exc).lower() or type(exc).__name__ == "DataDirLockedError":
                raise PassageStoreError(
                    f"The archival store {uri} is in use by another membot process (Milvus Lite allows one). "
                    "Stop it first, or point MEMBOT_MILVUS_URI at a Milvus server that both can share."
                ) from None
            raise PassageStoreError(f"Could not open the archival store at {uri}: {exc}") from None
        try:
            return _Opened(client, self._prepare(client))
        except PassageStoreError:
            client.close()  # the next use tries again from scratch
            raise
        except Exception as exc:
            client.close()
            raise PassageStoreError(f"Could not prepare the archival store at {uri}: {exc}") from None

    def _prepare(self, client: MilvusClient) -> bool:
        """Load or create the collection; whether it has BM25 (hybrid search)."""
        if client.has_collection(COLLECTION):
            hybrid = self._check_existing(client, self.dim)
            # A collection from an earlier process starts released; searches need it loaded.
            client.load_collection(COLLECTION)
            return hybrid
        try:
            client.create_collection(
                COLLECTION, schema=self._schema(self.dim, True), index_params=self._index(client, True)
            )
            return True
        except Exception as exc:  # a backend without the BM25 function: dense search only
            log.info("BM25 full-text search not available (%s); archival search is dense only", exc)
            if client.has_collection(COLLECTION):
                client.drop_collection(COLLECTION)
            client.create_collection(
                COLLECTION, schema=self._schema(self.dim, False), index_params=self._index(client, False)
            )
            return False

    @staticmethod
    def _check_existing(client: MilvusClient, dim: int) -> bool:
        info = client.describe_collection(COLLECTION)
        fields = {f["name"]: f for f in info["fields"]}
        stored = int(fields["dense"]["params"].get("dim", dim))
        if stored != dim:
            raise PassageStoreError(
                f"The archival store holds {stored}-dimensional embeddings but MEMBOT_EMBEDDING_DIM is {dim}. "
                "Set it back, or use a new MEMBOT_MILVUS_URI for the new embedding model."
            )
        return "sparse" in fields

    @staticmethod
    def _schema(dim: int, hybrid: bool) -> Any:
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("owner", DataType.VARCHAR, max_length=64, is_partition_key=True)
        schema.add_field("text", DataType.VARCHAR, max_length=65_535, enable_analyzer=hybrid)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("filename", DataType.VARCHAR, max_length=512)
        schema.add_field("page", DataType.INT64)
        schema.add_field("doc_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("created_at", DataType.DOUBLE)
        if hybrid:
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="text_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["text"],
                    output_field_names=["sparse"],
                )
            )
        return schema

    @staticmethod
    def _index(client: MilvusClient, hybrid: bool) -> Any:
        params = client.prepare_index_params()
        params.add_index("dense", index_type="AUTOINDEX", metric_type="COSINE")
        if hybrid:
            params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        return params

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A MilvusClient method on the collection, in a worker thread; a failure becomes a PassageStoreError."""
        client = (await self.ready()).client
        try:
            return await asyncio.to_thread(getattr(client, method), COLLECTION, *args, **kwargs)
        except Exception as exc:
            raise PassageStoreError(f"The archival store failed ({method}): {str(exc)[:300]}") from exc

    async def insert(self, owner: str, rows: list[PassageRow]) -> list[int]:
        if not rows:
            return []
        now = time.time()
        data = [
            {
                "owner": owner,
                "text": row.text[:MAX_TEXT],
                "dense": row.embedding,
                "filename": row.filename[:500],
                "page": row.page,
                "doc_hash": row.doc_hash,
                "created_at": now,
            }
            for row in rows
        ]
        result = await self._call("insert", data)
        return list(result["ids"])

    async def search(
        self, owners: list[str], query: str, embedding: list[float], limit: int, offset: int = 0
    ) -> list[PassageHit]:
        if not owners or limit <= 0:
            return []
        from pymilvus import AnnSearchRequest, RRFRanker

        opened = await self.ready()
        expr = _owner_filter(owners)
        fields = ["owner", "text", "filename", "page", "created_at"]
        window = offset + limit
        if opened.hybrid and query.strip():
            requests = [
                AnnSearchRequest([embedding], "dense", {"metric_type": "COSINE"}, limit=window, expr=expr),
                AnnSearchRequest([query], "sparse", {"metric_type": "BM25"}, limit=window, expr=expr),
            ]
            result = await self._call("hybrid_search", requests, RRFRanker(60), limit=window, output_fields=fields)
        else:
            result = await self._call(
                "search",
                data=[embedding],
                anns_field="dense",
                filter=expr,
                limit=window,
                output_fields=fields,
            )
        hits = result[0] if result else []
        return [
            PassageHit(
                id=int(hit["id"]),
                owner=hit["entity"]["owner"],
                text=hit["entity"]["text"],
                filename=hit["entity"].get("filename", ""),
                page=int(hit["entity"].get("page", 0)),
                created_at=float(hit["entity"].get("created_at", 0.0)),
                score=float(hit["distance"]),
            )
            for hit in list(hits)[offset:window]
        ]

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
        result = await self._call("query", filter=_owner_filter(owners), output_fields=["count(*)"])
        return int(result[0]["count(*)"]) if result else 0

    async def delete_newer(self, owner: str, after: float) -> None:
        """Delete an owner's passages written after a moment (epoch seconds)."""
        expr = f"owner == {json.dumps(owner)} and created_at > {after!r}"
        await self._call("delete", filter=expr)

    async def delete(self, owner: str, doc_hash: str | None = None) -> None:
        expr = f"owner == {json.dumps(owner)}"
        if doc_hash is not None:
            expr += f" and doc_hash == {json.dumps(doc_hash)}"
        await self._call("delete", filter=expr)

    async def close(self) -> None:
        if self._opened is not None:
            await asyncio.to_thread(self._opened.client.close)
            self._opened = None
