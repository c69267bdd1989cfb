"""What the engine is configured with. Plain data: the bot builds it from its settings and passes it in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# Context windows of models people commonly point membot at; anything else defaults to 8,192 tokens.
_KNOWN_WINDOWS: dict[str, int] = {
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4.1-nano": 1_047_576,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "o3-mini": 200_000,
    "o4-mini": 200_000,
}
DEFAULT_CONTEXT_WINDOW = 8_192


def known_context_window(model: str) -> int:
    """The window of a known model (dated snapshots included), else the default."""
    for name in sorted(_KNOWN_WINDOWS, key=len, reverse=True):
        if model == name or model.startswith(name + "-"):
            return _KNOWN_WINDOWS[name]
    return DEFAULT_CONTEXT_WINDOW


class EngineConfigError(ValueError):
    """A configuration that cannot work; the message says what to set."""


@dataclass(frozen=True)
class EngineConfig:
    database_url: str
    milvus_uri: str
    home: Path
    api_key: str | None = None
    base_url: str | None = None
    organization: str | None = None
    project: str | None = None
    model: str = "gpt-4o-mini"
    context_window: int = DEFAULT_CONTEXT_WINDOW
    embedding_model: str = "text-embedding-3-small"
    embedding_dim: int = 1536
    embedding_base_url: str | None = None
    embedding_batch_size: int = 128
    #: An Azure OpenAI resource instead (AZURE_OPENAI_ENDPOINT): its key, the API version, and `model` and
    #: `embedding_model` name deployments.
    azure_endpoint: str | None = None
    azure_api_key: str | None = None
    api_version: str = "2024-10-21"
    model_timeout: float = 60.0
    model_max_retries: int = 2
    milvus_token: str | None = None
    core_memory_limit: int = 2000
    max_chain: int = 10
    pressure_threshold: float = 0.75
    max_file_bytes: int = 50 * 1024 * 1024
    # Messages always kept in context when older ones are summarised away.
    keep_recent_messages: int = 6
    summary_word_limit: int = 200
    #: Extra functions switched on (MEMBOT_EXTRAS), and the hosts http_request may reach.
    extras: frozenset[str] = field(default_factory=frozenset)
    http_allow: frozenset[str] = field(default_factory=frozenset)
    #: What one agent's sandbox folder (the text-file extras) may hold in all: bytes, and files plus folders.
    sandbox_max_bytes: int = 10 * 1024 * 1024
    sandbox_max_files: int = 200
    #: Where the model is asked to think: in a parameter of every function ("arguments"; OpenAI's current
    #: models send no text beside a call) or in its message's text ("content").
    inner_thoughts: Literal["arguments", "content"] = "arguments"
    #: How functions are offered: the tools API ("tools"), a JSON object in the text for models without tool
    #: support ("json"), or the tools API until the server refuses it, then JSON ("auto").
    tool_mode: Literal["auto", "tools", "json"] = "auto"
    #: Stream model calls, so that a reply is shown while the model writes it (MEMBOT_STREAM).
    stream: bool = True

    @property
    def sandbox_root(self) -> Path:
        return self.home / "sandboxes"
