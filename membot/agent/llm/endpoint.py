"""One OpenAI-compatible endpoint through the openai SDK's client (`AsyncOpenAI`, or `AsyncAzureOpenAI` for an
Azure OpenAI resource): its retries, back-off, `retry-after`, timeouts, proxies and typed errors. This module
builds the clients from the configuration, refusing at start-up what can never work, and keeps what a user is
told about an endpoint (its URL, without credentials, and the settings that name it and its key).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import openai
from openai import AsyncAzureOpenAI, AsyncOpenAI

from membot.agent.config import EngineConfig, EngineConfigError

OPENAI_URL = "https://api.openai.com/v1"
# The SDK insists on a key; a local server (Ollama, vLLM, LM Studio) takes any.
NO_KEY = "no-key-set"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Endpoint:
    """The SDK's client for one endpoint, and how a user would find it in the settings."""

    client: AsyncOpenAI
    #: The URL shown in messages: scheme, host, port and path only.
    url: str
    #: The variable naming the URL, and the one holding the key sent to it.
    url_setting: str
    key_setting: str
    has_key: bool
    azure: bool
    timeout: float

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST `body` to `path` (e.g. "/chat/completions") and return the answer's JSON, raising the SDK's errors.

        The SDK's generic POST, not its typed `create` methods: our requests are already plain API JSON, and
        `create` walks every message and tool schema against its typed parameters on every call (about 3 ms
        for a short conversation, growing with it); the answer is read from its JSON for the few fields we use.
        Retries, auth, Azure's deployment paths and errors are the same either way."""
        try:
            return await self.client.post(path, body=body, cast_to=object)
        except UnicodeEncodeError:
            return await self.client.post(path, body=_encodable(body), cast_to=object)

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[Any]:
        """POST `body` with `stream: true` to `path` and yield each server-sent chunk's JSON as it arrives (or the
        whole answer, from a server that does not stream). Errors before the stream begins are the SDK's, as for
        `post`; an error event in the stream is an APIError; a body that is not JSON, a ValueError."""
        try:
            chunks = await self.client.post(path, body=body, cast_to=object, stream=True,
                                            stream_cls=openai.AsyncStream[object])
        except UnicodeEncodeError:
            chunks = await self.client.post(path, body=_encodable(body), cast_to=object, stream=True,
                                            stream_cls=openai.AsyncStream[object])
        async with chunks:
            if "event-stream" not in chunks.response.headers.get("content-type", ""):
                # Some servers and proxies ignore `stream` and answer whole: that answer is the one chunk.
                yield json.loads(await chunks.response.aread())
                return
            async for chunk in chunks:
                yield chunk

    async def close(self) -> None:
        await self.client.close()


def _encodable(body: dict[str, Any]) -> dict[str, Any]:
    """Half an emoji (a lone surrogate, as a platform may pass on) cannot be UTF-8: it goes as U+FFFD."""
    return json.loads(_LONE_SURROGATE.sub("\ufffd", json.dumps(body, ensure_ascii=False)))


def open_endpoints(config: EngineConfig) -> tuple[Endpoint, Endpoint]:
    """The chat endpoint and the embeddings endpoint (the same one unless MEMBOT_EMBEDDING_BASE_URL is set).
    Raises EngineConfigError, with one line saying what to set, for a configuration that cannot work."""
    _check_values(config)
    if config.azure_endpoint:
        if config.base_url:
            raise EngineConfigError("Set AZURE_OPENAI_ENDPOINT or OPENAI_BASE_URL, not both.")
        chat = _azure(config)
    else:
        if not config.base_url and not config.api_key:
            raise EngineConfigError(
                "OPENAI_API_KEY is not set: it is needed for OpenAI's API. For a local server such as Ollama, set "
                "OPENAI_BASE_URL instead (e.g. http://localhost:11434/v1; no key needed)."
            )
        chat = _openai(config, config.base_url, "OPENAI_BASE_URL")
    if not config.embedding_base_url:
        return chat, chat
    return chat, _openai(config, config.embedding_base_url, "MEMBOT_EMBEDDING_BASE_URL")


def _openai(config: EngineConfig, base_url: str | None, url_setting: str) -> Endpoint:
    url = _usable(base_url or OPENAI_URL, url_setting)
    client = AsyncOpenAI(
        api_key=config.api_key or NO_KEY,
        base_url=url,
        organization=config.organization,
        project=config.project,
        timeout=config.model_timeout,
        max_retries=max(0, config.model_max_retries),
        http_client=_http(config),
    )
    return Endpoint(client, _shown(url), url_setting, "OPENAI_API_KEY", bool(config.api_key), False,
                    config.model_timeout)


def _azure(config: EngineConfig) -> Endpoint:
    url = _usable(config.azure_endpoint or "", "AZURE_OPENAI_ENDPOINT")
    if not config.azure_api_key:
        raise EngineConfigError(
            "AZURE_OPENAI_ENDPOINT is set but AZURE_OPENAI_API_KEY is not: set the key of that Azure OpenAI resource."
        )
    client = AsyncAzureOpenAI(
        azure_endpoint=url,
        api_key=config.azure_api_key,
        api_version=config.api_version,
        timeout=config.model_timeout,
        max_retries=max(0, config.model_max_retries),
        http_client=_http(config),
    )
    return Endpoint(client, _shown(url), "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", True, True,
                    config.model_timeout)


def _http(config: EngineConfig) -> Any:
    # The SDK's aiohttp transport (aiohttp is ours already, for discord.py): a quarter of a millisecond less
    # CPU per call than its default httpx one. It reads the proxy the environment names once, here.
    return openai.DefaultAioHttpClient(timeout=config.model_timeout)


def _usable(url: str, setting: str) -> str:
    """The URL, if it can ever work; said at start-up, since otherwise every message would retry it."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    try:
        port_ok = parts.port != 0  # reading it checks it: a port out of range or not a number raises
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise EngineConfigError(
            f"{setting} {_shown(url)!r} is not a usable http(s) URL (a scheme, a host, a port from 1 to 65535); "
            "e.g. http://localhost:11434/v1"
        )
    return url


def _shown(url: str) -> str:
    """The URL without what may be secret: user and password, query and fragment."""
    without_query = url.split("?")[0].split("#")[0]
    return re.sub(r"^((?:[^/]*//)?)[^/]*@", r"\1", without_query)


def _check_values(config: EngineConfig) -> None:
    """A key pasted with its line break would make every request fail; said once, without the value."""
    named = {
        "OPENAI_API_KEY": config.api_key,
        "AZURE_OPENAI_API_KEY": config.azure_api_key,
        "OPENAI_ORG_ID": config.organization,
        "OPENAI_PROJECT_ID": config.project,
        "OPENAI_API_VERSION": config.api_version,
    }
    bad = [name for name, value in named.items() if value and _CONTROL.search(value)]
    if bad:
        raise EngineConfigError(
            f"{' and '.join(bad)} holds a control character (a line break pasted with it?); set it again without."
        )
