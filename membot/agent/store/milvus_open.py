"""Opening the archival store: a client of a Milvus server, or of the shared Milvus Lite server of a file
(lite_shared), and the collection made, checked or (on Lite) laid out. Blocking, as pymilvus is: the store
calls `open_store` in a worker thread, on first use.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from membot.agent.store import milvus_layout
from membot.agent.store.lite_shared import LiteFiles, SharedLite, SharedLiteError, file_lock
from membot.agent.store.milvus_layout import LiteLayout
from membot.agent.store.passage_text import PassageText

if TYPE_CHECKING:
    from pymilvus import MilvusClient

log = logging.getLogger(__name__)

COLLECTION = "membot_passages"
CONNECT_SECONDS = 10.0


class PassageStoreError(RuntimeError):
    """Milvus could not be opened or used; the message says what to do."""


@dataclass(frozen=True)
class Opened:
    client: MilvusClient
    #: The collection searched: the server layout's, or Lite's per-owner one.
    collection: str
    #: The server collection has Milvus's BM25 (decided once, when it was created). On Lite, BM25 is the
    #: layout's FTS5 text index instead (`lite.text`), and this is unused.
    hybrid: bool
    #: Milvus Lite's per-owner partitions and FTS5 texts; None on a server.
    lite: LiteLayout | None = None
    #: This process's use of the shared Milvus Lite server; None on a server.
    shared: SharedLite | None = None

    def close(self) -> None:
        """Blocking."""
        self.client.close()
        if self.lite is not None:
            self.lite.close()
        if self.shared is not None:
            self.shared.release()


def is_server(uri: str) -> bool:
    """A Milvus server URI rather than a Milvus Lite file."""
    return "://" in uri


def open_store(uri: str, dim: int, token: str | None) -> Opened:
    """Blocking: the store at `uri` opened, its collection made or checked; a PassageStoreError says what
    went wrong."""
    if is_server(uri):
        client = connect(uri, uri, token)
        try:
            return Opened(client, COLLECTION, prepare(client, dim))
        except Exception as exc:
            client.close()  # the next use tries again from scratch
            raise _prepare_failed(uri, exc) from None
    path = Path(uri).expanduser().absolute()
    try:
        shared = SharedLite.attach(path)
    except (SharedLiteError, OSError) as exc:
        raise PassageStoreError(f"The archival store {path} could not be opened: {one_line(exc)}") from None
    client: MilvusClient | None = None
    text: PassageText | None = None
    try:
        client = connect(shared.uri, f"{path} (its Milvus Lite server at {shared.uri})", token)
        # The texts' index is a file of its own beside the Milvus Lite file, not inside it.
        text = PassageText.open(path.with_name(path.name + ".text.sqlite"))
        # One process at a time creates the layout or moves an earlier one; the others then find it made.
        with file_lock(LiteFiles(path).layout):
            layout = milvus_layout.open_lite(
                client, dim, text, lambda name: check_existing(client, dim, name)
            )
        return Opened(client, milvus_layout.COLLECTION, False, layout, shared)
    except Exception as exc:
        if client is not None:
            client.close()
        if text is not None:
            text.close()
        shared.release()
        raise _prepare_failed(str(path), exc) from None


def connect(uri: str, where: str, token: str | None) -> MilvusClient:
    """Blocking: a client of the Milvus at `uri` (`where` names it for people)."""
    # Arrow's own allocator keeps more memory than malloc; it is read when pyarrow loads, so it is set
    # before the first pymilvus import (unless set already).
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    from pymilvus import MilvusClient

    try:
        return MilvusClient(uri=uri, token=token or "", timeout=CONNECT_SECONDS)
    except Exception as exc:
        raise PassageStoreError(f"Could not reach Milvus at {where}: {one_line(exc)}") from None


def prepare(client: MilvusClient, dim: int) -> bool:
    """Load or create the collection; whether it has BM25 (hybrid search)."""
    if client.has_collection(COLLECTION):
        hybrid = check_existing(client, dim, COLLECTION)
        # A collection from an earlier process starts released; searches need it loaded.
        client.load_collection(COLLECTION)
        return hybrid
    try:
        client.create_collection(
            COLLECTION, schema=schema(dim, True), index_params=index(client, True)
        )
        return True
    except Exception as exc:  # a backend without the BM25 function: dense search only
        log.info("BM25 full-text search not available (%s); archival search is dense only", exc)
        if client.has_collection(COLLECTION):
            client.drop_collection(COLLECTION)
        client.create_collection(
            COLLECTION, schema=schema(dim, False), index_params=index(client, False)
        )
        return False


def check_existing(client: MilvusClient, dim: int, collection: str) -> bool:
    info = client.describe_collection(collection)
    fields = {f["name"]: f for f in info["fields"]}
    stored = int(fields["dense"]["params"].get("dim", dim))
    if stored != dim:
        raise PassageStoreError(
            f"The archival store holds {stored}-dimensional embeddings but MEMBOT_EMBEDDING_DIM is {dim}. "
            "Set it back, or use a new MEMBOT_MILVUS_URI for the new embedding model."
        )
    return "sparse" in fields


def schema(dim: int, hybrid: bool) -> Any:
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    made = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
    made.add_field("id", DataType.INT64, is_primary=True)
    made.add_field("owner", DataType.VARCHAR, max_length=64, is_partition_key=True)
    made.add_field("text", DataType.VARCHAR, max_length=65_535, enable_analyzer=hybrid)
    made.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
    made.add_field("filename", DataType.VARCHAR, max_length=512)
    made.add_field("page", DataType.INT64)
    made.add_field("doc_hash", DataType.VARCHAR, max_length=64)
    made.add_field("created_at", DataType.DOUBLE)
    if hybrid:
        made.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        made.add_function(
            Function(
                name="text_bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=["sparse"],
            )
        )
    return made


def index(client: MilvusClient, hybrid: bool) -> Any:
    params = client.prepare_index_params()
    params.add_index("dense", index_type="AUTOINDEX", metric_type="COSINE")
    if hybrid:
        params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    return params


def one_line(exc: BaseException) -> str:
    """An exception's first line, short: errors here reach people as one line, never a traceback."""
    words = str(exc).strip().splitlines()
    return (words[0] if words else type(exc).__name__)[:300]


def _prepare_failed(where: str, exc: Exception) -> PassageStoreError:
    if isinstance(exc, PassageStoreError):
        return exc
    return PassageStoreError(f"Could not prepare the archival store at {where}: {one_line(exc)}")


def unreachable(exc: BaseException) -> bool:
    """A failure because the Milvus server cannot be reached (rather than a refused call)."""
    from pymilvus.exceptions import MilvusException

    code = getattr(exc, "code", None)
    text = str(exc).lower()
    return isinstance(exc, MilvusException) and (code == 2 or "unavailable" in text or "connect" in text)
