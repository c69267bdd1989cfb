"""An OpenAI-compatible HTTP endpoint: JSON posted, JSON back, with the retries the OpenAI SDK makes.

Why not the openai SDK itself: membot sends two requests (chat completions, embeddings) whose bodies are
already plain API JSON, and reads four fields of the answers. The SDK's request building (options models,
URL and header merging in httpx, then a second request object for its aiohttp transport) cost about 1 ms
of CPU per call on top of 0.2 ms for the HTTP itself: at 200 users talking at once that was over half of the
bot's CPU, and one process could not keep up (measured in `bench/concurrency.py`). This module keeps what
the SDK gave us that matters to a bot: its retry policy (`max_retries`, backoff with jitter, `retry-after`,
`x-should-retry`), its timeouts, the proxy the environment names, and errors a caller can tell apart.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from time import time
from typing import Any
from urllib.parse import SplitResult, urlsplit
from urllib.request import getproxies_environment, proxy_bypass_environment

import aiohttp
import orjson

from membot.agent.config import EngineConfigError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# The SDK's backoff: 0.5 s doubling to 8 s, less up to a quarter of jitter. A server's own retry-after is
# followed up to two minutes; asked to wait longer, we do not retry (as the SDK).
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 120.0
#: Connections kept open to the endpoint at once (the SDK's limit): one per model call in flight.
MAX_CONNECTIONS = 1000


class EndpointError(Exception):
    """The request failed, after any retries."""


class Unreachable(EndpointError):
    """No connection could be made, or it broke before an answer came."""


class NoAnswerInTime(EndpointError):
    """The endpoint took longer than the timeout to answer."""


class Unreadable(EndpointError):
    """A success whose body is not JSON."""


class StatusError(EndpointError):
    """The endpoint answered with an HTTP error; `code` and `message` come from its error body if it sent one."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}".strip(": "))
        self.status = status
        self.code = code
        self.message = message


class _Retry(Exception):
    def __init__(self, error: EndpointError, delay: float | None = None) -> None:
        self.error = error
        self.delay = delay


class Endpoint:
    """One base URL and key. The HTTP session opens on first use, on the running event loop."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float,
        max_retries: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or not _port_ok(parts):
            # Said at start-up: otherwise every message would retry a URL that can never work.
            raise EngineConfigError(
                f"The model endpoint {self.base_url!r} (OPENAI_BASE_URL or MEMBOT_EMBEDDING_BASE_URL) is not a "
                "usable http(s) URL (a scheme, a host, a port from 1 to 65535); e.g. http://localhost:11434/v1"
            )
        self.max_retries = max(0, max_retries)
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
        self._headers = {"Content-Type": "application/json", "User-Agent": "membot", **(headers or {})}
        if api_key:  # local servers (Ollama, vLLM) need none
            self._headers["Authorization"] = f"Bearer {api_key}"
        if any(_CONTROL.search(value) for value in self._headers.values()):
            # aiohttp refuses such a header on every request; said once, at start-up, without the value.
            raise EngineConfigError(
                "OPENAI_API_KEY, OPENAI_ORG_ID or OPENAI_PROJECT_ID holds a control character (a line break "
                "pasted with it?); set it again without."
            )
        self._proxy = env_proxy(self.base_url)
        self._session: aiohttp.ClientSession | None = None

    async def post(self, path: str, body: dict[str, Any] | bytes) -> Any:
        """POST `body` as JSON (or JSON already encoded) to `path` (e.g. "/chat/completions") and return the
        answer's JSON."""
        data = body if isinstance(body, bytes) else json_bytes(body)
        for attempt in range(self.max_retries + 1):
            try:
                return await self._attempt(self.base_url + path, data)
            except _Retry as retry:
                if attempt == self.max_retries:
                    raise retry.error from None
                await asyncio.sleep(retry.delay if retry.delay is not None else backoff(attempt))
        raise AssertionError("unreachable")  # the loop returns or raises

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _attempt(self, url: str, data: bytes) -> Any:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS), timeout=self._timeout
            )
        try:
            async with self._session.post(url, data=data, headers=self._headers, proxy=self._proxy) as response:
                raw = await response.read()
                status, headers = response.status, response.headers
        except TimeoutError:
            raise _Retry(NoAnswerInTime(f"no answer from {url} in time")) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _Retry(Unreachable(f"{url}: {type(exc).__name__}: {exc}")) from None
        if status >= 400:
            error = StatusError(status, *_error_fields(raw))
            wait = retry_after(headers)
            if _should_retry(status, headers) and (wait is None or wait <= MAX_RETRY_AFTER):
                raise _Retry(error, wait if wait is not None and wait > 0 else None)
            raise error
        try:
            return json.loads(raw)
        except ValueError:
            raise Unreadable(f"{url} answered {status} with a body that is not JSON") from None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _port_ok(parts: SplitResult) -> bool:
    try:
        return parts.port != 0  # reading it checks it: a port out of range or not a number raises
    except ValueError:
        return False


def json_bytes(value: Any) -> bytes:
    """`value` as JSON. orjson first: a request carries the whole context window, and the standard library
    took 62 µs to encode 48 messages where orjson takes 7. orjson refuses what it cannot write as UTF-8 (a
    lone surrogate a platform passed on from a broken emoji); the standard library escapes it instead."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value).encode()


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), as the SDK used it.
    Read once: aiohttp's own `trust_env` reads the environment again on every request (0.4 ms of CPU each)."""
    parts = urlsplit(url)
    if proxy_bypass_environment(parts.hostname or ""):
        return None
    return getproxies_environment().get(parts.scheme)


def backoff(attempt: int) -> float:
    """Seconds before retry number `attempt + 1` when the server does not say."""
    delay = min(INITIAL_RETRY_DELAY * 2**attempt, MAX_RETRY_DELAY)
    return delay * (1 - 0.25 * random.random())


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait in seconds the server asked for (`retry-after-ms`, or `retry-after` in seconds or as a date)."""
    seconds: float | None = None
    if millis := headers.get("retry-after-ms"):
        try:
            seconds = float(millis) / 1000
        except ValueError:
            pass
    if seconds is None and (value := headers.get("retry-after")):
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - time()
            except (TypeError, ValueError):
                pass
    # A number too big for a float (1e400) reads as infinity: "far too long", not "unreadable".
    return seconds if seconds is not None and not math.isnan(seconds) else None


def _should_retry(status: int, headers: Mapping[str, str]) -> bool:
    said = (headers.get("x-should-retry") or "").lower()
    if said in ("true", "false"):
        return said == "true"
    return status in (408, 409, 429) or status >= 500


def _error_fields(raw: bytes) -> tuple[str, str]:
    """(code, message) of an error body: OpenAI's {"error": {"code", "message"}}, a string "error", or the
    top-level "code" and "message" some servers (vLLM) send; the body's text if it is none of these."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return "", raw[:500].decode(errors="replace")
    error = body.get("error")
    fields = error if isinstance(error, dict) else body
    code, message = fields.get("code"), fields.get("message")
    if isinstance(error, str) and not isinstance(message, str):
        message = error
    return (
        code if isinstance(code, str) else "",
        message if isinstance(message, str) else raw[:500].decode(errors="replace"),
    )
