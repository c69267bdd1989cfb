"""The extra functions: off by default, confined to the agent's own folder, and no requests to private hosts."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from membot.agent.config import EngineConfigError
from membot.agent.events import FunctionResult
from membot.agent.tools.web import BlockedRequest, check_address, check_url, describe_response, read_shown
from membot.bot.service import BotService
from tests.conftest import collect, make_settings
from tests.fakes.openai_server import text, tool_call


async def run_tool(service, model, user, name, args):
    model.script(tool_call(name, args))
    events = await collect(service.chat(user, "go"))
    return next(e for e in events if isinstance(e, FunctionResult))


async def test_extras_are_off_by_default(service, model, user):
    result = await run_tool(service, model, user("a"), "read_from_text_file", {"filename": "/etc/passwd"})
    assert not result.ok and "no function named" in result.result


@pytest.fixture
async def extras(home, model):
    settings = make_settings(
        home, model,
        MEMBOT_EXTRAS="read_from_text_file,append_to_text_file,http_request,message_chatgpt",
        MEMBOT_HTTP_ALLOW="localhost,127.0.0.1,example.com",
    )
    service = await BotService.open(settings)
    try:
        yield service
    finally:
        await service.close()


async def test_text_files_stay_in_the_sandbox(extras, model, user, home, tmp_path):
    alice, bob = user("alice"), user("bob")
    ok = await run_tool(extras, model, alice, "append_to_text_file", {"filename": "notes/a.txt", "content": "line one"})
    assert ok.ok
    ok = await run_tool(extras, model, alice, "read_from_text_file", {"filename": "notes/a.txt"})
    assert ok.ok and ok.result == "line one"
    # Bob has his own folder: Alice's file is not there.
    other = await run_tool(extras, model, bob, "read_from_text_file", {"filename": "notes/a.txt"})
    assert not other.ok and "no file" in other.result
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    folder = next((home / "sandboxes").glob("agent-*"))
    os.symlink(secret, folder / "link.txt")
    for name in ("../secret.txt", "/etc/passwd", str(secret), "link.txt", "notes/../../x.txt", "C:\\x"):
        for func, args in (("read_from_text_file", {}), ("append_to_text_file", {"content": "x"})):
            result = await run_tool(extras, model, alice, func, {"filename": name, **args})
            assert not result.ok, (func, name)
    assert secret.read_text() == "top secret"


@asynccontextmanager
async def serving(body: str) -> AsyncIterator[int]:
    """A web server on 127.0.0.1 answering `body` at /; yields its port."""
    app = web.Application()
    app.router.add_get("/", lambda request: web.Response(text=body))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()


async def test_http_request_refuses_private_addresses(extras, model, user):
    async with serving("internal data") as port:
        alice = user("alice")
        for url in (f"http://127.0.0.1:{port}/", f"http://localhost:{port}/", "http://internal.corp/",
                    "file:///etc/passwd", f"http://[::1]:{port}/"):
            result = await run_tool(extras, model, alice, "http_request", {"method": "GET", "url": url})
            assert not result.ok and "internal data" not in result.result, url


def test_address_and_url_checks():
    allow = frozenset({"example.com"})
    assert check_url("https://api.example.com/x", allow) == "api.example.com"
    for url in ("http://evil.com/", "ftp://example.com/", "http:///nohost"):
        with pytest.raises(BlockedRequest):
            check_url(url, allow)
    for address in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "::1",
                    "fe80::1", "::ffff:127.0.0.1", "0.0.0.0", "100.64.0.1"):
        with pytest.raises(BlockedRequest):
            check_address(address)
    check_address("93.184.216.34")  # a public address passes


async def test_message_chatgpt_uses_the_configured_endpoint(extras, model, user):
    model.script(tool_call("message_chatgpt", {"message": "What is 2+2?"}), text("4"))
    events = await collect(extras.chat(user("alice"), "ask it"))
    result = next(e for e in events if isinstance(e, FunctionResult))
    assert result.ok and result.result == "4"
    assert model.requests[-1]["messages"][-1]["content"] == "What is 2+2?"


async def test_bad_extras_configuration_is_refused_before_opening(home, model):
    with pytest.raises(EngineConfigError, match="Unknown MEMBOT_EXTRAS"):
        await BotService.open(make_settings(home, model, MEMBOT_EXTRAS="rm_rf"))
    with pytest.raises(EngineConfigError, match="MEMBOT_HTTP_ALLOW"):
        await BotService.open(make_settings(home, model, MEMBOT_EXTRAS="http_request"))


async def test_only_the_shown_part_of_a_big_answer_is_read():
    big = "x" * 5_000_000
    async with serving(big) as port:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as response:
            text = await read_shown(response, limit=1_000)
        assert 1_000 < len(text) <= 4_001 and set(text) == {"x"}
        assert "cut at 20000 characters" in describe_response(200, {}, big)
