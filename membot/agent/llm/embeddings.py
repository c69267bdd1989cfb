"""Embeddings from the configured OpenAI-compatible endpoint, requested in batches."""

from __future__ import annotations

from collections.abc import Sequence

import openai
from openai import AsyncOpenAI

from membot.agent.llm.client import ModelUnavailable


class Embedder:
    def __init__(self, client: AsyncOpenAI, model: str, dim: int, batch_size: int = 128) -> None:
        self.client = client
        self.model = model
        self.dim = dim
        self.batch_size = max(1, batch_size)
        # Only the text-embedding-3 family takes a `dimensions` argument; other servers reject it.
        self._send_dimensions = model.startswith("text-embedding-3")

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
        kwargs = {"dimensions": self.dim} if self._send_dimensions else {}
        try:
            response = await self.client.embeddings.create(model=self.model, input=inputs, **kwargs)
        except openai.APIStatusError as exc:
            raise ModelUnavailable(f"The embedding endpoint failed ({exc.status_code}).") from None
        except openai.APIConnectionError:
            raise ModelUnavailable("The embedding endpoint cannot be reached.") from None
        except openai.APIError:
            raise ModelUnavailable("The embedding endpoint gave an unreadable answer.") from None
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(inputs):
            raise ModelUnavailable(f"The embedding endpoint returned {len(data)} vectors for {len(inputs)} texts.")
        vectors = [list(item.embedding) for item in data]
        if any(len(v) != self.dim for v in vectors):
            raise ModelUnavailable(
                f"The embedding model returned {len(vectors[0])}-dimensional vectors; MEMBOT_EMBEDDING_DIM is {self.dim}."
            )
        return vectors
