"""The extra functions: off by default, confined to the agent's own folder, and no requests to private hosts."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from membot.agent.config import EngineConfigError
from membot.agent.events import FunctionResult
from membot.agent.tools import sandbox
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
    folder = next((home / "sandboxes").glob("agent-*/notes/a.txt")).parent.parent  # Alice's
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


def test_ipv6_forms_embedding_a_private_ipv4_address_are_refused():
    for address in (
        "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1
        "::127.0.0.1", "::a00:1",  # IPv4-compatible
        "64:ff9b::127.0.0.1", "64:ff9b::a9fe:a9fe",  # NAT64 well-known prefix
        "64:ff9b:1::a00:1",  # NAT64 local-use
        "2002:7f00:1::", "2002:c0a8:101::1",  # 6to4 of 127.0.0.1 and 192.168.1.1
        "2001:0:5db8:4136:0:f227:80ff:fffe",  # Teredo, client 127.0.0.1 (inverted)
        "fec0::1", "fed0::1234",  # site-local
    ):
        with pytest.raises(BlockedRequest):
            check_address(address)
    for address in ("64:ff9b::5db8:d822", "2002:5db8:d822::1", "::ffff:93.184.216.34", "2606:4700::1111"):
        check_address(address)  # public, embedded or not


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


def _quota(max_bytes: int = 1024 * 1024, max_entries: int = 100) -> sandbox.Quota:
    return sandbox.Quota(max_bytes, max_entries)


def test_sandbox_has_a_total_size_and_entry_quota(tmp_path):
    folder = tmp_path / "agent-1"
    sandbox.append_text(folder, "a.txt", "x" * 599, _quota(max_bytes=1000))
    with pytest.raises(sandbox.SandboxError, match="KB in all"):
        sandbox.append_text(folder, "b.txt", "y" * 599, _quota(max_bytes=1000))
    for n in range(3):
        sandbox.append_text(folder, f"f{n}.txt", "z", _quota(max_entries=5))
    with pytest.raises(sandbox.SandboxError, match="limit of 5 files"):
        sandbox.append_text(folder, "d1/d2/new.txt", "z", _quota(max_entries=5))
    sandbox.append_text(folder, "f0.txt", "more", _quota(max_entries=5))  # an existing file may grow
    assert not (folder / "d1").exists() and sorted(p.name for p in folder.iterdir()) == [
        "a.txt", "f0.txt", "f1.txt", "f2.txt"]


def test_sandbox_opens_only_regular_files_with_one_link(tmp_path):
    folder = tmp_path / "agent-1"
    folder.mkdir()
    os.mkfifo(folder / "pipe.txt")
    outside = tmp_path / "outside.txt"
    outside.write_text("theirs\n")
    os.link(outside, folder / "hard.txt")
    # Without O_NONBLOCK the append would wait for a reader forever; this one turns up late to end the test.
    reader = threading.Timer(3, lambda: os.close(os.open(folder / "pipe.txt", os.O_RDONLY | os.O_NONBLOCK)))
    reader.start()
    started = time.monotonic()
    try:
        with pytest.raises(sandbox.SandboxError):
            sandbox.append_text(folder, "pipe.txt", "x", _quota())
    finally:
        reader.cancel()
    assert time.monotonic() - started < 2
    with pytest.raises(sandbox.SandboxError):
        sandbox.read_lines(folder, "pipe.txt", 1, 10)
    for call in (lambda: sandbox.append_text(folder, "hard.txt", "mine", _quota()),
                 lambda: sandbox.read_lines(folder, "hard.txt", 1, 10)):
        with pytest.raises(sandbox.SandboxError, match="other links"):
            call()
    assert outside.read_text() == "theirs\n"


async def test_a_new_database_does_not_inherit_old_sandbox_files(home, model, user):
    settings = make_settings(home, model, MEMBOT_EXTRAS="read_from_text_file,append_to_text_file")
    first = await BotService.open(settings)
    try:
        ok = await run_tool(first, model, user("alice"), "append_to_text_file", {"filename": "a.txt", "content": "old"})
        assert ok.ok
    finally:
        await first.close()
    if settings.database_url is None:  # SQLite: a new file
        for file in home.glob("membot.db*"):
            file.unlink()
    else:  # PostgreSQL: the same ids again, as a restored or recreated database would give
        pytest.skip("recreating the PostgreSQL database is not done here")
    second = await BotService.open(settings)
    try:
        found = await run_tool(second, model, user("alice"), "read_from_text_file", {"filename": "a.txt"})
        assert not found.ok and "no file" in found.result
    finally:
        await second.close()
