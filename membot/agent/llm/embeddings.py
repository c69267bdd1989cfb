"""Embeddings from the configured OpenAI-compatible endpoint, requested in batches."""

from __future__ import annotations

import base64
import binascii
import math
import sys
from array import array
from collections.abc import Sequence
from typing import Any

import openai

from membot.agent.llm.endpoint import Endpoint
from membot.agent.llm.errors import ModelRefused, ModelUnavailable
from membot.agent.llm.trouble import Asked, explain

FLOAT32_MAX = 3.4028234663852886e38  # the largest float32: Milvus stores vectors as float32


class Embedder:
    def __init__(self, endpoint: Endpoint, model: str, dim: int, batch_size: int = 128) -> None:
        self.endpoint = endpoint
        self.model = model
        self.dim = dim
        self.batch_size = max(1, batch_size)
        # Only the text-embedding-3 family takes a `dimensions` argument; other servers reject it.
        self._send_dimensions = model.startswith("text-embedding-3")
        self._asked = Asked("embedding model", model, "MEMBOT_EMBEDDING_MODEL", "embedding endpoint")

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(await self._batch(list(texts[start : start + self.batch_size])))
        return vectors

    async def embed_one(self, text: str) -> list[float]:
        return (await self.embed([text]))[0]

    async def _batch(self, texts: list[str]) -> list[list[float]]:
        # Empty strings are refused by some servers; a single space embeds as "nothing".
        inputs = [t if t.strip() else " " for t in texts]
        # base64 (little-endian float32), as the SDK's `create` asks by default: a quarter of the bytes of JSON
        # numbers, and decoded without parsing 1,536 of them per text. A server that ignores it sends numbers.
        body: dict[str, Any] = {"model": self.model, "input": inputs, "encoding_format": "base64"}
        if self._send_dimensions:
            body["dimensions"] = self.dim
        try:
            response = await self.endpoint.post("/embeddings", body)
        except openai.OpenAIError as exc:
            raise explain(exc, self.endpoint, self._asked) from None
        except ValueError:  # a success whose body is not JSON
            response = None
        vectors = _vectors(response)
        where = f"The embedding endpoint at {self.endpoint.url}"
        if vectors is None:
            raise ModelUnavailable(f"{where} gave an unreadable answer.")
        if len(vectors) != len(inputs):
            raise ModelUnavailable(f"{where} returned {len(vectors)} vectors for {len(inputs)} texts.")
        wrong = next((v for v in vectors if len(v) != self.dim), None)
        if wrong is not None:
            raise ModelRefused(
                f"The embedding model {self.model} returned {len(wrong)}-dimensional vectors; MEMBOT_EMBEDDING_DIM "
                f"is {self.dim}: set MEMBOT_EMBEDDING_MODEL or MEMBOT_EMBEDDING_DIM so that they agree."
            )
        return vectors


def _vectors(response: Any) -> list[list[float]] | None:
    """The vectors of an embeddings answer, in the order of the inputs (each item says its index); None if
    the answer is not of that shape."""
    data = response.get("data") if isinstance(response, dict) else None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        return None
    try:
        ordered = sorted(data, key=lambda item: int(item.get("index", 0)))
    except (TypeError, ValueError):
        return None
    vectors = [_vector(item.get("embedding")) for item in ordered]
    return None if any(v is None for v in vectors) else vectors  # type: ignore[return-value]


def _vector(value: Any) -> list[float] | None:
    """One embedding, base64 or JSON numbers; None unless every element is a finite number (a NaN stored in
    Milvus would poison every cosine it takes part in, and a string would fail the insert deep in a thread)."""
    if isinstance(value, str):
        try:
            packed = array("f", base64.b64decode(value, validate=True))
        except (ValueError, binascii.Error):
            return None
        if sys.byteorder == "big":
            packed.byteswap()
        vector = packed.tolist()
    elif isinstance(value, list):
        vector = value
    else:
        return None
    try:
        # Passes in C: fsum fails on anything not a number, and NaN or an infinity anywhere makes the sum so;
        # Milvus stores float32, where a larger number would be an infinity.
        usable = bool(vector) and math.isfinite(math.fsum(vector)) and max(map(abs, vector)) <= FLOAT32_MAX
    except (TypeError, ValueError, OverflowError):  # ValueError: fsum of both infinities
        return None
    return vector if usable else None
