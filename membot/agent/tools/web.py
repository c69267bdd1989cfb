"""http_request's guard: an allow-list of hosts, and no loopback, private or link-local address, checked
after DNS resolution for every connection (redirects included), so neither a hostname nor a redirect can
point the agent at the machine or network it runs in."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

MAX_BODY = 20_000
MAX_REDIRECTS = 3


class BlockedRequest(ValueError):
    pass


def check_url(url: str, allow: frozenset[str]) -> str:
    """The URL's host if the URL may be requested at all (scheme and allow-list); else BlockedRequest."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BlockedRequest("only http and https URLs can be requested")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise BlockedRequest("the URL has no host")
    if not any(host == a or host.endswith("." + a) for a in allow):
        raise BlockedRequest(f"{host} is not on the allow-list (MEMBOT_HTTP_ALLOW)")
    try:
        # aiohttp does not ask the resolver about IP literals, so they are checked here.
        check_address(host.strip("[]"))
    except ValueError as exc:
        if isinstance(exc, BlockedRequest):
            raise
    return host


def check_address(address: str) -> None:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if not ip.is_global or ip.is_multicast:
        raise BlockedRequest(f"{address} is a loopback, private or link-local address; it is never requested")


class PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp does, then refuses the whole host if any address is not public."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            check_address(result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()


async def read_shown(response: aiohttp.ClientResponse, limit: int = MAX_BODY) -> str:
    """The start of a response body, as text: only as much as can be shown (up to 4 bytes a character) is
    read, however big the answer."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65_536):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit * 4:
            break
    return b"".join(chunks)[: limit * 4 + 1].decode(response.charset or "utf-8", errors="replace")


def describe_response(status: int, headers: Any, body: str) -> str:
    kind = headers.get("Content-Type", "")
    cut = f" … [cut at {MAX_BODY} characters]" if len(body) > MAX_BODY else ""
    return f"HTTP {status} ({kind})\n{body[:MAX_BODY]}{cut}"
