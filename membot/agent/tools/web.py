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


# IPv6 ranges whose last 32 bits are an IPv4 address the packet ends up at: IPv4-mapped, IPv4-translated
# (SIIT), IPv4-compatible (deprecated, still routed by some stacks) and the NAT64 well-known prefix.
_CARRIERS = tuple(
    ipaddress.IPv6Network(net) for net in ("::ffff:0:0/96", "::ffff:0:0:0/96", "::/96", "64:ff9b::/96")
)
# Local by definition, whatever they embed: NAT64 local-use (the IPv4 part sits at a varying place) and the
# deprecated site-local range, which Python still counts as global.
_NEVER = tuple(ipaddress.IPv6Network(net) for net in ("64:ff9b:1::/48", "fec0::/10"))


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _destinations(ip: Address) -> list[Address]:
    """The address and every IPv4 address it embeds: each must be public."""
    if isinstance(ip, ipaddress.IPv4Address):
        return [ip]
    if any(ip in net for net in _CARRIERS):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    found: list[Address] = [ip]
    if ip.sixtofour:  # 2002::/16, the IPv4 address in bits 16-48
        found.append(ip.sixtofour)
    if ip.teredo:  # 2001::/32: the server, and the client (the last 32 bits, inverted)
        found.extend(ip.teredo)
    return found


def check_address(address: str) -> None:
    ip = ipaddress.ip_address(address.split("%")[0])
    local = isinstance(ip, ipaddress.IPv6Address) and any(ip in net for net in _NEVER)
    if local or any(not d.is_global or d.is_multicast for d in _destinations(ip)):
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
