"""Token counting that never touches the network.

tiktoken is used only when its encoding file is already in its local cache (tiktoken would otherwise download
it on first use, and these machines have no network). Without it, a conservative estimate: the MemGPT paper
runs ~3.9 characters per cl100k token, so 3.2 over-counts on purpose. The agent corrects either with the
prompt-token figures the API reports (see `TokenCalibration`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHARS_PER_TOKEN = 3.2
# Every chat message costs a few tokens of framing (role, separators).
MESSAGE_OVERHEAD = 4

_ENCODING_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


def _tiktoken_cache_dir() -> Path | None:
    # Mirrors tiktoken's own lookup of its cache folder (tiktoken/load.py).
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _local_encoder(encoding: str) -> Callable[[str], int] | None:
    """An exact counter when tiktoken and its encoding file are both here already; else None."""
    url = _ENCODING_URLS.get(encoding)
    cache = _tiktoken_cache_dir()
    if url is None or cache is None:
        return None
    if not (cache / hashlib.sha1(url.encode()).hexdigest()).exists():
        return None
    try:
        import tiktoken

        enc = tiktoken.get_encoding(encoding)
    except Exception:  # a broken cache file or a missing package: fall back to the estimate
        return None
    return lambda text: len(enc.encode(text, disallowed_special=()))


def estimate_tokens(text: str) -> int:
    return int(len(text) / CHARS_PER_TOKEN) + 1 if text else 0


@dataclass
class TokenCounter:
    """Counts tokens of text, messages and tool schemas; exact when it can be, conservative when not."""

    encode_len: Callable[[str], int] = estimate_tokens
    exact: bool = False

    @classmethod
    def for_model(cls, model: str) -> TokenCounter:
        encoding = "o200k_base" if model.startswith(("gpt-4o", "gpt-4.1", "o1", "o3", "o4", "gpt-5")) else "cl100k_base"
        counter = _local_encoder(encoding)
        return cls(counter, True) if counter else cls()

    def text(self, text: str) -> int:
        return self.encode_len(text)

    def message(self, message: dict[str, Any]) -> int:
        total = MESSAGE_OVERHEAD
        content = message.get("content")
        if isinstance(content, str):
            total += self.encode_len(content)
        for call in message.get("tool_calls") or ():
            fn = call.get("function", {})
            total += self.encode_len(fn.get("name", "")) + self.encode_len(fn.get("arguments", "")) + 3
        return total

    def messages(self, messages: Iterable[dict[str, Any]]) -> int:
        return sum(self.message(m) for m in messages) + 3

    def tools(self, schemas: list[dict[str, Any]]) -> int:
        return self.encode_len(render_tools(schemas)) if schemas else 0


def _ts_type(spec: dict[str, Any]) -> str:
    if "enum" in spec:
        return " | ".join(json.dumps(v) for v in spec["enum"])
    kind = spec.get("type", "any")
    if kind == "array":
        return f"{_ts_type(spec.get('items', {}))}[]"
    return {"integer": "number", "object": "object"}.get(kind, kind)


def render_tools(schemas: list[dict[str, Any]]) -> str:
    """Tool schemas as OpenAI's models see them: a TypeScript-like namespace, not the JSON we send.

    The API renders function definitions this way before tokenising (OpenAI cookbook, "counting tokens for
    chat completions API calls" with functions); counting the JSON instead over-counts them by about half.
    Servers that render them differently are corrected by `TokenCalibration` against their reported counts.
    """
    lines = ["# Tools", "", "## functions", "", "namespace functions {", ""]
    for schema in schemas:
        fn = schema.get("function", schema)
        if fn.get("description"):
            lines.append(f"// {fn['description']}")
        params = fn.get("parameters") or {}
        props = params.get("properties") or {}
        if not props:
            lines.append(f"type {fn.get('name', '')} = () => any;")
            lines.append("")
            continue
        required = set(params.get("required") or ())
        lines.append(f"type {fn.get('name', '')} = (_: {{")
        for name, spec in props.items():
            if spec.get("description"):
                lines.append(f"// {spec['description']}")
            lines.append(f"{name}{'' if name in required else '?'}: {_ts_type(spec)},")
        lines.append("}) => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines)


@dataclass
class TokenCalibration:
    """Keeps the ratio between what the API reported and what we estimated for the same prompt.

    Only ever scales estimates up or down within bounds, so a single odd figure cannot make us overfill.
    """

    ratio: float = 1.0

    def observe(self, estimated: int, reported: int) -> None:
        if estimated <= 0 or reported <= 0:
            return
        self.ratio = min(2.0, max(0.5, reported / estimated))

    def correct(self, estimated: int) -> int:
        return int(estimated * self.ratio) + 1
