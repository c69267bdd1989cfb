"""What users and operators read (issue 24, part 5): counts that are right and grammatical, loads that say what
they did, a home that cannot work named as MEMBOT_HOME, `--version` and help, one log format without library
noise, and a `membot serve` that retries an unreachable platform, stops at once on a refused credential, and
always stops on a signal."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from membot.adapters.discord.runner import run_discord
from membot.adapters.slack.runner import run_slack
from membot.agent.agent import MemoryReport
from membot.bot import home as home_module
from membot.bot.cli import _memory, _parser, main
from membot.bot.errors import ConfigurationError
from membot.bot.loading import list_sources, load_directory
from membot.bot.log_setup import LibraryNoise
from membot.bot.retry import Backoff
from membot.bot.serve import keep_serving, serve
from membot.bot.service import BotService
from membot.bot.stopping import SignalStop
from membot.bot.views import memory_text
from membot.bot.wording import counted
from tests.conftest import collect, make_settings
from tests.fakes.discord_fake import FakeDiscord
from tests.fakes.openai_server import send
from tests.fakes.slack_fake import FakeSlack

WAIT = 20.0
FAST = Backoff(first=0.01, cap=0.05)


# ----- counts ----------------------------------------------------------------------------------------------


def test_counts_are_singular_for_one_and_plural_otherwise():
    assert [counted(n, "passage") for n in (0, 1, 2, 1234)] == ["0 passages", "1 passage", "2 passages", "1,234 passages"]
    report = MemoryReport(1, "alice", "sam", {"human": ("", 100)}, 1, 1, [], 1, 10, 100, "s", 1)
    text = memory_text(report)
    assert "Recall memory: 1 message\n" in text and "Archival memory: 1 passage of its own" in text
    assert "1 message in context" in text and "Summary of 1 earlier message:" in text


async def _load(service: BotService, capsys: pytest.CaptureFixture[str], name: str, *files: Path) -> tuple[int, str, str]:
    code = await load_directory(service, name, list(files), None, recursive=False, extensions=None)
    out, err = capsys.readouterr()
    return code, out.strip(), err


async def test_load_counts_only_what_it_loaded_and_a_failed_load_leaves_no_source(service, capsys, tmp_path):
    one, many, empty = tmp_path / "one.txt", tmp_path / "many.md", tmp_path / "empty.txt"
    one.write_text("A short note about cats.")
    many.write_text("word " * 800)
    empty.write_text("")
    assert await _load(service, capsys, "notes", one) == (0, "Loaded 1 passage and 1 document from notes", "")
    code, out, err = await _load(service, capsys, "notes", one, many)
    # one.txt was there already: not counted as loaded, and said apart.
    assert code == 0 and re.fullmatch(r"Loaded \d+ passages and 1 document from notes \(1 file was already there\)", out)
    code, out, err = await _load(service, capsys, "notes", one)
    assert code == 0 and out == "Nothing new loaded into notes: 1 file was already there"
    code, out, err = await _load(service, capsys, "broken", empty)
    assert code == 1 and out == "Nothing loaded into broken" and "empty.txt" in err
    await list_sources(service, None)
    out = capsys.readouterr().out
    assert "notes" in out and "broken" not in out  # the failed load left no empty source behind
    assert "2 documents" in out


async def test_a_search_that_finds_nothing_says_so(service, model, user, capsys):
    model.script(send("Hello!"))
    await collect(service.chat(user("alice"), "hi"))
    for archival, where in ((False, "conversation"), (True, "archival memory")):
        args = argparse.Namespace(action="search", user="alice", platform="terminal", scope=None, query=["zebra"],
                                  archival=archival, limit=10)
        assert await _memory(service, args) == 0
        assert capsys.readouterr().out.strip() == f"Nothing in alice's {where} matches 'zebra'."


# ----- the home --------------------------------------------------------------------------------------------


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_home_that_is_a_file_is_named_as_membot_home(monkeypatch, capsys, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    for home in (tmp_path / "afile", tmp_path / "afile" / "below"):
        monkeypatch.setenv("MEMBOT_HOME", str(home))
        assert main(["sources"]) == 2
        line = _one_line(capsys.readouterr().err)
        assert "MEMBOT_HOME" in line and "MEMBOT_DATABASE_URL" not in line and "folder" in line


def test_a_read_only_home_or_database_is_one_clear_line(monkeypatch, capsys, tmp_path):
    home = tmp_path / "home"
    monkeypatch.setenv("MEMBOT_HOME", str(home))
    real_access = os.access
    read_only: set[Path] = {home}
    # Tests run as root here, who may write anywhere: the account's view is what os.access says.
    monkeypatch.setattr(home_module.os, "access", lambda p, mode, **kw: Path(p) not in read_only and real_access(p, mode))
    assert main(["sources"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "MEMBOT_HOME" in line and "read-only" in line and "sqlalche" not in line.lower()
    (home / "membot.db").write_bytes(b"")  # as a first run leaves it
    read_only.clear()
    read_only.add(home / "membot.db")
    assert main(["sources"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "membot.db" in line and "read-only" in line and "MEMBOT_HOME" in line


# ----- --version and help ----------------------------------------------------------------------------------


def test_version_prints_and_every_option_has_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and re.fullmatch(r"membot \S+", capsys.readouterr().out.strip())

    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {choice.dest for choice in action._choices_actions}
                missing.extend(f"{path} {name}" for name in action.choices if name not in helped)
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(_parser(), "membot")
    assert missing == []


# ----- logging ---------------------------------------------------------------------------------------------


def _record(name: str, msg: str, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, (), info)


def test_library_noise_is_dropped_and_retries_are_one_line():
    noise = LibraryNoise()
    assert not noise.filter(_record("discord.client", "PyNaCl is not installed, voice will NOT be supported"))
    assert not noise.filter(_record("slack_bolt.AsyncApp", "As you gave `client` as well, `token` will be unused."))
    kept = _record("membot.bot.serve", "membot serving: discord")
    assert noise.filter(kept) and kept.msg == "membot serving: discord"
    retry = _record("discord.client", "Attempting a reconnect in %.2fs", OSError("Connect call failed"))
    retry.args = (1.5,)
    assert noise.filter(retry) and retry.exc_info is None
    assert retry.getMessage() == "Attempting a reconnect in 1.50s (OSError: Connect call failed)"


# ----- serve: credentials ----------------------------------------------------------------------------------


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


def _slack_env(fake: FakeSlack, app_token: str) -> dict[str, str]:
    return {"SLACK_BOT_TOKEN": fake.bot_token, "SLACK_APP_TOKEN": app_token, "MEMBOT_SLACK_API_URL": fake.api_url}


async def test_a_refused_slack_app_token_stops_serve_with_one_line(model, home, slack, membot_forks):
    code, out, err = await asyncio.wait_for(membot_forks.membot(model, home, "serve", env=_slack_env(slack, "xapp-revoked")), WAIT)
    assert code == 1
    assert "Traceback" not in err and "As you gave `client`" not in err
    refused = [line for line in err.splitlines() if "SLACK_APP_TOKEN" in line]
    assert len(refused) == 1 and "Slack refused SLACK_APP_TOKEN (invalid_auth)" in refused[0]
    # One readable format, at INFO for membot's own news: never Python's default "WARNING:name:".
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO membot.bot.serve: membot serving: slack$", err, re.M), err
    assert "WARNING:" not in err


async def test_run_slack_refuses_a_wrong_app_token_before_connecting(home, model, slack):
    settings = make_settings(home, model, **_slack_env(slack, "xapp-wrong"))
    service = await BotService.open(settings)
    try:
        with pytest.raises(ConfigurationError, match="SLACK_APP_TOKEN"):
            await asyncio.wait_for(run_slack(service, settings, asyncio.Event()), WAIT)
        # The bot token in its place is refused the same way (Slack: not_allowed_token_type).
        slack.fail_next("apps.connections.open", error="not_allowed_token_type")
        with pytest.raises(ConfigurationError, match="SLACK_APP_TOKEN .not_allowed_token_type."):
            await asyncio.wait_for(run_slack(service, make_settings(home, model, **_slack_env(slack, slack.app_token)),
                                              asyncio.Event()), WAIT)
    finally:
        await service.close()


async def test_a_slack_socket_that_keeps_failing_still_stops(home, model, slack):
    # The app token is accepted, but the socket URL it gets answers nothing: the client retries forever.
    settings = make_settings(home, model, **_slack_env(slack, slack.app_token))
    service = await BotService.open(settings)
    try:
        stop = asyncio.Event()
        task = asyncio.create_task(run_slack(service, settings, stop))
        await slack.wait_for_call("apps.connections.open", WAIT)
        await asyncio.sleep(0.3)
        assert not task.done()
        stop.set()
        await asyncio.wait_for(task, 5)
    finally:
        await service.close()


async def test_a_refused_discord_token_stops_serve_with_one_line(model, home, membot_forks):
    async with FakeDiscord() as fake:
        fake.refuse_token = True
        env = {"DISCORD_TOKEN": "wrong", "MEMBOT_DISCORD_API_URL": fake.api_url,
               "MEMBOT_DISCORD_GATEWAY_URL": fake.gateway_url}
        code, out, err = await asyncio.wait_for(membot_forks.membot(model, home, "serve", env=env), WAIT)
    assert code == 1 and "Traceback" not in err
    assert "PyNaCl" not in err and "davey" not in err  # discord.py's voice warnings are not membot's business
    assert len([line for line in err.splitlines() if "Discord refused DISCORD_TOKEN" in line]) == 1


# ----- serve: unreachable platforms and signals ------------------------------------------------------------


async def _read_until(stream: asyncio.StreamReader, words: str, seen: list[str]) -> None:
    while True:
        line = (await stream.readline()).decode()
        assert line, "".join(seen)
        seen.append(line)
        if words in line:
            return


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serve_retries_an_unreachable_discord_and_a_signal_stops_it(model, home, signum, membot_forks):
    env = {"DISCORD_TOKEN": "t", "MEMBOT_DISCORD_API_URL": "http://127.0.0.1:9/api/v10"}
    proc = await membot_forks.start(model, home, "serve", env=env)
    seen: list[str] = []
    try:
        await asyncio.wait_for(_read_until(proc.stderr, "trying again in", seen), WAIT)
        assert "Could not reach Discord" in seen[-1] and "Traceback" not in "".join(seen)
        proc.send_signal(signum)
        code = await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0


async def test_serve_stops_on_a_signal_while_slack_socket_mode_keeps_failing(model, home, slack, membot_forks):
    proc = await membot_forks.start(model, home, "serve", env=_slack_env(slack, slack.app_token))
    seen: list[str] = []
    try:
        await asyncio.wait_for(_read_until(proc.stderr, "membot serving", seen), WAIT)
        await slack.wait_for_call("apps.connections.open", WAIT)
        await asyncio.sleep(0.5)  # the socket-mode client is retrying its connection now
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_serve_connects_once_discord_comes_back(model, home, caplog):
    port = _free_port()
    settings = make_settings(home, model, DISCORD_TOKEN="t", MEMBOT_DISCORD_API_URL=f"http://127.0.0.1:{port}/api/v10",
                             MEMBOT_DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{port}/ws")
    caplog.set_level(logging.INFO, logger="membot")
    serving = asyncio.create_task(serve(settings, backoff=FAST, stop_grace=5.0))
    try:
        deadline = time.monotonic() + WAIT
        while not any("trying again" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline and not serving.done()
            await asyncio.sleep(0.02)
        async with FakeDiscord(port=port) as fake:
            await asyncio.wait_for(fake.wait_connected(), WAIT)
            signal.raise_signal(signal.SIGTERM)  # serve's own handler takes it
            assert await asyncio.wait_for(serving, WAIT) == 0
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)


async def test_keep_serving_retries_only_what_cannot_be_reached():
    calls: list[float] = []
    third = asyncio.Event()

    async def flaky(service: Any, settings: Any, stop: asyncio.Event) -> None:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError("Could not reach Example")
        third.set()
        await stop.wait()

    stop = asyncio.Event()
    task = asyncio.create_task(keep_serving("example", flaky, Any, Any, stop, FAST))  # type: ignore[arg-type]
    await asyncio.wait_for(third.wait(), 1)
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 1)

    async def refused(service: Any, settings: Any, stop: asyncio.Event) -> None:
        raise ConfigurationError("Example refused EXAMPLE_TOKEN")

    with pytest.raises(ConfigurationError):  # at once: a refused credential is not retried
        await asyncio.wait_for(keep_serving("example", refused, Any, Any, asyncio.Event(), FAST), 1)  # type: ignore[arg-type]


async def test_a_signal_cancels_at_once_while_starting_and_after_the_grace_when_running():
    holder: list[SignalStop] = []
    stop = asyncio.Event()

    async def waiting() -> None:
        holder.append(SignalStop(stop, grace=0.05))
        await asyncio.Event().wait()  # whatever serve may be waiting on

    task = asyncio.create_task(waiting())
    await asyncio.sleep(0)
    holder[0].received()  # still starting: nothing to drain
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)

    holder.clear()
    task = asyncio.create_task(waiting())
    await asyncio.sleep(0)
    holder[0].starting = False
    holder[0].received()
    assert stop.is_set() and not task.done()  # first: a clean stop is asked for
    with pytest.raises(asyncio.CancelledError):  # then the grace runs out
        await asyncio.wait_for(task, 1)
    assert holder[0].forced


async def test_an_unreachable_discord_gateway_is_a_connection_error_not_a_crash(home, model):
    # discord.py alone fails a first gateway connection with an AttributeError (it never had a websocket).
    async with FakeDiscord() as fake:
        settings = make_settings(home, model, DISCORD_TOKEN="t", MEMBOT_DISCORD_API_URL=fake.api_url,
                                 MEMBOT_DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{_free_port()}/ws")
        service = await BotService.open(settings)
        try:
            with pytest.raises(ConnectionError, match="Could not reach the Discord gateway"):
                await asyncio.wait_for(run_discord(service, settings, asyncio.Event(), guild_ready_timeout=0.1), WAIT)
        finally:
            await service.close()


async def test_a_slack_port_in_use_names_the_variable(home, model, slack):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(home, model, SLACK_BOT_TOKEN=slack.bot_token, SLACK_SIGNING_SECRET="s",
                                 MEMBOT_SLACK_API_URL=slack.api_url, MEMBOT_SLACK_PORT=port)
        service = await BotService.open(settings)
        try:
            with pytest.raises(ConfigurationError, match=f"MEMBOT_SLACK_PORT {port} is taken"):
                await asyncio.wait_for(run_slack(service, settings, asyncio.Event()), WAIT)
        finally:
            await service.close()
