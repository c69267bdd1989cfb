"""Extra functions, off unless configured (MEMBOT_EXTRAS): text files in the agent's own sandbox folder,
HTTP requests to allow-listed public hosts, and a question to the configured model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
from sqlalchemy import select
from yarl import URL

from membot.agent.store.schema import AgentRow
from membot.agent.tools import sandbox
from membot.agent.tools.context import ToolContext
from membot.agent.tools.web import MAX_REDIRECTS, PublicOnlyResolver, check_url, describe_response, read_shown

ASK_SYSTEM = "You are a helpful assistant. Answer briefly and accurately."


async def _folder(ctx: ToolContext) -> Path:
    # Keyed by the agent's creation time as well as its id (see sandbox_dir): read from the agents row, as
    # the tool context carries only the id.
    created_at = await ctx.recall.db.scalar(select(AgentRow.created_at).where(AgentRow.id == ctx.agent_id))
    return sandbox.sandbox_dir(ctx.config.sandbox_root, ctx.agent_id, created_at)


async def read_from_text_file(ctx: ToolContext, filename: str, line_start: int = 1, num_lines: int = 50) -> str | None:
    """Read lines from a text file in your own folder.

    Args:
        filename: The file's name inside your folder, like notes.txt.
        line_start: The first line to read, from 1.
        num_lines: How many lines to read.
    """
    return await asyncio.to_thread(sandbox.read_lines, await _folder(ctx), filename, line_start, num_lines)


async def append_to_text_file(ctx: ToolContext, filename: str, content: str) -> str | None:
    """Append text to a file in your own folder (created if new).

    Args:
        filename: The file's name inside your folder, like notes.txt.
        content: The text to add at the end.
    """
    quota = sandbox.Quota(ctx.config.sandbox_max_bytes, ctx.config.sandbox_max_files)
    size = await asyncio.to_thread(sandbox.append_text, await _folder(ctx), filename, content, quota)
    return f"Appended; {filename} now holds {size} bytes."


async def http_request(ctx: ToolContext, method: str, url: str, payload_json: str = "") -> str | None:
    """Make an HTTP request to an allow-listed public host and read the answer.

    Args:
        method: GET, POST, PUT, PATCH or DELETE.
        url: The full http(s) URL.
        payload_json: A JSON body for POST, PUT or PATCH; empty for none.
    """
    method = method.upper()
    if method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        raise ValueError("method must be GET, POST, PUT, PATCH or DELETE")
    body = json.loads(payload_json) if payload_json.strip() else None
    allow = ctx.config.http_allow
    timeout = aiohttp.ClientTimeout(total=20)
    connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver(), use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url, allow)
            try:
                async with session.request(method, url, json=body, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                        # Every hop is checked again: allow-list here, addresses in the resolver.
                        url = str(response.url.join(URL(response.headers["Location"])))
                        continue
                    return describe_response(response.status, response.headers, await read_shown(response))
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ValueError(f"{url} could not be reached ({type(exc).__name__})") from None
    raise ValueError(f"more than {MAX_REDIRECTS} redirects")


async def message_chatgpt(ctx: ToolContext, message: str) -> str | None:
    """Ask the configured language model a self-contained question and read its answer. It knows nothing of
    you or the user.

    Args:
        message: The question, with all the context it needs.
    """
    result = await ctx.model.chat([{"role": "system", "content": ASK_SYSTEM}, {"role": "user", "content": message}])
    return result.content or "(no answer)"


EXTRA_FUNCTIONS = {f.__name__: f for f in (read_from_text_file, append_to_text_file, http_request, message_chatgpt)}
