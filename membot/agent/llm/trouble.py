"""What a failed call to a model endpoint means for a user, said plainly: the cause, and for what waiting cannot
fix, the setting to change. Messages never carry a key (nor the server's own words where they may quote one)."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

import aiohttp
import openai

from membot.agent.llm.endpoint import Endpoint
from membot.agent.llm.errors import ModelRefused, ModelUnavailable

# The most of a server's own message quoted to a user.
QUOTE_LIMIT = 300


@dataclass(frozen=True)
class Asked:
    """What was asked of an endpoint, as the settings name it."""

    what: str  # "model" or "embedding model"
    model: str
    setting: str  # the variable naming the model: MEMBOT_MODEL or MEMBOT_EMBEDDING_MODEL
    endpoint: str = "model endpoint"  # or "embedding endpoint"


def explain(exc: openai.OpenAIError, endpoint: Endpoint, asked: Asked) -> ModelUnavailable:
    """The error to raise for an SDK error, after the SDK's own retries."""
    where = f"the {asked.endpoint} at {endpoint.url}"
    if isinstance(exc, openai.APITimeoutError) and _timed_out(exc):
        return ModelUnavailable(
            f"{_upper(where)} did not answer in time (within {endpoint.timeout:g} s, MEMBOT_MODEL_TIMEOUT)."
        )
    if isinstance(exc, openai.APIConnectionError):
        return ModelUnavailable(f"{_upper(where)} ({endpoint.url_setting}) cannot be reached{_why_not(exc)}.")
    if not isinstance(exc, openai.APIStatusError):
        return ModelUnavailable(f"{_upper(where)} gave an unreadable answer.")
    status = exc.status_code
    if status == 401:
        if not endpoint.has_key:
            return ModelRefused(f"{_upper(where)} needs an API key (HTTP 401): set {endpoint.key_setting}.")
        return ModelRefused(f"{_upper(where)} refused the API key (HTTP 401): check {endpoint.key_setting}.")
    if status == 403:
        return ModelRefused(
            f"{_upper(where)} denied access (HTTP 403){_quote(exc, endpoint)}. Check that the key in "
            f"{endpoint.key_setting} may use {asked.model} ({asked.setting})."
        )
    if status == 404:
        return ModelRefused(_not_found(exc, endpoint, asked, where))
    if status == 429 and _out_of_quota(exc):
        return ModelRefused(
            f"The account of the key in {endpoint.key_setting} has no quota left (insufficient_quota): add credit "
            "or raise its limit in the provider's billing settings, or use another key."
        )
    if status == 429:
        return ModelUnavailable(f"The {asked.what} is rate-limited right now (HTTP 429).")
    if status >= 500 or status in (408, 409):
        return ModelUnavailable(f"{_upper(where)} failed (HTTP {status}).")
    return ModelRefused(
        f"{_upper(where)} refused the request for {asked.model} (HTTP {status}){_quote(exc, endpoint)}. "
        f"Check {asked.setting} and {endpoint.url_setting}."
    )


def server_says(exc: openai.APIStatusError) -> str:
    """The server's own message: OpenAI's {"error": {"message"}}, vLLM's top-level "message", Ollama's
    {"error": "..."}, or the body's text; on one line."""
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else body
    return " ".join(message.split()) if isinstance(message, str) else ""


def _not_found(exc: openai.APIStatusError, endpoint: Endpoint, asked: Asked, where: str) -> str:
    said = server_says(exc)
    if endpoint.azure:
        return (
            f"{_upper(where)} has no deployment named {asked.model!r} (HTTP 404): set {asked.setting} to the "
            "name of a deployment of that resource."
        )
    if exc.code == "model_not_found" or asked.model in said or "model" in said.lower():
        return (
            f"{_upper(where)} has no {asked.what} named {asked.model!r} (HTTP 404): set {asked.setting} to one it "
            "serves."
        )
    return (
        f"{_upper(where)} answered 404 (not found): check {endpoint.url_setting} (it usually ends in /v1) and "
        f"{asked.setting} ({asked.model})."
    )


def _out_of_quota(exc: openai.APIStatusError) -> bool:
    return exc.code == "insufficient_quota" or exc.type == "insufficient_quota"


def _quote(exc: openai.APIStatusError, endpoint: Endpoint) -> str:
    """The server's message, as ": <message>"."""
    said = server_quote(exc, endpoint).rstrip(".")
    return f": {said}" if said else ""


def server_quote(exc: openai.APIStatusError, endpoint: Endpoint) -> str:
    """The server's message, short, and without the key should the server echo it."""
    said = server_says(exc)
    key = endpoint.client.api_key
    if key and len(key) >= 8:
        said = said.replace(key, "***")
    return said if len(said) <= QUOTE_LIMIT else said[: QUOTE_LIMIT - 1] + "…"


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(chain) < 20:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    return chain


def _timed_out(exc: openai.APITimeoutError) -> bool:
    """Whether a "timeout" was one. The aiohttp transport reports every connection error, a refused port
    included, as a connect timeout; the transport's own error, kept as the cause, tells them apart."""
    causes = _causes(exc)
    for cause in causes:
        if isinstance(cause, TimeoutError):
            return True
        if isinstance(cause, OSError | aiohttp.ClientError):
            return False
    return True


def _why_not(exc: BaseException) -> str:
    for cause in _causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return ": connection refused (is the server running?)"
        if isinstance(cause, socket.gaierror):
            return ": no such host"
        if isinstance(cause, ssl.SSLError | aiohttp.ClientSSLError):
            return ": the TLS handshake failed"
        if isinstance(cause, aiohttp.ServerDisconnectedError):
            return ": the server closed the connection"
    return ""


def _upper(text: str) -> str:
    return text[:1].upper() + text[1:]
